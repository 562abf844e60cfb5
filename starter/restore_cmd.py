"""`tenants restore`: list a tenant's backups, or restore one (after a confirmation)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from activities.infra.backup_facts import describe_backups, restore_candidate
from activities.infra.catalog import Catalog
from activities.infra.storage import open_storage
from starter.audit_cmd import record_cli_access
from starter.output import human_duration, human_size, table
from starter.runs import start_and_follow
from tenancy.audit import BACKUP_LIST
from tenancy.contracts.backup import BackupInfo
from tenancy.contracts.restore import RestoreTenantInput, RestoreTenantResult, UndoRestoreInput, UndoRestoreResult
from tenancy.durations import parse_duration
from tenancy.errors import InvalidInput
from tenancy.naming import validate_tenant_id
from tenancy.selection import choose_backup
from tenancy.settings import Settings
from workflows.restore_tenant import RestoreTenantWorkflow
from workflows.undo_restore import UndoRestoreWorkflow


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
    which.add_argument(
        "--undo", action="store_true", help="swap back the database the last restore replaced (while it is kept)"
    )
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--keep-previous",
        metavar="DURATION",
        help="keep the replaced database this long, for --undo (e.g. 2h; 0 drops it at once; "
        "default: TENANTS_RESTORE_KEEP_PREVIOUS, 24h)",
    )
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


def _restorable(backup: BackupInfo) -> str:
    if backup.drill_ok is False:
        return "NO (drill failed)"
    if backup.restorable:
        return "yes"
    return "unproven" if backup.verified else "NO"


async def run(args: argparse.Namespace, settings: Settings) -> int:
    tenant_id = validate_tenant_id(args.tenant)
    keep_previous = parse_duration(args.keep_previous) if args.keep_previous else settings.restore_keep_previous
    if args.undo:
        return await undo(args, settings, tenant_id, keep_previous)
    backups = await describe_backups(open_storage(settings), Catalog(settings), tenant_id)
    if args.list:
        await record_cli_access(settings, BACKUP_LIST, tenant_id, command="restore --list", backups=len(backups))
        if args.json:
            print("[" + ",".join(b.model_dump_json() for b in backups) + "]")
        else:
            rows = [
                (
                    b.name,
                    b.taken_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                    human_size(b.size_bytes),
                    "yes" if b.verified else "NO",
                    _restorable(b),
                    "pinned" if b.pinned else "",
                    b.compression or "?",
                )
                for b in reversed(backups)
            ]
            print(table(["backup", "taken at", "size", "verified", "restorable", "pin", "compression"], rows))
        return 0

    at = parse_time(args.at) if args.at else None
    jobs = args.jobs or settings.restore_jobs
    if not 1 <= jobs <= 32:
        raise InvalidInput("--jobs must be between 1 and 32")
    name = args.backup
    if name is None:
        # What the workflow will pick, so the operator confirms the right thing.
        name = choose_backup([restore_candidate(b) for b in backups], at).name
    kept = (
        f"kept for {human_duration(keep_previous)}: `tenants restore {tenant_id} --undo` swaps it back"
        if keep_previous
        else "then dropped: this cannot be undone"
    )
    if not args.yes and not _confirm(
        f"Restore tenant {tenant_id} from {name}? Its current database is replaced ({kept})."
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
    if not result.previous_database:
        print("previous  none: the tenant had no database to set aside")
    elif result.previous_dropped:
        print(f"previous  {result.previous_database} dropped")
    else:
        print(
            f"previous  {result.previous_database} kept until {result.keep_previous_until:%Y-%m-%d %H:%M:%S} UTC "
            f"(`tenants restore {tenant_id} --undo` swaps it back)"
        )
    if result.cache_keys_deleted is not None:
        print(f"cache     {result.cache_keys_deleted} keys deleted")
    return 0


async def undo(args: argparse.Namespace, settings: Settings, tenant_id: str, keep_previous: int) -> int:
    kept = await Catalog(settings).kept_databases(tenant_id)
    if not kept:
        raise InvalidInput(f"tenant {tenant_id!r} has no database kept from a restore to go back to")
    newest = kept[0]
    if not args.yes and not _confirm(
        f"Undo the restore of tenant {tenant_id}"
        + (f" from {newest['backup_name']}" if newest["backup_name"] else "")
        + f"? {newest['name']} becomes its database again; the current one is "
        + (f"kept for {human_duration(keep_previous)}." if keep_previous else "dropped.")
    ):
        print("not undone")
        return 1
    result: UndoRestoreResult | None = await start_and_follow(
        settings,
        UndoRestoreWorkflow.run,
        UndoRestoreInput(
            tenant_id=tenant_id,
            keep_previous_seconds=keep_previous,
            lock_wait_seconds=settings.lock_wait_seconds if args.wait_lock is None else args.wait_lock,
        ),
        operation="restore-undo",
        tenant_id=tenant_id,
        summary=f"Undo of the last restore of tenant {tenant_id}",
        no_wait=args.no_wait,
    )
    if result is None:
        return 0
    if args.json:
        print(result.model_dump_json(indent=2))
        return 0
    print(f"undone    {tenant_id}: {result.database_name} is again the database from before the restore")
    if result.replaced_kept_until:
        print(
            f"replaced  {result.replaced_database} kept until {result.replaced_kept_until:%Y-%m-%d %H:%M:%S} UTC "
            "(undo again to swap it back)"
        )
    else:
        print(f"replaced  {result.replaced_database} dropped")
    print(f"sessions  {result.terminated_sessions} terminated")
    return 0
