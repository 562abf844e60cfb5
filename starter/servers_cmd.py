"""`tenants servers add | list | drain | open | close | set | remove`: the PostgreSQL servers tenant databases live
on (tenancy/servers.py). The catalog records each one's name, state and limits; its admin URL goes to the servers
file (0600) of this machine, never to the catalog or the screen."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any
from urllib.parse import unquote, urlparse

from activities.infra.catalog import Catalog
from activities.infra.pg import connect
from activities.infra.servers import ServerUrls, read_servers_file, server_major_version, write_server_url
from starter.output import human_size, table
from tenancy.audit import local_actor
from tenancy.errors import InvalidInput, failure_message
from tenancy.servers import DEFAULT_SERVER, ServerLoad, ServerStatus, validate_server_name
from tenancy.settings import Settings, redact_url

# The audit trail's actions for changes to the servers (tenancy/audit.py has the tenants' and backups').
SERVER_ADD = "server.add"
SERVER_STATUS = "server.status"
SERVER_LIMITS = "server.limits"
SERVER_REMOVE = "server.remove"
# A server that does not answer within this is reported as unreachable rather than waited on.
CONNECT_SECONDS = 10
# Tenants whose databases count as held by a server (the catalog's count, Catalog.servers).
GONE_STATUSES = ("deprovisioned", "failed")
MIB = 2**20
GIB = 2**30

_STATUS_ACTIONS: dict[str, tuple[ServerStatus, str]] = {
    "drain": ("draining", "keeps its tenants, takes no new ones (`tenants move --all-from SERVER` empties it)"),
    "open": ("open", "takes new tenants"),
    "close": ("closed", "takes nothing new, not even a moved tenant"),
}


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("servers", help="PostgreSQL servers for tenant databases: add, list, drain, remove")
    actions = p.add_subparsers(dest="action", required=True)

    add = actions.add_parser("add", help="check a server answers, record it (open) and keep its URL (0600)")
    add.add_argument("name", help="a short name: lowercase letters, digits, inner hyphens (e.g. pg-b)")
    add.add_argument("url", help="its admin URL, postgresql://user:password@host:port/postgres")
    _limit_arguments(add)
    add.set_defaults(handler=add_server)

    listing = actions.add_parser("list", help="each server: status, version, tenants, size, free room, reachable")
    listing.add_argument("--json", action="store_true", help="JSON for scripts")
    listing.set_defaults(handler=list_servers)

    for action, (status, text) in _STATUS_ACTIONS.items():
        change = actions.add_parser(action, help=f"mark a server {status}: it {text}")
        change.add_argument("name")
        change.set_defaults(handler=change_status, status=status)

    limits = actions.add_parser("set", help="change a server's limits")
    limits.add_argument("name")
    _limit_arguments(limits)
    limits.set_defaults(handler=set_limits)

    remove = actions.add_parser("remove", help="forget a server that holds no tenant, and its URL")
    remove.add_argument("name")
    remove.add_argument(
        "--lost",
        action="store_true",
        help="the server is gone for good: abandon the databases kept there (a move's source) instead of waiting",
    )
    remove.add_argument("--yes", action="store_true", help="with --lost: do not ask for confirmation")
    remove.set_defaults(handler=remove_server)


def _limit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tenants", type=int, metavar="N", help="at most N live tenants (default: no limit)")
    p.add_argument(
        "--max-size-gb", type=float, metavar="G", help="at most G GiB of tenant databases (default: no limit)"
    )


def _limits(args: argparse.Namespace) -> dict[str, int]:
    """The catalog's columns for --max-tenants / --max-size-gb given (bad values: InvalidInput)."""
    fields = {}
    if args.max_tenants is not None:
        if args.max_tenants < 1:
            raise InvalidInput("--max-tenants must be at least 1")
        fields["max_tenants"] = args.max_tenants
    if args.max_size_gb is not None:
        if not args.max_size_gb * 1024 >= 1:  # also refuses nan
            raise InvalidInput("--max-size-gb must be at least 0.001 (1 MiB)")
        fields["max_size_mb"] = round(args.max_size_gb * 1024)
    return fields


