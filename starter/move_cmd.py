"""`tenants move`: move one tenant's database to another PostgreSQL server, or move it back (`--undo`), or every
tenant of a server (`--all-from`)."""

from __future__ import annotations

import argparse

from activities.infra.catalog import Catalog
from starter.fleet_output import show_fleet_result
from starter.output import human_duration
from starter.runs import start_and_follow
from tenancy.bounds import CONCURRENCY, JOBS, validate_keep_previous, validate_lock_wait, whole
from tenancy.contracts.move import (
    DEFAULT_KEEP_SOURCE_SECONDS,
    MoveAllFromServerInput,
    MoveAllFromServerResult,
    MoveTenantInput,
    MoveTenantResult,
    UndoMoveInput,
    UndoMoveResult,
)
from tenancy.durations import parse_duration
from tenancy.errors import InvalidInput
from tenancy.naming import validate_tenant_id
from tenancy.servers import validate_server_name
from tenancy.settings import Settings
from workflows.move_fleet import MoveAllFromServerWorkflow
from workflows.move_tenant import MoveTenantWorkflow, UndoMoveWorkflow


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "move",
        help="move a tenant's database to another server (writes are frozen only for the final copy)",
    )
    # Either one tenant (ID) or every tenant of a server (--all-from); checked in `run`, for one-line errors.
    p.add_argument("tenant", nargs="?", help="the tenant id")
    p.add_argument(
        "--all-from",
        metavar="SERVER",
        help="move every tenant of this server (drain it first); without --to each goes where placement chooses",
    )
    p.add_argument("--concurrency", type=int, help="with --all-from: tenants moved at once (default: setting)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--to", metavar="SERVER", help="the server to move it to (see `tenants servers list`)")
    which.add_argument(
        "--undo", action="store_true", help="move it back to where it was, while the source copy is kept"
    )
    p.add_argument(
        "--keep-source",
        metavar="DURATION",
        help="keep the source database (renamed aside, closed) this long for --undo (e.g. 2h; 0 drops it at once; "
        "default 24h); with --undo: how long to keep the database it leaves",
    )
    p.add_argument("--jobs", type=int, default=1, help="pg_dump/pg_restore jobs (1: one pipe, no disk; default 1)")
    p.add_argument(
        "--check", action="append", default=[], metavar="SQL", help="check run on the final copy, must return true"
    )
    p.add_argument(
        "--wait-lock",
        "--lock-wait",
        dest="wait_lock",
        type=int,
        metavar="SECONDS",
        help="wait this long for a busy tenant",
    )
    p.add_argument("--no-wait", action="store_true", help="print the workflow id and Web UI link, return at once")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(handler=run)


USAGE = "give a tenant ID (`tenants move ID --to SERVER`) or a whole server (`tenants move --all-from SERVER`)"


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if (args.tenant is None) == (args.all_from is None):
        raise InvalidInput(USAGE + (", not both" if args.tenant is not None else ""))
    keep = parse_duration(args.keep_source) if args.keep_source else DEFAULT_KEEP_SOURCE_SECONDS
    validate_keep_previous(keep)
    lock_wait = validate_lock_wait(settings.lock_wait_seconds if args.wait_lock is None else args.wait_lock)
    if args.all_from is not None:
        return await move_all(args, settings, keep, lock_wait)
    if args.concurrency is not None:
        raise InvalidInput("--concurrency is for --all-from")
    if args.to is None and not args.undo:
        raise InvalidInput("give --to SERVER (where to move it) or --undo")
    tenant_id = validate_tenant_id(args.tenant)
    if args.undo:
        if args.check or args.jobs != 1:
            raise InvalidInput("--check and --jobs are for a move, not for --undo")
        return await undo(args, settings, tenant_id, keep, lock_wait)
    target = validate_server_name(args.to)
    whole("--jobs", args.jobs, *JOBS)
    await _check_target(settings, tenant_id, target)
    result: MoveTenantResult | None = await start_and_follow(
        settings,
        MoveTenantWorkflow.run,
        MoveTenantInput(
            tenant_id=tenant_id,
            target=target,
            keep_source_seconds=keep,
            lock_wait_seconds=lock_wait,
            jobs=args.jobs,
            checks=[*settings.restore_checks, *args.check],
        ),
        operation="move",
        tenant_id=tenant_id,
        summary=f"Move of tenant {tenant_id} to server {target}",
        no_wait=args.no_wait,
    )
    if result is None:
        return 0
    if args.json:
        print(result.model_dump_json(indent=2))
        return 0
    rows = sum(result.row_counts.values())
    print(f"moved     {result.tenant_id}: {result.source} → {result.target} (dump by pg_dump {result.dump_major})")
    if result.newer_pg_dump_refused:
        print(
            f"note      the newer pg_dump's archive was refused ({result.newer_pg_dump_refused}); the source's was used"
        )
    print(f"freeze    writes frozen for {result.freeze_seconds:.1f} s ({result.terminated_sessions} sessions ended)")
    print(
        f"data      {rows} rows in {len(result.row_counts)} tables and {result.sequences} sequences, "
        "equal to the frozen source"
    )
    if result.source_left:
        print(
            f"source    {result.database_name} left on {result.source} under its own name, closed, not kept for "
            f"--undo ({result.source_left}): drop it there by hand when it is not needed"
        )
    elif result.source_kept_until is not None:
        print(
            f"source    {result.source_kept_as} on {result.source}, closed, kept until "
            f"{result.source_kept_until:%Y-%m-%d %H:%M:%S} UTC (`tenants move {tenant_id} --undo` moves back to it)"
        )
    else:
        print(f"source    {result.source_kept_as} on {result.source} dropped: this move cannot be undone")
    return 0


