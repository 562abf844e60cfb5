"""`tenants export`, `tenants import`, `tenants clone`: real PostgreSQL, real workflows, real files and S3 (moto)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import re
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import boto3
import psycopg
import pytest
from google.protobuf.duration_pb2 import Duration
from psycopg.conninfo import make_conninfo
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.infra.catalog import Catalog
from activities.infra.credentials import read_credentials
from activities.infra.manifest_signing import create_key_file, read_keyring
from activities.infra.storage import open_storage
from activities.infra.temporal import ensure_search_attributes
from tenancy.contracts.provision import ProvisionTenantInput
from tenancy.contracts.transfer import CloneTenantInput, ExportTenantInput, ImportTenantInput
from tenancy.errors import InvalidInput, failure_message, failure_type
from tenancy.settings import Settings
from tenancy.transfer import (
    SUMS,
    SUMS_SIG,
    TENANT_JSON,
    check_schema_version,
    check_sums,
    parse_sums,
    sums_text,
    validate_location,
    validate_mask_sql,
)
from tests.cli import cli_environment, tenants
from tests.recording import RECORD, save_history
from worker import build_worker
from workflows.provision_tenant import ProvisionTenantWorkflow
from workflows.transfer import CloneTenantWorkflow, ExportTenantWorkflow, ImportTenantWorkflow

PROJECTS = 40
ENTRIES = 120


async def run(client: Client, queue: str, workflow, arg, kind: str = "t"):
    return await client.execute_workflow(workflow, arg, id=f"{kind}-{uuid.uuid4().hex[:8]}", task_queue=queue)


def _url(settings: Settings, database: str, **extra: str) -> str:
    return make_conninfo(settings.effective_database_url, dbname=database, **extra)


def query(settings: Settings, database: str, text: str) -> list[tuple]:
    with psycopg.connect(_url(settings, database), autocommit=True) as conn:
        return conn.execute(text).fetchall()


def execute(settings: Settings, database: str, text: str) -> None:
    with psycopg.connect(_url(settings, database), autocommit=True) as conn:
        conn.execute(text.encode())


def counts(settings: Settings, database: str) -> dict[str, int]:
    return {t: query(settings, database, f"SELECT count(*) FROM {t}")[0][0] for t in ("projects", "time_entries")}


async def provisioned(client: Client, queue: str, settings: Settings, tag: str) -> tuple[str, str]:
    """A tenant made the way users make them (a role, migrations), with a few rows of its own."""
    tenant_id = f"{tag}-{uuid.uuid4().hex[:6]}"
    result = await run(
        client,
        queue,
        ProvisionTenantWorkflow.run,
        ProvisionTenantInput(
            name=f"Tenant {tenant_id}",
            plan="pro",
            owner_email=f"{tenant_id}@example.com",
            tenant_id=tenant_id,
            settings={"timezone": "Europe/Madrid", "language": "es"},
        ),
        "provision",
    )
    execute(
        settings,
        result.database_name,
        f"INSERT INTO projects (name) SELECT 'customer ' || g || ' <c' || g || '@mail.example>' "
        f"FROM generate_series(1, {PROJECTS - 1}) g; "
        f"INSERT INTO time_entries (project_id, started_at, minutes, note) "
        f"SELECT 1 + g % {PROJECTS}, now(), g, 'note ' || g FROM generate_series(1, {ENTRIES}) g",
    )
    return tenant_id, result.database_name


@pytest.fixture
async def second_installation(
    temporal_env, settings: Settings, tmp_path: Path
) -> AsyncIterator[tuple[Client, Settings, str]]:
    """Another installation on the same PostgreSQL server: a catalog, storage, secrets, signing key and Temporal
    namespace of its own, and a worker of its own."""
    unique = uuid.uuid4().hex[:6]
    namespace = f"tl-b-{unique}"
    await temporal_env.client.workflow_service.register_namespace(
        RegisterNamespaceRequest(namespace=namespace, workflow_execution_retention_period=Duration(seconds=86_400))
    )
    target = temporal_env.client.service_client.config.target_host
    client = await Client.connect(target, namespace=namespace, data_converter=pydantic_data_converter)
    for _ in range(50):  # a namespace just registered takes a moment to be served
        with contextlib.suppress(Exception):
            await ensure_search_attributes(client, namespace)
            break
        await asyncio.sleep(0.2)
    key_file = tmp_path / "b-keys"
    create_key_file(key_file)
    other = settings.model_copy(
        update={
            "catalog_database": f"{settings.database_prefix}cat{unique}",
            "storage_url": str(tmp_path / "b-backups"),
            "secrets_dir": tmp_path / "b-secrets",
            "state_dir": tmp_path / "b-state",
            "temporal_namespace": namespace,
            "backup_signing_key_file": key_file,
        }
    )
    await Catalog(other).migrate()
    queue = f"tq-b-{unique}"
    async with build_worker(client, other, queue):
        yield client, other, queue


@pytest.fixture
async def signing_installation(temporal_env, settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """The session's installation with a signing key of its own (every backup it takes is signed)."""
    key_file = tmp_path / "a-keys"
    create_key_file(key_file)
    queue = f"tq-a-{uuid.uuid4().hex[:8]}"
    async with build_worker(
        temporal_env.client, settings.model_copy(update={"backup_signing_key_file": key_file}), queue
    ):
        yield queue, key_file


