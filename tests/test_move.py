"""Moving a tenant between servers (MoveTenantWorkflow, `tenants move`): in the machine pass PostgreSQL 15 (`default`)
→ 18 (`pg-b`); in the embedded pass both are 18. A rich schema arrives equal, the tenant's own credentials work on
the target and not on the source, writes are refused during the freeze only, a failure before the switch leaves the
tenant untouched on its source, `--undo` brings it back, and a worker killed mid-copy does not stop the move."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from temporalio.client import WorkflowFailureError
from temporalio.testing import ActivityEnvironment

from activities.infra.catalog import Catalog
from activities.infra.credentials import read_credentials
from activities.infra.servers import server_major_version
from activities.move import MoveActivities
from activities.sweep import SweepActivities
from starter.demo import seed_tenant_data, table_fingerprint
from tenancy.contracts.move import MoveTenantInput, MoveTenantResult
from tenancy.contracts.provision import ProvisionTenantInput
from tenancy.contracts.sweep import SweepInput
from tenancy.contracts.tenants import Tenant
from tenancy.errors import failure_message, failure_type
from tenancy.messages.move import CopyRequest, FreezeRequest, MovePlan, UnfinishedMove
from tenancy.naming import previous_database_name, scratch_database_name
from tenancy.search import tenant_attributes
from tenancy.settings import Settings
from tests.cli import cli_environment, tenants
from tests.conftest import SECOND_SERVER
from tests.recording import RECORD, save_history
from tests.servers import WebhookReceiver
from tests.test_restore_resilience import worker_process
from tests.test_restore_workflow import databases_like
from worker import build_worker
from workflows.move_tenant import MoveTenantWorkflow
from workflows.provision_tenant import ProvisionTenantWorkflow

pytestmark = pytest.mark.one_server  # both servers in every pass

RICH_SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE items (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mood mood NOT NULL,
    doc jsonb NOT NULL
);
CREATE TABLE item_log (item_id bigint NOT NULL, logged_at timestamptz NOT NULL DEFAULT now());
CREATE FUNCTION log_item() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.item_log (item_id) VALUES (NEW.id);
    RETURN NEW;
END $$;
CREATE TRIGGER items_logged AFTER INSERT ON items FOR EACH ROW EXECUTE FUNCTION log_item();
CREATE VIEW happy_items AS SELECT id, doc FROM items WHERE mood = 'happy';
CREATE TABLE events (id int NOT NULL, happened date NOT NULL, what text) PARTITION BY RANGE (happened);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE SEQUENCE invoice_no START 1000;
INSERT INTO items (mood, doc)
    SELECT (ARRAY['sad', 'ok', 'happy'])[1 + i % 3]::mood, jsonb_build_object('i', i, 'tags', jsonb_build_array('a', i))
    FROM generate_series(1, 300) i;
INSERT INTO events SELECT i, DATE '2025-10-01' + (i % 200), 'event ' || i FROM generate_series(1, 200) i;
CREATE MATERIALIZED VIEW mood_counts AS SELECT mood, count(*) AS n FROM items GROUP BY mood;
SELECT setval('invoice_no', 1234);
"""


@pytest.fixture
async def multi_queue(temporal_env, multi_settings: Settings) -> AsyncIterator[str]:
    queue = f"tq-{uuid.uuid4().hex[:10]}"
    async with build_worker(temporal_env.client, multi_settings, queue):
        yield queue


async def provision(temporal_env, queue: str, settings: Settings, prefix: str = "mv") -> Tenant:
    """A tenant provisioned on `default` (database, login role, credentials file), as a user's would be."""
    tenant_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    await temporal_env.client.execute_workflow(
        ProvisionTenantWorkflow.run,
        ProvisionTenantInput(
            name=f"Tenant {tenant_id}",
            plan="free",
            owner_email=f"{tenant_id}@example.com",
            tenant_id=tenant_id,
            server="default",
        ),
        id=f"provision-{tenant_id}",
        task_queue=queue,
    )
    tenant = await Catalog(settings).get_tenant(tenant_id)
    assert tenant is not None and tenant.server == "default" and tenant.role_name
    return tenant


def fill_rich(url: str, dbname: str) -> None:
    with psycopg.connect(make_conninfo(url, dbname=dbname), autocommit=True) as conn:
        conn.execute(RICH_SCHEMA)