def _hide_password(message: str, url: str) -> str:
    """A driver's message about a URL, with its password taken out wherever it was echoed."""
    try:
        password = urlparse(url).password
    except ValueError:
        password = None
    for secret in {password, unquote(password)} if password else set():
        message = message.replace(secret, "***")
    return message


def _said(exc: BaseException, url: str) -> str:
    text = failure_message(exc).strip() or type(exc).__name__
    return _hide_password(text.splitlines()[0], url)


async def _identity(url: str) -> tuple[str, str, str] | None:
    """What tells one PostgreSQL server from another whatever the URL (host name, address) it is reached by: its
    system identifier, data directory and port. None when it cannot be read (no such privilege, not reached)."""
    try:
        conn = await asyncio.wait_for(connect(url), CONNECT_SECONDS)
        async with conn:
            row = await (
                await conn.execute(
                    "SELECT (SELECT system_identifier::text FROM pg_control_system()), "
                    "current_setting('data_directory'), current_setting('port')"
                )
            ).fetchone()
    except Exception:
        return None
    return (row[0], row[1], row[2]) if row and all(row) else None


async def _same_server(url: str, others: dict[str, str]) -> str | None:
    """The name of a server already known here that `url` reaches too, if any."""
    mine = await _identity(url)
    if mine is None:
        return None
    names = sorted(others)
    identities = await asyncio.gather(*(_identity(others[name]) for name in names))
    return next((name for name, other in zip(names, identities, strict=True) if other == mine), None)


async def _catalog(settings: Settings) -> Catalog:
    catalog = Catalog(settings)
    await catalog.migrate()
    return catalog


async def _known(catalog: Catalog, name: str) -> dict[str, Any]:
    validate_server_name(name)
    row = await catalog.server(name)
    if row is None:
        names = ", ".join(s["name"] for s in await catalog.servers())
        raise InvalidInput(f"no server named {name!r} (servers: {names}); see `tenants servers list`")
    return row


async def add_server(args: argparse.Namespace, settings: Settings) -> int:
    name = validate_server_name(args.name)
    if name == DEFAULT_SERVER:
        raise InvalidInput("server 'default' is always there: its URL is TENANTS_DATABASE_URL")
    fields = _limits(args)
    url = args.url
    try:
        parsed = urlparse(url)
    except ValueError as exc:
        raise InvalidInput(f"invalid URL for server {name!r}: {_hide_password(str(exc), url)}") from None
    if parsed.scheme not in ("postgresql", "postgres"):
        raise InvalidInput("the URL must be postgresql://user:password@host:port/dbname")
    catalog = await _catalog(settings)
    if await catalog.server(name) is not None:
        raise InvalidInput(f"server {name!r} is already recorded; `tenants servers remove {name}` first to replace it")
    try:
        major = await asyncio.wait_for(server_major_version(url), CONNECT_SECONDS)
    except Exception as exc:  # whatever the reason, nothing is recorded
        raise InvalidInput(f"cannot connect to server {name!r} at {redact_url(url)}: {_said(exc, url)}") from None
    try:
        configured = ServerUrls(settings).configured()
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    recorded = {row["name"] for row in await catalog.servers()}
    same = await _same_server(url, {n: u for n, u in configured.items() if n in recorded})
    if same is not None:
        # Two names for one server would count its tenants and room twice, and sweep it twice.
        raise InvalidInput(f"{redact_url(url)} is server {same!r} already: a server is added once")
    if not await catalog.add_server(name, major_version=major, address=redact_url(url), **fields):
        raise InvalidInput(f"server {name!r} was recorded meanwhile; nothing changed")
    try:
        await asyncio.to_thread(write_server_url, settings.effective_servers_file, name, url)
    except Exception:
        await catalog.remove_server(name, just_added=True)  # no row without its URL
        raise
    await catalog.audit(local_actor(), SERVER_ADD, detail={"server": name, "major_version": major, **fields})
    print(
        f"server {name}: PostgreSQL {major} at {redact_url(url)}, open; URL kept in {settings.effective_servers_file}"
    )
    if name in settings.servers and settings.servers[name] != url:
        print(f"note: TENANTS_SERVERS names {name!r} too, with another URL: processes that set it use that one")
    print("workers read the servers file when they need a server: they reach it without a restart")
    return 0


