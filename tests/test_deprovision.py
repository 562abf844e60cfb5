"""Deprovisioning completes or changes nothing: real workflows on a real Temporal server and real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pyrage
import pytest
from psycopg import sql
from temporalio.client import WorkflowFailureError

from activities.infra.storage import open_storage
from starter.demo import seed_tenant_data, table_fingerprint
from tenancy.contracts.backup import BackupTenantInput
from tenancy.contracts.provision import DeprovisionTenantInput, ProvisionTenantInput
from tenancy.contracts.restore import RestoreTenantInput
from tenancy.errors import failure_message, failure_type
from tenancy.marks import Mark
from tenancy.naming import backup_name
from workflows.backup_tenant import BackupTenantWorkflow
from workflows.deprovision_tenant import DeprovisionTenantWorkflow
from workflows.provision_tenant import ProvisionTenantWorkflow
from workflows.restore_tenant import RestoreTenantWorkflow


def admin(settings, dbname: str | None = None) -> psycopg.Connection:
    info = psycopg.conninfo.make_conninfo(settings.effective_database_url, **({"dbname": dbname} if dbname else {}))
    return psycopg.connect(info, autocommit=True)


def databases_like(settings, name: str) -> list[str]:
    """The tenant's database and every copy of it (scratch `__rs_`, previous `__old_`)."""
    with admin(settings) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1", [name + "%"])
        return [r[0] for r in rows]


def role_exists(settings, name: str) -> bool:
    with admin(settings) as conn:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone() is not None


def marked_copy(settings, name: str, kind: str, tenant_id: str, grantee: str | None = None) -> None:
    """A database as a crashed restore or provisioning would leave it: marked, maybe with grants to the role."""
    with admin(settings) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        comment = Mark(kind=kind, tenant_id=tenant_id, at=datetime.now(UTC)).comment()
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(comment)))
        if grantee:
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(name), sql.Identifier(grantee))
            )


def marked_role_with_grants(settings, role: str, tenant_id: str, dbname: str) -> None:
    """A tenant role as provisioning makes it (marked), holding privileges in `dbname`."""
    with admin(settings) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        comment = Mark(kind="role", tenant_id=tenant_id, at=datetime.now(UTC)).comment()
        conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(role), sql.Literal(comment)))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(dbname), sql.Identifier(role)))
    with admin(settings, dbname) as conn:
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS notes (id int)"))
        conn.execute(sql.SQL("GRANT SELECT ON notes TO {}").format(sql.Identifier(role)))


async def run(env, queue, workflow, arg, prefix: str):
    return await env.client.execute_workflow(workflow, arg, id=f"{prefix}-{uuid.uuid4().hex[:8]}", task_queue=queue)


@pytest.fixture
async def cleanup(catalog, settings):
    ids: list[str] = []
    yield ids
    for tenant_id in ids:
        # Copies a failed test left first: they may hold grants that keep the role from being dropped.
        for name in databases_like(settings, settings.database_prefix + tenant_id + "__"):
            with admin(settings) as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        await catalog.drop_tenant(tenant_id)


async def test_deprovision_with_a_kept_previous_database_completes(
    temporal_env, task_queue, settings, catalog, cleanup, backups_of
):
    tenant_id = f"dp-{uuid.uuid4().hex[:8]}"
    cleanup.append(tenant_id)
    provisioned = await run(
        temporal_env,
        task_queue,
        ProvisionTenantWorkflow.run,
        ProvisionTenantInput(name="Leaving", plan="pro", owner_email="l@example.com", tenant_id=tenant_id),
        "provision",
    )
    dbname, role = provisioned.database_name, provisioned.role_name
    await seed_tenant_data(settings.effective_database_url, dbname, 200)
    await run(temporal_env, task_queue, BackupTenantWorkflow.run, BackupTenantInput(tenant_id=tenant_id), "backup")
    # A real restore that keeps the replaced database, which still holds the role's grants.
    restored = await run(
        temporal_env,
        task_queue,
        RestoreTenantWorkflow.run,
        RestoreTenantInput(tenant_id=tenant_id, keep_previous_seconds=3600),
        "restore",
    )
    # And a scratch copy a crashed restore left behind, with a grant to the role too.
    scratch = f"{dbname}__rs_crashed001"
    marked_copy(settings, scratch, "scratch", tenant_id, grantee=role)
    assert databases_like(settings, dbname) == sorted([dbname, restored.previous_database, scratch])
    owner = f"{dbname}_owner"  # the NOLOGIN role the restored objects belong to (the login role is named `dbname`)
    assert role_exists(settings, owner)
    assert [k["name"] for k in await catalog.kept_databases(tenant_id)] == [restored.previous_database]

    result = await run(
        temporal_env, task_queue, DeprovisionTenantWorkflow.run, DeprovisionTenantInput(tenant_id=tenant_id), "dep"
    )

    assert (await catalog.get_tenant(tenant_id)).status == "deprovisioned"
    assert databases_like(settings, dbname) == []
    assert sorted(result.leftover_databases) == sorted([restored.previous_database, scratch])
    assert not role_exists(settings, role) and result.role_left is None
    assert not role_exists(settings, owner)
    assert result.database_dropped and result.final_backup in [p.name for p in backups_of(tenant_id)]
    assert not (settings.effective_secrets_dir / f"{tenant_id}.json").exists()
    assert await catalog.kept_databases(tenant_id) == []  # the kept database's entry is ended
    events = [e["type"] for e in await catalog.events(tenant_id)]
    assert events[:2] == ["TenantStatusChanged", "TenantFinalBackup"]
    assert await catalog.lock_holder(tenant_id) is None


