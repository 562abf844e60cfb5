"""The health check goes through the fleet a page of tenants at a time, sends every alert, and returns a report of
bounded size: the tenants that need attention first, the rest counted."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tenancy.contracts.health import Alert, HealthInput, TenantHealth
from tenancy.health import ALERTS_SHOWN, ROWS_SHOWN, HealthTally
from tenancy.messages.backup import PinRequest
from tenancy.messages.health import FleetHealth, HealthPage
from tenancy.naming import backup_name
from tenancy.search import tenant_attributes
from tests.cli import tenants
from tests.servers import WebhookReceiver
from workflows.health_check import HealthCheckWorkflow
from workflows.registry import WORKFLOWS
from workflows.retention import PinBackupWorkflow

CHECKED_AT = datetime(2026, 5, 1, tzinfo=UTC)
FLEET = FleetHealth(storage="s3://bucket/backups", storage_used_bytes=2**40, storage_free_bytes=None, alerts=[])


def _row(tenant_id: str) -> TenantHealth:
    return TenantHealth(
        tenant_id=tenant_id,
        status="active",
        last_backup_at=None,
        backup_age_hours=None,
        database_bytes=123_456_789,
        quota_bytes=1024 * 2**20,
        last_maintenance_at="2026-05-01T03:00:00+00:00",
        backup_bytes=987_654_321,
    )


def _stale(tenant_id: str) -> list[Alert]:
    return [
        Alert(kind=kind, tenant_id=tenant_id, message=f"tenant {tenant_id}: never backed up (limit 26 h)")
        for kind in ("stale_backup", "stale_restorable_backup")
    ]


def _check(ids: list[str], alerted: set[str]) -> HealthTally:
    tally = HealthTally()
    for start in range(0, len(ids), 100):
        page = ids[start : start + 100]
        tally.add(
            HealthPage(
                checked=len(page),
                last_tenant_id=page[-1],
                rows=[_row(i) for i in page],
                alerts=[a for i in page if i in alerted for a in _stale(i)],
            )
        )
    return tally


def test_the_report_of_10000_tenants_all_failing_stays_small():
    ids = [f"tenant-{n:05d}" for n in range(10_000)]
    report = _check(ids, set(ids)).report(CHECKED_AT, FLEET)
    assert len(report.model_dump_json()) < 100_000  # Temporal refuses a result over 256 KB (2 MB by default)
    assert (len(report.tenants), report.tenants_not_shown) == (ROWS_SHOWN, 10_000 - ROWS_SHOWN)
    assert (len(report.alerts), report.alerts_not_shown) == (ALERTS_SHOWN, 20_000 - ALERTS_SHOWN)


def test_the_report_shows_the_tenants_needing_attention_before_the_others():
    ids = [f"tenant-{n:05d}" for n in range(10_000)]
    alerted = {ids[n] for n in range(5, 10_000, 1000)}  # ten of them, spread over the fleet
    report = _check(ids, alerted).report(CHECKED_AT, FLEET)
    shown = [row.tenant_id for row in report.tenants]
    assert alerted <= set(shown) and len(shown) == ROWS_SHOWN
    assert shown == sorted(shown)
    assert report.alerts_not_shown == 0 and {a.tenant_id for a in report.alerts} == alerted


async def test_the_health_check_goes_page_by_page_and_sends_every_alert(temporal_env, worker_with, make_tenant):
    made = [await make_tenant("hp", entries=0) for _ in range(3)]
    with WebhookReceiver() as hook:
        async with worker_with(alert_webhook_url=hook.url) as queue:
            pin = PinRequest(tenant_id=made[0].id, backup_name=backup_name(made[0].id, CHECKED_AT, "gzip"), pinned=True)
            failed_id = f"pin-{uuid.uuid4().hex[:6]}"
            with pytest.raises(WorkflowFailureError):  # no such backup: a failed run of that tenant
                await temporal_env.client.execute_workflow(
                    PinBackupWorkflow.run,
                    pin,
                    id=failed_id,
                    task_queue=queue,
                    search_attributes=tenant_attributes(made[0].id),
                )
            handle = await temporal_env.client.start_workflow(
                HealthCheckWorkflow.run,
                HealthInput(page_size=1),
                id=f"health-{uuid.uuid4().hex[:6]}",
                task_queue=queue,
            )
            report = await handle.result()
    pages = [
        e
        async for e in handle.fetch_history_events()
        if e.activity_task_scheduled_event_attributes.activity_type.name == "check_health_page"
    ]
    assert len(pages) >= len(made) + 1  # one tenant a page, and the empty page that ends the list
    sent = {(a["kind"], a["tenant_id"]) for body in hook.events() for a in body["alerts"]}
    for tenant in made:
        assert {("stale_backup", tenant.id), ("stale_restorable_backup", tenant.id)} <= sent
        assert next(r for r in report.tenants if r.tenant_id == tenant.id).backup_age_hours is None
    assert ("failed_run", made[0].id) in sent
    assert next(r for r in report.tenants if r.tenant_id == made[0].id).failed_runs == 1
    assert not any(failed_id in a.message for a in report.alerts if a.tenant_id is None)  # not a fleet run's
    assert report.tenants_not_shown == 0 and report.storage
    # The run replays on the code that ran it (the recorded runs of before replay in test_replay.py).
    await Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter).replay_workflow(
        await handle.fetch_history()
    )


async def test_tenants_health_shows_a_row_per_tenant_and_its_alerts(cli_env, make_tenant):
    tenant = await make_tenant("hc", entries=0)
    done = await tenants(cli_env, "health")
    assert done.returncode == 1, done.stderr  # alerts: a never backed-up tenant
    row = next(line for line in done.stdout.splitlines() if line.startswith(tenant.id))
    assert "never" in row
    assert f"ALERT stale_backup: tenant {tenant.id}: never backed up" in done.stdout
    assert "of backups" in done.stdout
