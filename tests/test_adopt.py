"""`tenants adopt`: existing databases registered as tenants, on a real Temporal server and real PostgreSQL."""

from __future__ import annotations

import dataclasses
import uuid

import psycopg
import pytest
from psycopg import sql
from temporalio.client import WorkflowFailureError
from temporalio.testing import ActivityEnvironment

from activities.adoption import AdoptionActivities
from tenancy.contracts.backup import BackupTenantInput
from tenancy.contracts.provision import AdoptTenantInput, ProvisionTenantInput
from tenancy.errors import failure_message, failure_type
from tenancy.marks import Mark, parse_mark
from tenancy.messages.provision import AdoptionUndo
from tests.cli import tenants
from tests.recording import RECORD, save_history
from workflows.adopt_tenant import AdoptTenantWorkflow
from workflows.backup_tenant import BackupTenantWorkflow
from workflows.provision_tenant import ProvisionTenantWorkflow


def admin(settings, dbname: str | None = None) -> psycopg.Connection:
    info = psycopg.conninfo.make_conninfo(settings.effective_database_url, **({"dbname": dbname} if dbname else {}))
    return psycopg.connect(info, autocommit=True)


def comment_of(settings, database: str | None = None, role: str | None = None) -> str | None:
    with admin(settings) as conn:
        if database:
            query, name = "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", database
        else:
            query, name = "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s", role
        row = conn.execute(query, [name]).fetchone()
    return row[0] if row else None


def make_database(settings, name: str, rows: int, comment: str | None = None) -> None:
    with admin(settings) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        if comment:
            conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(comment)))
    with admin(settings, name) as conn:
        conn.execute("CREATE TABLE invoices (id int PRIMARY KEY, amount numeric)")
        conn.execute("INSERT INTO invoices SELECT g, g * 10 FROM generate_series(1, %s) g", [rows])


@pytest.fixture
async def adopted(catalog):
    """Tenant ids to remove at the end (their database and recorded role with them)."""
    ids: list[str] = []
    yield ids
    for tenant_id in ids:
        await catalog.drop_tenant(tenant_id)


async def adopt(env, queue, **kwargs):
    return await env.client.execute_workflow(
        AdoptTenantWorkflow.run, AdoptTenantInput(**kwargs), id=f"adopt-{uuid.uuid4().hex[:8]}", task_queue=queue
    )


async def test_adopt_an_existing_database_then_show_and_back_it_up(
    temporal_env, task_queue, cli_env, settings, catalog, adopted
):
    tenant_id = f"old-{uuid.uuid4().hex[:8]}"
    database = f"{settings.database_prefix}legacy_{uuid.uuid4().hex[:6]}"
    role = f"{settings.database_prefix}app_{uuid.uuid4().hex[:6]}"
    adopted.append(tenant_id)
    make_database(settings, database, rows=7, comment="billing, since 2019")
    with admin(settings) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'app-secret'").format(sql.Identifier(role)))
        password = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [role]).fetchone()[0]

    done = await tenants(
        cli_env, "adopt", tenant_id, "--database", database, "--role", role, "--plan", "pro", "--name", "Old Co"
    )
    assert done.returncode == 0, done.stderr
    assert f"tenant    {tenant_id} is active, with database {database}" in done.stdout

    tenant = await catalog.get_tenant(tenant_id)
    assert (tenant.status, tenant.database_name, tenant.role_name) == ("active", database, role)
    assert (tenant.plan, tenant.name, tenant.owner_email) == ("pro", "Old Co", "unknown@adopted.invalid")
    workflow_id = done.stdout.split()[1]
    mark = parse_mark(comment_of(settings, database=database))
    assert mark.is_of(tenant_id, "tenant") and mark.made_by(workflow_id)
    assert parse_mark(comment_of(settings, role=role)).is_of(tenant_id, "role")
    events = await catalog.events(tenant_id)
    assert [e["type"] for e in events] == ["TenantAdopted"]
    assert events[0]["data"]["database"] == database and events[0]["data"]["mark_only"] is False
    with admin(settings, database) as conn:  # nothing in it changed
        assert conn.execute("SELECT count(*), sum(amount) FROM invoices").fetchone() == (7, 280)
    with admin(settings) as conn:
        assert conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [role]).fetchone()[0] == password

    shown = await tenants(cli_env, "show", tenant_id)
    assert shown.returncode == 0, shown.stderr
    assert "status     active" in shown.stdout and f"database   {database}, " in shown.stdout
    assert "TenantAdopted" in shown.stdout

    backup = await temporal_env.client.execute_workflow(
        BackupTenantWorkflow.run,
        BackupTenantInput(tenant_id=tenant_id),
        id=f"backup-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
    )
    assert backup.row_counts == {"public.invoices": 7}
    assert (settings.storage_root / "tenants" / tenant_id / backup.backup_name).is_file()