async def _server_facts(url: str | None, databases: list[str]) -> tuple[int | None, int, str | None]:
    """(live major version, total size of these databases, why it could not be read) of one server."""
    if url is None:
        return None, 0, "no URL for it here (TENANTS_SERVERS or the servers file)"
    try:
        conn = await asyncio.wait_for(connect(url), CONNECT_SECONDS)
        async with conn:
            row = await (
                await conn.execute(
                    "SELECT current_setting('server_version_num')::int, "
                    "(SELECT coalesce(sum(pg_database_size(datname)), 0) FROM pg_database WHERE datname = ANY(%s))",
                    [databases],
                )
            ).fetchone()
    except Exception as exc:
        return None, 0, _said(exc, url)
    assert row is not None
    return row[0] // 10000, int(row[1]), None


async def server_rows(settings: Settings) -> list[dict[str, Any]]:
    """Each server the catalog knows, with what it holds now (read on the server itself) and its free room."""
    catalog = await _catalog(settings)
    servers = await catalog.servers()
    tenants = [t for t in await catalog.list_tenants() if t.status not in GONE_STATUSES]
    try:
        urls = ServerUrls(settings).configured()
    except ValueError as exc:  # a malformed servers file: only `default` is known here
        urls = {DEFAULT_SERVER: settings.effective_database_url}
        print(f"note: {exc}")
    facts = await asyncio.gather(
        *(
            _server_facts(urls.get(s["name"]), [t.database_name for t in tenants if t.server == s["name"]])
            for s in servers
        )
    )
    rows = []
    for server, (major, size, problem) in zip(servers, facts, strict=True):
        max_bytes = server["max_size_mb"] * MIB if server["max_size_mb"] else None
        load = ServerLoad(
            name=server["name"],
            status=server["status"],
            max_tenants=server["max_tenants"],
            max_size_bytes=max_bytes,
            tenants=server["tenants"],
            size_bytes=size,
        )
        rows.append(
            {
                "name": server["name"],
                "status": server["status"],
                "major_version": major if major is not None else server["major_version"],
                "tenants": server["tenants"],
                "size_bytes": size if problem is None else None,
                "max_tenants": server["max_tenants"],
                "max_size_bytes": max_bytes,
                "free_tenants": None if load.max_tenants is None else max(0, load.max_tenants - load.tenants),
                "free_bytes": None if max_bytes is None or problem else max(0, max_bytes - size),
                "free_share": round(load.free_share, 4),
                "full": load.full,
                "reachable": problem is None,
                "problem": problem,
                "address": server["address"] if server["name"] != DEFAULT_SERVER else redact_url(urls[DEFAULT_SERVER]),
            }
        )
    return rows


def _free(row: dict[str, Any]) -> str:
    parts = []
    if row["max_tenants"] is not None:
        parts.append(f"{row['free_tenants']} of {row['max_tenants']} tenants")
    if row["max_size_bytes"] is not None:
        free = "?" if row["free_bytes"] is None else human_size(row["free_bytes"])
        parts.append(f"{free} of {human_size(row['max_size_bytes'])}")
    return ", ".join(parts) if parts else "no limit"


async def list_servers(args: argparse.Namespace, settings: Settings) -> int:
    rows = await server_rows(settings)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        table(
            ["name", "status", "version", "tenants", "size", "free", "reachable"],
            [
                (
                    r["name"],
                    r["status"] + (" (full)" if r["full"] else ""),
                    r["major_version"] or "?",
                    r["tenants"],
                    "?" if r["size_bytes"] is None else human_size(r["size_bytes"]),
                    _free(r),
                    "yes" if r["reachable"] else f"NO: {r['problem']}",
                )
                for r in rows
            ],
        )
    )
    return 0


