"""Temporal Schedules from the declarations: apply (create, update, remove), describe. The catalog remembers which
schedules this project manages and what was applied, so `apply` is idempotent and never touches other schedules."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
)
from temporalio.service import RPCError, RPCStatusCode

from activities.infra.catalog import Catalog
from tenancy.audit import REQUESTED_BY, schedule_actor
from tenancy.contracts.fleet import DrillFleetInput, FleetBackupInput, FleetMaintenanceInput
from tenancy.contracts.health import HealthInput
from tenancy.contracts.sweep import SweepInput
from tenancy.errors import InvalidInput
from tenancy.schedules import ScheduleDeclaration, parse_schedules
from tenancy.settings import Settings
from workflows.backup_fleet import BackupAllTenantsWorkflow
from workflows.drill import DrillAllTenantsWorkflow
from workflows.health_check import HealthCheckWorkflow
from workflows.maintain_tenant import MaintainAllTenantsWorkflow
from workflows.sweep import SweepWorkflow

OVERLAP = {"skip": ScheduleOverlapPolicy.SKIP, "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE}


def load_declarations(settings: Settings) -> list[ScheduleDeclaration]:
    try:
        text = settings.schedules_file.read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read the schedules file {settings.schedules_file}: {exc.strerror}") from None
    return parse_schedules(text, str(settings.schedules_file))


def _action(decl: ScheduleDeclaration, settings: Settings) -> ScheduleActionStartWorkflow:
    common: dict[str, Any] = {
        "id": decl.id,  # Temporal appends the scheduled time: daily-backup-2026-01-15T02:00:00Z
        "task_queue": settings.task_queue,
        "execution_timeout": decl.execution_timeout,
        "static_summary": decl.description or decl.id,
        # The audit trail's actor of what its runs do (Temporal also sets TemporalScheduledById).
        "memo": {REQUESTED_BY: schedule_actor(decl.id)},
    }
    if decl.workflow == "backup-all":
        arg: Any = FleetBackupInput(
            keep=decl.keep,
            compression=decl.compression or settings.compression,
            compression_level=settings.effective_compression_level,
            concurrency=settings.fleet_concurrency,
            lock_wait_seconds=max(settings.lock_wait_seconds, 600),  # a nightly run waits out a manual one
        )
        return ScheduleActionStartWorkflow(BackupAllTenantsWorkflow.run, arg, **common)
    if decl.workflow == "maintenance-all":
        arg = FleetMaintenanceInput(tasks=decl.tasks, days=decl.days, concurrency=settings.fleet_concurrency)
        return ScheduleActionStartWorkflow(MaintainAllTenantsWorkflow.run, arg, **common)
    if decl.workflow == "drill-all":
        arg = DrillFleetInput(
            every_weeks=settings.drill_every_weeks, concurrency=max(1, settings.fleet_concurrency // 2)
        )
        return ScheduleActionStartWorkflow(DrillAllTenantsWorkflow.run, arg, **common)
    if decl.workflow == "sweep":
        return ScheduleActionStartWorkflow(SweepWorkflow.run, SweepInput(), **common)
    return ScheduleActionStartWorkflow(HealthCheckWorkflow.run, HealthInput(), **common)


def build_schedule(
    decl: ScheduleDeclaration, settings: Settings, paused: bool = False, note: str | None = None
) -> Schedule:
    hour, minute = decl.hour_minute()
    calendar = ScheduleCalendarSpec(
        minute=[ScheduleRange(minute)],
        hour=[ScheduleRange(hour)] if hour is not None else [ScheduleRange(0, 23)],
        day_of_week=[ScheduleRange(decl.weekday())] if decl.every == "week" else [ScheduleRange(0, 6)],
        day_of_month=[ScheduleRange(decl.day_of_month())] if decl.every == "month" else [ScheduleRange(1, 31)],
        comment=decl.when(),
    )
    return Schedule(
        action=_action(decl, settings),
        spec=ScheduleSpec(calendars=[calendar], time_zone_name=settings.timezone),
        policy=SchedulePolicy(
            overlap=OVERLAP[settings.schedule_overlap],
            catchup_window=timedelta(minutes=settings.schedule_catchup_minutes),
        ),
        state=ScheduleState(paused=paused, note=note if note is not None else decl.description),
    )


def fingerprint(decl: ScheduleDeclaration, settings: Settings) -> str:
    return decl.fingerprint(
        settings.timezone, settings.task_queue, settings.schedule_catchup_minutes, settings.schedule_overlap
    )


@dataclass
class ApplyReport:
    created: list[str]
    updated: list[str]
    unchanged: list[str]
    deleted: list[str]


async def _exists(client: Client, schedule_id: str) -> bool:
    try:
        await client.get_schedule_handle(schedule_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def apply_schedules(client: Client, settings: Settings) -> ApplyReport:
    declared = load_declarations(settings)
    catalog = Catalog(settings)
    applied = await catalog.managed_schedules()
    report = ApplyReport([], [], [], [])
    for decl in declared:
        wanted = fingerprint(decl, settings)
        if await _exists(client, decl.id):
            if applied.get(decl.id) == wanted:
                report.unchanged.append(decl.id)
                continue

            def update(current: Any, decl: ScheduleDeclaration = decl) -> ScheduleUpdate:
                state = current.description.schedule.state  # keep a pause (and its note) made by an operator
                return ScheduleUpdate(schedule=build_schedule(decl, settings, state.paused, state.note))

            await client.get_schedule_handle(decl.id).update(update)
            report.updated.append(decl.id)
        else:
            with contextlib.suppress(ScheduleAlreadyRunningError):  # created meanwhile by another apply
                await client.create_schedule(decl.id, build_schedule(decl, settings))
            report.created.append(decl.id)
        await catalog.set_managed_schedule(decl.id, wanted)
    for schedule_id in sorted(set(applied) - {d.id for d in declared}):
        if await _exists(client, schedule_id):
            await client.get_schedule_handle(schedule_id).delete()
        await catalog.set_managed_schedule(schedule_id, None)
        report.deleted.append(schedule_id)
    return report
