"""`--all`: one fleet workflow, a child per active tenant, failures isolated and reported, every outcome in the
catalog, a sliding window of children."""

from __future__ import annotations

import asyncio
import json
import uuid

import psycopg
import pytest
from psycopg import sql

from tenancy.contracts.fleet import FleetBackupInput
from tests.blocking import table_locked
from tests.cli import tenants
from workflows.backup_fleet import BackupAllTenantsWorkflow


async def test_fleet_backup_reports_the_broken_tenant_and_backs_up_the_rest(
    temporal_env, task_queue, settings, catalog, make_tenant, backups_of, cli_env
):
    good = [await make_tenant("good", entries=50) for _ in range(4)]
    broken = await make_tenant("broken", entries=10)
    with psycopg.connect(settings.effective_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(broken.database_name)))

    fleet_id = f"backup-all-{uuid.uuid4().hex[:6]}"
    result = await temporal_env.client.execute_workflow(
        BackupAllTenantsWorkflow.run, FleetBackupInput(keep=3, concurrency=2), id=fleet_id, task_queue=task_queue
    )

    # The run's result carries the failures only; every tenant's outcome is in the catalog.
    assert result.workflow_id == fleet_id
    assert all(not o.ok for o in result.outcomes) and broken.id in {o.tenant_id for o in result.outcomes}
    outcomes = {o.tenant_id: o for o in await catalog.fleet_outcomes(fleet_id)}
    assert {t.id for t in good} | {broken.id} <= set(outcomes)
    assert outcomes[good[0].id].workflow_id == f"backup-{good[0].id}@{fleet_id}"
    for tenant in good:
        assert outcomes[tenant.id].ok, outcomes[tenant.id].error
        assert [p.name for p in backups_of(tenant.id)] == [
            outcomes[tenant.id].backup_name,
            outcomes[tenant.id].backup_name + ".json",
        ]
    assert not outcomes[broken.id].ok
    assert "does not exist" in outcomes[broken.id].error
    assert result.failed >= 1 and result.succeeded >= 4
    assert result.total == result.succeeded + result.failed == len(outcomes)

    # What the user reads: every tenant, the broken one named with its error; the exit code says a tenant failed.
    shown = await tenants(cli_env, "runs", "show", fleet_id)
    assert shown.returncode == 1, shown.stderr
    assert good[0].id in shown.stdout and outcomes[good[0].id].backup_name in shown.stdout
    assert any(broken.id in line and "FAILED" in line for line in shown.stdout.splitlines())
    failed_only = json.loads((await tenants(cli_env, "runs", "show", fleet_id, "--failed", "--json")).stdout)
    assert broken.id in [o["tenant_id"] for o in failed_only] and all(not o["ok"] for o in failed_only)
    unknown = await tenants(cli_env, "runs", "show", "backup-all-no-such-run")
    assert unknown.returncode != 0 and unknown.stderr.count("\n") == 1 and "no-such-run" in unknown.stderr


async def test_a_slow_tenant_does_not_hold_back_the_rest_of_the_fleet(
    temporal_env, task_queue, settings, catalog, make_tenant
):
    """A sliding window, not pages: while one tenant's dump is stuck, the others all go through it."""
    slow, *others = [await make_tenant("win", entries=10) for _ in range(6)]
    fleet_id = f"backup-all-{uuid.uuid4().hex[:6]}"
    with table_locked(settings.effective_database_url, slow.database_name):
        handle = await temporal_env.client.start_workflow(
            BackupAllTenantsWorkflow.run,
            FleetBackupInput(keep=1, concurrency=2, page_size=2),
            id=fleet_id,
            task_queue=task_queue,
        )

        async def others_done() -> bool:
            done = {o.tenant_id for o in await catalog.fleet_outcomes(fleet_id) if o.ok}
            return {t.id for t in others} <= done

        # Page by page, the first page (the slow tenant and one more) would hold every later page back.
        deadline = asyncio.get_running_loop().time() + 60
        while not await others_done() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
        assert await others_done(), "the other tenants waited for the slow one"
        assert slow.id not in {o.tenant_id for o in await catalog.fleet_outcomes(fleet_id)}
    result = await handle.result()
    assert slow.id in {o.tenant_id for o in await catalog.fleet_outcomes(fleet_id) if o.ok}
    assert result.failed == 0


@pytest.mark.one_server  # the engine's window and continue-as-new; the dumps themselves are tested on both servers
async def test_fleet_of_100_tenants_respects_the_concurrency_limit_and_continues_as_new(
    temporal_env, task_queue, settings, catalog, backups_of
):
    from datetime import datetime

    from temporalio.api.enums.v1 import EventType

    ids = [f"fleet-{i:03d}-{uuid.uuid4().hex[:4]}" for i in range(100)]
    broken = set(ids[::40])  # three tenants whose database is gone
    try:
        for start in range(0, len(ids), 20):
            await asyncio.gather(*(catalog.create_tenant(t, t) for t in ids[start : start + 20]))
        with psycopg.connect(settings.effective_database_url, autocommit=True) as conn:
            for tenant_id in broken:
                conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(settings.database_prefix + tenant_id)))

        handle = await temporal_env.client.start_workflow(
            BackupAllTenantsWorkflow.run,
            FleetBackupInput(keep=1, concurrency=4, page_size=20, history_limit=200),
            id=f"backup-all-{uuid.uuid4().hex[:6]}",
            task_queue=task_queue,
        )
        result = await handle.result()

        # The result stays small (the three failures); every tenant's outcome is in the catalog.
        assert sorted(o.tenant_id for o in result.outcomes) == sorted(broken)
        outcomes = {o.tenant_id: o for o in await catalog.fleet_outcomes(handle.id)}
        assert set(ids) <= set(outcomes)
        assert {t for t in ids if not outcomes[t].ok} == broken
        assert all("does not exist" in outcomes[t].error for t in broken)
        assert result.failed == len(broken) and result.succeeded >= 97

        # The dumps never overlapped more than the limit allows (measured from their recorded start and end).
        spans = []
        for tenant_id in set(ids) - broken:
            manifest = next(p for p in backups_of(tenant_id) if p.name.endswith(".json"))
            data = json.loads(manifest.read_text())
            spans.append((datetime.fromisoformat(data["started_at"]), datetime.fromisoformat(data["finished_at"])))
        events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
        running = peak = 0
        for _, change in events:
            running += change
            peak = max(peak, running)
        assert 2 <= peak <= 4

        # Its history stayed small: the run continued as new along the way.
        first = temporal_env.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
        history = await first.fetch_history()
        assert history.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    finally:
        for start in range(0, len(ids), 20):
            await asyncio.gather(*(catalog.drop_tenant(t) for t in ids[start : start + 20]))
