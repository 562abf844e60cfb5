"""`tenants list`: the tenants in the catalog, as a table or JSON."""

from __future__ import annotations

import argparse
import json

from activities.infra.catalog import Catalog
from starter.output import table
from tenancy.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("list", help="tenants in the catalog")
    p.add_argument("--status", help="only tenants with this status (active, inactive, suspended, ...)")
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    p.set_defaults(handler=run)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    catalog = Catalog(settings)
    await catalog.migrate()
    tenants = await catalog.list_tenants(status=args.status)
    if args.json:
        print(json.dumps([t.model_dump(mode="json") for t in tenants], indent=2))
        return 0
    rows = [
        (
            t.id,
            t.name,
            t.plan,
            t.status,
            t.owner_email,
            t.database_name,
            t.server,
            t.created_at.strftime("%Y-%m-%d %H:%M"),
        )
        for t in tenants
    ]
    print(table(["id", "name", "plan", "status", "owner", "database", "server", "created"], rows))
    return 0
