"""MaintainTenantWorkflow on real PostgreSQL: cleanup in batches, dry run, crash and resume, vacuum, optimize,
a failed backup stopping destructive tasks, and lock timeouts reported instead of hanging."""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from temporalio.client import WorkflowFailureError

from tenancy.contracts.fleet import FleetMaintenanceInput
from tenancy.contracts.maintenance import MaintainTenantInput
from tenancy.errors import failure_type
from tests.blocking import table_locked
from tests.test_restore_resilience import worker_process
from workflows.maintain_tenant import MaintainAllTenantsWorkflow, MaintainTenantWorkflow


def db(settings, dbname):
    return psycopg.connect(
        psycopg.conninfo.make_conninfo(settings.effective_database_url, dbname=dbname), autocommit=True
    )


def age_rows(settings, dbname, old_log: int, old_entries: int) -> datetime:
    """Make the first `old_log` log lines and `old_entries` time entries 400 days old; return a time between."""
    with db(settings, dbname) as conn:
        conn.execute("UPDATE activity_log SET happened_at = now() - interval '400 days' WHERE id <= %s", [old_log])
        conn.execute("UPDATE time_entries SET created_at = now() - interval '400 days' WHERE id <= %s", [old_entries])
        conn.execute(
            "UPDATE time_entries SET created_at = now() - interval '179 days' WHERE id = %s", [old_entries + 1]
        )
        conn.execute("VACUUM")
    return datetime.now(UTC) - timedelta(days=180)


def counts(settings, dbname, cutoff):
    with db(settings, dbname) as conn:
        return (
            conn.execute("SELECT count(*) FROM activity_log WHERE happened_at < %s", [cutoff]).fetchone()[0],
            conn.execute("SELECT count(*) FROM activity_log").fetchone()[0],
            conn.execute("SELECT count(*) FROM time_entries WHERE created_at < %s", [cutoff]).fetchone()[0],
            conn.execute("SELECT count(*) FROM time_entries").fetchone()[0],
        )


async def maintain(env, queue, tenant_id, **kwargs):
    return await env.client.execute_workflow(
        MaintainTenantWorkflow.run,
        MaintainTenantInput(tenant_id=tenant_id, **kwargs),
        id=f"maintenance-{tenant_id}-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
    )


async def test_dry_run_reports_and_cleanup_deletes_exactly_the_old_rows_in_batches(
    temporal_env, worker_with, settings, make_tenant, catalog
):
    tenant = await make_tenant(entries=5000)
    cutoff = age_rows(settings, tenant.database_name, old_log=300, old_entries=3000)
    before = counts(settings, tenant.database_name, cutoff)
    async with worker_with(cleanup_batch_size=400) as queue:
        plan = await maintain(temporal_env, queue, tenant.id, tasks=["cleanup"], days=180, dry_run=True)
        assert plan.plan.cleanup_rows == {"activity_log": 300, "time_entries": 3000}
        assert counts(settings, tenant.database_name, cutoff) == before  # nothing changed

        result = await maintain(temporal_env, queue, tenant.id, tasks=["cleanup"], days=180)

    report = result.tasks[0]
    assert result.ok and report.task == "cleanup"
    assert report.detail["rows_deleted"] == {"activity_log": 300, "time_entries": 3000}
    assert report.detail["batches"] >= 3000 // 400
    old_log, all_log, old_entries, all_entries = counts(settings, tenant.database_name, cutoff)
    assert (old_log, old_entries) == (0, 0)
    assert (all_log, all_entries) == (before[1] - 300, before[3] - 3000)  # nothing newer than the cutoff
    recorded = (await catalog.get_tenant(tenant.id)).last_maintenance
    assert recorded["tasks"][0]["detail"]["rows_deleted"]["time_entries"] == 3000


async def test_worker_killed_mid_cleanup_the_run_completes_with_the_same_result(
    temporal_env, settings, make_tenant, catalog
):
    tenant = await make_tenant(entries=60_000)
    cutoff = age_rows(settings, tenant.database_name, old_log=0, old_entries=50_000)
    before = counts(settings, tenant.database_name, cutoff)
    queue = f"tq-kill-{uuid.uuid4().hex[:8]}"
    env = {"TENANTS_CLEANUP_BATCH_SIZE": "200"}
    first = worker_process(temporal_env, settings, queue, extra=env)
    handle = await temporal_env.client.start_workflow(
        MaintainTenantWorkflow.run,
        MaintainTenantInput(tenant_id=tenant.id, tasks=["cleanup"], days=180),
        id=f"maintenance-{tenant.id}-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
    )
    try:
        for _ in range(600):  # kill it once some batches are done but not all
            old = counts(settings, tenant.database_name, cutoff)[2]
            if 0 < before[2] - old < 40_000:
                break
            await asyncio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = worker_process(temporal_env, settings, queue, extra=env)
        try:
            result = await asyncio.wait_for(handle.result(), 120)
        finally:
            second.terminate()
            second.wait()
    finally:
        if first.poll() is None:
            first.kill()
    assert result.ok
    assert result.tasks[0].detail["rows_deleted"] == {"activity_log": 0, "time_entries": 50_000}
    _, _, old_entries, all_entries = counts(settings, tenant.database_name, cutoff)
    assert old_entries == 0 and all_entries == before[3] - 50_000


