"""Provisioning and status management on a real Temporal server, real PostgreSQL and a real SMTP server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import uuid

import psycopg
import pydantic
import pytest
from psycopg import sql
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.infra.credentials import read_credentials
from activities.infra.schema import TEMPLATE_LOCK_KEY, provisioning_copy_name
from activities.provisioning import ProvisioningActivities
from starter.services import free_port
from tenancy.contracts.fleet import FleetInput
from tenancy.contracts.provision import DeprovisionTenantInput, ProvisionTenantInput
from tenancy.contracts.tenants import SettingsChange, StatusChange
from tenancy.errors import InvalidInput, failure_message, failure_type
from tenancy.marks import Mark, parse_mark
from tenancy.messages.provision import ProvisioningUndo, TenantDatabase
from tenancy.naming import tenant_database_name, validate_database_prefix
from tenancy.settings import Settings
from tenancy.webhooks import verify_webhook
from tests.blocking import wait_until
from tests.cli import tenants
from tests.servers import SmtpServer, WebhookReceiver
from workflows.deprovision_tenant import DeprovisionTenantWorkflow
from workflows.migrate import MigrateAllTenantsWorkflow
from workflows.provision_tenant import ProvisionTenantWorkflow
from workflows.tenant_status import ChangeTenantStatusWorkflow, UpdateTenantSettingsWorkflow


def unique_id(prefix: str = "p") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def provision(env, queue, **kwargs):
    req = ProvisionTenantInput(**{"plan": "pro", "owner_email": f"{uuid.uuid4().hex[:6]}@example.com", **kwargs})
    return await env.client.execute_workflow(
        ProvisionTenantWorkflow.run, req, id=f"provision-{uuid.uuid4().hex[:8]}", task_queue=queue
    )


def connect_as(settings, tenant_id: str, dbname: str | None = None) -> psycopg.Connection:
    creds = read_credentials(settings.effective_secrets_dir, tenant_id)
    info = psycopg.conninfo.make_conninfo(
        settings.effective_database_url,
        user=creds["role"],
        password=creds["password"],
        dbname=dbname or creds["database"],
    )
    return psycopg.connect(info, connect_timeout=5)


def database_exists(settings, name: str) -> bool:
    with psycopg.connect(settings.effective_database_url) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def role_exists(settings, name: str) -> bool:
    with psycopg.connect(settings.effective_database_url) as conn:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone() is not None


@pytest.fixture
async def cleanup(catalog):
    ids: list[str] = []
    yield ids
    for tenant_id in ids:
        await catalog.drop_tenant(tenant_id)


async def test_provision_end_to_end(temporal_env, worker_with, settings, catalog, cleanup):
    with SmtpServer(free_port()) as smtp, WebhookReceiver() as hook:
        async with worker_with(
            smtp_host="127.0.0.1", smtp_port=smtp.controller.port, webhook_url=hook.url, webhook_secret="s3cret"
        ) as queue:
            tenant_id = unique_id("mi-empresa")
            cleanup.append(tenant_id)
            handle = await temporal_env.client.start_workflow(
                ProvisionTenantWorkflow.run,
                ProvisionTenantInput(
                    name="Mi Empresa",
                    plan="pro",
                    owner_email="Ana@Example.com",
                    tenant_id=tenant_id,
                    settings={"timezone": "America/Mexico_City"},
                ),
                id=f"provision-{tenant_id}",
                task_queue=queue,
            )
            result = await handle.result()
            await wait_until(lambda: smtp.mailbox.messages, what="the welcome mail")
            await wait_until(lambda: hook.received, what="the webhook")

    assert result.schema_version == "0003_activity_log"
    tenant = await catalog.get_tenant(tenant_id)
    assert tenant.status == "active" and tenant.owner_email == "ana@example.com"
    assert tenant.settings == {"timezone": "America/Mexico_City"}
    with psycopg.connect(
        psycopg.conninfo.make_conninfo(settings.effective_database_url, dbname=result.database_name)
    ) as c:
        versions = [r[0] for r in c.execute("SELECT version FROM tenant_schema_migrations ORDER BY version")]
        assert versions == ["0001_projects", "0002_time_entries", "0003_activity_log", "seed"]
        assert c.execute("SELECT name FROM projects").fetchall() == [("General",)]

    # Its role reaches its own database, and only that one.
    with connect_as(settings, tenant_id) as own:
        own.execute("INSERT INTO time_entries (project_id, started_at, minutes) VALUES (1, now(), 30)")
        own.commit()
    other = unique_id("other")
    cleanup.append(other)
    async with worker_with() as queue:
        other_db = (await provision(temporal_env, queue, name="Other", tenant_id=other)).database_name
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        connect_as(settings, tenant_id, other_db)
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        connect_as(settings, other, result.database_name)

    mail = smtp.mailbox.messages[0]
    assert mail["To"] == "ana@example.com" and "Mi Empresa" in mail["Subject"]
    events = await catalog.events(tenant_id)
    assert [e["type"] for e in events] == ["TenantProvisioned"]
    headers, body = hook.received[0]
    assert json.loads(body)["type"] == "TenantProvisioned" and json.loads(body)["id"] == events[0]["id"]
    # Signed with its time of sending, as the README's receiver checks it (replays: tests/test_webhooks.py).
    assert verify_webhook("s3cret", headers, body)

    # The generated password is in the 0600 credentials file, never in the workflow's history.
    password = read_credentials(settings.effective_secrets_dir, tenant_id)["password"]
    history = await handle.fetch_history()
    assert password not in json.dumps(history.to_json_dict())


async def test_plan_limit_reached_creates_nothing(temporal_env, task_queue, settings, catalog, cleanup):
    owner = f"{uuid.uuid4().hex[:6]}@example.com"
    first = unique_id()
    cleanup.append(first)
    await provision(temporal_env, task_queue, name="First", plan="free", owner_email=owner, tenant_id=first)
    second = unique_id()
    with pytest.raises(WorkflowFailureError) as caught:
        await provision(temporal_env, task_queue, name="Second", plan="free", owner_email=owner, tenant_id=second)
    assert failure_type(caught.value) == "PlanLimitReached"
    assert "free plan" in failure_message(caught.value)
    assert await catalog.get_tenant(second) is None
    assert not database_exists(settings, settings.database_prefix + second)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Bad", "tenant_id": "bad'; DROP DATABASE x; --"}, "invalid tenant id"),
        ({"name": "Bad", "tenant_id": "UPPER"}, "invalid tenant id"),
        ({"name": "Bad", "tenant_id": "x" * 41}, "invalid tenant id"),
        ({"name": "   "}, "1 to 200 printable characters"),
        ({"name": "Ok", "owner_email": "not-an-email"}, "invalid e-mail"),
        ({"name": "Ok", "plan": "platinum"}, "unknown plan"),
        ({"name": "Ok", "settings": {"timezone": "Mars/Olympus"}}, "IANA time zone"),
        ({"name": "Ok", "settings": {"colour": "blue"}}, "unknown setting"),
    ],
)
async def test_invalid_requests_are_refused_before_anything_is_created(
    temporal_env, task_queue, settings, catalog, kwargs, message
):
    before = await catalog.list_tenants()
    with pytest.raises(WorkflowFailureError) as caught:
        await provision(temporal_env, task_queue, **kwargs)
    assert failure_type(caught.value) == "InvalidInput"
    assert message in failure_message(caught.value)
    assert await catalog.list_tenants() == before


async def test_failure_after_the_database_exists_is_undone(temporal_env, worker_with, settings, catalog, tmp_path):
    migrations = tmp_path / "migrations"
    shutil.copytree(settings.migrations_dir, migrations)
    (migrations / "seed.sql").write_text("INSERT INTO no_such_table VALUES (1);")
    tenant_id = unique_id()
    try:
        async with worker_with(migrations_dir=migrations) as queue:
            with pytest.raises(WorkflowFailureError) as caught:
                await provision(temporal_env, queue, name="Broken", tenant_id=tenant_id)
        assert failure_type(caught.value) == "SchemaError"
        tenant = await catalog.get_tenant(tenant_id)
        assert tenant.status == "failed" and "no_such_table" in tenant.status_reason
        assert not database_exists(settings, tenant.database_name)
        assert not role_exists(settings, tenant.role_name)
        assert not (settings.effective_secrets_dir / f"{tenant_id}.json").exists()
        assert [e["type"] for e in await catalog.events(tenant_id)] == ["TenantProvisioningFailed"]
    finally:
        await catalog.drop_tenant(tenant_id)


async def test_smtp_down_provisioning_succeeds_and_the_mail_is_retried(temporal_env, worker_with, catalog, cleanup):
    port = free_port()  # nothing listens here yet
    tenant_id = unique_id()
    cleanup.append(tenant_id)
    async with worker_with(smtp_host="127.0.0.1", smtp_port=port) as queue:
        result = await asyncio.wait_for(provision(temporal_env, queue, name="Fast", tenant_id=tenant_id), 30)
        assert (await catalog.get_tenant(tenant_id)).status == "active"
        mail = temporal_env.client.get_workflow_handle(result.welcome_mail_workflow_id)

        async def attempts() -> int:
            description = await mail.describe()
            pending = description.raw_description.pending_activities
            return pending[0].attempt if pending else 0

        for _ in range(100):
            if await attempts() >= 2:
                break
            await asyncio.sleep(0.1)
        assert (await mail.describe()).status == WorkflowExecutionStatus.RUNNING
        assert await attempts() >= 2
        with SmtpServer(port) as smtp:
            assert await asyncio.wait_for(mail.result(), 60) is True
            assert smtp.mailbox.messages


async def test_same_id_twice_is_a_clear_already_exists(temporal_env, task_queue, settings, cleanup):
    tenant_id = unique_id()
    cleanup.append(tenant_id)
    await provision(temporal_env, task_queue, name="Once", tenant_id=tenant_id)
    with pytest.raises(WorkflowFailureError) as caught:
        await provision(temporal_env, task_queue, name="Twice", tenant_id=tenant_id)
    assert failure_type(caught.value) == "TenantExists"
    assert "already exists (active)" in failure_message(caught.value)
    with psycopg.connect(settings.effective_database_url) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM pg_database WHERE datname LIKE %s", [settings.database_prefix + tenant_id + "%"]
            ).fetchone()[0]
            == 1
        )


async def change(env, queue, tenant_id, status, reason=None):
    return await env.client.execute_workflow(
        ChangeTenantStatusWorkflow.run,
        StatusChange(tenant_id=tenant_id, status=status, reason=reason),
        id=f"status-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
    )


async def test_status_transitions_and_access(temporal_env, task_queue, settings, catalog, cleanup):
    tenant_id = unique_id()
    cleanup.append(tenant_id)
    await provision(temporal_env, task_queue, name="States", tenant_id=tenant_id)
    session = connect_as(settings, tenant_id)

    result = await change(temporal_env, task_queue, tenant_id, "suspended", "payment_failed")
    assert (result.old_status, result.new_status, result.terminated_sessions) == ("active", "suspended", 1)
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        connect_as(settings, tenant_id)

    with pytest.raises(WorkflowFailureError) as caught:
        await change(temporal_env, task_queue, tenant_id, "inactive")
    assert failure_type(caught.value) == "InvalidInput"
    assert "a tenant that is suspended cannot become inactive" in failure_message(caught.value)

    await change(temporal_env, task_queue, tenant_id, "active")
    connect_as(settings, tenant_id).close()
    await change(temporal_env, task_queue, tenant_id, "inactive", "on holiday")
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        connect_as(settings, tenant_id)
    await change(temporal_env, task_queue, tenant_id, "active")
    connect_as(settings, tenant_id).close()

    changes = [
        (e["data"]["old_status"], e["data"]["new_status"], e["data"]["reason"])
        for e in reversed(await catalog.events(tenant_id))
        if e["type"] == "TenantStatusChanged"
    ]
    assert changes == [
        ("active", "suspended", "payment_failed"),
        ("suspended", "active", None),
        ("active", "inactive", "on holiday"),
        ("inactive", "active", None),
    ]


async def test_settings_are_validated_and_recorded(temporal_env, task_queue, catalog, cleanup):
    tenant_id = unique_id()
    cleanup.append(tenant_id)
    await provision(temporal_env, task_queue, name="Settings", tenant_id=tenant_id)

    async def update(changes):
        return await temporal_env.client.execute_workflow(
            UpdateTenantSettingsWorkflow.run,
            SettingsChange(tenant_id=tenant_id, changes=changes),
            id=f"settings-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )

    result = await update({"timezone": "America/Mexico_City", "language": "es", "features": {"advanced_reports": "on"}})
    assert result.settings == {
        "timezone": "America/Mexico_City",
        "language": "es",
        "features": {"advanced_reports": True},
    }
    for bad, message in [
        ({"timezone": "Nowhere/City"}, "IANA"),
        ({"language": "klingon"}, "language"),
        ({"features": {"teleport": True}}, "unknown feature"),
        ({"features": {"advanced_reports": "maybe"}}, "on/off"),
        ({"theme": "dark"}, "unknown setting"),
    ]:
        with pytest.raises(WorkflowFailureError) as caught:
            await update(bad)
        assert failure_type(caught.value) == "InvalidInput" and message in failure_message(caught.value)
    assert (await catalog.get_tenant(tenant_id)).settings == result.settings
    assert (await catalog.events(tenant_id))[0]["type"] == "TenantSettingsChanged"


async def test_deprovision_takes_a_final_backup_then_drops(temporal_env, task_queue, settings, catalog, cleanup):
    tenant_id = unique_id()
    cleanup.append(tenant_id)
    provisioned = await provision(temporal_env, task_queue, name="Leaving", tenant_id=tenant_id)
    result = await temporal_env.client.execute_workflow(
        DeprovisionTenantWorkflow.run,
        DeprovisionTenantInput(tenant_id=tenant_id),
        id=f"deprovision-{tenant_id}",
        task_queue=task_queue,
    )
    assert result.final_backup and result.database_dropped
    assert (settings.storage_root / "tenants" / tenant_id / result.final_backup).is_file()
    assert not database_exists(settings, provisioned.database_name)
    assert not role_exists(settings, provisioned.role_name)
    tenant = await catalog.get_tenant(tenant_id)
    assert tenant.status == "deprovisioned"
    types = [e["type"] for e in await catalog.events(tenant_id)]  # newest first (a final-backup event between)
    assert types[0] == "TenantStatusChanged" and types[-1] == "TenantProvisioned"
    assert await catalog.lock_holder(tenant_id) is None


async def test_migrate_all_applies_a_new_migration_and_rebuilds_the_template(
    temporal_env, worker_with, settings, catalog, cleanup, tmp_path
):
    migrations = tmp_path / "migrations"
    shutil.copytree(settings.migrations_dir, migrations)
    async with worker_with(migrations_dir=migrations) as queue:
        ids = [unique_id("m") for _ in range(3)]
        cleanup.extend(ids)
        for tenant_id in ids:
            await provision(temporal_env, queue, name="Migrating", tenant_id=tenant_id)
        (migrations / "0004_clients.sql").write_text("CREATE TABLE clients (id bigserial PRIMARY KEY, name text);")
        result = await temporal_env.client.execute_workflow(
            MigrateAllTenantsWorkflow.run,
            FleetInput(concurrency=2),
            id=f"migrate-all-{uuid.uuid4().hex[:6]}",
            task_queue=queue,
        )
        outcomes = {o.tenant_id: o for o in await catalog.fleet_outcomes(result.workflow_id)}
        for tenant_id in ids:
            assert outcomes[tenant_id].ok and "applied: 0004_clients" in outcomes[tenant_id].detail
        fresh = unique_id("m")
        cleanup.append(fresh)
        provisioned = await provision(temporal_env, queue, name="After", tenant_id=fresh)
        assert provisioned.schema_version == "0004_clients"


# --- Provisioning never touches what it did not create ------------------------------------------------------------


def admin(settings, dbname: str | None = None) -> psycopg.Connection:
    info = psycopg.conninfo.make_conninfo(settings.effective_database_url, **({"dbname": dbname} if dbname else {}))
    return psycopg.connect(info, autocommit=True)


def make_legacy_database(settings, name: str, rows: int = 3) -> None:
    """A database someone else made, with data in it."""
    with admin(settings) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with admin(settings, name) as conn:
        conn.execute("CREATE TABLE invoices (id int PRIMARY KEY, amount numeric)")
        conn.execute("INSERT INTO invoices SELECT g, g * 10 FROM generate_series(1, %s) g", [rows])


def invoice_count(settings, name: str) -> int:
    with admin(settings, name) as conn:
        return conn.execute("SELECT count(*) FROM invoices").fetchone()[0]


def role_state(settings, name: str) -> tuple | None:
    with admin(settings) as conn:
        return conn.execute(
            "SELECT rolpassword, shobj_description(oid, 'pg_authid'), rolcanlogin FROM pg_authid WHERE rolname = %s",
            [name],
        ).fetchone()


def drop_database(settings, name: str) -> None:
    with admin(settings) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


async def test_provisioning_over_an_existing_database_refuses_and_leaves_it(
    temporal_env, task_queue, cli_env, settings, catalog
):
    tenant_id = unique_id("legacy")
    name = settings.database_prefix + tenant_id
    make_legacy_database(settings, name, rows=5)
    try:
        with pytest.raises(WorkflowFailureError) as caught:
            await provision(temporal_env, task_queue, name="Legacy", tenant_id=tenant_id)
        assert failure_type(caught.value) == "TenantExists"
        assert failure_message(caught.value) == (
            f"database {name} already exists; adopt it with `tenants adopt`, or choose another id"
        )
        done = await tenants(
            cli_env, "provision", "Legacy", "--plan", "pro", "--owner", "a@example.com", "--id", tenant_id
        )
        assert done.returncode == 2
        # (Progress lines come first on stderr, then the error: one line, no traceback.)
        assert done.stderr.strip().splitlines()[-1] == (
            f"tenants: error: database {name} already exists; adopt it with `tenants adopt`, or choose another id "
            "[TenantExists]"
        )
        assert "Traceback" not in done.stderr

        # The database and its rows are as they were; no tenant owns it; no role or copy was made.
        assert invoice_count(settings, name) == 5
        with admin(settings) as conn:
            assert conn.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [name]
            ).fetchone() == (None,)
            assert (
                conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE %s", [name + "%"]).fetchone()[0] == 1
            )
        assert not role_exists(settings, name)
        assert await catalog.get_tenant(tenant_id) is None
        assert await catalog.tenant_with_database(name) is None

        # Deprovisioning finds no tenant, and drops nothing.
        with pytest.raises(WorkflowFailureError) as caught:
            await temporal_env.client.execute_workflow(
                DeprovisionTenantWorkflow.run,
                DeprovisionTenantInput(tenant_id=tenant_id),
                id=f"deprovision-{uuid.uuid4().hex[:8]}",
                task_queue=task_queue,
            )
        assert failure_type(caught.value) == "TenantNotFound"
        assert invoice_count(settings, name) == 5
    finally:
        drop_database(settings, name)


async def test_provisioning_over_an_existing_role_refuses_and_leaves_it(temporal_env, task_queue, settings, catalog):
    tenant_id = unique_id("legacy")
    name = settings.database_prefix + tenant_id
    with admin(settings) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'old-secret'").format(sql.Identifier(name)))
        conn.execute(sql.SQL("COMMENT ON ROLE {} IS 'the billing app'").format(sql.Identifier(name)))
    before = role_state(settings, name)
    try:
        with pytest.raises(WorkflowFailureError) as caught:
            await provision(temporal_env, task_queue, name="Legacy", tenant_id=tenant_id)
        assert failure_type(caught.value) == "TenantExists"
        assert failure_message(caught.value) == (
            f"role {name} already exists; adopt it with `tenants adopt --role`, or choose another id"
        )
        assert role_state(settings, name) == before and before[1] == "the billing app"
        assert not database_exists(settings, name)
        assert await catalog.get_tenant(tenant_id) is None
    finally:
        with admin(settings) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def in_run(workflow_id: str, run_id: str) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=workflow_id, workflow_run_id=run_id)
    return env


async def test_the_create_steps_trust_only_what_their_own_run_made(settings):
    """Behind the check at validation (a database or role can appear after it): each create step and the undo
    go by the marks."""
    acts = ProvisioningActivities(settings)
    tenant_id = unique_id("race")
    db = TenantDatabase(
        tenant_id=tenant_id,
        database_name=settings.database_prefix + tenant_id,
        role_name=settings.database_prefix + tenant_id,
    )
    run = in_run(f"provision-{tenant_id}", str(uuid.uuid4()))
    other_run = in_run(f"provision-{tenant_id}", str(uuid.uuid4()))
    try:
        # Someone else's database of the name: refused, and the undo leaves it.
        make_legacy_database(settings, db.database_name, rows=4)
        with pytest.raises(ApplicationError, match="already exists; adopt it") as caught:
            await run.run(acts.create_tenant_database, db)
        assert caught.value.type == "TenantExists" and caught.value.non_retryable
        await run.run(acts.undo_provisioning, db, "refused")  # as an attempt the previous release scheduled
        assert invoice_count(settings, db.database_name) == 4
        drop_database(settings, db.database_name)

        # An attempt that stopped after copying (its copy marked "provisioning" by this run) is redone.
        copy = provisioning_copy_name(db.database_name, run.info.workflow_run_id)
        with admin(settings) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(copy)))
            mark = Mark(
                kind="provisioning",
                tenant_id=tenant_id,
                workflow_id=run.info.workflow_id,
                run_id=run.info.workflow_run_id,
            )
            conn.execute(
                sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(copy), sql.Literal(mark.comment()))
            )
        result = await run.run(acts.create_tenant_database, db)
        assert result.version == "0003_activity_log" and not database_exists(settings, copy)
        # A retried attempt of the same run goes on with it; another run of the same id does not.
        assert (await run.run(acts.create_tenant_database, db)).applied == []
        with pytest.raises(ApplicationError, match="already exists; adopt it"):
            await other_run.run(acts.create_tenant_database, db)
        with admin(settings) as conn:
            found = parse_mark(
                conn.execute(
                    "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                    [db.database_name],
                ).fetchone()[0]
            )
        assert found.is_of(tenant_id, "tenant") and found.made_by(run.info.workflow_id, run.info.workflow_run_id)

        # Someone else's role of the name, made after validation: refused and unchanged.
        with admin(settings) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'theirs'").format(sql.Identifier(db.role_name)))
        before = role_state(settings, db.role_name)
        with pytest.raises(ApplicationError, match="already exists; adopt it") as caught:
            await run.run(acts.create_tenant_role, db)
        assert caught.value.type == "TenantExists"
        assert role_state(settings, db.role_name) == before

        # The undo of another run drops nothing; this run's undo drops its database, never the foreign role.
        await other_run.run(acts.undo_provisioning, ProvisioningUndo(db=db, reason="not mine"))
        assert database_exists(settings, db.database_name)
        await run.run(acts.undo_provisioning, ProvisioningUndo(db=db, reason="mine"))
        assert not database_exists(settings, db.database_name)
        assert role_state(settings, db.role_name) == before
    finally:
        drop_database(settings, db.database_name)
        with admin(settings) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(db.role_name)))


async def test_provisioned_database_and_role_carry_this_runs_marks(temporal_env, task_queue, settings, cleanup):
    tenant_id = unique_id()
    cleanup.append(tenant_id)
    handle = await temporal_env.client.start_workflow(
        ProvisionTenantWorkflow.run,
        ProvisionTenantInput(name="Marked", plan="pro", owner_email="m@example.com", tenant_id=tenant_id),
        id=f"provision-{tenant_id}",
        task_queue=task_queue,
    )
    result = await handle.result()
    run_id = (await handle.describe()).run_id
    with admin(settings) as conn:
        database = parse_mark(
            conn.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                [result.database_name],
            ).fetchone()[0]
        )
        role = parse_mark(
            conn.execute(
                "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s", [result.role_name]
            ).fetchone()[0]
        )
        leftovers = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", [result.database_name + "\\_\\_%"]
        ).fetchall()
    assert database.kind == "tenant" and database.made_by(f"provision-{tenant_id}", run_id)
    assert database.tenant_id == tenant_id
    assert role.kind == "role" and role.tenant_id == tenant_id and role.made_by(f"provision-{tenant_id}", run_id)
    assert leftovers == []


def test_names_that_would_be_the_catalog_template_or_a_system_database_are_refused():
    catalog, template = "tenants_catalog", "tenants__template"
    assert tenant_database_name("tenants_", "acme", catalog, template) == "tenants_acme"
    for prefix, tenant_id, what in [
        ("tenants_", "catalog", "the catalog database"),
        ("tenants_", "x", "the template database"),  # with a template of that name (below)
        ("template", "1", "a PostgreSQL system database"),
        ("postgre", "s", "a PostgreSQL system database"),
    ]:
        with pytest.raises(InvalidInput, match=what):
            tenant_database_name(prefix, tenant_id, catalog, "tenants_x" if tenant_id == "x" else template)
    for bad in ["", "Tenant_", "tenant-", "pg_", "1tenant_", "tenant_;drop", "t" * 41, "ténant_"]:
        with pytest.raises(InvalidInput, match="invalid database prefix"):
            validate_database_prefix(bad)
        with pytest.raises(pydantic.ValidationError, match="invalid database prefix"):
            Settings(_env_file=None, database_prefix=bad)
    with pytest.raises(pydantic.ValidationError, match="cannot be the catalog database"):
        Settings(_env_file=None, catalog_database="postgres")


async def test_a_tenant_id_that_names_the_catalog_or_a_system_database_is_refused(
    temporal_env, worker_with, task_queue, settings, catalog
):
    # The test session's catalog is `<prefix>catalog`: tenant id "catalog" would be it.
    before = await catalog.list_tenants()
    with pytest.raises(WorkflowFailureError) as caught:
        await provision(temporal_env, task_queue, name="Catalog", tenant_id="catalog")
    assert failure_type(caught.value) == "InvalidInput"
    assert failure_message(caught.value) == (
        f"tenant id 'catalog' would name its database '{settings.catalog_database}', which is the catalog database; "
        "choose another id"
    )
    async with worker_with(database_prefix="template") as queue:
        with pytest.raises(WorkflowFailureError) as caught:
            await provision(temporal_env, queue, name="System", tenant_id="1")
    assert failure_type(caught.value) == "InvalidInput"
    assert "'template1', which is a PostgreSQL system database" in failure_message(caught.value)
    assert await catalog.list_tenants() == before


async def test_a_cancelled_provisioning_undoes_only_after_the_create_has_stopped(
    temporal_env, task_queue, settings, catalog
):
    """The database step waits on the template's lock (held here): cancelled meanwhile, the undo is scheduled only
    once the step has stopped, and nothing is left behind when the lock is let go."""
    tenant_id = unique_id("cancel")
    holder = admin(settings)
    holder.execute("SELECT pg_advisory_lock(%s)", [TEMPLATE_LOCK_KEY])
    try:
        handle = await temporal_env.client.start_workflow(
            ProvisionTenantWorkflow.run,
            ProvisionTenantInput(name="Cancelled", plan="pro", owner_email="c@example.com", tenant_id=tenant_id),
            id=f"provision-{tenant_id}",
            task_queue=task_queue,
        )

        async def creating() -> bool:
            pending = (await handle.describe()).raw_description.pending_activities
            return any(p.activity_type.name == "create_tenant_database" for p in pending)

        for _ in range(100):
            if await creating():
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 30)
    finally:
        holder.execute("SELECT pg_advisory_unlock(%s)", [TEMPLATE_LOCK_KEY])
        holder.close()
    try:
        events = [e async for e in handle.fetch_history_events()]
        names = {}
        for e in events:
            if e.HasField("activity_task_scheduled_event_attributes"):
                names[e.event_id] = e.activity_task_scheduled_event_attributes.activity_type.name
        create = next(i for i, n in names.items() if n == "create_tenant_database")
        canceled = [
            e.event_id
            for e in events
            if e.HasField("activity_task_canceled_event_attributes")
            and e.activity_task_canceled_event_attributes.scheduled_event_id == create
        ]
        undo = next(i for i, n in names.items() if n == "undo_provisioning")
        # The create step acknowledged its cancellation (it had stopped) before the undo was scheduled.
        assert canceled and canceled[0] < undo
        await asyncio.sleep(1)
        with admin(settings) as conn:
            left = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", [settings.database_prefix + tenant_id + "%"]
            ).fetchall()
        assert left == []
        assert (await catalog.get_tenant(tenant_id)).status == "failed"
    finally:
        await catalog.drop_tenant(tenant_id)