async def test_adopt_refuses_what_is_not_free_to_be_the_tenants(
    temporal_env, task_queue, cli_env, settings, catalog, make_tenant
):
    other = await make_tenant(entries=0)
    other_mark = comment_of(settings, database=other.database_name)
    marked = f"{settings.database_prefix}marked_{uuid.uuid4().hex[:6]}"
    make_database(settings, marked, rows=1, comment=other_mark)  # carries the other tenant's mark
    before = await catalog.list_tenants()
    tenant_id = f"new-{uuid.uuid4().hex[:8]}"
    cases = [
        (other.database_name, f"database {other.database_name} is tenant {other.id!r}'s (active)"),
        (marked, f"database {marked} is marked as tenant {other.id!r}'s database"),
        (settings.catalog_database, f"database {settings.catalog_database} is the catalog database"),
        (settings.template_database, f"database {settings.template_database} is the template database"),
        ("template1", "database template1 is a PostgreSQL system database"),
        (f"{settings.database_prefix}nothing", "does not exist"),
    ]
    try:
        for database, message in cases:
            with pytest.raises(WorkflowFailureError) as caught:
                await adopt(temporal_env, task_queue, tenant_id=tenant_id, database_name=database)
            assert failure_type(caught.value) == "InvalidInput", database
            assert message in failure_message(caught.value)
        # A tenant already recorded with another database is not adopted over.
        with pytest.raises(WorkflowFailureError) as caught:
            await adopt(temporal_env, task_queue, tenant_id=other.id, database_name=marked)
        assert failure_type(caught.value) == "TenantExists"

        done = await tenants(cli_env, "adopt", tenant_id, "--database", settings.catalog_database)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines()[-1] == (
            f"tenants: error: database {settings.catalog_database} is the catalog database: it cannot be a tenant's "
            "[InvalidInput]"
        )
        assert await catalog.list_tenants() == before
        assert comment_of(settings, database=other.database_name) == other_mark
        assert comment_of(settings, database=settings.catalog_database) is None
    finally:
        with admin(settings) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(marked)))


async def test_adopt_marks_a_tenant_from_an_older_version(temporal_env, task_queue, settings, catalog, adopted):
    """A tenant provisioned before marks: in the catalog with its database and role, neither marked."""
    tenant_id = f"older-{uuid.uuid4().hex[:8]}"
    adopted.append(tenant_id)
    result = await temporal_env.client.execute_workflow(
        ProvisionTenantWorkflow.run,
        ProvisionTenantInput(name="Older", plan="pro", owner_email="o@example.com", tenant_id=tenant_id),
        id=f"provision-{tenant_id}",
        task_queue=task_queue,
    )
    with admin(settings) as conn:
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS NULL").format(sql.Identifier(result.database_name)))
        conn.execute(sql.SQL("COMMENT ON ROLE {} IS NULL").format(sql.Identifier(result.role_name)))

    # Named like its recorded history (tests/histories/, TENANTS_RECORD_HISTORIES=1): the replay uses the name.
    handle = await temporal_env.client.start_workflow(
        AdoptTenantWorkflow.run,
        AdoptTenantInput(tenant_id=tenant_id, database_name=result.database_name, plan="business"),
        id=f"AdoptTenantWorkflow-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
    )
    adoption = await handle.result()
    if RECORD:
        save_history(await handle.fetch_history(), "AdoptTenantWorkflow")
    assert adoption.mark_only and adoption.role_name == result.role_name
    assert parse_mark(comment_of(settings, database=result.database_name)).is_of(tenant_id, "tenant")
    assert parse_mark(comment_of(settings, role=result.role_name)).is_of(tenant_id, "role")
    tenant = await catalog.get_tenant(tenant_id)
    assert (tenant.status, tenant.plan, tenant.owner_email) == ("active", "pro", "o@example.com")  # as recorded
    assert [e["type"] for e in await catalog.events(tenant_id)][:2] == ["TenantAdopted", "TenantProvisioned"]
    with admin(settings, result.database_name) as conn:
        assert conn.execute("SELECT name FROM projects").fetchall() == [("General",)]

    # Adopting it again changes nothing but the run in the marks.
    again = await adopt(temporal_env, task_queue, tenant_id=tenant_id, database_name=result.database_name)
    assert again.mark_only


