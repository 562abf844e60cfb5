"""Provisioning and status management on a real Temporal server, real PostgreSQL and a real SMTP server."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid

import psycopg
import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

from activities.credentials import read_credentials
from activities.notify import sign
from starter.services import free_port
from tenancy.errors import failure_message, failure_type
from tenancy.models import (
    DeprovisionTenantInput,
    FleetInput,
    ProvisionTenantInput,
    SettingsChange,
    StatusChange,
)
from tests.blocking import wait_until
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
    assert headers["X-Tenants-Signature"] == sign("s3cret", body)

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
    assert [e["type"] for e in await catalog.events(tenant_id)][:2] == ["TenantStatusChanged", "TenantProvisioned"]
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
        outcomes = {o.tenant_id: o for o in result.outcomes}
        for tenant_id in ids:
            assert outcomes[tenant_id].ok and "applied: 0004_clients" in outcomes[tenant_id].detail
        fresh = unique_id("m")
        cleanup.append(fresh)
        provisioned = await provision(temporal_env, queue, name="After", tenant_id=fresh)
        assert provisioned.schema_version == "0004_clients"
