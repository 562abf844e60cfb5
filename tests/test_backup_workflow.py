"""BackupTenantWorkflow on a real Temporal dev server against real PostgreSQL databases."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import uuid

import psycopg
import pytest
from psycopg import sql
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from activities.infra.pg import find_client_tools, libpq_env, pg_dump_writes_zstd, server_major
from starter.demo import table_fingerprint
from tenancy.contracts.backup import BackupTenantInput, BackupTenantResult
from tenancy.errors import failure_message, failure_type
from tenancy.search import tenant_attributes
from workflows.backup_tenant import BackupTenantWorkflow


async def run_backup(env: WorkflowEnvironment, queue: str, tenant_id: str, **kwargs: object) -> BackupTenantResult:
    return await env.client.execute_workflow(
        BackupTenantWorkflow.run,
        BackupTenantInput(tenant_id=tenant_id, **kwargs),  # type: ignore[arg-type]
        id=f"backup-{tenant_id}-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
        search_attributes=tenant_attributes(tenant_id),
    )


def restore_into_scratch(settings, archive_path, scratch: str, stream_compression: str = "none") -> None:
    with psycopg.connect(settings.effective_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
        major = server_major(conn.info.server_version)
    tools = find_client_tools(major)
    source = archive_path.read_bytes()
    if stream_compression == "zstd":
        import zstandard

        source = zstandard.ZstdDecompressor().decompressobj().decompress(source)
    subprocess.run(
        [str(tools.pg_restore), "--no-owner", "--exit-on-error", "--dbname", scratch],
        input=source,
        env=libpq_env(settings.effective_database_url, scratch),
        check=True,
        capture_output=True,
    )


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
async def test_backup_writes_verified_restorable_archive_and_manifest(
    temporal_env, task_queue, settings, make_tenant, backups_of, compression
):
    tenant = await make_tenant(entries=2000)

    result = await run_backup(temporal_env, task_queue, tenant.id, compression=compression, compression_level=3)

    archive = settings.storage_root / result.path
    assert archive.name == result.backup_name
    assert archive.name.startswith(f"tenant_{tenant.id}_")
    assert archive.name.endswith(".dump" if compression == "gzip" else ".dump.zst")
    assert archive.parent == settings.storage_root / "tenants" / tenant.id
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == result.sha256
    assert archive.stat().st_size == result.size_bytes
    # Readable by its owner only, folder included; no partial file left behind.
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert stat.S_IMODE(archive.parent.stat().st_mode) == 0o700
    assert [p.name for p in backups_of(tenant.id)] == [archive.name, archive.name + ".json"]

    manifest = json.loads((archive.parent / (archive.name + ".json")).read_text())
    assert manifest["tenant_id"] == tenant.id
    assert manifest["database_name"] == tenant.database_name
    assert manifest["verified"] is True and manifest["toc_entries"] > 3
    assert manifest["compression"] == compression and manifest["format"] == "custom"
    # zstd goes inside the archive where pg_dump can write it (16+ built with zstd), else in a stream around it.
    tools = find_client_tools(int(manifest["tool_version"].split(".")[0]))
    in_pg_dump = compression == "gzip" or pg_dump_writes_zstd(tools.pg_dump)
    assert manifest["stream_compression"] == ("none" if in_pg_dump else "zstd")
    assert manifest["sha256"] == result.sha256 and manifest["size_bytes"] == result.size_bytes
    assert manifest["row_counts"] == {
        "public.activity_log": 200,
        "public.projects": 20,
        "public.tenant_schema_migrations": 3,
        "public.time_entries": 2000,
    }
    assert manifest["server_version"].split(".")[0] == manifest["tool_version"].split(".")[0]
    assert manifest["started_at"] <= manifest["finished_at"]

    # The archive restores with pg_restore into a scratch database with equal content.
    scratch = f"{settings.database_prefix}scratch_{uuid.uuid4().hex[:6]}"
    restore_into_scratch(settings, archive, scratch, manifest["stream_compression"])
    url = settings.effective_database_url
    assert await table_fingerprint(url, scratch) == await table_fingerprint(url, tenant.database_name)


async def test_row_counts_are_those_of_the_dumped_snapshot(temporal_env, task_queue, settings, make_tenant):
    tenant = await make_tenant(entries=300)
    result = await run_backup(temporal_env, task_queue, tenant.id)
    assert result.row_counts["public.time_entries"] == 300


async def test_retention_keeps_the_newest_n(temporal_env, task_queue, settings, make_tenant, backups_of):
    tenant = await make_tenant(entries=50)
    names = []
    for _ in range(4):
        result = await run_backup(temporal_env, task_queue, tenant.id, keep=2)
        names.append(result.backup_name)
    archives = [p.name for p in backups_of(tenant.id) if not p.name.endswith(".json")]
    assert archives == sorted(names)[-2:]
    assert result.deleted_by_retention == [names[1]]
    assert result.kept == [names[3], names[2]]


async def test_bad_input_fails_with_typed_non_retryable_errors(temporal_env, task_queue, make_tenant):
    tenant = await make_tenant(entries=0)
    cases = [
        ({"tenant_id": "no-such-tenant"}, "TenantNotFound", "not in the catalog"),
        ({"tenant_id": "Bad;Id"}, "InvalidInput", "invalid tenant id"),
        ({"tenant_id": tenant.id, "keep": 0}, "InvalidInput", "--keep"),
        ({"tenant_id": tenant.id, "keep": -3}, "InvalidInput", "--keep"),
        ({"tenant_id": tenant.id, "compression": "gzip", "compression_level": 12}, "InvalidInput", "level"),
        ({"tenant_id": tenant.id, "compression_level": 23}, "InvalidInput", "level"),
    ]
    for kwargs, error_type, text in cases:
        with pytest.raises(WorkflowFailureError) as caught:
            await run_backup(temporal_env, task_queue, **kwargs)  # type: ignore[arg-type]
        assert failure_type(caught.value) == error_type, kwargs
        assert text in failure_message(caught.value)


async def test_missing_tenant_database_fails_and_deletes_nothing(
    temporal_env, task_queue, settings, make_tenant, backups_of
):
    tenant = await make_tenant(entries=20)
    first = await run_backup(temporal_env, task_queue, tenant.id, keep=1)
    with psycopg.connect(settings.effective_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(tenant.database_name)))
    with pytest.raises(WorkflowFailureError) as caught:
        await run_backup(temporal_env, task_queue, tenant.id, keep=1)
    assert failure_type(caught.value) == "TenantDatabaseMissing"
    # keep=1 would have deleted the first backup had retention run: it did not.
    assert [p.name for p in backups_of(tenant.id)] == [first.backup_name, first.backup_name + ".json"]
    assert os.path.exists(settings.storage_root / first.path)
