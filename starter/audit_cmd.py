"""`tenants audit`: who accessed which backup and changed which tenant, and when (the catalog's append-only
audit_log); and the rows the command line writes itself, for what it reads without a workflow."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from activities.infra.catalog import Catalog
from starter.output import table
from tenancy.audit import local_actor, parse_since
from tenancy.errors import InvalidInput
from tenancy.naming import validate_tenant_id
from tenancy.settings import Settings

MAX_LIMIT = 10_000
# The detail column of the table is cut to this; --json has it whole.
DETAIL_WIDTH = 80


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("audit", help="the audit trail: who accessed which backup or changed which tenant, when")
    p.add_argument("--tenant", metavar="ID", help="only this tenant's rows")
    p.add_argument("--since", metavar="WHEN", help="7d, 24h, 30m, or a date or time (ISO 8601; UTC unless it says)")
    p.add_argument("--action", metavar="PREFIX", help="only actions starting with PREFIX (backup., tenant.status)")
    p.add_argument("--limit", type=int, default=100, help=f"the newest N rows (default 100, at most {MAX_LIMIT})")
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    p.set_defaults(handler=run)


async def record_cli_access(settings: Settings, action: str, tenant_id: str, **detail: Any) -> None:
    """An access the command line makes itself (a listing), by this user@host. Written before what it records is
    shown: when the row cannot be written, the command fails and shows nothing."""
    await Catalog(settings).audit(local_actor(), action, tenant_id, detail=detail)


def _row_json(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "at": row["at"].isoformat()}


async def run(args: argparse.Namespace, settings: Settings) -> int:
    tenant_id = validate_tenant_id(args.tenant) if args.tenant else None
    since = parse_since(args.since, datetime.now(UTC)) if args.since else None
    if not 1 <= args.limit <= MAX_LIMIT:
        raise InvalidInput(f"--limit must be between 1 and {MAX_LIMIT}")
    rows = await Catalog(settings).audit_entries(tenant_id, since, args.action, args.limit)
    if args.json:
        print(json.dumps([_row_json(r) for r in rows], indent=2, default=str))
        return 0

    def detail(row: dict[str, Any]) -> str:
        text = json.dumps(row["detail"], sort_keys=True, default=str) if row["detail"] else ""
        return text if len(text) <= DETAIL_WIDTH else text[: DETAIL_WIDTH - 1] + "…"

    print(
        table(
            ["at (UTC)", "actor", "action", "tenant", "backup", "workflow", "detail"],
            [
                (
                    r["at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                    r["actor"],
                    r["action"],
                    r["tenant_id"],
                    r["backup_name"],
                    r["workflow_id"],
                    detail(r),
                )
                for r in rows
            ],
        )
    )
    return 0