async def test_rerun_after_a_crash_that_dropped_the_database_finishes(
    temporal_env, task_queue, settings, catalog, make_tenant, backups_of
):
    tenant = await make_tenant("dp", entries=100)
    role = tenant.database_name  # a tenant recorded without a role name: its role is named like its database
    marked_role_with_grants(settings, role, tenant.id, tenant.database_name)
    # An orphaned database (not marked: not ours to drop) that still holds a grant to the role.
    orphan = f"{settings.database_prefix}orphan-{uuid.uuid4().hex[:6]}"
    with admin(settings) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(orphan)))
    with admin(settings, orphan) as conn:
        conn.execute("CREATE TABLE kept (id int)")
        conn.execute(sql.SQL("GRANT SELECT ON kept TO {}").format(sql.Identifier(role)))

    # The earlier attempt: its final backup, recorded; then the database dropped; then the crash.
    final = await run(
        temporal_env, task_queue, BackupTenantWorkflow.run, BackupTenantInput(tenant_id=tenant.id), "backup"
    )
    await catalog.record_event(tenant.id, "TenantFinalBackup", {"backup": final.backup_name})
    with admin(settings) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(tenant.database_name)))
    assert (await catalog.get_tenant(tenant.id)).status == "active"

    result = await run(
        temporal_env, task_queue, DeprovisionTenantWorkflow.run, DeprovisionTenantInput(tenant_id=tenant.id), "dep"
    )

    assert (await catalog.get_tenant(tenant.id)).status == "deprovisioned"
    assert result.final_backup == final.backup_name and not result.database_dropped
    assert [p.name for p in backups_of(tenant.id) if p.name == final.backup_name] == [final.backup_name]
    assert not role_exists(settings, role)
    assert databases_like(settings, orphan) == [orphan]  # left as it was, but for the role's grant


async def test_deprovision_refuses_an_unmarked_tenant_database(
    temporal_env, task_queue, settings, catalog, make_tenant, backups_of
):
    tenant = await make_tenant("dp", entries=100)
    before = await table_fingerprint(settings.effective_database_url, tenant.database_name)
    with admin(settings) as conn:
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS NULL").format(sql.Identifier(tenant.database_name)))
    scratch = f"{tenant.database_name}__rs_left00001"
    marked_copy(settings, scratch, "scratch", tenant.id)

    with pytest.raises(WorkflowFailureError) as caught:
        await run(
            temporal_env, task_queue, DeprovisionTenantWorkflow.run, DeprovisionTenantInput(tenant_id=tenant.id), "dep"
        )

    assert failure_type(caught.value) == "NotMarked"
    message = failure_message(caught.value)
    assert f"database {tenant.database_name!r} carries no tenant-lifecycle mark of tenant {tenant.id!r}" in message
    assert "`tenants adopt`" in message
    # Nothing dropped, nothing backed up, nothing recorded.
    assert databases_like(settings, tenant.database_name) == sorted([tenant.database_name, scratch])
    assert await table_fingerprint(settings.effective_database_url, tenant.database_name) == before
    assert (await catalog.get_tenant(tenant.id)).status == "active"
    assert backups_of(tenant.id) == []
    assert await catalog.events(tenant.id) == []
    assert await catalog.lock_holder(tenant.id) is None