async def test_export_imports_into_another_installation(
    temporal_env, settings, signing_installation, second_installation, tmp_path
):
    queue, a_keys = signing_installation
    b_client, b_settings, b_queue = second_installation
    source_id, source_db = await provisioned(temporal_env.client, queue, settings, "exp")
    before = counts(settings, source_db)
    export = tmp_path / "acme.tenant"

    exported = await run(
        temporal_env.client, queue, ExportTenantWorkflow.run, ExportTenantInput(tenant_id=source_id, output=str(export))
    )
    assert export.is_file() and exported.size_bytes == export.stat().st_size
    with tarfile.open(export) as tar:
        names = tar.getnames()
        document = json.loads(tar.extractfile(TENANT_JSON).read())
    # Signed installation: SHA256SUMS carries its signature (tenant.json is as authentic as the manifest).
    assert names[0] == TENANT_JSON and names[-2:] == [SUMS, SUMS_SIG] and len(names) == 5
    assert document["tenant"]["id"] == source_id and document["schema_version"] == "0003_activity_log"
    assert document["source"]["catalog_database"] == settings.catalog_database

    # The other installation does not know the exporting key yet: refused, nothing created.
    new_id = f"imp-{uuid.uuid4().hex[:6]}"
    with pytest.raises(WorkflowFailureError) as refused:
        await run(b_client, b_queue, ImportTenantWorkflow.run, ImportTenantInput(source=str(export), tenant_id=new_id))
    assert failure_type(refused.value) == "BackupNotAuthentic", failure_message(refused.value)
    assert await Catalog(b_settings).get_tenant(new_id) is None

    # Its key added as a verify-only line (after this installation's own signing key).
    with b_settings.backup_signing_key_file.open("a") as handle:
        handle.write(read_keyring(a_keys).signing.line() + "\n")
    result = await run(
        b_client, b_queue, ImportTenantWorkflow.run, ImportTenantInput(source=str(export), tenant_id=new_id)
    )
    assert result.source_tenant_id == source_id and result.database_name != source_db
    assert counts(settings, result.database_name) == before
    assert query(settings, result.database_name, "SELECT id, name FROM projects ORDER BY id") == query(
        settings, source_db, "SELECT id, name FROM projects ORDER BY id"
    )
    new = await Catalog(b_settings).get_tenant(new_id)
    assert new is not None and new.status == "active"
    assert new.settings == {"timezone": "Europe/Madrid", "language": "es"}
    assert await Catalog(settings).get_tenant(new_id) is None  # the exporting catalog knows nothing of it

    # The new role logs in with its new credentials; the source's role cannot reach the new database.
    creds = read_credentials(b_settings.effective_secrets_dir, new_id)
    assert creds["role"] != (await Catalog(settings).get_tenant(source_id)).role_name
    with psycopg.connect(_url(settings, result.database_name, user=creds["role"], password=creds["password"])) as conn:
        assert conn.execute("SELECT count(*) FROM projects").fetchone() == (before["projects"],)
        conn.execute("INSERT INTO projects (name) VALUES ('written by the new role')")
    old = read_credentials(settings.effective_secrets_dir, source_id)  # the source's role, its real password
    with psycopg.connect(_url(settings, source_db, user=old["role"], password=old["password"])):
        pass
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(_url(settings, result.database_name, user=old["role"], password=old["password"])).close()

    # The import is a backup of the new tenant there, signed by that installation's own key, saying whence.
    storage = open_storage(b_settings)
    backups = storage.list_backups(new_id)
    assert backups == [result.backup_name]
    manifest = storage.read_manifest(new_id, result.backup_name)
    assert manifest is not None and manifest.key_id == read_keyring(b_settings.backup_signing_key_file).signing.key_id
    assert manifest.imported_from == {
        "tenant": source_id,
        "installation": f"{settings.temporal_namespace}/{settings.catalog_database}",
        "backup": exported.backup_name,
    }


