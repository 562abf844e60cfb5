"""`tenants export`, `tenants import`, `tenants clone`: a tenant to one file, a file to a new tenant, a tenant to
a new tenant (masked on the way) in one run.

The export file is written and read by the workers, not by the command line: a relative path is made absolute
here, and must be where the workers can reach it (the same host, a shared folder), or s3://bucket/key.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from starter.output import human_size
from starter.runs import start_and_follow
from starter.tenant_cmds import _known_server
from tenancy.contracts.transfer import (
    CloneTenantInput,
    CloneTenantResult,
    ExportTenantInput,
    ExportTenantResult,
    ImportTenantInput,
    ImportTenantResult,
)
from tenancy.errors import InvalidInput
from tenancy.naming import validate_email, validate_tenant_id
from tenancy.settings import Settings
from tenancy.transfer import MAX_MASK_BYTES, validate_location, validate_mask_sql
from workflows.transfer import CloneTenantWorkflow, ExportTenantWorkflow, ImportTenantWorkflow


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="write a tenant to one file (metadata, settings, signed archive)")
    p.add_argument("tenant", help="the tenant id")
    p.add_argument("--output", required=True, metavar="FILE|s3://BUCKET/KEY", help="where the export goes")
    p.add_argument("--wait-lock", type=int, metavar="SECONDS", help="wait this long for a busy tenant")
    _common(p)
    p.set_defaults(handler=run_export)

    p = subparsers.add_parser("import", help="make a new tenant from an export file")
    p.add_argument("source", metavar="FILE|s3://BUCKET/KEY", help="the export file")
    p.add_argument("--id", required=True, dest="new_id", metavar="NEW", help="the new tenant's id")
    _new_tenant(p)
    _common(p)
    p.set_defaults(handler=run_import)

    p = subparsers.add_parser("clone", help="copy a tenant to a new tenant, optionally masked, in one run")
    p.add_argument("tenant", help="the tenant to copy")
    p.add_argument("--id", required=True, dest="new_id", metavar="NEW", help="the new tenant's id")
    p.add_argument(
        "--mask", metavar="FILE", help="SQL run on the copy as the new tenant's role before it is swapped in"
    )
    p.add_argument("--mask-timeout", type=int, metavar="SECONDS", default=600, help="its statement timeout")
    p.add_argument("--wait-lock", type=int, metavar="SECONDS", help="wait this long for a busy source tenant")
    _new_tenant(p)
    _common(p)
    p.set_defaults(handler=run_clone)


def _new_tenant(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", help="the server for the new tenant's database (default: placement chooses)")
    p.add_argument("--plan", help="the new tenant's plan (default: the source's)")
    p.add_argument("--owner", metavar="EMAIL", help="the new tenant's owner (default: the source's)")
    p.add_argument("--name", help="the new tenant's display name (default: the source's)")
    p.add_argument("--jobs", type=int, default=2, help="pg_restore --jobs (default 2)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-wait", action="store_true", help="print the workflow id and Web UI link, return at once")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _location(text: str, what: str) -> str:
    """s3://… as given; a path made absolute (the workers resolve nothing relative to this shell)."""
    if text.startswith("s3://"):
        return validate_location(text, what)
    return validate_location(os.path.abspath(os.path.expanduser(text)), what)


def _lock_wait(args: argparse.Namespace, settings: Settings) -> int:
    wait = settings.lock_wait_seconds if args.wait_lock is None else args.wait_lock
    if wait < 0:
        raise InvalidInput("--wait-lock must be 0 or more seconds")
    return wait


def _checked_new(args: argparse.Namespace) -> None:
    validate_tenant_id(args.new_id)
    if args.owner is not None:
        validate_email(args.owner)
    if not 1 <= args.jobs <= 32:
        raise InvalidInput("--jobs must be between 1 and 32")