def snapshot(url: str, dbname: str) -> dict[str, object]:
    """What a user would compare: every table's rows (as text, ordered), every sequence's value, the matview."""
    with psycopg.connect(make_conninfo(url, dbname=dbname)) as conn:
        tables = conn.execute(
            "SELECT format('%I.%I', n.nspname, c.relname) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1"
        ).fetchall()
        found: dict[str, object] = {}
        for (table,) in tables:
            rows = conn.execute(f"SELECT t::text FROM {table} t ORDER BY 1").fetchall()
            found[table] = [r[0] for r in rows]
        found["sequences"] = conn.execute(
            "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
    return found


def as_tenant(settings: Settings, tenant: Tenant, url: str, dbname: str | None = None) -> psycopg.Connection:
    """A session as the tenant's application: its login role and the password of its credentials file."""
    saved = read_credentials(settings.effective_secrets_dir, tenant.id)
    return psycopg.connect(
        make_conninfo(url, dbname=dbname or tenant.database_name, user=saved["role"], password=saved["password"]),
        autocommit=True,
        connect_timeout=5,
    )


def database_state(url: str, dbname: str) -> tuple[bool, int] | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT datallowconn, datconnlimit FROM pg_database WHERE datname = %s", [dbname]).fetchone()
    return (row[0], row[1]) if row else None


def role_exists(url: str, role: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone() is not None


async def test_move_15_to_18_keeps_everything_freezes_briefly_and_undoes(
    temporal_env, multi_settings: Settings, second_pg_url: str
):
    # A worker that sends events to a webhook: applications learn of the move there.
    with WebhookReceiver() as hook:
        multi_queue = f"tq-{uuid.uuid4().hex[:10]}"
        with_hook = multi_settings.model_copy(update={"webhook_url": hook.url})
        async with build_worker(temporal_env.client, with_hook, multi_queue):
            await _move_and_undo(temporal_env, multi_queue, multi_settings, second_pg_url, hook)


async def _move_and_undo(temporal_env, multi_queue, multi_settings, second_pg_url, hook) -> None:
    source_url = multi_settings.effective_database_url
    tenant = await provision(temporal_env, multi_queue, multi_settings)
    fill_rich(source_url, tenant.database_name)
    before = snapshot(source_url, tenant.database_name)
    before_majors = [await server_major_version(url) for url in (source_url, second_pg_url)]
    assert len(before["public.events_2025"]) and len(before["public.events_2026"])  # type: ignore[arg-type]
    held = as_tenant(multi_settings, tenant, source_url)  # the application's open session
    held.execute("SELECT 1")

    handle = await temporal_env.client.start_workflow(
        MoveTenantWorkflow.run,
        # A slow check of the final copy keeps the freeze open long enough to watch it.
        MoveTenantInput(
            tenant_id=tenant.id,
            target=SECOND_SERVER,
            checks=["SELECT true FROM pg_sleep(2)", "SELECT count(*) = 300 FROM public.items"],
        ),
        id=f"move-{tenant.id}-{uuid.uuid4().hex[:6]}",
        task_queue=multi_queue,
        search_attributes=tenant_attributes(tenant.id),
    )
    refused = None
    for _ in range(600):
        progress = await handle.query("progress")
        if progress["phase"] == "verifying the final copy against the frozen source":
            try:
                as_tenant(multi_settings, tenant, source_url).close()
            except psycopg.OperationalError as exc:
                refused = str(exc)
            break
        await asyncio.sleep(0.05)
    result: MoveTenantResult = await handle.result()
    if RECORD:  # tests/histories (TENANTS_RECORD_HISTORIES=1): replayed by tests/test_replay.py
        save_history(await handle.fetch_history(), "MoveTenantWorkflow")

    # New sessions were refused during the freeze, and the open one was ended by it.
    assert refused is not None and "too many connections" in refused
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")
    held.close()
    assert 2.0 <= result.freeze_seconds < 30
    assert result.terminated_sessions >= 1
    assert (result.source, result.target) == ("default", SECOND_SERVER)
    # The newer pg_dump, unless the target refused its archive (then the source's own, and the reason is given).
    assert result.dump_major == max(before_majors) or result.newer_pg_dump_refused

    # Everything arrived: rows of every table (both partitions), the matview, sequence values.
    assert snapshot(second_pg_url, tenant.database_name) == before
    moved = await Catalog(multi_settings).get_tenant(tenant.id)
    assert moved is not None and moved.server == SECOND_SERVER
    # The application's own credentials work on the target: it writes, the trigger fires, sequences go on.
    with as_tenant(multi_settings, tenant, second_pg_url) as app:
        new_id = app.execute("INSERT INTO items (mood, doc) VALUES ('ok', '{}') RETURNING id").fetchone()
        assert new_id == (301,)
        assert app.execute("SELECT count(*) FROM item_log WHERE item_id = 301").fetchone() == (1,)
        assert app.execute("SELECT nextval('invoice_no')").fetchone() == (1235,)
        assert app.execute("SELECT sum(n) FROM mood_counts").fetchone() == (300,)
        assert app.execute("SELECT count(*) FROM happy_items").fetchone() == (100,)
    saved = read_credentials(multi_settings.effective_secrets_dir, tenant.id)
    assert str(saved["port"]) in second_pg_url  # the credentials file names the new server
    assert saved["server"] == SECOND_SERVER
    # The source: renamed aside, closed, and no way in for the application.
    assert database_state(source_url, tenant.database_name) is None
    assert result.source_kept_as and result.source_kept_until
    assert database_state(source_url, result.source_kept_as) == (False, 0)
    with pytest.raises(psycopg.OperationalError):
        as_tenant(multi_settings, tenant, source_url, result.source_kept_as)
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        as_tenant(multi_settings, tenant, source_url, "postgres")  # its role logs in on the source no more
    # Nothing else of the move on the target, and the event applications re-route on.
    assert databases_like(second_pg_url, tenant.database_name + "%") == [tenant.database_name]
    events = await Catalog(multi_settings).events(tenant.id)
    moved_event = next(e for e in events if e["type"] == "TenantMoved")
    assert moved_event["data"]["from"] == "default" and moved_event["data"]["to"] == SECOND_SERVER
    assert moved_event["data"]["freeze_seconds"] == result.freeze_seconds
    for _ in range(100):
        if any(e["type"] == "TenantMoved" for e in hook.events()):
            break
        await asyncio.sleep(0.1)
    delivered = next(e for e in hook.events() if e["type"] == "TenantMoved")
    assert delivered["tenant_id"] == tenant.id and delivered["data"]["to"] == SECOND_SERVER

    # --undo: back on the source as it was at the freeze; the write made since is in the set-aside target copy.
    env = cli_environment(temporal_env, multi_settings, multi_queue)
    undone = await tenants(env, "move", tenant.id, "--undo", "--keep-source", "1h")
    assert undone.returncode == 0, undone.stderr
    assert "NOT in it" in undone.stdout and SECOND_SERVER in undone.stdout
    if RECORD:
        undo_id = undone.stdout.split("started ", 1)[1].split()[0]
        save_history(await temporal_env.client.get_workflow_handle(undo_id).fetch_history(), "UndoMoveWorkflow")
    back = await Catalog(multi_settings).get_tenant(tenant.id)
    assert back is not None and back.server == "default"
    assert read_credentials(multi_settings.effective_secrets_dir, tenant.id)["server"] == "default"
    assert snapshot(source_url, tenant.database_name) == before
    assert database_state(source_url, tenant.database_name) == (True, -1)
    with as_tenant(multi_settings, tenant, source_url) as app:
        assert app.execute("SELECT count(*) FROM items").fetchone() == (300,)
    left = databases_like(second_pg_url, tenant.database_name + "%")
    assert len(left) == 1 and left[0] != tenant.database_name
    assert database_state(second_pg_url, left[0]) == (False, 0)
    # The undo can be undone in turn while its set-aside copy is kept: the tenant is on pg-b again, with the write.
    again = await tenants(env, "move", tenant.id, "--undo")
    assert again.returncode == 0, again.stderr
    with as_tenant(multi_settings, tenant, second_pg_url) as app:
        assert app.execute("SELECT count(*) FROM items").fetchone() == (301,)


async def test_a_failure_before_the_switch_leaves_the_tenant_untouched_on_its_source(
    temporal_env, multi_queue, multi_settings: Settings, second_pg_url: str
):
    source_url = multi_settings.effective_database_url
    tenant = await provision(temporal_env, multi_queue, multi_settings)
    fill_rich(source_url, tenant.database_name)
    before = snapshot(source_url, tenant.database_name)
    with pytest.raises(WorkflowFailureError) as failed:
        await temporal_env.client.execute_workflow(
            MoveTenantWorkflow.run,
            # Two jobs: a directory dump and a parallel restore (the pipe is the default).
            MoveTenantInput(
                tenant_id=tenant.id, target=SECOND_SERVER, jobs=2, checks=["SELECT count(*) = 1 FROM items"]
            ),
            id=f"move-{tenant.id}-{uuid.uuid4().hex[:6]}",
            task_queue=multi_queue,
        )
    assert failure_type(failed.value) == "MoveVerificationFailed"
    still = await Catalog(multi_settings).get_tenant(tenant.id)
    assert still is not None and still.server == "default"
    assert database_state(source_url, tenant.database_name) == (True, -1)  # unfrozen exactly as it was
    assert snapshot(source_url, tenant.database_name) == before
    with as_tenant(multi_settings, tenant, source_url) as app:
        app.execute("INSERT INTO items (mood, doc) VALUES ('ok', '{}')")
    # Nothing of it left on the target: no copy, no role.
    assert databases_like(second_pg_url, tenant.database_name + "%") == []
    assert tenant.role_name is not None and not role_exists(second_pg_url, tenant.role_name)
    assert not role_exists(second_pg_url, tenant.database_name + "_owner")
    env = cli_environment(temporal_env, multi_settings, multi_queue)
    nothing = await tenants(env, "move", tenant.id, "--undo")
    assert nothing.returncode != 0 and "no source database kept from a move" in nothing.stderr
    assert len(nothing.stderr.strip().splitlines()) <= 3  # progress lines, then the one error line


async def test_bad_moves_are_refused_in_one_line_and_a_good_one_reports_its_freeze(
    temporal_env, multi_queue, multi_settings: Settings
):
    tenant = await provision(temporal_env, multi_queue, multi_settings)
    env = cli_environment(temporal_env, multi_settings, multi_queue)
    nowhere = await tenants(env, "move", tenant.id, "--to", "nowhere")
    assert nowhere.returncode == 2 and "no server named 'nowhere'" in nowhere.stderr
    assert len(nowhere.stderr.strip().splitlines()) == 1
    same = await tenants(env, "move", tenant.id, "--to", "default")
    assert same.returncode == 2 and "already" in same.stderr
    bad = await tenants(env, "move", tenant.id, "--to", "Bad_Name")
    assert bad.returncode == 2 and "invalid server name" in bad.stderr
    # A move from the command line, the source dropped at once: the freeze time is what it reports.
    moved = await tenants(env, "move", tenant.id, "--to", SECOND_SERVER, "--keep-source", "0")
    assert moved.returncode == 0, moved.stderr
    assert "writes frozen for" in moved.stdout and "cannot be undone" in moved.stdout
    assert databases_like(multi_settings.effective_database_url, tenant.database_name + "%") == []
    back = await tenants(env, "move", tenant.id, "--undo")
    assert back.returncode != 0 and "no source database kept" in back.stderr
    # A target at its max_tenants takes no moved tenant either.
    other = await provision(temporal_env, multi_queue, multi_settings)
    catalog = Catalog(multi_settings)
    on_b = next(row["tenants"] for row in await catalog.servers() if row["name"] == SECOND_SERVER)
    assert on_b >= 1  # the tenant moved there above
    await catalog.update_server(SECOND_SERVER, max_tenants=on_b)
    try:
        full = await tenants(env, "move", other.id, "--to", SECOND_SERVER)
    finally:
        await catalog.update_server(SECOND_SERVER, max_tenants=None)
    assert full.returncode != 0 and f"server {SECOND_SERVER!r} is full ({on_b} of {on_b} tenants)" in full.stderr
    assert len(full.stderr.strip().splitlines()) <= 3  # progress lines, then the one error line
    still = await catalog.get_tenant(other.id)
    assert still is not None and still.server == "default"


async def test_worker_killed_mid_copy_the_move_completes_on_a_new_worker(
    temporal_env, multi_settings: Settings, second_pg_url: str
):
    source_url = multi_settings.effective_database_url
    queue = f"tq-mvkill-{uuid.uuid4().hex[:8]}"
    async with build_worker(temporal_env.client, multi_settings, queue):
        tenant = await provision(temporal_env, queue, multi_settings, prefix="mvk")
    await seed_tenant_data(source_url, tenant.database_name, 300_000)
    before = await table_fingerprint(source_url, tenant.database_name)
    extra = {
        "TENANTS_CATALOG_DATABASE": multi_settings.catalog_database,
        "TENANTS_SERVERS": json.dumps({SECOND_SERVER: second_pg_url}),
    }
    first = worker_process(temporal_env, multi_settings, queue, extra)
    handle = await temporal_env.client.start_workflow(
        MoveTenantWorkflow.run,
        MoveTenantInput(tenant_id=tenant.id, target=SECOND_SERVER, keep_source_seconds=0),
        id=f"move-{tenant.id}-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
    )
    try:
        for _ in range(1200):
            if databases_like(second_pg_url, tenant.database_name + "\\_\\_rs\\_%"):
                progress = await handle.query("progress")
                if progress["phase"] == "final copy (writes frozen)":
                    break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the move never reached its final copy")
        first.send_signal(signal.SIGKILL)  # a real crash: no clean-up of any kind
        first.wait()
        second = worker_process(temporal_env, multi_settings, queue, extra)
        try:
            result = await asyncio.wait_for(handle.result(), timeout=180)
        finally:
            second.terminate()
            second.wait()
    finally:
        if first.poll() is None:
            first.kill()
    history = await handle.fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert max(attempts) >= 2  # the copy the kill cut short ran again
    assert result.target == SECOND_SERVER and result.source_kept_until is None
    assert await table_fingerprint(second_pg_url, tenant.database_name) == before
    moved = await Catalog(multi_settings).get_tenant(tenant.id)
    assert moved is not None and moved.server == SECOND_SERVER
    # Only the tenant's database on the target (no copy of the dead attempt), nothing left on the source.
    assert databases_like(second_pg_url, tenant.database_name + "%") == [tenant.database_name]
    assert databases_like(source_url, tenant.database_name + "%") == []
    with as_tenant(multi_settings, tenant, second_pg_url) as app:
        assert app.execute("SELECT count(*) FROM time_entries").fetchone() == (300_000,)


async def wait_for_phase(handle, phase: str) -> None:
    for _ in range(1200):
        if (await handle.query("progress"))["phase"] == phase:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"the move never reached {phase!r}")


async def test_undo_with_the_target_down_lets_the_source_in_and_the_sweeper_clears_the_target(
    temporal_env, multi_queue, multi_settings: Settings, second_pg_url: str
):
    source_url = multi_settings.effective_database_url
    tenant = await provision(temporal_env, multi_queue, multi_settings, prefix="mvd")
    db = tenant.database_name
    # A move's run that ended (refused at once): the run the activities below work for, as the sweeper will see.
    ended = await temporal_env.client.start_workflow(
        MoveTenantWorkflow.run,
        MoveTenantInput(tenant_id=tenant.id, target=SECOND_SERVER, source="pg-c"),
        id=f"move-{tenant.id}-{uuid.uuid4().hex[:6]}",
        task_queue=multi_queue,
    )
    with pytest.raises(WorkflowFailureError):
        await ended.result()
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=ended.id, workflow_run_id=ended.result_run_id)
    plan = MovePlan(
        tenant_id=tenant.id,
        database_name=db,
        role_name=tenant.role_name,
        source="default",
        target=SECOND_SERVER,
        rehearsal_name=scratch_database_name(db, "rehearsal0"),
        final_name=scratch_database_name(db, "final00000"),
        aside_name=previous_database_name(db, "rehearsal0"),
    )
    moves = MoveActivities(multi_settings)
    check = await env.run(moves.check_move, plan)
    await env.run(moves.prepare_target, plan)
    copy = CopyRequest(
        plan=plan,
        scratch_name=plan.final_name,
        # The source's own pg_dump when it has one (the workflow's fallback when the target refuses the newer one's).
        dump_major=check.fallback_major or check.dump_major,
        restore_major=check.target_major,
    )
    await env.run(moves.copy_to_target, copy)
    await env.run(moves.freeze_database, FreezeRequest(tenant_id=tenant.id, server="default", database_name=db))
    assert database_state(source_url, db) == (True, 0)

    # The target goes down before the undo: the source is let in again all the same, exactly as it was.
    down = multi_settings.model_copy(update={"servers": {SECOND_SERVER: "postgresql://postgres@127.0.0.1:1/postgres"}})
    said = await env.run(
        MoveActivities(down).undo_unfinished_move,
        UnfinishedMove(
            plan=plan,
            allows_connections=check.source_allows_connections,
            connection_limit=check.source_connection_limit,
        ),
    )
    assert "sweep" in said
    assert database_state(source_url, db) == (True, -1)
    with as_tenant(multi_settings, tenant, source_url) as app:
        app.execute("SELECT 1")
    assert databases_like(second_pg_url, db + "%") == [plan.final_name]  # left there, marked
    assert tenant.role_name is not None and role_exists(second_pg_url, tenant.role_name)

    # The sweeper removes the dead move's copy, then the roles it held (the next sweep), and nothing of the source.
    sweeper = SweepActivities(multi_settings, temporal_env.client)
    for _ in range(2):
        report = await env.run(sweeper.find_orphans, SweepInput(stale_hours=1))
        await env.run(sweeper.remove_orphans, report)
    assert databases_like(second_pg_url, db + "%") == []
    assert not role_exists(second_pg_url, tenant.role_name)
    assert not role_exists(second_pg_url, db + "_owner")
    assert role_exists(source_url, tenant.role_name)
    with as_tenant(multi_settings, tenant, source_url) as app:
        app.execute("SELECT 1")