async def test_vacuum_reclaims_dead_tuples(temporal_env, task_queue, settings, make_tenant):
    tenant = await make_tenant(entries=20_000)
    with db(settings, tenant.database_name) as conn:
        conn.execute("DELETE FROM time_entries WHERE id % 2 = 0")
    for _ in range(50):  # statistics reach pg_stat_user_tables shortly after the transaction
        with db(settings, tenant.database_name) as conn:
            dead = conn.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'time_entries'").fetchone()[
                0
            ]
        if dead >= 10_000:
            break
        await asyncio.sleep(0.2)
    result = await maintain(temporal_env, task_queue, tenant.id, tasks=["vacuum"])
    detail = result.tasks[0].detail
    assert detail["dead_tuples_before"] >= 10_000
    assert detail["dead_tuples_after"] < detail["dead_tuples_before"] // 10


async def test_optimize_rebuilds_an_index_made_bloated_on_purpose(temporal_env, worker_with, settings, make_tenant):
    tenant = await make_tenant(entries=200_000)
    with db(settings, tenant.database_name) as conn:
        conn.execute("DELETE FROM time_entries WHERE id % 10 <> 0")
        conn.execute("VACUUM ANALYZE time_entries")
        size_before = conn.execute("SELECT pg_relation_size('time_entries_pkey')").fetchone()[0]
    async with worker_with(reindex_min_bytes=0) as queue:
        plan = await maintain(temporal_env, queue, tenant.id, tasks=["optimize"], dry_run=True)
        assert "public.time_entries_pkey" in [i.index for i in plan.plan.indexes_to_rebuild]
        result = await maintain(temporal_env, queue, tenant.id, tasks=["optimize", "analyze"])
    rebuilt = {i["index"] for i in result.tasks[0].detail["rebuilt"]}
    assert "public.time_entries_pkey" in rebuilt
    with db(settings, tenant.database_name) as conn:
        size_after = conn.execute("SELECT pg_relation_size('time_entries_pkey')").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM time_entries").fetchone()[0] == 20_000
    assert size_after < size_before / 3
    assert [t.task for t in result.tasks] == ["optimize", "analyze"]


async def test_a_failed_backup_stops_the_destructive_tasks(temporal_env, task_queue, settings, make_tenant):
    tenant = await make_tenant(entries=1000)
    cutoff = age_rows(settings, tenant.database_name, old_log=50, old_entries=500)
    before = counts(settings, tenant.database_name, cutoff)
    # The backup cannot read the table (held under an exclusive lock past its timeout): it fails.
    with table_locked(settings.effective_database_url, tenant.database_name, "activity_log"):
        handle = await temporal_env.client.start_workflow(
            MaintainTenantWorkflow.run,
            MaintainTenantInput(tenant_id=tenant.id, tasks=["backup", "cleanup", "vacuum"], days=180),
            id=f"maintenance-{tenant.id}-{uuid.uuid4().hex[:6]}",
            task_queue=task_queue,
        )
        await asyncio.sleep(1.5)
        backup_child = temporal_env.client.get_workflow_handle(
            f"backup-{tenant.id}-maintenance-{(await handle.describe()).run_id[:8]}"
        )
        await backup_child.terminate("test: a backup that fails")
        result = await handle.result()
    assert not result.ok and [t.task for t in result.tasks] == ["backup"]
    assert result.tasks[0].ok is False
    assert counts(settings, tenant.database_name, cutoff) == before


async def test_a_locked_table_times_out_and_is_reported(temporal_env, worker_with, settings, make_tenant):
    tenant = await make_tenant(entries=1000)
    age_rows(settings, tenant.database_name, old_log=50, old_entries=500)
    async with worker_with(maintenance_lock_timeout_ms=300) as queue:
        with table_locked(settings.effective_database_url, tenant.database_name, "activity_log"):
            result = await asyncio.wait_for(
                maintain(temporal_env, queue, tenant.id, tasks=["cleanup", "analyze"], max_attempts=1), 60
            )
    assert not result.ok
    assert result.tasks[0].task == "cleanup" and not result.tasks[0].ok
    assert "lock timeout after 300 ms" in result.tasks[0].error
    assert len(result.tasks) == 1  # analyze did not run after the failure


async def test_fleet_maintenance_skips_suspended_tenants(temporal_env, task_queue, settings, make_tenant, catalog):
    active = await make_tenant(entries=100)
    suspended = await make_tenant(entries=100)
    await catalog.change_status(suspended.id, "suspended", "test", "TenantStatusChanged", None, lambda o, n: None)
    result = await temporal_env.client.execute_workflow(
        MaintainAllTenantsWorkflow.run,
        FleetMaintenanceInput(tasks=["cleanup", "analyze"], days=180, dry_run=True, concurrency=2),
        id=f"maintenance-all-{uuid.uuid4().hex[:6]}",
        task_queue=task_queue,
    )
    outcomes = {o.tenant_id: o for o in await catalog.fleet_outcomes(result.workflow_id)}
    assert outcomes[active.id].ok and outcomes[active.id].detail.startswith("would delete")
    assert outcomes[suspended.id].detail == "skipped: suspended"
    assert result.skipped >= 1


async def test_bad_maintenance_input_is_refused(temporal_env, task_queue, make_tenant):
    tenant = await make_tenant(entries=0)
    for kwargs in ({"tasks": []}, {"tasks": ["cleanup"], "days": 0}, {"tasks": ["defrag"]}):
        with pytest.raises(WorkflowFailureError) as caught:
            await maintain(temporal_env, task_queue, tenant.id, **kwargs)
        assert failure_type(caught.value) == "InvalidInput"