async def test_an_unfinished_adoption_is_undone_and_a_finished_one_is_not(settings, catalog, adopted):
    acts = AdoptionActivities(settings)
    tenant_id = f"undo-{uuid.uuid4().hex[:8]}"
    database = f"{settings.database_prefix}legacy_{uuid.uuid4().hex[:6]}"
    adopted.append(tenant_id)
    make_database(settings, database, rows=2, comment="billing, since 2019")
    run = ActivityEnvironment()
    run.info = dataclasses.replace(run.info, workflow_id=f"adopt-{tenant_id}", workflow_run_id=str(uuid.uuid4()))

    plan = await run.run(acts.check_adoption, AdoptTenantInput(tenant_id=tenant_id, database_name=database))
    await run.run(acts.record_adoption, plan)
    await run.run(acts.record_adoption, plan)  # a retried attempt finds its own row
    assert (await catalog.get_tenant(tenant_id)).status == "provisioning"
    # The run stopped after writing its mark, before recording the tenant as active.
    mark = Mark(kind="tenant", tenant_id=tenant_id, workflow_id=run.info.workflow_id, run_id=run.info.workflow_run_id)
    with admin(settings) as conn:
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(database), sql.Literal(mark.comment()))
        )
    await run.run(acts.undo_adoption, AdoptionUndo(plan=plan, reason="cancelled"))
    assert comment_of(settings, database=database) == "billing, since 2019"
    tenant = await catalog.get_tenant(tenant_id)
    assert (tenant.status, tenant.status_reason) == ("failed", "cancelled")
    assert [e["type"] for e in await catalog.events(tenant_id)] == ["TenantAdoptionFailed"]

    # A failed adoption's id may be adopted again; once finished, an undo changes nothing.
    again = ActivityEnvironment()
    again.info = dataclasses.replace(again.info, workflow_id=f"adopt2-{tenant_id}", workflow_run_id=str(uuid.uuid4()))
    plan = await again.run(acts.check_adoption, AdoptTenantInput(tenant_id=tenant_id, database_name=database))
    await again.run(acts.record_adoption, plan)
    event_id = await again.run(acts.adopt_database, plan)
    assert await again.run(acts.adopt_database, plan) == event_id  # retried: one event
    await again.run(acts.undo_adoption, plan, "too late")  # as an attempt the previous release scheduled
    assert (await catalog.get_tenant(tenant_id)).status == "active"
    assert parse_mark(comment_of(settings, database=database)).is_of(tenant_id, "tenant")


async def test_adopt_refuses_a_role_shared_with_other_databases(temporal_env, task_queue, settings, catalog):
    """Deprovisioning removes a tenant role's privileges wherever it has them: a role other databases use too is
    not one tenant's, and adopting it would let one tenant's deprovisioning break the others."""
    first = f"{settings.database_prefix}shared_a_{uuid.uuid4().hex[:6]}"
    second = f"{settings.database_prefix}shared_b_{uuid.uuid4().hex[:6]}"
    role = f"{settings.database_prefix}app_{uuid.uuid4().hex[:6]}"
    make_database(settings, first, rows=3)
    make_database(settings, second, rows=3)
    with admin(settings) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    for database in (first, second):
        with admin(settings, database) as conn:
            conn.execute(sql.SQL("GRANT SELECT ON invoices TO {}").format(sql.Identifier(role)))
    tenant_id = f"shr-{uuid.uuid4().hex[:8]}"
    try:
        with pytest.raises(WorkflowFailureError) as caught:
            await adopt(temporal_env, task_queue, tenant_id=tenant_id, database_name=first, role_name=role)
        assert failure_type(caught.value) == "InvalidInput"
        assert f"also owns objects or holds privileges in {second}" in failure_message(caught.value)
        assert await catalog.get_tenant(tenant_id) is None
        assert comment_of(settings, database=first) is None and comment_of(settings, role=role) is None
    finally:
        with admin(settings) as conn:
            for database in (first, second):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
