"""`tenants maintenance`: cleanup, vacuum, optimize, analyze (and a backup first), for one tenant or all."""

from __future__ import annotations

import argparse
import json

from starter.fleet_output import show_fleet_result
from starter.output import human_size
from starter.runs import start_and_follow
from tenancy.contracts.fleet import FleetMaintenanceInput
from tenancy.contracts.maintenance import MaintainTenantInput, MaintainTenantResult
from tenancy.errors import InvalidInput
from tenancy.maintenance import ordered_tasks, validate_days
from tenancy.naming import validate_tenant_id
from tenancy.settings import Settings
from workflows.maintain_tenant import MaintainAllTenantsWorkflow, MaintainTenantWorkflow

TASK_FLAGS = ["backup", "cleanup", "vacuum", "optimize", "analyze"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("maintenance", help="cleanup of old rows, vacuum, index rebuilds, analyze")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--tenant", metavar="ID")
    target.add_argument("--all", action="store_true", help="every active or inactive tenant (suspended: skipped)")
    p.add_argument("--backup", action="store_true", help="back up first; if that fails nothing else runs")
    p.add_argument("--cleanup", action="store_true", help="delete rows older than --days (cleanup rules)")
    p.add_argument("--vacuum", action="store_true", help="VACUUM (ANALYZE)")
    p.add_argument("--full", action="store_true", help="with --vacuum: VACUUM FULL (locks tables while it runs)")
    p.add_argument("--optimize", action="store_true", help="REINDEX CONCURRENTLY bloated indexes")
    p.add_argument("--analyze", action="store_true", help="ANALYZE")
    p.add_argument("--days", type=int, default=180, help="with --cleanup: age of the rows to delete (default 180)")
    p.add_argument("--dry-run", action="store_true", help="say what would be done; change nothing")
    p.add_argument("--concurrency", type=int, help="with --all: tenants at once (default: setting)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    tasks = ordered_tasks([t for t in TASK_FLAGS if getattr(args, t)])
    if args.full and "vacuum" not in tasks:
        raise InvalidInput("--full goes with --vacuum")
    validate_days(args.days)
    if args.all:
        concurrency = args.concurrency or settings.fleet_concurrency
        if concurrency < 1:
            raise InvalidInput("--concurrency must be at least 1")
        fleet_result = await start_and_follow(
            settings,
            MaintainAllTenantsWorkflow.run,
            FleetMaintenanceInput(
                tasks=tasks, days=args.days, dry_run=args.dry_run, full=args.full, concurrency=concurrency
            ),
            operation="maintenance-all",
            tenant_id=None,
            summary=f"Maintenance of every tenant: {', '.join(tasks)}" + (" (dry run)" if args.dry_run else ""),
        )
        return await show_fleet_result(fleet_result, settings, as_json=args.json)
    tenant_id = validate_tenant_id(args.tenant)
    result: MaintainTenantResult = await start_and_follow(
        settings,
        MaintainTenantWorkflow.run,
        MaintainTenantInput(tenant_id=tenant_id, tasks=tasks, days=args.days, dry_run=args.dry_run, full=args.full),
        operation="maintenance",
        tenant_id=tenant_id,
        summary=f"Maintenance of tenant {tenant_id}: {', '.join(tasks)}" + (" (dry run)" if args.dry_run else ""),
    )
    if args.json:
        print(result.model_dump_json(indent=2))
        return 0 if result.ok else 1
    if result.plan is not None:
        print(f"dry run for {tenant_id} (nothing changed); cutoff {result.cutoff:%Y-%m-%d %H:%M} UTC")
        for name, rows in result.plan.cleanup_rows.items():
            print(f"  cleanup   {name}: {rows} rows older than {args.days} days would be deleted")
        for index in result.plan.indexes_to_rebuild:
            print(f"  optimize  {index.index}: {human_size(index.bytes)}, ~{index.bloat:.0%} bloat, would be rebuilt")
        print(f"  vacuum    ~{result.plan.dead_tuples} dead tuples would be reclaimed")
        return 0
    for report in result.tasks:
        status = "ok    " if report.ok else "FAILED"
        print(f"{status} {report.task:<9} {report.seconds:7.2f} s  {report.error or json.dumps(report.detail)}")
    print(f"database {human_size(result.size_before)} → {human_size(result.size_after)}")
    return 0 if result.ok else 1