async def test_a_cancel_right_after_the_switch_loses_neither_the_event_nor_the_kept_source(
    temporal_env, multi_queue, multi_settings: Settings, second_pg_url: str
):
    source_url = multi_settings.effective_database_url
    tenant = await provision(temporal_env, multi_queue, multi_settings)
    handle = await temporal_env.client.start_workflow(
        MoveTenantWorkflow.run,
        MoveTenantInput(tenant_id=tenant.id, target=SECOND_SERVER, checks=["SELECT true FROM pg_sleep(1)"]),
        id=f"move-{tenant.id}-{uuid.uuid4().hex[:6]}",
        task_queue=multi_queue,
    )
    holder = psycopg.connect(source_url)  # a transaction of its own
    try:
        await wait_for_phase(handle, "verifying the final copy against the frozen source")
        # The source database's catalog row held (after the freeze): setting it aside waits for this transaction.
        holder.execute(
            psycopg.sql.SQL("ALTER DATABASE {} CONNECTION LIMIT 0").format(psycopg.sql.Identifier(tenant.database_name))
        )
        await wait_for_phase(handle, "setting the source database aside")
        await asyncio.sleep(0.5)
        await handle.cancel()  # after the switch: too late
        await asyncio.sleep(1.5)
    finally:
        holder.rollback()
        holder.close()
    result: MoveTenantResult = await asyncio.wait_for(handle.result(), timeout=60)
    assert result.target == SECOND_SERVER and result.source_kept_as
    catalog = Catalog(multi_settings)
    moved = await catalog.get_tenant(tenant.id)
    assert moved is not None and moved.server == SECOND_SERVER
    assert any(e["type"] == "TenantMoved" for e in await catalog.events(tenant.id))  # applications re-route
    kept = [row["name"] for row in await catalog.kept_databases(tenant.id)]
    assert result.source_kept_as in kept  # --undo finds it
    assert database_state(source_url, result.source_kept_as) == (False, 0)
    assert database_state(source_url, tenant.database_name) is None


