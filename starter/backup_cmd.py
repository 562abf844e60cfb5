"""`tenants backup`: one tenant, every active tenant, or a check of what backups need."""

from __future__ import annotations

import argparse
from typing import TypedDict

from activities.infra.storage import open_storage
from starter.fleet_output import backup_or_error, show_fleet_result
from starter.output import human_size
from starter.runs import start_and_follow
from tenancy.contracts.backup import BackupTenantInput, BackupTenantResult
from tenancy.contracts.fleet import FleetBackupInput, FleetResult
from tenancy.errors import InvalidInput
from tenancy.naming import validate_tenant_id
from tenancy.retention import validate_keep
from tenancy.settings import DEFAULT_COMPRESSION_LEVELS, Compression, Settings
from workflows.backup_fleet import BackupAllTenantsWorkflow
from workflows.backup_tenant import BackupTenantWorkflow


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("backup", help="back up one tenant or all active tenants")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--tenant", metavar="ID", help="the tenant to back up")
    target.add_argument("--all", action="store_true", help="every active tenant, a few at a time")
    target.add_argument("--check", action="store_true", help="check pg_dump/pg_restore, storage, PostgreSQL, Temporal")
    p.add_argument("--keep", type=int, help="keep the N newest verified backups of each tenant (default: setting)")
    p.add_argument("--compression", choices=["zstd", "gzip", "none"], help="default: TENANTS_COMPRESSION, else zstd")
    p.add_argument("--level", type=int, help="compression level (zstd 1-22, default 1; gzip 0-9, default 6)")
    p.add_argument("--concurrency", type=int, help="with --all: tenants backed up at once (default: setting)")
    p.add_argument("--wait-lock", type=int, metavar="SECONDS", help="wait this long for a busy tenant (default 0)")
    p.add_argument("--no-wait", action="store_true", help="print the workflow id and Web UI link, return at once")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=run)


class BackupOptions(TypedDict):
    """What one tenant's backup and a fleet backup take alike."""

    keep: int
    compression: Compression
    compression_level: int
    lock_wait_seconds: int


def _inputs(args: argparse.Namespace, settings: Settings) -> BackupOptions:
    keep = settings.keep if args.keep is None else args.keep
    validate_keep(keep)
    compression = args.compression or settings.compression
    level = args.level
    if level is None:
        level = (
            settings.effective_compression_level
            if compression == settings.compression
            else DEFAULT_COMPRESSION_LEVELS[compression]
        )
    top = 9 if compression == "gzip" else 22
    if not 0 <= level <= top:
        raise InvalidInput(f"--level for {compression} must be between 0 and {top}")
    wait = settings.lock_wait_seconds if args.wait_lock is None else args.wait_lock
    if wait < 0:
        raise InvalidInput("--wait-lock must be 0 or more seconds")
    return BackupOptions(keep=keep, compression=compression, compression_level=level, lock_wait_seconds=wait)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.check:
        from starter.check import run_checks

        return await run_checks(settings)
    options = _inputs(args, settings)
    if args.tenant is not None:
        validate_tenant_id(args.tenant)
    if args.all:
        concurrency = args.concurrency or settings.fleet_concurrency
        if concurrency < 1:
            raise InvalidInput("--concurrency must be at least 1")
        result = await start_and_follow(
            settings,
            BackupAllTenantsWorkflow.run,
            FleetBackupInput(concurrency=concurrency, **options),
            operation="backup-all",
            tenant_id=None,
            summary=f"Backup of every active tenant, keep {options['keep']}",
            no_wait=args.no_wait,
        )
    else:
        result = await start_and_follow(
            settings,
            BackupTenantWorkflow.run,
            BackupTenantInput(tenant_id=args.tenant, **options),
            operation="backup",
            tenant_id=args.tenant,
            summary=f"Backup of tenant {args.tenant}, keep {options['keep']}",
            no_wait=args.no_wait,
        )
    return 0 if result is None else await _show(result, args.json, settings)


async def _show(result: BackupTenantResult | FleetResult, as_json: bool, settings: Settings) -> int:
    if isinstance(result, FleetResult):
        return await show_fleet_result(
            result, settings, as_json=as_json, column="backup / error", value=backup_or_error
        )
    if as_json:
        print(result.model_dump_json(indent=2))
        return 0
    print(f"backup   {result.backup_name}")
    print(f"path     {open_storage(settings).location(result.path)}")
    print(f"size     {human_size(result.size_bytes)} ({result.compression})")
    print(f"sha256   {result.sha256}")
    print(f"rows     {sum(result.row_counts.values())} in {len(result.row_counts)} tables")
    deleted = ", ".join(result.deleted_by_retention) or "none"
    print(f"kept     {len(result.kept)} verified backups; deleted by retention: {deleted}")
    return 0
