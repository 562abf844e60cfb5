"""Restores can be undone: the replaced database is kept (24 h by default) and `tenants restore --undo` swaps it
back; a restore into a tenant whose database is missing lets in the tenant's role only; an undo of an unfinished
restore recognises a swap that had committed."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql
from temporalio.client import WorkflowFailureError
from temporalio.testing import ActivityEnvironment

from activities.infra.marks import database_mark, mark_database
from activities.infra.pg import connect
from activities.restore import RestoreActivities
from starter.demo import table_fingerprint
from tenancy.contracts.restore import UndoRestoreInput
from tenancy.errors import failure_message, failure_type
from tenancy.marks import Mark
from tenancy.messages.restore import SwapRequest
from tenancy.naming import previous_database_name, scratch_database_name
from tests.recording import RECORD, save_history
from tests.test_restore_workflow import backup, change_everything, databases_like, restore
from workflows.undo_restore import UndoRestoreWorkflow


async def undo(env, queue, tenant_id, **kwargs):
    handle = await env.client.start_workflow(
        UndoRestoreWorkflow.run,
        UndoRestoreInput(tenant_id=tenant_id, **kwargs),
        id=f"restore-undo-{tenant_id}-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
    )
    return handle, await handle.result()


async def mark_of(url: str, dbname: str) -> Mark | None:
    async with await connect(url) as conn:
        return await database_mark(conn, dbname)


async def test_restore_keeps_the_replaced_database_and_undo_gives_back_the_pre_restore_rows(
    temporal_env, task_queue, settings, make_tenant, catalog
):
    tenant = await make_tenant(entries=2000)
    url = settings.effective_database_url
    at_backup = await table_fingerprint(url, tenant.database_name)
    taken = await backup(temporal_env, task_queue, tenant.id)
    change_everything(url, tenant.database_name)  # what a user wrote after the backup
    written_since = await table_fingerprint(url, tenant.database_name)

    restored = await restore(temporal_env, task_queue, tenant.id)  # the default keeps the replaced database

    assert await table_fingerprint(url, tenant.database_name) == at_backup
    assert not restored.previous_dropped
    assert restored.keep_previous_until - datetime.now(UTC) > timedelta(hours=23)
    kept = await catalog.kept_databases(tenant.id)
    assert [k["name"] for k in kept] == [restored.previous_database]
    assert kept[0]["backup_name"] == taken.backup_name
    set_aside = await mark_of(url, restored.previous_database)
    assert set_aside is not None and set_aside.kind == "previous" and set_aside.tenant_id == tenant.id
    assert (await mark_of(url, tenant.database_name)).kind == "tenant"

    handle, undone = await undo(temporal_env, task_queue, tenant.id)

    # The rows written after the backup, which the restore replaced, are back.
    assert await table_fingerprint(url, tenant.database_name) == written_since
    assert undone.restored_from == restored.previous_database and undone.backup_name == taken.backup_name
    assert databases_like(url, restored.previous_database) == []
    assert databases_like(url, undone.replaced_database) == [undone.replaced_database]
    assert [k["name"] for k in await catalog.kept_databases(tenant.id)] == [undone.replaced_database]
    events = await catalog.events(tenant.id)
    assert events[0]["type"] == "TenantRestoreUndone"
    assert events[0]["data"]["restored_from"] == restored.previous_database
    with psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname=tenant.database_name)) as conn:
        conn.execute("SELECT 1")  # the database taken back in accepts connections again
    assert await catalog.lock_holder(tenant.id) is None
    if RECORD:
        save_history(await handle.fetch_history(), "UndoRestoreWorkflow")

    # An undo can itself be undone while the restored database is kept.
    _, again = await undo(temporal_env, task_queue, tenant.id, keep_previous_seconds=0)
    assert await table_fingerprint(url, tenant.database_name) == at_backup
    assert again.replaced_kept_until is None and databases_like(url, again.replaced_database) == []
    assert databases_like(url, tenant.database_name + "\\_\\_%") == []

    # Nothing left to undo: a clear refusal, nothing changed.
    try:
        await undo(temporal_env, task_queue, tenant.id)
    except WorkflowFailureError as exc:
        assert failure_type(exc) == "NothingToUndo"
        assert "no database kept from a restore" in failure_message(exc)
    else:
        raise AssertionError("an undo with nothing kept succeeded")
    assert await table_fingerprint(url, tenant.database_name) == at_backup


async def test_restore_with_keep_zero_drops_the_replaced_database_at_once(
    temporal_env, task_queue, settings, make_tenant, catalog
):
    tenant = await make_tenant(entries=100)
    url = settings.effective_database_url
    await backup(temporal_env, task_queue, tenant.id)
    result = await restore(temporal_env, task_queue, tenant.id, keep_previous_seconds=0)
    assert result.previous_dropped and databases_like(url, result.previous_database) == []
    assert await catalog.kept_databases(tenant.id) == []


async def test_restore_into_a_missing_database_lets_in_the_tenant_role_only(
    temporal_env, task_queue, settings, make_tenant, catalog
):
    tenant = await make_tenant(entries=200)
    url = settings.effective_database_url
    role = tenant.database_name  # roles are named like their databases
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(tenant.database_name)))
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(tenant.database_name), sql.Identifier(role)
            )
        )
    async with await catalog._connect() as conn:
        await conn.execute("UPDATE tenants SET role_name = %s WHERE id = %s", [role, tenant.id])
        await conn.commit()
    await backup(temporal_env, task_queue, tenant.id)
    expected = await table_fingerprint(url, tenant.database_name)
    with psycopg.connect(url, autocommit=True) as conn:  # the tenant's database is lost
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(tenant.database_name)))

    result = await restore(temporal_env, task_queue, tenant.id)

    assert await table_fingerprint(url, tenant.database_name) == expected
    # Nothing was set aside: nothing is kept, nothing to undo, no drop scheduled for a database that never was.
    assert result.previous_database == "" and await catalog.kept_databases(tenant.id) == []
    with psycopg.connect(url) as conn:
        public, tenant_role = conn.execute(
            "SELECT has_database_privilege('public', %s, 'CONNECT'), has_database_privilege(%s, %s, 'CONNECT')",
            [tenant.database_name, role, tenant.database_name],
        ).fetchone()
    assert (public, tenant_role) == (False, True)


async def test_undo_of_an_unfinished_restore_reverses_a_swap_that_had_committed(settings, make_tenant):
    """A restore cancelled or failed just after its swap committed: undo finds the swap by its marks and puts
    the tenant's own database back."""
    tenant = await make_tenant(entries=300)
    url = settings.effective_database_url
    original = await table_fingerprint(url, tenant.database_name)
    workflow_id = f"restore-{tenant.id}-{uuid.uuid4().hex[:6]}"
    token = uuid.uuid4().hex[:10]
    names = SwapRequest(
        tenant_id=tenant.id,
        database_name=tenant.database_name,
        scratch_name=scratch_database_name(tenant.database_name, token),
        previous_name=previous_database_name(tenant.database_name, token),
    )
    mark = Mark(kind="scratch", tenant_id=tenant.id, workflow_id=workflow_id, run_id="r1")
    async with await connect(url, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(names.scratch_name)))
        await mark_database(conn, names.scratch_name, mark)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=workflow_id, workflow_run_id="r1")
    restores = RestoreActivities(settings)
    await env.run(restores.swap_in_restored, names)  # the swap commits...
    with psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname=tenant.database_name)) as conn:
        assert conn.execute("SELECT to_regclass('projects')").fetchone()[0] is None  # the (empty) copy is live
    state = await env.run(restores.undo_unfinished_restore, names)  # ...and the run is undone
    assert "reversed" in state
    assert await table_fingerprint(url, tenant.database_name) == original
    assert databases_like(url, tenant.database_name + "\\_\\_%") == []

    # A scratch database of that name that another run made is never dropped by this run's undo.
    async with await connect(url, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(names.scratch_name)))
        await mark_database(conn, names.scratch_name, mark.model_copy(update={"workflow_id": "someone-else"}))
    await env.run(restores.undo_unfinished_restore, names)
    assert databases_like(url, names.scratch_name) == [names.scratch_name]