async def test_an_old_server_that_stays_away_after_the_switch_does_not_hold_the_tenant(
    temporal_env, multi_queue, multi_settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    """After the switch the source is set aside with patience (AFTER_SWITCH_PATIENCE, half an hour; 3 s here). When
    it cannot be, the run records that the source was left where it is and ends: the tenant, on its new server, is
    not held by a lock for as long as the old server stays away."""
    from datetime import timedelta

    from workflows import options

    monkeypatch.setitem(options.SWAP_UNTIL_DONE, "schedule_to_close_timeout", timedelta(seconds=3))
    source_url = multi_settings.effective_database_url
    tenant = await provision(temporal_env, multi_queue, multi_settings)
    handle = await temporal_env.client.start_workflow(
        MoveTenantWorkflow.run,
        MoveTenantInput(tenant_id=tenant.id, target=SECOND_SERVER, checks=["SELECT true FROM pg_sleep(1)"]),
        id=f"move-{tenant.id}-{uuid.uuid4().hex[:6]}",
        task_queue=multi_queue,
    )
    holder = psycopg.connect(source_url)  # holds the source database's catalog row: the set-aside cannot happen
    try:
        await wait_for_phase(handle, "verifying the final copy against the frozen source")
        holder.execute(
            psycopg.sql.SQL("ALTER DATABASE {} CONNECTION LIMIT 0").format(psycopg.sql.Identifier(tenant.database_name))
        )
        result: MoveTenantResult = await asyncio.wait_for(handle.result(), timeout=60)
    finally:
        holder.rollback()
        holder.close()
    assert result.target == SECOND_SERVER and result.source_left, result
    catalog = Catalog(multi_settings)
    moved = await catalog.get_tenant(tenant.id)
    assert moved is not None and moved.server == SECOND_SERVER
    assert await catalog.lock_holder(tenant.id) is None  # the tenant is free for its next backup
    types = [e["type"] for e in await catalog.events(tenant.id)]
    assert "TenantMoved" in types and "TenantMoveSourceLeft" in types
    assert database_state(source_url, tenant.database_name) == (True, 0)  # left closed, under its own name


async def test_a_superuser_session_begun_during_the_freeze_stops_the_switch(
    temporal_env, multi_queue, multi_settings: Settings, second_pg_url: str
):
    source_url = multi_settings.effective_database_url
    tenant = await provision(temporal_env, multi_queue, multi_settings)
    handle = await temporal_env.client.start_workflow(
        MoveTenantWorkflow.run,
        MoveTenantInput(tenant_id=tenant.id, target=SECOND_SERVER, checks=["SELECT true FROM pg_sleep(2)"]),
        id=f"move-{tenant.id}-{uuid.uuid4().hex[:6]}",
        task_queue=multi_queue,
    )
    await wait_for_phase(handle, "verifying the final copy against the frozen source")
    # The admin is a superuser: CONNECTION LIMIT 0 does not hold it, and it could write what the copy lacks.
    intruder = psycopg.connect(make_conninfo(source_url, dbname=tenant.database_name), autocommit=True)
    try:
        intruder.execute("SELECT 1")
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    finally:
        intruder.close()
    assert failure_type(failed.value) == "MoveFailed"
    still = await Catalog(multi_settings).get_tenant(tenant.id)
    assert still is not None and still.server == "default"
    assert database_state(source_url, tenant.database_name) == (True, -1)  # unfrozen
    with as_tenant(multi_settings, tenant, source_url) as app:
        app.execute("SELECT 1")
    assert databases_like(second_pg_url, tenant.database_name + "%") == []


async def test_a_source_with_prepared_transactions_is_refused(temporal_env, multi_queue, multi_settings: Settings):
    source_url = multi_settings.effective_database_url
    with psycopg.connect(source_url) as conn:
        if int(conn.execute("SHOW max_prepared_transactions").fetchone()[0]) == 0:  # type: ignore[index]
            pytest.skip("the source server allows no prepared transactions")
    tenant = await provision(temporal_env, multi_queue, multi_settings)
    gid = f"tlt-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(make_conninfo(source_url, dbname=tenant.database_name), autocommit=True) as conn:
        conn.execute("BEGIN")
        conn.execute("CREATE TABLE held (id int)")
        conn.execute(f"PREPARE TRANSACTION '{gid}'")
    try:
        with pytest.raises(WorkflowFailureError) as failed:
            await temporal_env.client.execute_workflow(
                MoveTenantWorkflow.run,
                MoveTenantInput(tenant_id=tenant.id, target=SECOND_SERVER),
                id=f"move-{tenant.id}-{uuid.uuid4().hex[:6]}",
                task_queue=multi_queue,
            )
        assert failure_type(failed.value) == "MoveRefused"
        assert "prepared transaction" in failure_message(failed.value)
    finally:
        with psycopg.connect(make_conninfo(source_url, dbname=tenant.database_name), autocommit=True) as conn:
            conn.execute(f"ROLLBACK PREPARED '{gid}'")
