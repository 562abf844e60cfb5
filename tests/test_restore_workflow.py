"""RestoreTenantWorkflow: round trip, refusals that change nothing, open sessions, failed checks."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from temporalio.client import WorkflowFailureError

from starter.demo import table_fingerprint
from tenancy.contracts.backup import BackupTenantInput
from tenancy.contracts.restore import RestoreTenantInput
from tenancy.errors import failure_message, failure_type
from tenancy.search import tenant_attributes
from workflows.backup_tenant import BackupTenantWorkflow
from workflows.restore_tenant import RestoreTenantWorkflow


async def backup(env, queue, tenant_id, **kwargs):
    return await env.client.execute_workflow(
        BackupTenantWorkflow.run,
        BackupTenantInput(tenant_id=tenant_id, **kwargs),
        id=f"backup-{tenant_id}-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
    )


async def restore(env, queue, tenant_id, **kwargs):
    return await env.client.execute_workflow(
        RestoreTenantWorkflow.run,
        RestoreTenantInput(tenant_id=tenant_id, **kwargs),
        id=f"restore-{tenant_id}-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
        search_attributes=tenant_attributes(tenant_id),
    )


def change_everything(url: str, dbname: str) -> None:
    with psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname=dbname), autocommit=True) as conn:
        conn.execute("UPDATE time_entries SET minutes = minutes + 1 WHERE id % 3 = 0")
        conn.execute("DELETE FROM time_entries WHERE id % 5 = 0")
        conn.execute("DELETE FROM activity_log")
        conn.execute("INSERT INTO projects (id, name) VALUES (99999, 'created after the backup')")


def databases_like(url: str, pattern: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [pattern])]


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
async def test_round_trip_restores_the_state_at_backup_time(
    temporal_env, task_queue, settings, make_tenant, catalog, compression
):
    tenant = await make_tenant(entries=3000)
    url = settings.effective_database_url
    at_backup = await table_fingerprint(url, tenant.database_name)
    taken = await backup(temporal_env, task_queue, tenant.id, compression=compression, compression_level=3)
    change_everything(url, tenant.database_name)
    assert await table_fingerprint(url, tenant.database_name) != at_backup

    result = await restore(temporal_env, task_queue, tenant.id, jobs=2, keep_previous_seconds=0)

    assert result.backup_name == taken.backup_name
    assert await table_fingerprint(url, tenant.database_name) == at_backup
    assert result.row_counts == taken.row_counts
    assert result.previous_dropped
    # Nothing left over: no scratch copy, no previous database, no lock.
    assert databases_like(url, tenant.database_name + "\\_\\_%") == []
    assert await catalog.lock_holder(tenant.id) is None
    events = await catalog.events(tenant.id)
    assert events[0]["type"] == "TenantRestored" and events[0]["data"]["backup"] == taken.backup_name


async def test_restore_by_name_and_by_time_pick_the_right_backup(temporal_env, task_queue, settings, make_tenant):
    tenant = await make_tenant(entries=100)
    url = settings.effective_database_url
    first = await backup(temporal_env, task_queue, tenant.id)
    state_first = await table_fingerprint(url, tenant.database_name)
    change_everything(url, tenant.database_name)
    second = await backup(temporal_env, task_queue, tenant.id)
    state_second = await table_fingerprint(url, tenant.database_name)

    await restore(temporal_env, task_queue, tenant.id, backup_name=first.backup_name)
    assert await table_fingerprint(url, tenant.database_name) == state_first
    await restore(temporal_env, task_queue, tenant.id)  # newest verified
    assert await table_fingerprint(url, tenant.database_name) == state_second

    from tenancy.naming import parse_backup_name

    at = parse_backup_name(tenant.id, first.backup_name)
    result = await restore(temporal_env, task_queue, tenant.id, at=at)
    assert result.backup_name == first.backup_name
    assert second.backup_name != first.backup_name


def _archive(settings, tenant_id, name):
    return settings.storage_root / "tenants" / tenant_id / name


def corrupt(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(bytes(data))


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def tamper_manifest(path):
    manifest_path = path.with_name(path.name + ".json")
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))


def newer_tool(path):
    manifest_path = path.with_name(path.name + ".json")
    manifest = json.loads(manifest_path.read_text())
    manifest["tool_version"] = "99.1"
    manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("damage", "error_type", "message"),
    [
        (corrupt, "BackupRejected", "does not match its manifest"),
        (truncate, "BackupRejected", "does not match its manifest"),
        (tamper_manifest, "BackupRejected", "does not match its manifest"),
        (newer_tool, "ClientToolsMissing", "cannot read archives of a newer pg_dump"),
    ],
)
async def test_bad_backups_are_refused_and_change_nothing(
    temporal_env, task_queue, settings, make_tenant, catalog, damage, error_type, message
):
    tenant = await make_tenant(entries=200)
    url = settings.effective_database_url
    taken = await backup(temporal_env, task_queue, tenant.id)
    change_everything(url, tenant.database_name)
    before = await table_fingerprint(url, tenant.database_name)
    damage(_archive(settings, tenant.id, taken.backup_name))

    with pytest.raises(WorkflowFailureError) as caught:
        await restore(temporal_env, task_queue, tenant.id, backup_name=taken.backup_name)

    assert failure_type(caught.value) == error_type
    assert message in failure_message(caught.value)
    assert await table_fingerprint(url, tenant.database_name) == before
    assert databases_like(url, tenant.database_name + "\\_\\_%") == []
    assert await catalog.lock_holder(tenant.id) is None


async def test_names_that_are_not_this_tenants_backups_are_refused(temporal_env, task_queue, settings, make_tenant):
    tenant = await make_tenant(entries=50)
    other = await make_tenant(entries=50)
    url = settings.effective_database_url
    theirs = await backup(temporal_env, task_queue, other.id)
    await backup(temporal_env, task_queue, tenant.id)
    before = await table_fingerprint(url, tenant.database_name)
    cases = [
        (f"../{other.id}/{theirs.backup_name}", "InvalidInput", "is not the name of a backup"),
        (theirs.backup_name, "InvalidInput", f"is not the name of a backup of tenant {tenant.id!r}"),
        (f"tenant_{tenant.id}_2001-01-01_00-00-00.dump", "BackupNotFound", "does not exist"),
        ("/etc/passwd", "InvalidInput", "is not the name of a backup"),
    ]
    for name, error_type, message in cases:
        with pytest.raises(WorkflowFailureError) as caught:
            await restore(temporal_env, task_queue, tenant.id, backup_name=name)
        assert failure_type(caught.value) == error_type, name
        assert message in failure_message(caught.value), name
    assert await table_fingerprint(url, tenant.database_name) == before


async def test_another_tenants_backup_copied_in_under_this_tenants_name_is_refused(
    temporal_env, task_queue, settings, make_tenant
):
    tenant = await make_tenant(entries=50)
    other = await make_tenant(entries=80)
    url = settings.effective_database_url
    theirs = await backup(temporal_env, task_queue, other.id)
    before = await table_fingerprint(url, tenant.database_name)
    disguised = theirs.backup_name.replace(f"tenant_{other.id}_", f"tenant_{tenant.id}_")
    folder = settings.storage_root / "tenants" / tenant.id
    folder.mkdir(parents=True, exist_ok=True)
    source = _archive(settings, other.id, theirs.backup_name)
    (folder / disguised).write_bytes(source.read_bytes())
    (folder / (disguised + ".json")).write_text(source.with_name(source.name + ".json").read_text())

    with pytest.raises(WorkflowFailureError) as caught:
        await restore(temporal_env, task_queue, tenant.id, backup_name=disguised)
    assert failure_type(caught.value) == "BackupRejected"
    assert "describes another backup" in failure_message(caught.value)
    assert await table_fingerprint(url, tenant.database_name) == before


async def test_open_sessions_are_terminated_and_the_restore_succeeds(temporal_env, task_queue, settings, make_tenant):
    tenant = await make_tenant(entries=500)
    url = settings.effective_database_url
    await backup(temporal_env, task_queue, tenant.id)
    expected = await table_fingerprint(url, tenant.database_name)
    change_everything(url, tenant.database_name)
    info = psycopg.conninfo.make_conninfo(url, dbname=tenant.database_name)
    idle = psycopg.connect(info, autocommit=True)
    in_transaction = psycopg.connect(info)
    in_transaction.execute("SELECT count(*) FROM time_entries")  # holds a transaction open

    result = await restore(temporal_env, task_queue, tenant.id)

    assert result.terminated_sessions >= 2
    for conn in (idle, in_transaction):
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        conn.close()
    assert await table_fingerprint(url, tenant.database_name) == expected


async def test_a_failed_check_leaves_the_tenant_as_it_was(temporal_env, task_queue, settings, make_tenant, catalog):
    tenant = await make_tenant(entries=100)
    url = settings.effective_database_url
    await backup(temporal_env, task_queue, tenant.id)
    change_everything(url, tenant.database_name)
    before = await table_fingerprint(url, tenant.database_name)

    with pytest.raises(WorkflowFailureError) as caught:
        await restore(
            temporal_env,
            task_queue,
            tenant.id,
            checks=["SELECT count(*) > 0 FROM projects", "SELECT count(*) > 1000000 FROM time_entries"],
        )

    assert failure_type(caught.value) == "RestoreVerificationFailed"
    assert "count(*) > 1000000" in failure_message(caught.value)
    assert await table_fingerprint(url, tenant.database_name) == before
    assert databases_like(url, tenant.database_name + "\\_\\_%") == []
    # The tenant's database still takes connections under its own name.
    with psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname=tenant.database_name)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert await catalog.lock_holder(tenant.id) is None


async def test_keep_previous_keeps_the_old_database_then_drops_it(temporal_env, task_queue, settings, make_tenant):
    tenant = await make_tenant(entries=100)
    url = settings.effective_database_url
    await backup(temporal_env, task_queue, tenant.id)
    change_everything(url, tenant.database_name)
    changed = await table_fingerprint(url, tenant.database_name)

    result = await restore(temporal_env, task_queue, tenant.id, keep_previous_seconds=3)

    assert not result.previous_dropped and result.keep_previous_until is not None
    assert databases_like(url, result.previous_database) == [result.previous_database]
    with psycopg.connect(url, autocommit=True) as conn:  # the kept copy is the data from before the restore
        conn.execute(f'ALTER DATABASE "{result.previous_database}" ALLOW_CONNECTIONS true')
    assert await table_fingerprint(url, result.previous_database) == changed
    handle = temporal_env.client.get_workflow_handle(f"drop-previous-{tenant.id}-{result.previous_database[-10:]}")
    assert await handle.result() is True
    assert databases_like(url, result.previous_database) == []