async def _check_target(settings: Settings, tenant_id: str, target: str) -> None:
    """What the catalog already says against the move, before a run is started (the run checks it all again)."""
    catalog = Catalog(settings)
    tenant = await catalog.get_tenant(tenant_id)
    if tenant is None:
        raise InvalidInput(f"no tenant {tenant_id!r} in the catalog")
    server = await catalog.server(target)
    if server is None:
        known = ", ".join(row["name"] for row in await catalog.servers())
        raise InvalidInput(f"no server named {target!r} (servers: {known}); add it with `tenants servers add`")
    if tenant.server == target:
        raise InvalidInput(f"tenant {tenant_id!r} is on server {target!r} already")
    if server["status"] != "open":
        raise InvalidInput(f"server {target!r} is {server['status']}: it takes no tenants")


async def undo(args: argparse.Namespace, settings: Settings, tenant_id: str, keep: int, lock_wait: int) -> int:
    result: UndoMoveResult | None = await start_and_follow(
        settings,
        UndoMoveWorkflow.run,
        UndoMoveInput(tenant_id=tenant_id, keep_seconds=keep, lock_wait_seconds=lock_wait),
        operation="move-undo",
        tenant_id=tenant_id,
        summary=f"Undo of the last move of tenant {tenant_id}",
        no_wait=args.no_wait,
    )
    if result is None:
        return 0
    if args.json:
        print(result.model_dump_json(indent=2))
        return 0
    print(f"undone    {tenant_id}: back on {result.server} ({result.restored_from} is its database again)")
    print(f"freeze    writes frozen for {result.freeze_seconds:.1f} s ({result.terminated_sessions} sessions ended)")
    kept = (
        f"kept until {result.set_aside_kept_until:%Y-%m-%d %H:%M:%S} UTC" if result.set_aside_kept_until else "dropped"
    )
    print(
        f"NOTE      writes made on {result.left_server} since the move are NOT in it: they are in "
        f"{result.set_aside} on {result.left_server} ({kept}"
        + (f", {human_duration(keep)})" if result.set_aside_kept_until else ")")
    )
    if result.left_database_problem:
        print(
            f"NOTE      that database could not be set aside ({result.left_database_problem}): it is still "
            f"{result.database_name} on {result.left_server}, closed"
        )
    return 0


async def move_all(args: argparse.Namespace, settings: Settings, keep: int, lock_wait: int) -> int:
    """`--all-from SOURCE`: every tenant in service on SOURCE moved, a few at a time (MoveAllFromServerWorkflow)."""
    if args.undo:
        raise InvalidInput("--undo moves one tenant back: `tenants move ID --undo`")
    source = validate_server_name(args.all_from)
    target = validate_server_name(args.to) if args.to is not None else None
    whole("--jobs", args.jobs, *JOBS)
    concurrency = whole("--concurrency", args.concurrency or settings.fleet_concurrency, *CONCURRENCY)
    await _check_server_move(settings, source, target)
    where = f"to server {target}" if target else "where placement chooses"
    result: MoveAllFromServerResult | None = await start_and_follow(
        settings,
        MoveAllFromServerWorkflow.run,
        MoveAllFromServerInput(
            source=source,
            target=target,
            concurrency=concurrency,
            keep_source_seconds=keep,
            lock_wait_seconds=lock_wait,
            jobs=args.jobs,
            checks=[*settings.restore_checks, *args.check],
        ),
        operation=f"move-all-from-{source}",
        tenant_id=None,
        summary=f"Move of every tenant of server {source} {where}, {concurrency} at a time",
        no_wait=args.no_wait,
    )
    if result is None:
        return 0
    code = await show_fleet_result(result, settings, as_json=args.json)
    if not args.json:
        left = "empty" if result.tenants_left == 0 else f"{result.tenants_left} tenants still on it"
        print(f"source {result.source}: {left}")
    return code


async def _check_server_move(settings: Settings, source: str, target: str | None) -> None:
    """What the catalog already says against emptying `source` (the run checks it again)."""
    catalog = Catalog(settings)
    servers = {row["name"]: row for row in await catalog.servers()}
    known = ", ".join(servers) or "none"
    for name in (source, target):
        if name is not None and name not in servers:
            raise InvalidInput(f"no server named {name!r} (servers: {known}); add it with `tenants servers add`")
    if servers[source]["status"] == "open":
        raise InvalidInput(f"server {source!r} is open: drain it first: tenants servers drain {source}")
    if target is not None:
        if target == source:
            raise InvalidInput(f"--to {target!r} is the server being emptied")
        if servers[target]["status"] != "open":
            raise InvalidInput(f"server {target!r} is {servers[target]['status']}: it takes no tenants")
