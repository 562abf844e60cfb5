"""`tenants sweep [--dry-run]`: remove what dead runs left behind, and say what and why."""

from __future__ import annotations

import argparse
import contextlib
import sys

from starter.output import table
from starter.runs import start_and_follow
from tenancy.contracts.sweep import SweepInput, SweepReport
from tenancy.errors import InvalidInput
from tenancy.servers import DEFAULT_SERVER
from tenancy.settings import Settings
from tenancy.sweep import MAX_STALE_HOURS, MAX_SWEEP_ITEMS
from workflows.sweep import SweepWorkflow


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep", help="remove orphans: scratch/expired databases, work files, partial files, uploads, roles"
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be removed and why; remove nothing")
    p.add_argument(
        "--stale-hours",
        type=int,
        metavar="N",
        help="age of an abandoned partial file or upload, and of a mark whose run Temporal does not know "
        "(default: TENANTS_STALE_PARTIAL_HOURS)",
    )
    p.add_argument("--limit", type=int, default=1000, help="items removed at most in one sweep (default 1000)")
    p.add_argument("--verbose", "-v", action="store_true", help="also list what is left alone, and why")
    p.add_argument("--json", action="store_true", help="the report as JSON, for scripts")
    p.set_defaults(handler=run)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.stale_hours is not None and not 0 <= args.stale_hours <= MAX_STALE_HOURS:
        raise InvalidInput(f"--stale-hours must be between 0 and {MAX_STALE_HOURS}")
    if not 1 <= args.limit <= MAX_SWEEP_ITEMS:
        raise InvalidInput(f"--limit must be between 1 and {MAX_SWEEP_ITEMS}")
    # With --json, stdout carries only the report.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        report: SweepReport = await start_and_follow(
            settings,
            SweepWorkflow.run,
            SweepInput(dry_run=args.dry_run, stale_hours=args.stale_hours, limit=args.limit),
            operation="sweep",
            tenant_id=None,
            summary="Sweep of orphans" + (" (dry run)" if args.dry_run else ""),
        )
    if args.json:
        print(report.model_dump_json(indent=2))
        return 1 if report.failed else 0
    shown = [i for i in report.items if i.removable or i.error or args.verbose or args.dry_run]
    if shown:
        if any(i.server not in (None, DEFAULT_SERVER) for i in shown):  # several servers: say which
            print(
                table(
                    ["kind", "server", "name", "reason", "action"],
                    [(i.kind, i.server or "", i.name, i.error or i.reason, i.action(report.dry_run)) for i in shown],
                )
            )
        else:
            rows = [(i.kind, i.name, i.error or i.reason, i.action(report.dry_run)) for i in shown]
            print(table(["kind", "name", "reason", "action"], rows))
    removable = sum(i.removable for i in report.items)
    left = len(report.items) - removable
    more = f", {report.more} more for the next sweep" if report.more else ""
    if report.dry_run:
        print(f"dry run: {removable} would be removed, {left} left alone{more} (stale after {report.stale_hours} h)")
    else:
        print(f"{report.removed} removed, {report.failed} failed, {left} left alone{more}")
    return 1 if report.failed else 0
