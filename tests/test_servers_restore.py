"""Backups, restores, drills and undos of a tenant on a second server act on that server only, with the pg_dump and
pg_restore of that server's major version (in the machine pass: PostgreSQL 15 is `default`, 18 is `pg-b`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from psycopg import sql

from activities.infra.catalog import Catalog
from activities.infra.marks import mark_database
from activities.infra.pg import connect
from activities.infra.servers import server_major_version
from activities.infra.storage import open_storage
from starter.demo import seed_tenant_data, table_fingerprint
from tenancy.contracts.backup import BackupTenantInput, DrillInput
from tenancy.contracts.restore import DropLaterInput, RestoreTenantInput, UndoRestoreInput
from tenancy.contracts.tenants import Tenant
from tenancy.marks import Mark
from tenancy.naming import database_name
from tenancy.search import tenant_attributes
from tests.conftest import SECOND_SERVER
from tests.test_restore_workflow import change_everything, databases_like
from worker import build_worker
from workflows.backup_tenant import BackupTenantWorkflow
from workflows.drill import BackupDrillWorkflow
from workflows.drop_later import DropPreviousDatabaseWorkflow
from workflows.restore_tenant import RestoreTenantWorkflow
from workflows.undo_restore import UndoRestoreWorkflow

pytestmark = pytest.mark.one_server  # both servers in every pass


@pytest.fixture
async def multi_queue(temporal_env, multi_settings) -> AsyncIterator[str]:
    """A worker on the two-server catalog."""
    queue = f"tq-{uuid.uuid4().hex[:10]}"
    async with build_worker(temporal_env.client, multi_settings, queue):
        yield queue


async def tenant_on_second_server(multi_settings, second_pg_url: str, entries: int = 1500) -> Tenant:
    """A tenant whose catalog row says `pg-b`, its database (marked as the tenant's, with sample data) there."""
    catalog = Catalog(multi_settings)
    tenant_id = f"srv-{uuid.uuid4().hex[:8]}"
    dbname = database_name(multi_settings.database_prefix, tenant_id)
    async with await connect(second_pg_url, autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        await mark_database(admin, dbname, Mark(kind="tenant", tenant_id=tenant_id, at=datetime.now(UTC)))
    await catalog.create_tenant(tenant_id, f"Tenant {tenant_id}", create_database=False)
    assert await catalog.switch_tenant_server(tenant_id, "default", SECOND_SERVER)
    await seed_tenant_data(second_pg_url, dbname, entries)
    tenant = await catalog.get_tenant(tenant_id)
    assert tenant is not None and tenant.server == SECOND_SERVER
    return tenant


async def run(env, queue, workflow, arg, tenant_id: str):
    return await env.client.execute_workflow(
        workflow,
        arg,
        id=f"srv-{tenant_id}-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
        search_attributes=tenant_attributes(tenant_id),
    )


def nothing_on_default(settings, dbname: str) -> None:
    """No database of the tenant's (its own, a scratch copy, a set-aside one) on the default server."""
    assert databases_like(settings.effective_database_url, dbname + "%") == []


async def test_backup_restore_and_drill_of_a_tenant_on_the_second_server_stay_there(
    temporal_env, multi_queue, multi_settings, second_pg_url
):
    tenant = await tenant_on_second_server(multi_settings, second_pg_url)
    at_backup = await table_fingerprint(second_pg_url, tenant.database_name)

    taken = await run(
        temporal_env, multi_queue, BackupTenantWorkflow.run, BackupTenantInput(tenant_id=tenant.id), tenant.id
    )

    # Dumped from pg-b, by a pg_dump of pg-b's major version (not the default server's).
    b_major = await server_major_version(second_pg_url)
    manifest = open_storage(multi_settings).read_manifest(tenant.id, taken.backup_name)
    assert manifest is not None and manifest.verified
    assert int(manifest.server_version.split(".")[0]) == b_major
    assert int(manifest.tool_version.split(".")[0]) == b_major
    assert sum(taken.row_counts.values()) > 1500
    nothing_on_default(multi_settings, tenant.database_name)

    change_everything(second_pg_url, tenant.database_name)
    assert await table_fingerprint(second_pg_url, tenant.database_name) != at_backup
    restored = await run(
        temporal_env,
        multi_queue,
        RestoreTenantWorkflow.run,
        RestoreTenantInput(tenant_id=tenant.id, keep_previous_seconds=0),
        tenant.id,
    )

    assert restored.row_counts == taken.row_counts and restored.previous_dropped
    assert await table_fingerprint(second_pg_url, tenant.database_name) == at_backup
    assert databases_like(second_pg_url, tenant.database_name + "\\_\\_%") == []  # no scratch, no previous left
    nothing_on_default(multi_settings, tenant.database_name)

    drilled = await run(temporal_env, multi_queue, BackupDrillWorkflow.run, DrillInput(tenant_id=tenant.id), tenant.id)

    assert drilled.ok, drilled.error
    assert drilled.backup_name == taken.backup_name and drilled.rows == sum(taken.row_counts.values())
    assert databases_like(second_pg_url, tenant.database_name + "\\_\\_%") == []  # the drill's copy is gone
    nothing_on_default(multi_settings, tenant.database_name)


async def test_undo_and_drop_later_of_a_restore_on_the_second_server(
    temporal_env, multi_queue, multi_settings, second_pg_url
):
    catalog = Catalog(multi_settings)
    tenant = await tenant_on_second_server(multi_settings, second_pg_url, entries=300)
    await run(temporal_env, multi_queue, BackupTenantWorkflow.run, BackupTenantInput(tenant_id=tenant.id), tenant.id)
    change_everything(second_pg_url, tenant.database_name)
    written_since = await table_fingerprint(second_pg_url, tenant.database_name)

    restored = await run(
        temporal_env,
        multi_queue,
        RestoreTenantWorkflow.run,
        RestoreTenantInput(tenant_id=tenant.id, keep_previous_seconds=3600),
        tenant.id,
    )

    assert not restored.previous_dropped
    assert databases_like(second_pg_url, restored.previous_database) == [restored.previous_database]
    [kept] = await catalog.kept_databases(tenant.id)
    assert kept["name"] == restored.previous_database and kept["server"] == SECOND_SERVER

    undone = await run(
        temporal_env,
        multi_queue,
        UndoRestoreWorkflow.run,
        UndoRestoreInput(tenant_id=tenant.id, keep_previous_seconds=3600),
        tenant.id,
    )

    # The rows the restore replaced are back, on pg-b; the restored database is kept there in turn.
    assert await table_fingerprint(second_pg_url, tenant.database_name) == written_since
    assert databases_like(second_pg_url, restored.previous_database) == []
    assert databases_like(second_pg_url, undone.replaced_database) == [undone.replaced_database]
    [kept] = await catalog.kept_databases(tenant.id)
    assert kept["name"] == undone.replaced_database and kept["server"] == SECOND_SERVER
    nothing_on_default(multi_settings, tenant.database_name)

    # The tenant's row now names another server (as after a move): the delayed drop still finds the kept database
    # where it was recorded, not on the tenant's current server.
    assert await catalog.switch_tenant_server(tenant.id, SECOND_SERVER, "default")
    dropped = await run(
        temporal_env,
        multi_queue,
        DropPreviousDatabaseWorkflow.run,
        DropLaterInput(
            tenant_id=tenant.id,
            database_name=tenant.database_name,
            previous_name=undone.replaced_database,
            delay_seconds=0,
        ),
        tenant.id,
    )

    assert dropped is True
    assert databases_like(second_pg_url, undone.replaced_database) == []
    assert await catalog.kept_databases(tenant.id) == []
    assert databases_like(second_pg_url, tenant.database_name) == [tenant.database_name]  # the live one untouched