async def run_export(args: argparse.Namespace, settings: Settings) -> int:
    tenant_id = validate_tenant_id(args.tenant)
    output = _location(args.output, "--output")
    if not output.startswith("s3://") and Path(output).exists():
        raise InvalidInput(f"{output} exists: not overwritten")
    result = await start_and_follow(
        settings,
        ExportTenantWorkflow.run,
        ExportTenantInput(tenant_id=tenant_id, output=output, lock_wait_seconds=_lock_wait(args, settings)),
        operation="export",
        tenant_id=tenant_id,
        summary=f"Export of tenant {tenant_id} to {output}",
        no_wait=args.no_wait,
    )
    return 0 if result is None else _show_export(result, args.json)


async def run_import(args: argparse.Namespace, settings: Settings) -> int:
    _checked_new(args)
    source = _location(args.source, "the export file")
    server = await _known_server(settings, args.server, taking_tenants=True)
    result = await start_and_follow(
        settings,
        ImportTenantWorkflow.run,
        ImportTenantInput(
            source=source,
            tenant_id=args.new_id,
            server=server,
            plan=args.plan,
            owner_email=args.owner,
            name=args.name,
            jobs=args.jobs,
        ),
        operation="import",
        tenant_id=args.new_id,
        summary=f"Import of {source} as tenant {args.new_id}",
        no_wait=args.no_wait,
    )
    return 0 if result is None else _show_new(result, args.json)


def _read_mask(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_MASK_BYTES + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read --mask {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise InvalidInput(f"--mask {path} is not UTF-8 text") from None
    validate_mask_sql(text)
    return text


async def run_clone(args: argparse.Namespace, settings: Settings) -> int:
    tenant_id = validate_tenant_id(args.tenant)
    _checked_new(args)
    if args.new_id == tenant_id:
        raise InvalidInput("--id must name a new tenant, not the source")
    if not 1 <= args.mask_timeout <= 86_400:
        raise InvalidInput("--mask-timeout must be between 1 and 86400 seconds")
    mask = _read_mask(args.mask) if args.mask else None
    server = await _known_server(settings, args.server, taking_tenants=True)
    result = await start_and_follow(
        settings,
        CloneTenantWorkflow.run,
        CloneTenantInput(
            tenant_id=tenant_id,
            new_tenant_id=args.new_id,
            mask_sql=mask,
            mask_timeout_seconds=args.mask_timeout,
            server=server,
            plan=args.plan,
            owner_email=args.owner,
            name=args.name,
            jobs=args.jobs,
            lock_wait_seconds=_lock_wait(args, settings),
        ),
        operation="clone",
        tenant_id=args.new_id,
        summary=f"Clone of tenant {tenant_id} as {args.new_id}" + (" (masked)" if mask else ""),
        no_wait=args.no_wait,
    )
    return 0 if result is None else _show_new(result, args.json)


def _show_export(result: ExportTenantResult, as_json: bool) -> int:
    if as_json:
        print(result.model_dump_json(indent=2))
        return 0
    print(f"exported  {result.tenant_id} → {result.output}")
    print(f"size      {human_size(result.size_bytes)}")
    print(f"sha256    {result.sha256}")
    print(f"backup    {result.backup_name}")
    print(f"schema    {result.schema_version or 'none'} (export format {result.format_version})")
    print(f"rows      {sum(result.row_counts.values())} in {len(result.row_counts)} tables")
    return 0


def _show_new(result: ImportTenantResult | CloneTenantResult, as_json: bool) -> int:
    if as_json:
        print(result.model_dump_json(indent=2))
        return 0
    verb = "imported" if isinstance(result, ImportTenantResult) else "cloned"
    print(f"{verb:<11} {result.source_tenant_id} → {result.tenant_id}")
    print(f"database    {result.database_name}")
    print(f"role        {result.role_name} (credentials: {result.credentials_file})")
    print(f"backup      {result.backup_name}")
    print(f"rows        {sum(result.row_counts.values())} in {len(result.row_counts)} tables")
    if isinstance(result, CloneTenantResult) and result.masked:
        print(f"masked      yes ({result.mask_seconds or 0:.1f}s)")
    return 0
