"""Schedules on the dev server (the time-skipping server has none): apply, idempotence, removal, trigger,
backfill; and the health check's alerts."""

from __future__ import annotations

import asyncio
import tomllib
import uuid
from datetime import UTC, datetime

import pytest
from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleBackfill,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    ScheduleSpec,
)

from starter.schedules import apply_schedules
from tenancy.contracts.health import HealthInput
from tenancy.settings import PROJECT_ROOT, PlanLimits
from tests.servers import WebhookReceiver
from workflows.health_check import HealthCheckWorkflow


def declarations_with_prefix(prefix: str, drop: set[str] = frozenset()) -> str:
    """The repository's schedules.toml with every id prefixed (schedule ids are global on the server)."""
    text = (PROJECT_ROOT / "schedules.toml").read_text()
    for schedule_id in tomllib.loads(text)["schedules"]:
        text = text.replace(f"[schedules.{schedule_id}]", f"[schedules.{prefix}{schedule_id}]")
    for schedule_id in drop:
        start = text.index(f"[schedules.{prefix}{schedule_id}]")
        end = text.find("[schedules.", start + 1)
        text = text[:start] + (text[end:] if end != -1 else "")
    return text


def calendar(description) -> ScheduleCalendarSpec:
    return description.schedule.spec.calendars[0]


async def test_apply_creates_the_defaults_is_idempotent_and_removes_only_what_is_gone(
    temporal_env, settings, tmp_path, task_queue
):
    prefix = f"t{uuid.uuid4().hex[:6]}-"
    declared = tmp_path / "schedules.toml"
    declared.write_text(declarations_with_prefix(prefix))
    local = settings.model_copy(
        update={"schedules_file": declared, "timezone": "America/Mexico_City", "task_queue": task_queue}
    )
    client = temporal_env.client
    foreign = f"{prefix}not-ours"
    await client.create_schedule(
        foreign,
        Schedule(action=ScheduleActionStartWorkflow("Nothing", id="x", task_queue="nowhere"), spec=ScheduleSpec()),
    )
    try:
        report = await apply_schedules(client, local)
        assert sorted(report.created) == sorted(
            f"{prefix}{s}"
            for s in (
                "daily-backup",
                "weekly-maintenance",
                "monthly-vacuum",
                "daily-cleanup",
                "hourly-health",
                "weekly-drill",
                "daily-sweep",
            )
        )
        backup = await client.get_schedule_handle(f"{prefix}daily-backup").describe()
        spec = calendar(backup)
        assert (spec.hour[0].start, spec.minute[0].start) == (2, 0)
        assert backup.schedule.spec.time_zone_name == "America/Mexico_City"
        assert backup.schedule.action.workflow == "BackupAllTenantsWorkflow"
        assert backup.schedule.policy.catchup_window.total_seconds() == 360 * 60
        assert backup.schedule.action.execution_timeout.total_seconds() < 24 * 3600
        weekly = calendar(await client.get_schedule_handle(f"{prefix}weekly-maintenance").describe())
        assert (weekly.day_of_week[0].start, weekly.hour[0].start) == (0, 4)  # Sunday 04:00
        monthly = calendar(await client.get_schedule_handle(f"{prefix}monthly-vacuum").describe())
        assert (monthly.day_of_month[0].start, monthly.hour[0].start) == (1, 3)
        cleanup = calendar(await client.get_schedule_handle(f"{prefix}daily-cleanup").describe())
        assert cleanup.hour[0].start == 5

        # A pause made by an operator survives a changed declaration.
        await client.get_schedule_handle(f"{prefix}daily-backup").pause(note="migration tonight")
        again = await apply_schedules(client, local)
        assert again.created == [] and again.updated == [] and again.deleted == [] and len(again.unchanged) == 7

        declared.write_text(
            declarations_with_prefix(prefix, drop={"weekly-maintenance"}).replace("keep = 7", "keep = 9")
        )
        changed = await apply_schedules(client, local)
        assert changed.deleted == [f"{prefix}weekly-maintenance"]
        assert changed.updated == [f"{prefix}daily-backup"]
        kept = await client.get_schedule_handle(f"{prefix}daily-backup").describe()
        assert kept.schedule.state.paused and kept.schedule.state.note == "migration tonight"
        assert await client.get_schedule_handle(foreign).describe()  # not ours: untouched

        # trigger and backfill start the expected runs.
        await client.get_schedule_handle(f"{prefix}hourly-health").trigger()
        await client.get_schedule_handle(f"{prefix}daily-cleanup").backfill(
            ScheduleBackfill(
                start_at=datetime(2026, 1, 10, tzinfo=UTC),
                end_at=datetime(2026, 1, 12, 12, tzinfo=UTC),
                overlap=ScheduleOverlapPolicy.ALLOW_ALL,
            )
        )

        async def started(schedule_id: str) -> list[str]:
            return [w.workflow_type async for w in client.list_workflows(f"TemporalScheduledById = '{schedule_id}'")]

        for _ in range(100):
            health, cleanups = await started(f"{prefix}hourly-health"), await started(f"{prefix}daily-cleanup")
            if health and len(cleanups) >= 3:
                break
            await asyncio.sleep(0.2)
        assert health == ["HealthCheckWorkflow"]
        assert cleanups == ["MaintainAllTenantsWorkflow"] * 3  # 10th, 11th and 12th at 05:00 (UTC-6 → 11:00 UTC)
    finally:
        declared.write_text("")
        await apply_schedules(client, local)
        await client.get_schedule_handle(foreign).delete()


async def test_health_alerts_for_a_stale_backup_and_an_over_quota_tenant(
    temporal_env, worker_with, make_tenant, settings
):
    tiny = {**settings.plans, "tiny": PlanLimits(max_tenants=5, quota_mb=1)}
    stale = await make_tenant("stale", entries=10)
    full = await make_tenant("full", entries=20_000, plan="tiny")
    with WebhookReceiver() as hook:
        async with worker_with(alert_webhook_url=hook.url, plans=tiny) as queue:
            report = await temporal_env.client.execute_workflow(
                HealthCheckWorkflow.run, HealthInput(), id=f"health-{uuid.uuid4().hex[:6]}", task_queue=queue
            )
    kinds = {(a.kind, a.tenant_id) for a in report.alerts}
    assert ("stale_backup", stale.id) in kinds
    assert ("over_quota", full.id) in kinds
    sent = [a for body in hook.events() for a in body["alerts"]]
    assert {(a["kind"], a["tenant_id"]) for a in sent} >= {("stale_backup", stale.id), ("over_quota", full.id)}
    row = next(t for t in report.tenants if t.tenant_id == full.id)
    assert row.database_bytes > row.quota_bytes


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[schedules.x]\nworkflow = "backup-all"\nevery = "day"\nat = "25:00"', "HH:MM"),
        (
            '[schedules.x]\nworkflow = "maintenance-all"\nevery = "week"\nat = "04:00"\ntasks = ["vacuum"]',
            "weekly schedules need on",
        ),
        (
            '[schedules.x]\nworkflow = "maintenance-all"\nevery = "day"\nat = "04:00"\ntasks = ["vacuum"]\nfull = true',
            "never run from a schedule",
        ),
        ('[schedules.x]\nworkflow = "rm-rf"\nevery = "day"\nat = "04:00"', "Input should be"),
        ("[schedules.x", "schedules file"),
    ],
)
def test_bad_declarations_are_refused_with_a_clear_message(body, message):
    from tenancy.errors import InvalidInput
    from tenancy.schedules import parse_schedules

    with pytest.raises(InvalidInput, match=message):
        parse_schedules(body)
