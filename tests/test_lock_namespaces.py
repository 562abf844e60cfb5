"""Tenant locks shared by two deployments (two Temporal namespaces, one catalog): a holder that cannot be found
from here keeps its lock until its lease runs out; one ended in its own namespace gives it up at once; a live
holder's heartbeats keep its lease ahead."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from google.protobuf.duration_pb2 import Duration
from temporalio.api.operatorservice.v1 import DeleteNamespaceRequest
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment

from activities.infra.pg import conninfo_for
from activities.sweep import SweepActivities
from tenancy.contracts.backup import BackupTenantInput
from tenancy.contracts.sweep import SweepInput
from tenancy.contracts.tenants import SettingsChange
from tenancy.errors import failure_message, failure_type
from tenancy.locks import is_same_holder, lease_expired, may_take_over, renewal_due
from tests.blocking import table_locked
from workflows.backup_tenant import BackupTenantWorkflow
from workflows.tenant_status import UpdateTenantSettingsWorkflow

pytestmark = pytest.mark.one_server  # Temporal namespaces and catalog rows: nothing of the PostgreSQL version


@pytest.fixture(scope="module")
async def other_namespace(temporal_env) -> AsyncIterator[Client]:
    """A client of a second namespace on the same Temporal server: another deployment sharing the catalog."""
    name = f"other-{uuid.uuid4().hex[:8]}"
    await temporal_env.client.workflow_service.register_namespace(
        RegisterNamespaceRequest(namespace=name, workflow_execution_retention_period=Duration(seconds=86_400))
    )
    client = Client(temporal_env.client.service_client, namespace=name)
    # A new namespace is usable once the server's namespace cache has it.
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            await client.count_workflows()
            break
        except RPCError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
    yield client
    with contextlib.suppress(RPCError):
        await temporal_env.client.operator_service.delete_namespace(DeleteNamespaceRequest(namespace=name))


async def holder_in(client: Client) -> WorkflowHandle:
    """A run of the other deployment, running (no worker there picks it up) until terminated."""
    return await client.start_workflow(
        "BackupTenantWorkflow", id=f"backup-held-{uuid.uuid4().hex[:8]}", task_queue=f"nobody-{uuid.uuid4().hex[:8]}"
    )


def write_lock(
    catalog, tenant_id: str, namespace: str | None, workflow_id: str, run_id: str | None, lease: str | None
) -> None:
    """The lock row a holder in `namespace` left, its lease ending `lease` from now (an SQL interval; None: a row
    from before namespaces and leases, taken now)."""
    with psycopg.connect(conninfo_for(catalog.admin_url, catalog.settings.catalog_database), autocommit=True) as c:
        c.execute("DELETE FROM tenant_locks WHERE tenant_id = %s", [tenant_id])
        c.execute(
            "INSERT INTO tenant_locks (tenant_id, operation, workflow_id, run_id, namespace, lease_until) "
            "VALUES (%s, 'backup', %s, %s, %s, now() + %s::interval)",
            [tenant_id, workflow_id, run_id, namespace, lease],
        )


async def change_settings(temporal_env, queue: str, tenant_id: str):
    """A settings change in this test's namespace: takes the tenant's lock, never waits for it."""
    return await temporal_env.client.execute_workflow(
        UpdateTenantSettingsWorkflow.run,
        SettingsChange(tenant_id=tenant_id, changes={"timezone": "UTC"}),
        id=f"settings-{tenant_id}-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
    )


async def start_backup(temporal_env, queue: str, tenant_id: str) -> WorkflowHandle:
    return await temporal_env.client.start_workflow(
        BackupTenantWorkflow.run,
        BackupTenantInput(tenant_id=tenant_id),
        id=f"backup-{tenant_id}-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
    )


async def assert_busy(temporal_env, queue: str, tenant_id: str, holder: str) -> None:
    with pytest.raises(WorkflowFailureError) as caught:
        await change_settings(temporal_env, queue, tenant_id)
    assert failure_type(caught.value) == "TenantBusy"
    assert holder in failure_message(caught.value)


async def test_a_running_holder_in_another_namespace_keeps_its_lock(
    temporal_env, task_queue, other_namespace, make_tenant, catalog
):
    tenant = await make_tenant("ns", entries=0, create_database=False)
    holder = await holder_in(other_namespace)
    try:
        # Not found in this namespace, found running in its own: busy, and the message says where it runs.
        write_lock(catalog, tenant.id, other_namespace.namespace, holder.id, holder.result_run_id, "1 hour")
        with pytest.raises(WorkflowFailureError) as caught:
            await change_settings(temporal_env, task_queue, tenant.id)
        assert failure_type(caught.value) == "TenantBusy"
        assert f"{holder.id} (namespace {other_namespace.namespace})" in failure_message(caught.value)
        # Seen running, it keeps the lock even past its lease: the lease speaks only for holders out of sight.
        write_lock(catalog, tenant.id, other_namespace.namespace, holder.id, holder.result_run_id, "-1 minute")
        await assert_busy(temporal_env, task_queue, tenant.id, holder.id)
        assert (await catalog.lock_holder(tenant.id))["workflow_id"] == holder.id

        # Ended in its namespace: taken over at once, lease or not, and released by the run that took it.
        await holder.terminate(reason="test: the other deployment's run ends")
        write_lock(catalog, tenant.id, other_namespace.namespace, holder.id, holder.result_run_id, "1 hour")
        result = await change_settings(temporal_env, task_queue, tenant.id)
        assert result.settings["timezone"] == "UTC"
        assert await catalog.lock_holder(tenant.id) is None
    finally:
        with contextlib.suppress(RPCError):
            await holder.terminate()


async def test_a_holder_out_of_sight_keeps_its_lock_until_its_lease_runs_out(
    temporal_env, task_queue, make_tenant, catalog
):
    tenant = await make_tenant("ns", entries=0, create_database=False)
    ghost, ghost_run = f"backup-ghost-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    unknown = f"unknown-{uuid.uuid4().hex[:8]}"  # a namespace this Temporal server does not have
    write_lock(catalog, tenant.id, unknown, ghost, ghost_run, "1 hour")
    await assert_busy(temporal_env, task_queue, tenant.id, ghost)
    # A row from before namespaces (this deployment's) whose run is not found: its lease counts from when it was
    # taken, so it is not free yet either.
    write_lock(catalog, tenant.id, None, ghost, ghost_run, None)
    await assert_busy(temporal_env, task_queue, tenant.id, ghost)

    write_lock(catalog, tenant.id, unknown, ghost, ghost_run, "-1 second")
    await change_settings(temporal_env, task_queue, tenant.id)
    assert await catalog.lock_holder(tenant.id) is None


async def test_a_live_holders_heartbeats_keep_its_lease_ahead(temporal_env, worker_with, make_tenant, catalog):
    tenant = await make_tenant("ns", entries=50)
    lease = timedelta(seconds=3)  # renewed every quarter lease by the dump's heartbeats
    async with worker_with(lock_lease_seconds=int(lease.total_seconds())) as queue:
        with table_locked(catalog.admin_url, tenant.database_name):  # the dump waits, heartbeating, holding the lock
            handle = await start_backup(temporal_env, queue, tenant.id)
            row = await held_lock(catalog, tenant.id)
            assert row["workflow_id"] == handle.id and row["namespace"] == temporal_env.client.namespace
            first = row["lease_until"]
            # Two leases later the holder still holds it, with its lease still ahead.
            await asyncio.sleep(2 * lease.total_seconds())
            row = await held_lock(catalog, tenant.id)
            assert row["workflow_id"] == handle.id
            # Renewed, by more than a lease (not compared with the clock: a loaded machine may renew late).
            assert row["lease_until"] - first > lease
        assert (await handle.result()).backup_name
    assert await catalog.lock_holder(tenant.id) is None


async def test_the_sweeper_leaves_the_files_of_a_tenant_another_deployment_holds(
    temporal_env, settings, make_tenant, catalog
):
    tenant = await make_tenant("ns", entries=0, create_database=False)
    # A dump of the other deployment, stalled for two days on a table lock: its `.partial` is old, and its run is
    # not one this namespace can find.
    partial = settings.storage_root / "tenants" / tenant.id / f".tenant_{tenant.id}_x.dump.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"x" * 100)
    two_days_ago = (datetime.now(UTC) - timedelta(days=2)).timestamp()
    os.utime(partial, (two_days_ago, two_days_ago))
    write_lock(catalog, tenant.id, f"other-{uuid.uuid4().hex[:8]}", "backup-elsewhere", str(uuid.uuid4()), "1 hour")
    try:
        sweeper = SweepActivities(settings, temporal_env.client)
        report = await ActivityEnvironment().run(sweeper.find_orphans, SweepInput(dry_run=True))
        [item] = [i for i in report.items if i.name == f"tenants/{tenant.id}/{partial.name}"]
        assert not item.removable and "backup-elsewhere (namespace other-" in item.reason
    finally:
        shutil.rmtree(partial.parent)


async def held_lock(catalog, tenant_id: str) -> dict:
    deadline = asyncio.get_running_loop().time() + 30
    while (row := await catalog.lock_holder(tenant_id)) is None:
        assert asyncio.get_running_loop().time() < deadline, "the backup never took the lock"
        await asyncio.sleep(0.1)
    return row


def test_who_may_take_a_lock_over():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    hour = timedelta(hours=1)
    assert may_take_over("closed", expired=False)
    assert not may_take_over("running", expired=True)
    assert not may_take_over("unknown", expired=False)
    assert may_take_over("unknown", expired=True)
    # A row from before leases: one lease from when it was taken.
    assert not lease_expired(None, now - 59 * timedelta(minutes=1), hour, now)
    assert lease_expired(None, now - hour, hour, now)
    assert lease_expired(now - timedelta(seconds=1), now, hour, now)
    # The same workflow id in another namespace is another holder; a row with no namespace is this deployment's.
    assert is_same_holder(None, "backup-a", "default", "backup-a")
    assert is_same_holder("default", "backup-a", "default", "backup-a")
    assert not is_same_holder("other", "backup-a", "default", "backup-a")
    assert not is_same_holder("default", "backup-b", "default", "backup-a")
    # Renewals: at most every quarter of the lease.
    assert renewal_due(None, 100.0, 3600)
    assert not renewal_due(100.0, 100.0 + 899, 3600)
    assert renewal_due(100.0, 100.0 + 900, 3600)