async def test_a_final_backup_not_known_to_restore_stops_deprovisioning(
    temporal_env, worker_with, settings, catalog, make_tenant, backups_of
):
    tenant = await make_tenant("dp", entries=100)
    scratch = f"{tenant.database_name}__rs_left00002"
    marked_copy(settings, scratch, "scratch", tenant.id)
    # Encrypted to a recipient, with no identity on the worker: pg_restore cannot read the final backup.
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    async with worker_with(age_recipients=[recipient]) as queue:
        with pytest.raises(WorkflowFailureError) as caught:
            request = DeprovisionTenantInput(tenant_id=tenant.id)
            await run(temporal_env, queue, DeprovisionTenantWorkflow.run, request, "dep")

    assert failure_type(caught.value) == "BackupRejected"
    message = failure_message(caught.value)
    assert "TENANTS_AGE_IDENTITY_FILE" in message and "nothing was dropped" in message
    assert databases_like(settings, tenant.database_name) == sorted([tenant.database_name, scratch])
    assert (await catalog.get_tenant(tenant.id)).status == "active"
    assert len([p for p in backups_of(tenant.id) if not p.name.endswith(".json")]) == 1  # kept, for a drill
    assert "TenantFinalBackup" not in [e["type"] for e in await catalog.events(tenant.id)]


async def test_deprovision_touches_no_other_deployment_and_refuses_a_closed_database_holding_the_role(
    temporal_env, task_queue, settings, catalog, make_tenant, backups_of
):
    """Another deployment on the same server (another prefix) with a tenant of the same id keeps its copies; a
    database that takes no connections and holds the role's grants stops the run before anything is dropped."""
    tenant = await make_tenant("dp", entries=50)
    role = tenant.database_name
    marked_role_with_grants(settings, role, tenant.id, tenant.database_name)
    # Same tenant id, marked as a scratch copy, but a copy of another deployment's database (another prefix).
    elsewhere = f"{settings.database_prefix}x{tenant.id}__rs_other00001"
    marked_copy(settings, elsewhere, "scratch", tenant.id)
    closed = f"{settings.database_prefix}closed-{uuid.uuid4().hex[:6]}"
    with admin(settings) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(closed)))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(closed), sql.Identifier(role)))
    with admin(settings, closed) as conn:
        conn.execute("CREATE TABLE t (id int)")
        conn.execute(sql.SQL("GRANT SELECT ON t TO {}").format(sql.Identifier(role)))
    with admin(settings) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(closed)))
    try:
        with pytest.raises(WorkflowFailureError) as caught:
            await run(
                temporal_env,
                task_queue,
                DeprovisionTenantWorkflow.run,
                DeprovisionTenantInput(tenant_id=tenant.id),
                "dep",
            )
        assert failure_type(caught.value) == "RoleInUse"
        assert closed in failure_message(caught.value) and "nothing was dropped" in failure_message(caught.value)
        assert databases_like(settings, tenant.database_name) == [tenant.database_name]
        assert (await catalog.get_tenant(tenant.id)).status == "active" and backups_of(tenant.id) == []

        with admin(settings) as conn:  # the operator opens it, as the message says, and deprovisions again
            conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(closed)))
        result = await run(
            temporal_env, task_queue, DeprovisionTenantWorkflow.run, DeprovisionTenantInput(tenant_id=tenant.id), "dep"
        )
        assert (await catalog.get_tenant(tenant.id)).status == "deprovisioned" and not role_exists(settings, role)
        assert result.leftover_databases == []
        assert databases_like(settings, elsewhere) == [elsewhere]  # the other deployment's copy is untouched
    finally:
        with admin(settings) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(closed)))


async def test_the_final_backup_deletes_none_of_the_tenants_backups(temporal_env, task_queue, settings, make_tenant):
    tenant = await make_tenant("dp", entries=50)
    storage = open_storage(settings)
    taken = await run(
        temporal_env, task_queue, BackupTenantWorkflow.run, BackupTenantInput(tenant_id=tenant.id), "backup"
    )
    # More verified backups than retention keeps by default (BackupTenantInput.keep): copies of that one, older.
    manifest = storage.read_manifest(tenant.id, taken.backup_name)
    source = (settings.storage_root / taken.path).read_bytes()
    for days in range(1, BackupTenantInput(tenant_id=tenant.id).keep + 2):
        name = backup_name(tenant.id, datetime.now(UTC) - timedelta(days=days), taken.compression)
        with storage.open_for_write(tenant.id, name) as sink:
            sink.write(source)
        storage.write_manifest(manifest.model_copy(update={"backup_name": name}))
    before = storage.list_backups(tenant.id)

    handle = await temporal_env.client.start_workflow(
        DeprovisionTenantWorkflow.run,
        DeprovisionTenantInput(tenant_id=tenant.id),
        id=f"dep-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
    )
    result = await handle.result()

    assert sorted(storage.list_backups(tenant.id)) == sorted([*before, result.final_backup])
    # The final backup's run skipped the retention step altogether.
    child = temporal_env.client.get_workflow_handle(f"backup-{tenant.id}-final-{handle.result_run_id[:8]}")
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        async for e in child.fetch_history_events()
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert "verify_backup" in scheduled and "apply_retention" not in scheduled
