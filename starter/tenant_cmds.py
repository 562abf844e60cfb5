"""`tenants provision | adopt | settings | activate | deactivate | suspend | deprovision | reinstate | migrate |
show`."""

from __future__ import annotations

import argparse
import json
import sys

import psycopg

from activities.infra.backup_facts import describe_backups, retention_entry
from activities.infra.catalog import Catalog
from activities.infra.credentials import read_credentials
from activities.infra.storage import open_storage
from starter.audit_cmd import record_cli_access
from starter.fleet_output import show_fleet_result
from starter.output import human_size
from starter.runs import start_and_follow
from tenancy.audit import BACKUP_LIST
from tenancy.contracts.fleet import FleetInput
from tenancy.contracts.provision import (
    AdoptTenantInput,
    DeprovisionTenantInput,
    MigrateTenantInput,
    ProvisionTenantInput,
    ReinstateTenantInput,
)
from tenancy.contracts.tenants import SettingsChange, StatusChange
from tenancy.errors import InvalidInput, failure_message
from tenancy.naming import slugify, validate_tenant_id
from tenancy.retention import is_good_copy
from tenancy.servers import validate_server_name
from tenancy.settings import Settings
from tenancy.tenant_settings import parse_flag
from workflows.adopt_tenant import AdoptTenantWorkflow
from workflows.deprovision_tenant import DeprovisionTenantWorkflow
from workflows.migrate import MigrateAllTenantsWorkflow, MigrateTenantWorkflow
from workflows.provision_tenant import ProvisionTenantWorkflow
from workflows.reinstate_tenant import ReinstateTenantWorkflow
from workflows.tenant_status import ChangeTenantStatusWorkflow, UpdateTenantSettingsWorkflow