def _rewrite(export: Path, target: Path, change) -> None:
    """A copy of the export with one member's bytes changed by `change(name, data)` (SHA256SUMS kept as was)."""
    with tarfile.open(export) as src, tarfile.open(target, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            data = change(member.name, data)
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))


async def test_tampered_and_newer_exports_are_refused_with_nothing_created(
    temporal_env, settings, task_queue, tmp_path, catalog
):
    source_id, _ = await provisioned(temporal_env.client, task_queue, settings, "tam")
    export = tmp_path / "t.tenant"
    await run(
        temporal_env.client,
        task_queue,
        ExportTenantWorkflow.run,
        ExportTenantInput(tenant_id=source_id, output=str(export)),
    )

    def flip_archive(name: str, data: bytes) -> bytes:
        if name.startswith("database/") and not name.endswith(".json"):
            return data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
        return data

    def edit_plan(name: str, data: bytes) -> bytes:
        if name == TENANT_JSON:
            document = json.loads(data)
            document["tenant"]["plan"] = "business"
            return json.dumps(document).encode()
        return data

    cases = {
        "flipped": (flip_archive, "archive.*checksum|fails its checksum"),
        "edited": (edit_plan, "tenant.json fails its checksum"),
    }
    for case, (change, said) in cases.items():
        bad = tmp_path / f"{case}.tenant"
        _rewrite(export, bad, change)
        new_id = f"bad-{uuid.uuid4().hex[:6]}"
        with pytest.raises(WorkflowFailureError) as refused:
            await run(
                temporal_env.client,
                task_queue,
                ImportTenantWorkflow.run,
                ImportTenantInput(source=str(bad), tenant_id=new_id),
            )
        message = failure_message(refused.value)
        assert failure_type(refused.value) == "ExportRejected", message
        assert re.search(said, message), message
        assert await catalog.get_tenant(new_id) is None
        assert not query(settings, "postgres", f"SELECT 1 FROM pg_database WHERE datname LIKE '%{new_id}%'")

    # A consistent file (checksums recomputed) of a newer tenant schema version: refused in one clear line.
    newer = tmp_path / "newer.tenant"
    with tarfile.open(export) as src:
        members = {m.name: src.extractfile(m).read() for m in src.getmembers()}
    document = json.loads(members[TENANT_JSON])
    document["schema_version"] = "9999_from_the_future"
    members[TENANT_JSON] = json.dumps(document).encode()
    members[SUMS] = sums_text({n: hashlib.sha256(d).hexdigest() for n, d in members.items() if n != SUMS}).encode()
    with tarfile.open(newer, "w") as dst:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    new_id = f"new-{uuid.uuid4().hex[:6]}"
    with pytest.raises(WorkflowFailureError) as refused:
        await run(
            temporal_env.client,
            task_queue,
            ImportTenantWorkflow.run,
            ImportTenantInput(source=str(newer), tenant_id=new_id),
        )
    message = failure_message(refused.value)
    assert "9999_from_the_future" in message and "newer than this installation" in message, message
    assert await catalog.get_tenant(new_id) is None


async def test_clone_masks_the_copy_and_leaves_the_source(temporal_env, settings, task_queue, catalog):
    source_id, source_db = await provisioned(temporal_env.client, task_queue, settings, "cln")
    source_rows = query(settings, source_db, "SELECT id, name FROM projects ORDER BY id")
    before = counts(settings, source_db)
    new_id = f"cl-{uuid.uuid4().hex[:6]}"
    mask = "UPDATE projects SET name = 'project ' || id;\nUPDATE time_entries SET note = NULL;\n"

    result = await run(
        temporal_env.client,
        task_queue,
        CloneTenantWorkflow.run,
        CloneTenantInput(tenant_id=source_id, new_tenant_id=new_id, mask_sql=mask),
        "clone",
    )
    assert result.masked and counts(settings, result.database_name) == before
    cloned = query(settings, result.database_name, "SELECT id, name FROM projects ORDER BY id")
    assert [i for i, _ in cloned] == [i for i, _ in source_rows]
    assert all(name == f"project {i}" for i, name in cloned)
    assert all(old != new for (_, old), (_, new) in zip(source_rows, cloned, strict=True))  # every row changed
    assert query(settings, result.database_name, "SELECT count(note) FROM time_entries") == [(0,)]
    assert query(settings, source_db, "SELECT id, name FROM projects ORDER BY id") == source_rows  # untouched
    new = await catalog.get_tenant(new_id)
    assert (
        new is not None and new.status == "active" and new.settings == {"timezone": "Europe/Madrid", "language": "es"}
    )

    # Masking SQL that tries more than the tenant's role may, or ends its transaction, or deletes rows: refused,
    # and the half-made clone is undone (no database, no role, no backup; the id free for another try).
    bad_masks = {
        "ALTER ROLE postgres PASSWORD 'owned'": ("MaskingFailed", "must be superuser|permission denied"),
        "UPDATE projects SET name = 'x'; COMMIT; UPDATE projects SET name = 'y'": ("MaskingFailed", "transaction"),
        "DELETE FROM time_entries WHERE id % 2 = 0": ("RestoreVerificationFailed", "row counts differ"),
    }
    for mask_sql, (kind, said) in bad_masks.items():
        bad_id = f"cl-{uuid.uuid4().hex[:6]}"
        with pytest.raises(WorkflowFailureError) as refused:
            await run(
                temporal_env.client,
                task_queue,
                CloneTenantWorkflow.run,
                CloneTenantInput(tenant_id=source_id, new_tenant_id=bad_id, mask_sql=mask_sql),
                "clone",
            )
        message = failure_message(refused.value)
        assert failure_type(refused.value) == kind and re.search(said, message), message
        failed = await catalog.get_tenant(bad_id)
        assert failed is not None and failed.status == "failed"
        assert not query(settings, "postgres", f"SELECT 1 FROM pg_database WHERE datname LIKE '%{bad_id}%'")
        assert not query(settings, "postgres", f"SELECT 1 FROM pg_roles WHERE rolname LIKE '%{bad_id}%'")
        assert open_storage(settings).list_backups(bad_id) == []
    assert query(settings, source_db, "SELECT id, name FROM projects ORDER BY id") == source_rows


