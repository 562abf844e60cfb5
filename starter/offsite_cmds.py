"""`tenants drill | prune | pin | unpin`: restore drills and retention on demand."""

from __future__ import annotations

import argparse

from starter.fleet_output import every_outcome, summary_line
from starter.output import table
from starter.runs import start_and_follow
from tenancy.contracts.backup import DrillInput
from tenancy.contracts.fleet import PruneInput
from tenancy.messages.backup import PinRequest
from tenancy.naming import parse_backup_name, validate_tenant_id
from tenancy.retention import validate_keep
from tenancy.settings import Settings
from workflows.drill import BackupDrillWorkflow
from workflows.retention import PinBackupWorkflow, PruneAllTenantsWorkflow, PruneTenantWorkflow


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("drill", help="restore drill: restore a backup into a scratch database, check, drop")
    p.add_argument("tenant")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--latest", action="store_true")
    which.add_argument("--backup", metavar="NAME")
    p.add_argument("--check", action="append", default=[], metavar="SQL")
    p.set_defaults(handler=drill)

    p = subparsers.add_parser("prune", help="apply retention now, or --dry-run to see what it would delete and why")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--tenant", metavar="ID")
    target.add_argument("--all", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--keep", type=int, help="with the keep policy: backups kept (default: setting)")
    p.set_defaults(handler=prune)

    for command, pinned in (("pin", True), ("unpin", False)):
        p = subparsers.add_parser(command, help=f"{command} a backup: retention never deletes a pinned one")
        p.add_argument("tenant")
        p.add_argument("backup")
        p.set_defaults(handler=pin, pinned=pinned)


async def drill(args: argparse.Namespace, settings: Settings) -> int:
    tenant_id = validate_tenant_id(args.tenant)
    if args.backup:
        parse_backup_name(tenant_id, args.backup)
    result = await start_and_follow(
        settings,
        BackupDrillWorkflow.run,
        DrillInput(tenant_id=tenant_id, backup_name=args.backup, checks=[*settings.restore_checks, *args.check]),
        operation="drill",
        tenant_id=tenant_id,
        summary=f"Restore drill of tenant {tenant_id}",
    )
    if result.ok:
        print(
            f"drill passed: {result.backup_name} restored {result.tables} tables, {result.rows} rows, counts equal "
            f"to the backup's, in {result.seconds:.1f} s (scratch database dropped)"
        )
        return 0
    print(f"drill FAILED: {result.backup_name or 'no backup'}: {result.error}")
    return 1


async def prune(args: argparse.Namespace, settings: Settings) -> int:
    keep = validate_keep(settings.keep if args.keep is None else args.keep)
    if args.tenant:
        tenant_id = validate_tenant_id(args.tenant)
        result = await start_and_follow(
            settings,
            PruneTenantWorkflow.run,
            PruneInput(tenant_id=tenant_id, keep=keep, dry_run=args.dry_run),
            operation="prune",
            tenant_id=tenant_id,
            summary=f"Retention of tenant {tenant_id}",
        )
        verb = "would delete" if args.dry_run else "deleted"
        rows = [(d.name, "keep" if d.keep else verb.upper(), d.reason) for d in result.decisions]
        print(table(["backup", "decision", "why"], rows))
        print(f"policy {result.policy}: {len(result.kept)} kept, {len(result.deleted)} {verb}")
        return 0
    fleet_result = await start_and_follow(
        settings,
        PruneAllTenantsWorkflow.run,
        PruneInput(keep=keep, dry_run=args.dry_run, concurrency=settings.fleet_concurrency),
        operation="prune-all",
        tenant_id=None,
        summary="Retention of every tenant" + (" (dry run)" if args.dry_run else ""),
    )
    for outcome in await every_outcome(fleet_result, settings):
        print(f"{outcome.tenant_id}: {outcome.detail or outcome.error}")
    print(summary_line(fleet_result))
    return 0 if fleet_result.failed == 0 else 1


async def pin(args: argparse.Namespace, settings: Settings) -> int:
    tenant_id = validate_tenant_id(args.tenant)
    parse_backup_name(tenant_id, args.backup)
    await start_and_follow(
        settings,
        PinBackupWorkflow.run,
        PinRequest(tenant_id=tenant_id, backup_name=args.backup, pinned=args.pinned),
        operation=args.command,
        tenant_id=tenant_id,
        summary=f"{args.command} {args.backup}",
    )
    print(f"{args.backup} {'pinned: retention will never delete it' if args.pinned else 'unpinned'}")
    return 0