async def change_status(args: argparse.Namespace, settings: Settings) -> int:
    catalog = await _catalog(settings)
    row = await _known(catalog, args.name)
    status: ServerStatus = args.status
    if row["status"] != status:
        await catalog.update_server(args.name, status=status)
        await catalog.audit(
            local_actor(), SERVER_STATUS, detail={"server": args.name, "from": row["status"], "to": status}
        )
    text = next(text for s, text in _STATUS_ACTIONS.values() if s == status)
    print(f"server {args.name}: {status}; it {text}")
    return 0


async def set_limits(args: argparse.Namespace, settings: Settings) -> int:
    fields = _limits(args)
    if not fields:
        raise InvalidInput("say what to set: --max-tenants N and/or --max-size-gb G")
    catalog = await _catalog(settings)
    await _known(catalog, args.name)
    await catalog.update_server(args.name, **fields)
    await catalog.audit(local_actor(), SERVER_LIMITS, detail={"server": args.name, **fields})
    shown = []
    if "max_tenants" in fields:
        shown.append(f"at most {fields['max_tenants']} tenants")
    if "max_size_mb" in fields:
        shown.append(f"at most {human_size(fields['max_size_mb'] * MIB)}")
    print(f"server {args.name}: {', '.join(shown)}")
    return 0


def _held_message(name: str, held: int) -> str:
    return (
        f"server {name!r} still holds {held} tenant(s) not deprovisioned: move them away first "
        "(`tenants move ID --to SERVER`), or deprovision them"
    )


def _confirm_lost(name: str, kept: list[dict[str, Any]]) -> bool:
    """Whether the user agrees to forget a lost server and abandon what is kept there (`--yes` agrees)."""
    if not sys.stdin.isatty():
        raise InvalidInput(f"refusing to remove server {name!r} as lost without confirmation: pass --yes")
    what = f"; its {len(kept)} kept database(s) are abandoned, not dropped" if kept else ""
    answer = input(f"Remove server {name!r} as gone for good{what}? [y/N] ")
    return answer.strip().lower() in {"y", "yes"}


async def remove_server(args: argparse.Namespace, settings: Settings) -> int:
    name = validate_server_name(args.name)
    if name == DEFAULT_SERVER:
        raise InvalidInput("server 'default' cannot be removed: it is TENANTS_DATABASE_URL's, and holds the catalog")
    catalog = await _catalog(settings)
    await _known(catalog, name)
    abandoned: list[dict[str, Any]] = []
    if args.lost:
        # Live tenants are not abandoned with the server: each needs a move (from a backup) or its own decision.
        held = next((s["tenants"] for s in await catalog.servers() if s["name"] == name), 0)
        if held:
            raise InvalidInput(_held_message(name, held))
        kept = await catalog.kept_on_server(name)
        if not args.yes:
            for row in kept:
                print(f"kept on {name}: {row['name']} (tenant {row['tenant_id']})")
            if not _confirm_lost(name, kept):
                print(f"server {name}: not removed")
                return 1
        held, names = await catalog.remove_lost_server(name)
        # What the transaction ended: a row dropped meanwhile is not abandoned, one recorded meanwhile is.
        tenant_of = {row["name"]: row["tenant_id"] for row in kept}
        abandoned = [{"name": n, "tenant_id": tenant_of.get(n, "?")} for n in names]
    else:
        held = await catalog.remove_server(name)
    if held:
        raise InvalidInput(_held_message(name, held))
    path = settings.effective_servers_file
    kept_url = name in await asyncio.to_thread(read_servers_file, path)
    if kept_url:
        await asyncio.to_thread(write_server_url, path, name, None)
    detail: dict[str, Any] = {"server": name}
    if args.lost:
        detail.update(lost=True, kept_copies_abandoned=[row["name"] for row in abandoned])
    await catalog.audit(local_actor(), SERVER_REMOVE, detail=detail)
    print(f"server {name}: removed from the catalog" + (f" and from {path}" if kept_url else ""))
    if abandoned:
        print(
            f"abandoned {len(abandoned)} kept database(s): "
            + ", ".join(f"{row['name']} (tenant {row['tenant_id']})" for row in abandoned)
        )
        print(
            "they may still exist on that machine if it ever comes back: nothing here will drop them, "
            "drop them there by hand"
        )
    return 0
