"""`tenants restore`: list a tenant's backups, or restore one (after a confirmation)."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime

from activities.storage import open_storage
from starter.output import human_size, table
from starter.runs import start_and_follow
from tenancy.errors import InvalidInput
from tenancy.models import RestoreTenantInput, RestoreTenantResult
from tenancy.naming import validate_tenant_id
from tenancy.retention import BackupEntry
from tenancy.selection import choose_backup
from tenancy.settings import Settings
from workflows.restore_tenant import RestoreTenantWorkflow

_DURATION = re.compile(r"^(\d+)([smhd])$")


def parse_duration(text: str) -> int:
    """'90s', '30m', '2h', '7d' → seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise InvalidInput(f"invalid duration {text!r}: use a number and s, m, h or d (e.g. 2h)")
    return int(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def parse_time(text: str) -> datetime:
    """'2026-01-15 03:00' (UTC, as backup names are) or ISO 8601 with an offset."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"invalid time {text!r}: use YYYY-MM-DD HH:MM[:SS] (UTC) or ISO 8601") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("restore", help="list a tenant's backups or restore one, safely")
    p.add_argument("tenant", help="the tenant id")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--list", action="store_true", help="the tenant's backups")
    which.add_argument("--latest", action="store_true", help="the newest verified backup")
    which.add_argument("--backup", metavar="NAME", help="a backup by name (see --list)")
    which.add_argument("--at", metavar="TIME", help="the newest backup taken at or before TIME (UTC)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--keep-previous", metavar="DURATION", help="keep the replaced database this long (e.g. 2h)")
    p.add_argument("--jobs", type=int, help="pg_restore --jobs (default: TENANTS_RESTORE_JOBS)")
    p.add_argument("--check", action="append", default=[], metavar="SQL", help="extra check, must return true")
    p.add_argument("--wait-lock", type=int, metavar="SECONDS", help="wait this long for a busy tenant")
    p.add_argument("--no-wait", action="store_true", help="print the workflow id and Web UI link, return at once")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(handler=run)


def _confirm(prompt: str) -> bool:
    if not sys.stdin.isatty():
        raise InvalidInput("refusing to restore without confirmation: pass --yes")
    answer = input(f"{prompt} [y/N] ")
    return answer.strip().lower() in {"y", "yes"}


async def run(args: argparse.Namespace, settings: Settings) -> int:
    tenant_id = validate_tenant_id(args.tenant)
    storage = open_storage(settings)
    backups = storage.describe_backups(tenant_id)
    if args.list:
        if args.json:
            print("[" + ",".join(b.model_dump_json() for b in backups) + "]")
        else:
            rows = [
                (
                    b.name,
                    b.taken_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                    human_size(b.size_bytes),
                    "yes" if b.verified else "NO",
                    b.compression or "?",
                )
                for b in reversed(backups)
            ]
            print(table(["backup", "taken at", "size", "verified", "compression"], rows))
        return 0

    at = parse_time(args.at) if args.at else None
    keep_previous = parse_duration(args.keep_previous) if args.keep_previous else 0
    jobs = args.jobs or settings.restore_jobs
    if not 1 <= jobs <= 32:
        raise InvalidInput("--jobs must be between 1 and 32")
    name = args.backup
    if name is None:
        # What the workflow will pick, so the operator confirms the right thing.
        entries = [BackupEntry(b.name, b.taken_at, b.verified) for b in backups]
        name = choose_backup(entries, at).name
    if not args.yes and not _confirm(
        f"Restore tenant {tenant_id} from {name}? Its current database is replaced "
        f"({'kept for ' + args.keep_previous if keep_previous else 'then dropped'})."
    ):
        print("not restored")
        return 1

    result: RestoreTenantResult | None = await start_and_follow(
        settings,
        RestoreTenantWorkflow.run,
        RestoreTenantInput(
            tenant_id=tenant_id,
            backup_name=name,
            jobs=jobs,
            checks=[*settings.restore_checks, *args.check],
            keep_previous_seconds=keep_previous,
            lock_wait_seconds=settings.lock_wait_seconds if args.wait_lock is None else args.wait_lock,
        ),
        operation="restore",
        tenant_id=tenant_id,
        summary=f"Restore of tenant {tenant_id} from {name}",
        no_wait=args.no_wait,
    )
    if result is None:
        return 0
    if args.json:
        print(result.model_dump_json(indent=2))
        return 0
    print(f"restored  {result.tenant_id} from {result.backup_name}")
    print(
        f"database  {result.database_name} ({sum(result.row_counts.values())} rows in {len(result.row_counts)} tables, "
        "counts equal to the backup's)"
    )
    print(f"sessions  {result.terminated_sessions} terminated")
    if result.previous_dropped:
        print(f"previous  {result.previous_database} dropped")
    else:
        print(f"previous  {result.previous_database} kept until {result.keep_previous_until:%Y-%m-%d %H:%M:%S} UTC")
    if result.cache_keys_deleted is not None:
        print(f"cache     {result.cache_keys_deleted} keys deleted")
    return 0
