"""`tenants schedules apply | list | pause | unpause | trigger | backfill` and `tenants health`."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from temporalio.client import ScheduleBackfill, ScheduleOverlapPolicy

from activities.infra.catalog import Catalog
from activities.infra.temporal import connect_client
from starter.output import human_size, table
from starter.restore_cmd import parse_time
from starter.runs import start_and_follow
from starter.schedules import apply_schedules, load_declarations
from tenancy.contracts.health import HealthInput, HealthReport
from tenancy.errors import InvalidInput
from tenancy.settings import Settings
from workflows.health_check import HealthCheckWorkflow


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("schedules", help="the Temporal Schedules that replace the crontab")
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("apply", help="create or update the declared schedules; remove managed ones now gone")
    actions.add_parser("list", help="name, when, time zone, next runs, last result, paused?")
    pause = actions.add_parser("pause", help="pause a schedule")
    pause.add_argument("schedule")
    pause.add_argument("--note", default="paused with tenants schedules pause")
    unpause = actions.add_parser("unpause", help="resume a schedule")
    unpause.add_argument("schedule")
    unpause.add_argument("--note", default="unpaused with tenants schedules unpause")
    trigger = actions.add_parser("trigger", help="run a schedule's action now")
    trigger.add_argument("schedule")
    backfill = actions.add_parser("backfill", help="run the actions a schedule would have run in a time range")
    backfill.add_argument("schedule")
    backfill.add_argument("--from", dest="start", required=True, metavar="TIME")
    backfill.add_argument("--to", dest="end", required=True, metavar="TIME")
    p.set_defaults(handler=run)

    health = subparsers.add_parser("health", help="per tenant: last good backup age, size vs quota, failures")
    health.add_argument("--alert", action="store_true", help="also send the alerts (log, webhook, e-mail)")
    health.add_argument("--json", action="store_true")
    health.set_defaults(handler=health_cmd)


async def _managed(settings: Settings, schedule_id: str) -> None:
    if schedule_id not in {d.id for d in load_declarations(settings)}:
        raise InvalidInput(f"no declared schedule {schedule_id!r} (see `tenants schedules list`)")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    client = await connect_client(settings)
    if args.action == "apply":
        await Catalog(settings).migrate()
        report = await apply_schedules(client, settings)
        for label, ids in (
            ("created", report.created),
            ("updated", report.updated),
            ("unchanged", report.unchanged),
            ("deleted", report.deleted),
        ):
            if ids:
                print(f"{label:<10} {', '.join(ids)}")
        return 0
    if args.action == "list":
        rows = []
        for decl in load_declarations(settings):
            try:
                description = await client.get_schedule_handle(decl.id).describe()
            except Exception:  # not applied yet
                rows.append((decl.id, decl.when(), settings.timezone, "not applied", "", ""))
                continue
            info, state = description.info, description.schedule.state
            upcoming = ", ".join(t.astimezone(UTC).strftime("%m-%d %H:%M") for t in info.next_action_times[:2])
            last = ""
            if info.recent_actions:
                action = info.recent_actions[-1]
                run_id = getattr(action.action, "workflow_id", "")
                try:
                    status = (await client.get_workflow_handle(run_id).describe()).status
                    last = f"{status.name.lower() if status else '?'} ({action.scheduled_at:%m-%d %H:%M})"
                except Exception:
                    last = f"started {action.scheduled_at:%m-%d %H:%M}"
            paused = f"yes: {state.note}" if state.paused else "no"
            rows.append((decl.id, decl.when(), settings.timezone, upcoming + " UTC", last, paused))
        print(table(["schedule", "when", "time zone", "next runs", "last result", "paused"], rows))
        return 0
    await _managed(settings, args.schedule)
    handle = client.get_schedule_handle(args.schedule)
    if args.action == "pause":
        await handle.pause(note=args.note)
        print(f"{args.schedule} paused: {args.note}")
    elif args.action == "unpause":
        await handle.unpause(note=args.note)
        print(f"{args.schedule} unpaused")
    elif args.action == "trigger":
        await handle.trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)
        query = f"TemporalScheduledById='{args.schedule}'"
        print(f'{args.schedule} triggered; see `temporal workflow list --query "{query}"`')
    else:
        start, end = parse_time(args.start), parse_time(args.end)
        if end <= start:
            raise InvalidInput("--to must be after --from")
        await handle.backfill(ScheduleBackfill(start_at=start, end_at=end, overlap=ScheduleOverlapPolicy.ALLOW_ALL))
        print(f"{args.schedule} backfilled from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC")
    return 0


async def health_cmd(args: argparse.Namespace, settings: Settings) -> int:
    report: HealthReport = await start_and_follow(
        settings,
        HealthCheckWorkflow.run,
        HealthInput(send_alerts=args.alert),
        operation="health",
        tenant_id=None,
        summary="Health check" + (" with alerts" if args.alert else ""),
    )
    if args.json:
        print(report.model_dump_json(indent=2))
        return 0 if not report.alerts else 1
    rows = []
    for t in report.tenants:
        usage = (
            f"{human_size(t.database_bytes)} / {human_size(t.quota_bytes)}"
            if t.database_bytes and t.quota_bytes
            else ""
        )
        age = f"{t.backup_age_hours:.1f} h" if t.backup_age_hours is not None else "never"
        rows.append(
            (
                t.tenant_id,
                t.status,
                age,
                usage,
                human_size(t.backup_bytes),
                (t.last_maintenance_at or "never")[:16],
                t.failed_runs,
            )
        )
    print(
        table(["tenant", "status", "last backup", "size / quota", "backups", "last maintenance", "failed runs"], rows)
    )
    if report.tenants_not_shown:
        # A large fleet: the run's result shows the tenants that need attention first, and counts the rest.
        checked = len(report.tenants) + report.tenants_not_shown
        print(f"... and {report.tenants_not_shown} more tenant(s) not shown, {checked} checked")
    free = f", {human_size(report.storage_free_bytes)} free" if report.storage_free_bytes is not None else ""
    print(f"storage {report.storage}: {human_size(report.storage_used_bytes)} of backups{free}")
    for alert in report.alerts:
        print(f"ALERT {alert.kind}: {alert.message}")
    if report.alerts_not_shown:
        sent = " (every one was sent)" if args.alert else ""
        print(f"... and {report.alerts_not_shown} more alert(s) not shown{sent}")
    total = len(report.alerts) + report.alerts_not_shown
    print(f"{total} alert(s) at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    return 0 if not total else 1
