"""A departed tenant comes back (`tenants reinstate`): real workflows on a real Temporal server and real
PostgreSQL, and the command as a user runs it."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql
from temporalio.client import WorkflowFailureError

from activities.infra.credentials import read_credentials
from starter.demo import seed_tenant_data, table_fingerprint
from tenancy.contracts.provision import DeprovisionTenantInput, ProvisionTenantInput, ReinstateTenantInput
from tenancy.errors import InvalidInput, failure_type
from tenancy.lifecycle import check_reinstatement, check_transition
from tenancy.marks import parse_mark
from tests.cli import cli_environment, tenants
from tests.recording import RECORD, save_history
from workflows.deprovision_tenant import DeprovisionTenantWorkflow
from workflows.provision_tenant import ProvisionTenantWorkflow
from workflows.reinstate_tenant import ReinstateTenantWorkflow


def admin(settings) -> psycopg.Connection:
    return psycopg.connect(settings.effective_database_url, autocommit=True)


async def drop_tenant_and_copies(settings, catalog, tenant_id: str) -> None:
    with admin(settings) as conn:
        # Copies a failed run may have left first: their grants would keep the role from being dropped.
        names = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", [f"{settings.database_prefix}{tenant_id}__%"]
        ).fetchall()
        for (name,) in names:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    await catalog.drop_tenant(tenant_id)


def role_exists(settings, name: str) -> bool:
    with admin(settings) as conn:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone() is not None


async def test_deprovisioned_tenant_is_reinstated_from_its_final_backup(temporal_env, task_queue, settings, catalog):
    client = temporal_env.client
    tenant_id = f"ri-{uuid.uuid4().hex[:8]}"
    try:
        provisioned = await client.execute_workflow(
            ProvisionTenantWorkflow.run,
            ProvisionTenantInput(name="Returning", plan="pro", owner_email="r@example.com", tenant_id=tenant_id),
            id=f"provision-{tenant_id}",
            task_queue=task_queue,
        )
        dbname, role = provisioned.database_name, provisioned.role_name
        await seed_tenant_data(settings.effective_database_url, dbname, 300)
        before = await table_fingerprint(settings.effective_database_url, dbname)
        with psycopg.connect(psycopg.conninfo.make_conninfo(settings.effective_database_url, dbname=dbname)) as db:
            sample = db.execute("SELECT id, project_id, minutes, note FROM time_entries WHERE id = 42").fetchone()
        old_password = read_credentials(settings.effective_secrets_dir, tenant_id)["password"]

        deprovisioned = await client.execute_workflow(
            DeprovisionTenantWorkflow.run,
            DeprovisionTenantInput(tenant_id=tenant_id),
            id=f"deprovision-{tenant_id}",
            task_queue=task_queue,
        )
        assert deprovisioned.final_backup and not role_exists(settings, role)

        env = cli_environment(temporal_env, settings, task_queue)
        done = await tenants(env, "reinstate", tenant_id, "--yes")
        assert done.returncode == 0, done.stderr
        assert f"{tenant_id} is active again, from {deprovisioned.final_backup}" in done.stdout
        assert "time_entries: 300 rows" in done.stdout
        creds = read_credentials(settings.effective_secrets_dir, tenant_id)
        assert f"kept in   {settings.effective_secrets_dir / (tenant_id + '.json')}" in done.stdout
        assert creds["password"] != old_password and creds["password"] in done.stdout

        tenant = await catalog.get_tenant(tenant_id)
        assert tenant.status == "active"
        reinstated = (await catalog.events(tenant_id))[0]
        assert reinstated["type"] == "TenantReinstated" and reinstated["data"]["backup"] == deprovisioned.final_backup
        # Its rows are back, and its role logs in with the new password.
        assert await table_fingerprint(settings.effective_database_url, dbname) == before
        own = psycopg.conninfo.make_conninfo(
            settings.effective_database_url, user=creds["role"], password=creds["password"], dbname=creds["database"]
        )
        with psycopg.connect(own, connect_timeout=5) as conn:
            row = conn.execute("SELECT id, project_id, minutes, note FROM time_entries WHERE id = 42").fetchone()
            assert row == sample
            conn.execute("INSERT INTO activity_log (message) VALUES ('back again')")
        with admin(settings) as conn:
            acl = conn.execute(
                "SELECT datacl IS NOT NULL, (SELECT count(*) FROM aclexplode(datacl) a WHERE a.grantee = 0), "
                "shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                [dbname],
            ).fetchone()
        assert acl[0] and acl[1] == 0  # explicit grants, none to PUBLIC
        assert parse_mark(acl[2]).is_of(tenant_id, "tenant")  # a later deprovisioning may drop it
    finally:
        await drop_tenant_and_copies(settings, catalog, tenant_id)


async def test_reinstating_an_active_tenant_is_refused(temporal_env, task_queue, settings, catalog, make_tenant):
    tenant = await make_tenant("ri", entries=10)
    env = cli_environment(temporal_env, settings, task_queue)

    unconfirmed = await tenants(env, "reinstate", tenant.id)
    assert unconfirmed.returncode == 2
    assert "refusing to reinstate without confirmation: pass --yes" in unconfirmed.stderr

    refused = await tenants(env, "reinstate", tenant.id, "--yes")
    assert refused.returncode == 2, refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert f"tenant {tenant.id} is active, not deprovisioned" in line and "`tenants restore" in line
    assert line.endswith("[InvalidInput]") and "Traceback" not in refused.stderr
    assert (await catalog.get_tenant(tenant.id)).status == "active"
    assert not role_exists(settings, tenant.database_name)
    assert [e["type"] for e in await catalog.events(tenant.id)] == []


async def test_failed_reinstatement_leaves_the_tenant_deprovisioned(
    temporal_env, task_queue, settings, catalog, make_tenant
):
    tenant = await make_tenant("ri", entries=50)
    client = temporal_env.client
    deprovisioned = await client.execute_workflow(
        DeprovisionTenantWorkflow.run,
        DeprovisionTenantInput(tenant_id=tenant.id),
        id=f"deprovision-{tenant.id}",
        task_queue=task_queue,
    )
    with pytest.raises(WorkflowFailureError) as caught:
        await client.execute_workflow(
            ReinstateTenantWorkflow.run,
            ReinstateTenantInput(tenant_id=tenant.id, checks=["SELECT count(*) = 0 FROM projects"]),
            id=f"reinstate-{tenant.id}",
            task_queue=task_queue,
        )
    assert failure_type(caught.value) == "RestoreVerificationFailed"
    # Its scratch copy and the role this run created are gone again; it is deprovisioned, as it was.
    assert (await catalog.get_tenant(tenant.id)).status == "deprovisioned"
    with admin(settings) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [tenant.database_name + "%"])
        assert left.fetchall() == []
    assert not role_exists(settings, tenant.database_name)
    assert [e["type"] for e in await catalog.events(tenant.id)][:1] == ["TenantStatusChanged"]
    assert deprovisioned.final_backup  # still there to try again with


@pytest.mark.skipif(not RECORD, reason="records only when asked")
async def test_record_histories(temporal_env, task_queue, settings, catalog):
    """Replay histories of the new runs (tests/test_replay.py): each named after its workflow id, which the
    replay takes from the file name (the ids of the children a run starts derive from it)."""
    client = temporal_env.client
    tenant_id = f"rec-{uuid.uuid4().hex[:8]}"
    try:
        await client.execute_workflow(
            ProvisionTenantWorkflow.run,
            ProvisionTenantInput(name="Recorded", plan="pro", owner_email="rec@example.com", tenant_id=tenant_id),
            id=f"provision-{tenant_id}",
            task_queue=task_queue,
        )
        for run, arg in [
            (DeprovisionTenantWorkflow.run, DeprovisionTenantInput(tenant_id=tenant_id)),
            (ReinstateTenantWorkflow.run, ReinstateTenantInput(tenant_id=tenant_id)),
        ]:
            workflow_id = f"{run.__qualname__.split('.')[0]}-{uuid.uuid4().hex[:8]}"
            handle = await client.start_workflow(run, arg, id=workflow_id, task_queue=task_queue)
            await handle.result()
            save_history(await handle.fetch_history(), run.__qualname__.split(".")[0])
    finally:
        await drop_tenant_and_copies(settings, catalog, tenant_id)


def test_only_a_reinstatement_brings_a_deprovisioned_tenant_back():
    with pytest.raises(InvalidInput, match="`tenants reinstate`"):
        check_transition("deprovisioned", "active")  # `tenants activate`: the database is not there
    check_reinstatement("deprovisioned", "active")
    for current in ("active", "suspended", "inactive", "failed"):
        with pytest.raises(InvalidInput, match=f"only a deprovisioned tenant can be reinstated; this one is {current}"):
            check_reinstatement(current, "active")
