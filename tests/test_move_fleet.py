"""Moving a whole server (`tenants move --all-from`, MoveAllFromServerWorkflow): every tenant of a drained server
moved, a few at a time, with its data; tenants elsewhere untouched; every tenant's outcome recorded; an open
source refused in one line."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from temporalio.client import WorkflowFailureError

from activities.infra.catalog import Catalog
from tenancy.contracts.move import MoveAllFromServerInput
from tenancy.contracts.provision import ProvisionTenantInput
from tenancy.contracts.tenants import Tenant
from tenancy.errors import failure_type
from tenancy.settings import Settings
from tests.cli import cli_environment, tenants
from tests.conftest import SECOND_SERVER
from tests.recording import RECORD, save_history
from tests.test_restore_workflow import databases_like
from worker import build_worker
from workflows.move_fleet import MoveAllFromServerWorkflow
from workflows.provision_tenant import ProvisionTenantWorkflow

pytestmark = pytest.mark.one_server  # both servers in every pass


@pytest.fixture
async def fleet_settings(multi_settings: Settings) -> AsyncIterator[Settings]:
    """A catalog of this test's own knowing `default` and `pg-b`: draining `default` here stops nothing elsewhere,
    and "every tenant of default" is only this test's."""
    own = multi_settings.model_copy(update={"catalog_database": f"{multi_settings.database_prefix}mvfleet_catalog"})
    catalog, known = Catalog(own), Catalog(multi_settings)
    await catalog.migrate()
    for name in ("default", SECOND_SERVER):
        row = await known.server(name)
        assert row is not None
        await catalog.add_server(name, major_version=row["major_version"])
    yield own


@pytest.fixture
async def fleet_queue(temporal_env, fleet_settings: Settings) -> AsyncIterator[str]:
    queue = f"tq-{uuid.uuid4().hex[:10]}"
    async with build_worker(temporal_env.client, fleet_settings, queue):
        yield queue


async def provision(temporal_env, queue: str, settings: Settings, server: str, rows: int) -> Tenant:
    tenant_id = f"mvf-{uuid.uuid4().hex[:8]}"
    await temporal_env.client.execute_workflow(
        ProvisionTenantWorkflow.run,
        ProvisionTenantInput(
            name=f"Tenant {tenant_id}",
            plan="free",
            owner_email=f"{tenant_id}@example.com",
            tenant_id=tenant_id,
            server=server,
        ),
        id=f"provision-{tenant_id}",
        task_queue=queue,
    )
    tenant = await Catalog(settings).get_tenant(tenant_id)
    assert tenant is not None and tenant.server == server
    url = settings.effective_database_url if server == "default" else settings.servers[server]
    with psycopg.connect(make_conninfo(url, dbname=tenant.database_name), autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
        conn.execute("INSERT INTO notes SELECT i, 'note ' || i FROM generate_series(1, %s) i", [rows])
    return tenant


def notes(url: str, dbname: str) -> list[tuple[int, str]]:
    with psycopg.connect(make_conninfo(url, dbname=dbname)) as conn:
        return conn.execute("SELECT id, body FROM notes ORDER BY id").fetchall()


async def test_move_all_from_a_drained_server_moves_every_tenant_with_its_data(
    temporal_env, fleet_queue: str, fleet_settings: Settings, second_pg_url: str
):
    settings, source_url = fleet_settings, fleet_settings.effective_database_url
    movers = [await provision(temporal_env, fleet_queue, settings, "default", rows) for rows in (10, 20, 30)]
    stayer = await provision(temporal_env, fleet_queue, settings, SECOND_SERVER, 5)
    before = {t.id: notes(source_url, t.database_name) for t in movers}
    stayer_before = notes(second_pg_url, stayer.database_name)
    env = cli_environment(temporal_env, settings, fleet_queue)

    # Usage: one tenant or a whole server, never neither nor both; an open source is refused, by the command
    # line and by the workflow itself.
    neither = await tenants(env, "move")
    assert neither.returncode == 2 and "--all-from" in neither.stderr
    both = await tenants(env, "move", movers[0].id, "--all-from", "default")
    assert both.returncode == 2 and "not both" in both.stderr
    still_open = await tenants(env, "move", "--all-from", "default", "--to", SECOND_SERVER)
    assert still_open.returncode == 2
    assert "server 'default' is open: drain it first: tenants servers drain default" in still_open.stderr
    assert len(still_open.stderr.strip().splitlines()) == 1
    with pytest.raises(WorkflowFailureError) as refused:
        await temporal_env.client.execute_workflow(
            MoveAllFromServerWorkflow.run,
            MoveAllFromServerInput(source="default"),
            id=f"move-all-from-default-{uuid.uuid4().hex[:6]}",
            task_queue=fleet_queue,
        )
    assert failure_type(refused.value) == "MoveRefused"
    assert {t.server for t in await Catalog(settings).list_tenants()} == {"default", SECOND_SERVER}
    assert (await Catalog(settings).get_tenant(movers[0].id)).server == "default"  # type: ignore[union-attr]

    # Drained, then emptied: no --to, so placement sends each tenant to the only open server, pg-b.
    drained = await tenants(env, "servers", "drain", "default")
    assert drained.returncode == 0, drained.stderr
    moved = await tenants(env, "move", "--all-from", "default", "--concurrency", "2", "--keep-source", "0")
    assert moved.returncode == 0, moved.stderr + moved.stdout
    assert "3 succeeded, 0 failed" in moved.stdout and "source default: empty" in moved.stdout
    run_id = moved.stdout.split("started ", 1)[1].split()[0]
    if RECORD:  # tests/histories (TENANTS_RECORD_HISTORIES=1): replayed by tests/test_replay.py
        history = await temporal_env.client.get_workflow_handle(run_id).fetch_history()
        save_history(history, "MoveAllFromServerWorkflow")

    catalog = Catalog(settings)
    for tenant in movers:
        now = await catalog.get_tenant(tenant.id)
        assert now is not None and now.server == SECOND_SERVER
        assert notes(second_pg_url, tenant.database_name) == before[tenant.id]
        assert databases_like(source_url, tenant.database_name + "%") == []  # --keep-source 0: gone from default
    # The tenant already on pg-b: untouched, and never moved.
    assert notes(second_pg_url, stayer.database_name) == stayer_before
    assert not any(e["type"] == "TenantMoved" for e in await catalog.events(stayer.id))
    counts = {row["name"]: row["tenants"] for row in await catalog.servers()}
    assert counts == {"default": 0, SECOND_SERVER: 4}

    # Every tenant's outcome, each child a `move-` run (what `tenants move ID --undo` looks for).
    shown = await tenants(env, "runs", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    outcomes = await catalog.fleet_outcomes(run_id)
    assert sorted(o.tenant_id for o in outcomes) == sorted(t.id for t in movers)
    assert all(o.ok and o.workflow_id.startswith("move-") for o in outcomes)
    assert all(f"default → {SECOND_SERVER}" in (o.detail or "") for o in outcomes)

    # Nothing left to move: an empty run, and --json like the other fleet commands.
    again = await tenants(env, "move", "--all-from", "default", "--to", SECOND_SERVER, "--json")
    assert again.returncode == 0, again.stderr
    assert '"total": 0' in again.stdout and '"tenants_left": 0' in again.stdout
