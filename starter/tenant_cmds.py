"""`tenants provision | settings | activate | deactivate | suspend | deprovision | migrate | show`."""

from __future__ import annotations

import argparse
import json

import psycopg

from activities.catalog_db import Catalog
from activities.credentials import read_credentials
from activities.storage import open_storage
from starter.output import human_size, table
from starter.runs import start_and_follow
from tenancy.errors import InvalidInput
from tenancy.models import (
    DeprovisionTenantInput,
    FleetInput,
    ProvisionTenantInput,
    SettingsChange,
    StatusChange,
)
from tenancy.naming import slugify, validate_tenant_id
from tenancy.settings import Settings
from tenancy.tenant_settings import parse_flag
from workflows.deprovision_tenant import DeprovisionTenantWorkflow
from workflows.migrate import MigrateAllTenantsWorkflow, MigrateTenantWorkflow
from workflows.provision_tenant import ProvisionTenantWorkflow
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
    p.add_argument("--no-wait", action="store_true")
    p.set_defaults(handler=provision)

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


async def provision(args: argparse.Namespace, settings: Settings) -> int:
    tenant_id = validate_tenant_id(args.id) if args.id else slugify(args.name)
    result = await start_and_follow(
        settings,
        ProvisionTenantWorkflow.run,
        ProvisionTenantInput(
            name=args.name,
            plan=args.plan,
            owner_email=args.owner,
            tenant_id=tenant_id,
            settings=_key_values(args.setting, "--setting"),
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
    print(f"database  {result.database_name} (schema {result.schema_version})")
    try:
        creds = read_credentials(settings.effective_secrets_dir, result.tenant_id)
        # Shown this once; afterwards it is only in the 0600 credentials file.
        print(f"role      {creds['role']}  password {creds['password']}")
        print(f"connect   postgresql://{creds['role']}:***@{creds['host']}:{creds['port']}/{creds['database']}")
    except OSError:
        print(f"role      {result.role_name} (credentials in {result.credentials_file} on the worker's host)")
    print(f"kept in   {result.credentials_file}")
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
    return 0


async def migrate(args: argparse.Namespace, settings: Settings) -> int:
    if args.tenant:
        tenant_id = validate_tenant_id(args.tenant)
        result = await start_and_follow(
            settings,
            MigrateTenantWorkflow.run,
            tenant_id,
            operation="migrate",
            tenant_id=tenant_id,
            summary=f"Migration of tenant {tenant_id}",
        )
        print(f"{tenant_id}: at {result.version}; applied: {', '.join(result.applied) or 'nothing'}")
        return 0
    concurrency = args.concurrency or settings.fleet_concurrency
    if concurrency < 1:
        raise InvalidInput("--concurrency must be at least 1")
    result = await start_and_follow(
        settings,
        MigrateAllTenantsWorkflow.run,
        FleetInput(concurrency=concurrency),
        operation="migrate-all",
        tenant_id=None,
        summary="Migration of every tenant",
    )
    rows = [(o.tenant_id, "ok" if o.ok else "FAILED", o.detail or o.error) for o in result.outcomes]
    print(table(["tenant", "result", "detail"], rows))
    print(f"{result.succeeded} succeeded, {result.failed} failed, {result.total} tenants")
    return 0 if result.failed == 0 else 1


async def show(args: argparse.Namespace, settings: Settings) -> int:
    tenant_id = validate_tenant_id(args.tenant)
    catalog = Catalog(settings)
    tenant = await catalog.get_tenant(tenant_id)
    if tenant is None:
        raise InvalidInput(f"tenant {tenant_id!r} is not in the catalog")
    size = None
    if tenant.status not in ("deprovisioned", "failed"):
        with psycopg.connect(settings.effective_database_url) as conn:
            row = conn.execute(
                "SELECT pg_database_size(datname) FROM pg_database WHERE datname = %s", [tenant.database_name]
            ).fetchone()
            size = row[0] if row else None
    backups = open_storage(settings).describe_backups(tenant_id)
    last = next((b for b in reversed(backups) if b.verified), None)
    events = await catalog.events(tenant_id, limit=10)
    plan = settings.plans.get(tenant.plan)
    if args.json:
        print(
            json.dumps(
                {
                    "tenant": tenant.model_dump(mode="json"),
                    "database_bytes": size,
                    "quota_bytes": plan.quota_mb * 2**20 if plan else None,
                    "last_backup": last.model_dump(mode="json") if last else None,
                    "backups": len(backups),
                    "events": [{**e, "created_at": e["created_at"].isoformat()} for e in events],
                },
                indent=2,
            )
        )
        return 0
    print(f"tenant     {tenant.id} — {tenant.name}")
    print(f"status     {tenant.status}" + (f" ({tenant.status_reason})" if tenant.status_reason else ""))
    print(f"plan       {tenant.plan}; owner {tenant.owner_email}")
    quota = f" of {plan.quota_mb} MiB quota ({size / (plan.quota_mb * 2**20):.0%})" if plan and size else ""
    print(f"database   {tenant.database_name}, " + (f"{human_size(size)}{quota}" if size is not None else "none"))
    print(f"settings   {json.dumps(tenant.settings, sort_keys=True)}")
    if tenant.last_maintenance:
        done = ", ".join(t["task"] + ("" if t["ok"] else " FAILED") for t in tenant.last_maintenance.get("tasks", []))
        print(f"maintained {tenant.last_maintenance.get('at', '?')[:16]} UTC: {done}")
    print(
        f"backups    {len(backups)}; last verified: "
        + (f"{last.name} ({last.taken_at:%Y-%m-%d %H:%M} UTC)" if last else "none")
    )
    print("events")
    for event in events:
        print(
            f"  {event['created_at']:%Y-%m-%d %H:%M:%S}  {event['type']:<24} {json.dumps(event['data'], default=str)}"
        )
    return 0