def one_error(stderr: str) -> str:
    """The error the command line printed: one line, no traceback (progress phases may come before it)."""
    errors = [line for line in stderr.splitlines() if line.startswith("tenants: error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


async def test_export_and_import_through_s3_from_the_command_line(
    temporal_env, settings, task_queue, s3_endpoint, tmp_path
):
    bucket = f"exports-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    source_id, source_db = await provisioned(temporal_env.client, task_queue, settings, "s3x")
    before = counts(settings, source_db)
    s3 = {"s3_endpoint_url": s3_endpoint, "s3_part_size_mb": 5}
    queue = f"tq-s3-{uuid.uuid4().hex[:8]}"
    async with build_worker(temporal_env.client, settings.model_copy(update=s3), queue):
        env = cli_environment(temporal_env, settings, queue)
        env["TENANTS_S3_ENDPOINT_URL"] = s3_endpoint
        location = f"s3://{bucket}/exports/{source_id}.tenant"
        done = await tenants(env, "export", source_id, "--output", location, "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout[done.stdout.index("{") :])["output"] == location
        new_id = f"s3i-{uuid.uuid4().hex[:6]}"
        done = await tenants(env, "import", location, "--id", new_id, "--owner", "staging@example.com")
        assert done.returncode == 0, done.stderr
        assert f"{source_id} → {new_id}" in done.stdout
        new = await Catalog(settings).get_tenant(new_id)
        assert new is not None and new.owner_email == "staging@example.com"
        assert counts(settings, new.database_name) == before
        # The same id again: one clear line, a non-zero exit.
        again = await tenants(env, "import", location, "--id", new_id)
        assert again.returncode == 2 and "already exists" in one_error(again.stderr)
        missing = await tenants(env, "import", f"s3://{bucket}/nothing.tenant", "--id", f"x-{uuid.uuid4().hex[:6]}")
        assert missing.returncode != 0 and "does not exist" in one_error(missing.stderr)

        # A clone from the command line, masked by a file's SQL; a mask file that is not there is one line.
        mask = tmp_path / "mask.sql"
        mask.write_text("UPDATE projects SET name = 'masked';\n")
        clone_id = f"s3c-{uuid.uuid4().hex[:6]}"
        done = await tenants(env, "clone", source_id, "--id", clone_id, "--mask", str(mask), "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout[done.stdout.index("{") :])["masked"] is True
        clone = await Catalog(settings).get_tenant(clone_id)
        assert clone is not None
        assert query(settings, clone.database_name, "SELECT DISTINCT name FROM projects") == [("masked",)]
        nothing = await tenants(env, "clone", source_id, "--id", f"x-{uuid.uuid4().hex[:6]}", "--mask", "/no/such.sql")
        assert nothing.returncode == 2 and "cannot read --mask" in one_error(nothing.stderr)


@pytest.mark.one_server
async def test_clone_and_import_onto_another_server(temporal_env, multi_settings, second_pg_url, tmp_path):
    queue = f"tq-m-{uuid.uuid4().hex[:8]}"
    async with build_worker(temporal_env.client, multi_settings, queue):
        client = temporal_env.client
        source_id = f"mv-{uuid.uuid4().hex[:6]}"
        source = await run(
            client,
            queue,
            ProvisionTenantWorkflow.run,
            ProvisionTenantInput(
                name="Multi", plan="pro", owner_email=f"{source_id}@example.com", tenant_id=source_id, server="default"
            ),
        )
        execute(
            multi_settings,
            source.database_name,
            "INSERT INTO projects (name) SELECT 'p' || g FROM generate_series(1, 30) g",
        )
        before = counts(multi_settings, source.database_name)

        def on_b(database: str, text: str) -> list[tuple]:
            with psycopg.connect(make_conninfo(second_pg_url, dbname=database), autocommit=True) as conn:
                return conn.execute(text).fetchall()

        cloned = await run(
            client,
            queue,
            CloneTenantWorkflow.run,
            CloneTenantInput(
                tenant_id=source_id,
                new_tenant_id=f"mvc-{uuid.uuid4().hex[:6]}",
                server="pg-b",
                mask_sql="UPDATE projects SET name = md5(name)",
            ),
        )
        catalog = Catalog(multi_settings)
        assert (await catalog.get_tenant(cloned.tenant_id)).server == "pg-b"
        assert on_b(cloned.database_name, "SELECT count(*) FROM projects WHERE name LIKE 'p%'") == [(0,)]
        assert on_b(cloned.database_name, "SELECT count(*) FROM projects") == [(before["projects"],)]

        export = tmp_path / "multi.tenant"
        await run(client, queue, ExportTenantWorkflow.run, ExportTenantInput(tenant_id=source_id, output=str(export)))
        imported = await run(
            client,
            queue,
            ImportTenantWorkflow.run,
            ImportTenantInput(source=str(export), tenant_id=f"mvi-{uuid.uuid4().hex[:6]}", server="pg-b"),
        )
        assert (await catalog.get_tenant(imported.tenant_id)).server == "pg-b"
        assert on_b(imported.database_name, "SELECT count(*) FROM projects") == [(before["projects"],)]


def test_the_export_rules():
    versions = ["0001_projects", "0002_time_entries", "0003_activity_log"]
    check_schema_version("0002_time_entries", versions)  # older: imported, then migrated
    check_schema_version(None, versions)
    with pytest.raises(InvalidInput, match="newer than this installation's"):
        check_schema_version("0004_invoices", versions)
    with pytest.raises(InvalidInput, match="do not include"):
        check_schema_version("0002_other", versions)
    sums = {"tenant.json": "a" * 64, "database/x": "b" * 64}
    assert parse_sums(sums_text(sums)) == sums
    check_sums(sums, {**sums, SUMS: "c" * 64})
    with pytest.raises(InvalidInput, match="database/x fails its checksum"):
        check_sums(sums, {"tenant.json": "a" * 64, "database/x": "d" * 64, SUMS: "c" * 64})
    with pytest.raises(InvalidInput, match="the file holds"):
        check_sums(sums, {"tenant.json": "a" * 64, SUMS: "c" * 64})
    assert validate_location("s3://bucket/a/b.tenant") == "s3://bucket/a/b.tenant"
    for bad in ("relative.tenant", "s3://bucket", "s3://bucket/", "/folder/"):
        with pytest.raises(InvalidInput):
            validate_location(bad)
    validate_mask_sql("UPDATE t SET a = 1")
    with pytest.raises(InvalidInput, match="at most"):
        validate_mask_sql("-- x\n" * 60_000)
    with pytest.raises(InvalidInput, match="empty"):
        validate_mask_sql("  \n")


@pytest.mark.skipif(not RECORD, reason="records the histories only when TENANTS_RECORD_HISTORIES=1")
async def test_record_transfer_histories(temporal_env, settings, task_queue, tmp_path):
    """Histories of the transfer workflows for tests/test_replay.py: an export, an import, a masked clone, and a
    clone whose masking fails (the undo of a new tenant)."""
    client = temporal_env.client
    source_id, _ = await provisioned(client, task_queue, settings, "rec")
    export = tmp_path / "rec.tenant"
    runs = [
        (ExportTenantWorkflow.run, ExportTenantInput(tenant_id=source_id, output=str(export)), True),
        (
            ImportTenantWorkflow.run,
            ImportTenantInput(source=str(export), tenant_id=f"reci-{uuid.uuid4().hex[:6]}"),
            True,
        ),
        (
            CloneTenantWorkflow.run,
            CloneTenantInput(
                tenant_id=source_id,
                new_tenant_id=f"recc-{uuid.uuid4().hex[:6]}",
                mask_sql="UPDATE projects SET name = 'x'",
            ),
            True,
        ),
        (
            CloneTenantWorkflow.run,
            CloneTenantInput(tenant_id=source_id, new_tenant_id=f"recf-{uuid.uuid4().hex[:6]}", mask_sql="SELECT 1/0"),
            False,
        ),
    ]
    for run_, arg, succeeds in runs:
        handle = await client.start_workflow(run_, arg, id=f"replay-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
        if succeeds:
            await handle.result()
        else:
            with pytest.raises(WorkflowFailureError):
                await handle.result()
        save_history(await handle.fetch_history(), run_.__qualname__.split(".")[0])


async def test_a_retried_export_step_finds_its_own_file_and_refuses_anyone_elses(
    temporal_env, settings, task_queue, tmp_path
):
    """A worker dying after the export file appeared and before the step reported: the retry finds the complete
    file of the same backup and succeeds; a file of another export at the location is never overwritten."""
    from temporalio.exceptions import ApplicationError
    from temporalio.testing import ActivityEnvironment

    from activities.transfer import TransferActivities
    from tenancy.contracts.transfer import WriteExportRequest

    source_id, _ = await provisioned(temporal_env.client, task_queue, settings, "rtr")
    export = tmp_path / "r.tenant"
    first = await run(
        temporal_env.client,
        task_queue,
        ExportTenantWorkflow.run,
        ExportTenantInput(tenant_id=source_id, output=str(export)),
    )
    before = export.read_bytes()
    activities = TransferActivities(settings)
    again = await ActivityEnvironment().run(
        activities.write_export,
        WriteExportRequest(tenant_id=source_id, backup_name=first.backup_name, output=str(export)),
    )
    assert (again.sha256, again.size_bytes) == (first.sha256, first.size_bytes)
    assert export.read_bytes() == before

    second = await run(
        temporal_env.client,
        task_queue,
        ExportTenantWorkflow.run,
        ExportTenantInput(tenant_id=source_id, output=str(tmp_path / "other.tenant")),
    )
    with pytest.raises(ApplicationError, match="exists: not overwritten"):
        await ActivityEnvironment().run(
            activities.write_export,
            WriteExportRequest(tenant_id=source_id, backup_name=second.backup_name, output=str(export)),
        )
    assert export.read_bytes() == before


def _members(export: Path) -> dict[str, bytes]:
    with tarfile.open(export) as src:
        return {m.name: src.extractfile(m).read() for m in src.getmembers()}  # type: ignore[union-attr]


def _write_members(target: Path, members: dict[str, bytes], resum: bool = True) -> None:
    """An export file of these members, SHA256SUMS recomputed (as anyone editing the file can)."""
    if resum:
        listed = {n: hashlib.sha256(d).hexdigest() for n, d in members.items() if n not in (SUMS, SUMS_SIG)}
        members = {**members, SUMS: sums_text(listed).encode()}
        members = {n: members[n] for n in sorted(members, key=lambda n: (n == SUMS_SIG, n == SUMS))}
    with tarfile.open(target, "w") as dst:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))


async def test_an_edited_tenant_json_with_recomputed_sums_is_refused(
    temporal_env, settings, signing_installation, tmp_path, catalog
):
    """SHA256SUMS is signed: editing tenant.json (a better plan, another owner) and recomputing the checksums is
    refused, as is dropping the signature; nothing is created."""
    queue, _ = signing_installation
    source_id, _ = await provisioned(temporal_env.client, queue, settings, "sig")
    export = tmp_path / "s.tenant"
    await run(
        temporal_env.client, queue, ExportTenantWorkflow.run, ExportTenantInput(tenant_id=source_id, output=str(export))
    )
    members = _members(export)
    assert json.loads(members[SUMS_SIG])["key_id"]
    document = json.loads(members[TENANT_JSON])
    document["tenant"]["plan"] = "business"
    document["tenant"]["owner_email"] = "attacker@example.com"
    edited = {**members, TENANT_JSON: json.dumps(document).encode()}
    cases = {
        "resummed": (edited, "does not match its signature"),
        "unsigned": ({n: d for n, d in edited.items() if n != SUMS_SIG}, "is not signed"),
    }
    for case, (changed, said) in cases.items():
        bad = tmp_path / f"{case}.tenant"
        _write_members(bad, changed)
        new_id = f"sg-{uuid.uuid4().hex[:6]}"
        with pytest.raises(WorkflowFailureError) as refused:
            await run(
                temporal_env.client,
                queue,
                ImportTenantWorkflow.run,
                ImportTenantInput(source=str(bad), tenant_id=new_id),
            )
        message = failure_message(refused.value)
        assert failure_type(refused.value) == "BackupNotAuthentic" and said in message, message
        assert "\n" not in message
        assert await catalog.get_tenant(new_id) is None
        assert not query(settings, "postgres", f"SELECT 1 FROM pg_database WHERE datname LIKE '%{new_id}%'")
    # The untouched file imports.
    done = await run(
        temporal_env.client,
        queue,
        ImportTenantWorkflow.run,
        ImportTenantInput(source=str(export), tenant_id=f"sg-{uuid.uuid4().hex[:6]}"),
    )
    assert (await catalog.get_tenant(done.tenant_id)).plan == "pro"


async def test_an_unknown_compression_is_refused_before_anything_is_created(
    temporal_env, settings, task_queue, tmp_path, catalog
):
    source_id, _ = await provisioned(temporal_env.client, task_queue, settings, "cmp")
    export = tmp_path / "c.tenant"
    await run(
        temporal_env.client,
        task_queue,
        ExportTenantWorkflow.run,
        ExportTenantInput(tenant_id=source_id, output=str(export)),
    )
    members = _members(export)
    name = next(n for n in members if n.startswith("database/") and n.endswith(".json"))
    manifest = json.loads(members[name])
    manifest["compression"] = "brotli"
    bad = tmp_path / "brotli.tenant"
    _write_members(bad, {**members, name: json.dumps(manifest).encode()})
    new_id = f"cm-{uuid.uuid4().hex[:6]}"
    with pytest.raises(WorkflowFailureError) as refused:
        await run(
            temporal_env.client,
            task_queue,
            ImportTenantWorkflow.run,
            ImportTenantInput(source=str(bad), tenant_id=new_id),
        )
    message = failure_message(refused.value)
    assert failure_type(refused.value) == "ExportRejected" and "'brotli'" in message, message
    assert await catalog.get_tenant(new_id) is None


def test_a_symlink_at_the_partial_name_is_never_written_through(settings, tmp_path):
    """A link planted where exports used to write their partial file leaves its target alone; two writers to
    one path never share a temp file."""
    from activities.infra.export_file import open_output
    from tenancy.naming import partial_name

    victim = tmp_path / "victim.conf"
    victim.write_text("precious\n")
    final = tmp_path / "x.tenant"
    planted = tmp_path / partial_name(final.name)
    planted.symlink_to(victim)
    with open_output(settings, str(final)) as sink:
        sink.write(b"export bytes")
    assert final.read_bytes() == b"export bytes"
    assert victim.read_text() == "precious\n"
    assert planted.is_symlink()
    # A failed write leaves no partial file of its own behind.
    other = tmp_path / "y.tenant"
    with pytest.raises(RuntimeError), open_output(settings, str(other)) as sink:
        sink.write(b"half")
        raise RuntimeError("boom")
    assert not other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([victim.name, final.name, planted.name])


async def test_a_masked_clone_keeps_no_unmasked_copy(temporal_env, settings, task_queue, catalog, tmp_path):
    """The clone's only backup is of its masked database: the source's unmasked archive it was restored from is
    gone from storage and the catalog, and restoring the clone from its backups never brings the data back."""
    from tenancy.contracts.restore import RestoreTenantInput
    from workflows.restore_tenant import RestoreTenantWorkflow

    source_id, source_db = await provisioned(temporal_env.client, task_queue, settings, "pii")
    marker = f"PII-{uuid.uuid4().hex}"
    execute(settings, source_db, f"UPDATE projects SET name = '{marker}' WHERE id = 1")
    new_id = f"pm-{uuid.uuid4().hex[:6]}"
    result = await run(
        temporal_env.client,
        task_queue,
        CloneTenantWorkflow.run,
        CloneTenantInput(tenant_id=source_id, new_tenant_id=new_id, mask_sql="UPDATE projects SET name = 'p' || id"),
        "clone",
    )
    storage = open_storage(settings)
    kept = storage.list_backups(new_id)
    assert kept == [result.backup_name], kept
    listed = query(settings, settings.catalog_database, f"SELECT name FROM backups WHERE tenant_id = '{new_id}'")
    assert [r[0] for r in listed] in ([], [result.backup_name]), listed
    for name in kept:
        await run(
            temporal_env.client,
            task_queue,
            RestoreTenantWorkflow.run,
            RestoreTenantInput(tenant_id=new_id, backup_name=name, keep_previous_seconds=0),
            "restore",
        )
        database = (await catalog.get_tenant(new_id)).database_name
        assert query(settings, database, f"SELECT count(*) FROM projects WHERE name = '{marker}'") == [(0,)]
        assert counts(settings, database) == counts(settings, source_db)
    assert query(settings, source_db, f"SELECT count(*) FROM projects WHERE name = '{marker}'") == [(1,)]
    # A restored tenant (its ledger owned by its restores' owner role) still exports.
    exported = await run(
        temporal_env.client,
        task_queue,
        ExportTenantWorkflow.run,
        ExportTenantInput(tenant_id=new_id, output=str(tmp_path / "clone.tenant")),
    )
    assert exported.schema_version == "0003_activity_log"


async def test_a_tenants_code_never_runs_as_the_admin(temporal_env, settings, task_queue, tmp_path, catalog):
    """A view planted as the migration ledger is not read by the export (its function would run as the admin); a
    restored database carrying triggers is not migrated by the import, which is undone."""
    source_id, source_db = await provisioned(temporal_env.client, task_queue, settings, "evl")
    owner = (await catalog.get_tenant(source_id)).role_name
    execute(
        settings,
        source_db,
        "ALTER TABLE tenant_schema_migrations RENAME TO ledger_copy; "
        "CREATE VIEW tenant_schema_migrations AS SELECT * FROM ledger_copy; "
        f'ALTER VIEW tenant_schema_migrations OWNER TO "{owner}"',
    )
    with pytest.raises(WorkflowFailureError) as refused:
        await run(
            temporal_env.client,
            task_queue,
            ExportTenantWorkflow.run,
            ExportTenantInput(tenant_id=source_id, output=str(tmp_path / "v.tenant")),
        )
    message = failure_message(refused.value)
    assert failure_type(refused.value) == "ExportRejected" and "not a plain table" in message, message
    assert not (tmp_path / "v.tenant").exists()

    execute(
        settings,
        source_db,
        "DROP VIEW tenant_schema_migrations; ALTER TABLE ledger_copy RENAME TO tenant_schema_migrations; "
        "CREATE FUNCTION public.stamp() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$; "
        "CREATE TRIGGER stamp BEFORE INSERT ON projects FOR EACH ROW EXECUTE FUNCTION public.stamp(); "
        f'ALTER FUNCTION public.stamp() OWNER TO "{owner}"',
    )
    export = tmp_path / "t.tenant"
    await run(
        temporal_env.client,
        task_queue,
        ExportTenantWorkflow.run,
        ExportTenantInput(tenant_id=source_id, output=str(export)),
    )
    new_id = f"ev-{uuid.uuid4().hex[:6]}"
    with pytest.raises(WorkflowFailureError) as refused:
        await run(
            temporal_env.client,
            task_queue,
            ImportTenantWorkflow.run,
            ImportTenantInput(source=str(export), tenant_id=new_id),
        )
    message = failure_message(refused.value)
    assert failure_type(refused.value) == "ExportRejected" and "has triggers" in message, message
    failed = await catalog.get_tenant(new_id)
    assert failed is not None and failed.status == "failed"
    assert not query(settings, "postgres", f"SELECT 1 FROM pg_database WHERE datname LIKE '%{new_id}%'")


async def test_export_and_clone_are_refused_up_front_with_tenant_keys(temporal_env, settings, task_queue, catalog):
    source_id, _ = await provisioned(temporal_env.client, task_queue, settings, "tky")
    queue = f"tq-k-{uuid.uuid4().hex[:8]}"
    import pyrage

    keys_on = {"tenant_keys": True, "age_recipients": [str(pyrage.x25519.Identity.generate().to_public())]}
    async with build_worker(temporal_env.client, settings.model_copy(update=keys_on), queue):
        for workflow_run, arg in (
            (ExportTenantWorkflow.run, ExportTenantInput(tenant_id=source_id, output="/tmp/never.tenant")),
            (CloneTenantWorkflow.run, CloneTenantInput(tenant_id=source_id, new_tenant_id=f"k-{uuid.uuid4().hex[:6]}")),
        ):
            with pytest.raises(WorkflowFailureError) as refused:
                await run(temporal_env.client, queue, workflow_run, arg)
            message = failure_message(refused.value)
            assert failure_type(refused.value) == "ExportRejected" and "TENANTS_TENANT_KEYS" in message, message
    assert open_storage(settings).list_backups(source_id) == []


async def test_an_unknown_server_is_refused_before_anything_starts(temporal_env, settings, task_queue, tmp_path):
    env = cli_environment(temporal_env, settings, task_queue)
    for command in (
        ["import", str(tmp_path / "none.tenant"), "--id", f"sv-{uuid.uuid4().hex[:6]}", "--server", "nope"],
        ["clone", "someone", "--id", f"sv-{uuid.uuid4().hex[:6]}", "--server", "nope"],
    ):
        done = await tenants(env, *command)
        assert done.returncode == 2 and "no server named 'nope'" in one_error(done.stderr), done.stderr