def _key_values(pairs: list[str], what: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"{what} takes KEY=VALUE, not {pair!r}")
        out[key.strip()] = value.strip()
    return out


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("provision", help="create a tenant: database, role, schema, seed, welcome mail")
    p.add_argument("name", help='display name, e.g. "Mi Empresa"')
    p.add_argument("--plan", required=True, help="free, pro, business (TENANTS_PLANS)")
    p.add_argument("--owner", required=True, help="the owner's e-mail")
    p.add_argument("--id", help="tenant id (default: derived from the name)")
    p.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE", help="timezone=…, language=…")
    p.add_argument(
        "--server", metavar="NAME", help="the server for its database (default: the open one with the most room)"
    )
    p.add_argument("--no-wait", action="store_true")
    p.set_defaults(handler=provision)

    p = subparsers.add_parser(
        "adopt",
        help="register an existing database as a tenant (or mark the database of a tenant from an older version)",
        description=(
            "Register an existing database as tenant ID: for tenants that were running before this project. The "
            "database must exist and be no one else's: not the catalog, the template or a system database, not "
            "another tenant's (in the catalog or by its mark). Nothing in it is changed; it gets this project's "
            "mark (its COMMENT), which lets backups, restores and deprovisioning act on it. A tenant already in "
            "the catalog with exactly this database, carrying no mark (provisioned by an older version of this "
            "project), is only marked (its role too): --plan, --owner and --name are then left as recorded."
        ),
    )
    p.add_argument("tenant", help="tenant id")
    p.add_argument("--database", required=True, metavar="NAME", help="the existing database")
    p.add_argument("--plan", help="free, pro, business (TENANTS_PLANS); default: free; no plan limit applies")
    p.add_argument("--owner", metavar="EMAIL", help="the owner's e-mail; default: unknown@adopted.invalid")
    p.add_argument("--name", help="display name; default: the tenant id")
    p.add_argument("--role", metavar="NAME", help="an existing login role to record and mark as the tenant's")
    p.add_argument("--server", metavar="NAME", help="the server where the database is (default: default)")
    p.add_argument("--no-wait", action="store_true")
    p.set_defaults(handler=adopt)

    p = subparsers.add_parser("settings", help="change a tenant's settings")
    p.add_argument("tenant")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--feature", action="append", default=[], metavar="NAME=on|off")
    p.set_defaults(handler=settings_cmd)

    for command, status, text in (
        ("activate", "active", "let an inactive or suspended tenant in again"),
        ("deactivate", "inactive", "stop a tenant's role from connecting (reversible)"),
        ("suspend", "suspended", "suspend a tenant, with a reason"),
    ):
        p = subparsers.add_parser(command, help=text)
        p.add_argument("tenant")
        p.add_argument("--reason", required=command == "suspend", help="why (recorded in the event)")
        p.set_defaults(handler=change_status, status=status)

    p = subparsers.add_parser("deprovision", help="final backup, then drop the tenant's database and role")
    p.add_argument("tenant")
    p.add_argument("--final-backup", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--yes", action="store_true", help="required: this drops the database")
    p.set_defaults(handler=deprovision)

    p = subparsers.add_parser("reinstate", help="bring a deprovisioned tenant back from its backup, with a new role")
    p.add_argument("tenant")
    p.add_argument("--backup", metavar="NAME", help="a backup by name (default: the newest restorable one)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(handler=reinstate)

    p = subparsers.add_parser("migrate", help="bring tenant databases to the newest schema version")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--tenant")
    target.add_argument("--all", action="store_true")
    p.add_argument("--concurrency", type=int, help="tenants migrated at once (default: TENANTS_FLEET_CONCURRENCY)")
    p.set_defaults(handler=migrate)

    p = subparsers.add_parser("show", help="a tenant: status, plan, settings, size, last backup, recent events")
    p.add_argument("tenant")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=show)


def print_credentials(settings: Settings, tenant_id: str, role_name: str, credentials_file: str) -> None:
    """The tenant role's new password, shown this once; afterwards it is only in the 0600 credentials file."""
    try:
        creds = read_credentials(settings.effective_secrets_dir, tenant_id)
        print(f"role      {creds['role']}  password {creds['password']}")
        print(f"connect   postgresql://{creds['role']}:***@{creds['host']}:{creds['port']}/{creds['database']}")
    except OSError:
        print(f"role      {role_name} (credentials in {credentials_file} on the worker's host)")
    print(f"kept in   {credentials_file}")


async def _known_server(settings: Settings, name: str | None, *, taking_tenants: bool) -> str | None:
    """`--server NAME`, checked before anything starts: a server of the catalog (and, for a new tenant, open)."""
    if name is None:
        return None
    validate_server_name(name)
    row = await Catalog(settings).server(name)
    if row is None:
        known = ", ".join(r["name"] for r in await Catalog(settings).servers()) or "none"
        raise InvalidInput(f"no server named {name!r} (servers: {known}); add it with `tenants servers add`")
    if taking_tenants and row["status"] != "open":
        raise InvalidInput(f"server {name!r} is {row['status']}: it takes no new tenants")
    return name


async def provision(args: argparse.Namespace, settings: Settings) -> int:
    tenant_id = validate_tenant_id(args.id) if args.id else slugify(args.name)
    server = await _known_server(settings, args.server, taking_tenants=True)
    result = await start_and_follow(
        settings,
        ProvisionTenantWorkflow.run,
        ProvisionTenantInput(
            name=args.name,
            plan=args.plan,
            owner_email=args.owner,
            tenant_id=tenant_id,
            settings=_key_values(args.setting, "--setting"),
            server=server,
        ),
        operation="provision",
        tenant_id=tenant_id,
        summary=f"Provisioning of tenant {tenant_id} ({args.plan}) for {args.owner}",
        no_wait=args.no_wait,
        run_id=f"provision-{tenant_id}",  # one provisioning per id at a time
    )
    if result is None:
        return 0
    print(f"tenant    {result.tenant_id} is active")
    where = f" on server {result.server}" if result.server else ""
    print(f"database  {result.database_name}{where} (schema {result.schema_version})")
    print_credentials(settings, result.tenant_id, result.role_name, result.credentials_file)
    return 0


async def adopt(args: argparse.Namespace, settings: Settings) -> int:
    tenant_id = validate_tenant_id(args.tenant)
    server = await _known_server(settings, args.server, taking_tenants=False)
    given = {
        "plan": args.plan,
        "owner_email": args.owner,
        "name": args.name,
        "role_name": args.role,
        "server": server,
    }
    result = await start_and_follow(
        settings,
        AdoptTenantWorkflow.run,
        AdoptTenantInput(
            tenant_id=tenant_id,
            database_name=args.database,
            lock_wait_seconds=settings.lock_wait_seconds,
            **{key: value for key, value in given.items() if value is not None},
        ),
        operation="adopt",
        tenant_id=tenant_id,
        summary=f"Adoption of database {args.database} as tenant {tenant_id}",
        no_wait=args.no_wait,
    )
    if result is None:
        return 0
    if result.mark_only:
        print(f"tenant    {result.tenant_id}: database {result.database_name} marked as its own")
    else:
        print(f"tenant    {result.tenant_id} is active, with database {result.database_name}")
    if result.role_name:
        print(f"role      {result.role_name} (marked as the tenant's; its password is unchanged)")
    return 0


async def settings_cmd(args: argparse.Namespace, settings: Settings) -> int:
    changes: dict[str, object] = dict(_key_values(args.set, "--set"))
    if args.feature:
        changes["features"] = {k: parse_flag(v) for k, v in _key_values(args.feature, "--feature").items()}
    if not changes:
        raise InvalidInput("nothing to change: give --set KEY=VALUE or --feature NAME=on|off")
    tenant_id = validate_tenant_id(args.tenant)
    result = await start_and_follow(
        settings,
        UpdateTenantSettingsWorkflow.run,
        SettingsChange(tenant_id=tenant_id, changes=changes),
        operation="settings",
        tenant_id=tenant_id,
        summary=f"Settings of tenant {tenant_id}",
    )
    print(json.dumps(result.settings, indent=2, sort_keys=True))
    return 0


async def change_status(args: argparse.Namespace, settings: Settings) -> int:
    tenant_id = validate_tenant_id(args.tenant)
    result = await start_and_follow(
        settings,
        ChangeTenantStatusWorkflow.run,
        StatusChange(tenant_id=tenant_id, status=args.status, reason=args.reason),
        operation=args.command,
        tenant_id=tenant_id,
        summary=f"{args.command} tenant {tenant_id}" + (f": {args.reason}" if args.reason else ""),
    )
    if result.old_status == result.new_status:
        print(f"{tenant_id} was already {result.new_status}")
    else:
        print(
            f"{tenant_id}: {result.old_status} → {result.new_status}"
            + (f" ({result.terminated_sessions} sessions ended)" if result.terminated_sessions else "")
        )
    return 0


async def deprovision(args: argparse.Namespace, settings: Settings) -> int:
    tenant_id = validate_tenant_id(args.tenant)
    if not args.yes:
        raise InvalidInput(f"deprovisioning drops the database of {tenant_id}: pass --yes")
    result = await start_and_follow(
        settings,
        DeprovisionTenantWorkflow.run,
        DeprovisionTenantInput(tenant_id=tenant_id, final_backup=args.final_backup),
        operation="deprovision",
        tenant_id=tenant_id,
        summary=f"Deprovisioning of tenant {tenant_id}",
    )
    print(f"{tenant_id} deprovisioned; final backup: {result.final_backup or 'none'}")
    if result.leftover_databases:
        print(f"also dropped its copies: {', '.join(result.leftover_databases)}")
    if result.role_left:
        print(f"note: {result.role_left}")
    return 0


async def reinstate(args: argparse.Namespace, settings: Settings) -> int:
    tenant_id = validate_tenant_id(args.tenant)
    source = args.backup or "its newest restorable backup"
    if not args.yes:
        if not sys.stdin.isatty():
            raise InvalidInput("refusing to reinstate without confirmation: pass --yes")
        answer = input(f"Reinstate tenant {tenant_id} from {source}? Its role can log in again. [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            print("not reinstated")
            return 1
    result = await start_and_follow(
        settings,
        ReinstateTenantWorkflow.run,
        ReinstateTenantInput(
            tenant_id=tenant_id,
            backup_name=args.backup,
            jobs=settings.restore_jobs,
            checks=settings.restore_checks,
            lock_wait_seconds=settings.lock_wait_seconds,
        ),
        operation="reinstate",
        tenant_id=tenant_id,
        summary=f"Reinstatement of tenant {tenant_id} from {source}",
    )
    print(f"tenant    {result.tenant_id} is active again, from {result.backup_name}")
    print(
        f"database  {result.database_name} ({sum(result.row_counts.values())} rows in {len(result.row_counts)} "
        "tables, counts equal to the backup's)"
    )
    for name, rows in sorted(result.row_counts.items()):
        print(f"          {name}: {rows} rows")
    print_credentials(settings, result.tenant_id, result.role_name, result.credentials_file)
    return 0


async def migrate(args: argparse.Namespace, settings: Settings) -> int:
    if args.tenant:
        tenant_id = validate_tenant_id(args.tenant)
        result = await start_and_follow(
            settings,
            MigrateTenantWorkflow.run,
            MigrateTenantInput(tenant_id=tenant_id),
            operation="migrate",
            tenant_id=tenant_id,
            summary=f"Migration of tenant {tenant_id}",
        )
        print(f"{tenant_id}: at {result.version}; applied: {', '.join(result.applied) or 'nothing'}")
        return 0
    concurrency = args.concurrency or settings.fleet_concurrency
    if concurrency < 1:
        raise InvalidInput("--concurrency must be at least 1")
    fleet_result = await start_and_follow(
        settings,
        MigrateAllTenantsWorkflow.run,
        FleetInput(concurrency=concurrency),
        operation="migrate-all",
        tenant_id=None,
        summary="Migration of every tenant",
    )
    return await show_fleet_result(fleet_result, settings, as_json=False)


async def show(args: argparse.Namespace, settings: Settings) -> int:
    tenant_id = validate_tenant_id(args.tenant)
    catalog = Catalog(settings)
    tenant = await catalog.get_tenant(tenant_id)
    if tenant is None:
        raise InvalidInput(f"tenant {tenant_id!r} is not in the catalog")
    size = None
    unread = None  # why the size could not be read on the tenant's server
    if tenant.status not in ("deprovisioned", "failed"):
        from activities.infra.servers import ServerUrls  # the size is read where the database is

        try:
            with psycopg.connect(ServerUrls(settings).url(tenant.server), connect_timeout=10) as conn:
                row = conn.execute(
                    "SELECT pg_database_size(datname) FROM pg_database WHERE datname = %s", [tenant.database_name]
                ).fetchone()
                size = row[0] if row else None
        except Exception as exc:
            unread = (failure_message(exc).strip().splitlines() or [type(exc).__name__])[0]
    backups = await describe_backups(open_storage(settings), catalog, tenant_id)
    await record_cli_access(settings, BACKUP_LIST, tenant_id, command="show", backups=len(backups))
    last = next((b for b in reversed(backups) if b.verified), None)
    restorable = next((b for b in reversed(backups) if is_good_copy(retention_entry(b))), None)
    kept = await catalog.kept_databases(tenant_id)
    events = await catalog.events(tenant_id, limit=10)
    plan = settings.plans.get(tenant.plan)
    if args.json:
        print(
            json.dumps(
                {
                    "tenant": tenant.model_dump(mode="json"),
                    "database_bytes": size,
                    "server": tenant.server,
                    "quota_bytes": plan.quota_mb * 2**20 if plan else None,
                    "last_backup": last.model_dump(mode="json") if last else None,
                    "last_restorable_backup": restorable.model_dump(mode="json") if restorable else None,
                    "backups": len(backups),
                    "kept_databases": [
                        {"name": k["name"], "kept_until": k["kept_until"].isoformat(), "backup": k["backup_name"]}
                        for k in kept
                    ],
                    "events": [{**e, "created_at": e["created_at"].isoformat()} for e in events],
                },
                indent=2,
            )
        )
        return 0
    print(f"tenant     {tenant.id} — {tenant.name}")
    print(f"status     {tenant.status}" + (f" ({tenant.status_reason})" if tenant.status_reason else ""))
    print(f"plan       {tenant.plan}; owner {tenant.owner_email}")
    print(f"server     {tenant.server}" + (f" (not reached from here: {unread})" if unread else ""))
    quota = f" of {plan.quota_mb} MiB quota ({size / (plan.quota_mb * 2**20):.0%})" if plan and size else ""
    print(f"database   {tenant.database_name}, " + (f"{human_size(size)}{quota}" if size is not None else "none"))
    print(f"settings   {json.dumps(tenant.settings, sort_keys=True)}")
    if tenant.last_maintenance:
        done = ", ".join(t["task"] + ("" if t["ok"] else " FAILED") for t in tenant.last_maintenance.get("tasks", []))
        print(f"maintained {tenant.last_maintenance.get('at', '?')[:16]} UTC: {done}")
    print(
        f"backups    {len(backups)}; last verified: "
        + (f"{last.name} ({last.taken_at:%Y-%m-%d %H:%M} UTC)" if last else "none")
        + "; last restorable: "
        + (f"{restorable.name}" if restorable else "none")
    )
    for k in kept:
        print(
            f"kept       {k['name']} (replaced by a restore"
            + (f" from {k['backup_name']}" if k["backup_name"] else "")
            + f"), dropped at {k['kept_until']:%Y-%m-%d %H:%M} UTC; `tenants restore {tenant.id} --undo` swaps it back"
        )
    print("events")
    for event in events:
        print(
            f"  {event['created_at']:%Y-%m-%d %H:%M:%S}  {event['type']:<24} {json.dumps(event['data'], default=str)}"
        )
    return 0
