"""What a user trusts a backup tool for: cancellation leaves nothing behind, one operation per tenant at a time,
a bad archive never passes as a good one."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import ActivityEnvironment

from activities.backup import BackupActivities
from tenancy.contracts.backup import BackupManifest, BackupTenantInput, DumpResult
from tenancy.errors import failure_message, failure_type
from tenancy.search import tenant_attributes
from tests.blocking import partial_files, table_locked, wait_until
from workflows.backup_tenant import BackupTenantWorkflow


async def start_backup(env, queue, tenant_id, **kwargs):
    return await env.client.start_workflow(
        BackupTenantWorkflow.run,
        BackupTenantInput(tenant_id=tenant_id, **kwargs),
        id=f"backup-{tenant_id}-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
        search_attributes=tenant_attributes(tenant_id),
    )


def pg_dump_sessions(admin_url: str, dbname: str) -> int:
    with psycopg.connect(admin_url) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'tenant-lifecycle'",
            [dbname],
        ).fetchone()[0]


async def test_cancel_mid_dump_kills_pg_dump_and_leaves_no_partial_file(
    temporal_env, task_queue, settings, make_tenant, catalog, backups_of
):
    tenant = await make_tenant(entries=500)
    folder = settings.storage_root / "tenants" / tenant.id
    url = settings.effective_database_url
    with table_locked(url, tenant.database_name):
        handle = await start_backup(temporal_env, task_queue, tenant.id)
        # pg_dump is running and stuck behind our lock, its output file open under a partial name.
        await wait_until(lambda: partial_files(folder), what="the partial file")
        await wait_until(lambda: pg_dump_sessions(url, tenant.database_name) > 0, what="pg_dump's session")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as caught:
            await handle.result()
        assert isinstance(caught.value.cause, CancelledError)
    assert backups_of(tenant.id) == []
    assert pg_dump_sessions(url, tenant.database_name) == 0
    assert await catalog.lock_holder(tenant.id) is None


async def test_second_backup_of_a_busy_tenant_is_refused_then_serialized(
    temporal_env, task_queue, settings, make_tenant, catalog, backups_of
):
    tenant = await make_tenant(entries=100)
    url = settings.effective_database_url
    folder = settings.storage_root / "tenants" / tenant.id
    with table_locked(url, tenant.database_name):
        first = await start_backup(temporal_env, task_queue, tenant.id)
        await wait_until(lambda: partial_files(folder), what="the first dump")

        # Refused at once, naming the run that holds the tenant.
        with pytest.raises(WorkflowFailureError) as caught:
            await (await start_backup(temporal_env, task_queue, tenant.id)).result()
        assert failure_type(caught.value) == "TenantBusy"
        assert first.id in failure_message(caught.value)

        # Or, with a wait, serialized behind the first.
        waiting = await start_backup(temporal_env, task_queue, tenant.id, lock_wait_seconds=120)
    first_result = await first.result()
    second_result = await waiting.result()
    assert first_result.backup_name != second_result.backup_name
    archives = [p.name for p in backups_of(tenant.id) if p.suffix != ".json"]
    assert archives == sorted([first_result.backup_name, second_result.backup_name])
    assert await catalog.lock_holder(tenant.id) is None


async def test_lock_left_by_a_run_that_ended_is_taken_over(temporal_env, task_queue, make_tenant, catalog):
    tenant = await make_tenant(entries=10)
    # As if a run had been terminated while holding the lock and its history were gone: the row stays, its run
    # cannot be found (which alone proves nothing: tests/test_lock_namespaces.py), and its lease has run out.
    with psycopg.connect(
        psycopg.conninfo.make_conninfo(catalog.admin_url, dbname=catalog.settings.catalog_database)
    ) as c:
        c.execute(
            "INSERT INTO tenant_locks (tenant_id, operation, workflow_id, run_id, lease_until) "
            "VALUES (%s, 'backup', %s, %s, now() - interval '1 minute')",
            [tenant.id, "backup-ghost-run", str(uuid.uuid4())],
        )
    result = await (await start_backup(temporal_env, task_queue, tenant.id)).result()
    assert result.backup_name
    assert await catalog.lock_holder(tenant.id) is None


@pytest.fixture
async def verified_backup(temporal_env, task_queue, settings, make_tenant):
    tenant = await make_tenant(entries=200)
    result = await (await start_backup(temporal_env, task_queue, tenant.id)).result()
    path = settings.storage_root / result.path
    manifest = BackupManifest.model_validate_json(path.with_name(path.name + ".json").read_text())
    return path, DumpResult.model_validate(
        manifest.model_dump(exclude={"verified", "verified_at", "toc_entries", "workflow_id"})
    )


async def test_corrupted_archive_fails_verification(settings, verified_backup):
    path, dump = verified_backup
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(BackupActivities(settings).verify_backup, dump)
    assert caught.value.type == "BackupVerificationFailed" and caught.value.non_retryable
    assert "does not match" in caught.value.message


async def test_archive_pg_restore_cannot_read_fails_verification_even_with_matching_checksum(settings, verified_backup):
    import hashlib

    path, dump = verified_backup
    garbage = b"PGDMP" + b"\x00" * 64 + path.read_bytes()[200:]
    path.write_bytes(garbage)
    dump = dump.model_copy(update={"size_bytes": len(garbage), "sha256": hashlib.sha256(garbage).hexdigest()})
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(BackupActivities(settings).verify_backup, dump)
    assert caught.value.type == "BackupVerificationFailed"
    assert "pg_restore cannot read" in caught.value.message
