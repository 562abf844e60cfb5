"""`tenants erase ID --yes`: deprovision the tenant without a final backup, destroy its backup key, delete every
backup of it; say what was erased and what, if anything, stays readable elsewhere."""

from __future__ import annotations

import argparse

from starter.runs import start_and_follow
from tenancy.contracts.erasure import EraseTenantInput, EraseTenantResult
from tenancy.errors import InvalidInput
from tenancy.naming import validate_tenant_id
from tenancy.settings import Settings
from workflows.erase_tenant import EraseTenantWorkflow


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "erase", help="erase a tenant: deprovision it (no final backup), destroy its key, delete all its backups"
    )
    p.add_argument("tenant")
    p.add_argument("--yes", action="store_true", help="required: this cannot be undone")
    p.set_defaults(handler=run)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    tenant_id = validate_tenant_id(args.tenant)
    if not args.yes:
        raise InvalidInput(
            f"erasing {tenant_id} drops its database and deletes every backup of it, for good: pass --yes"
        )
    result = await start_and_follow(
        settings,
        EraseTenantWorkflow.run,
        EraseTenantInput(tenant_id=tenant_id, lock_wait_seconds=settings.lock_wait_seconds),
        operation="erase",
        tenant_id=tenant_id,
        summary=f"Erasure of tenant {tenant_id}",
    )
    print("\n".join(erasure_lines(result)))
    return 0


def erasure_lines(result: EraseTenantResult) -> list[str]:
    """What the erasure did, and whether copies of the tenant's backups made elsewhere can still be read."""
    lines = [
        f"{result.tenant_id} erased"
        + ("" if result.deprovisioned else " (it was already deprovisioned)")
        + f"; backups deleted: {len(result.backups_deleted)}"
    ]
    if result.leftover_databases:
        lines.append(f"also dropped its copies: {', '.join(result.leftover_databases)}")
    if result.role_left:
        lines.append(f"note: {result.role_left}")
    if result.key_destroyed:
        lines.append("its backup key is destroyed: any copy of a backup encrypted to it is unreadable, wherever it is")
    else:
        lines.append("it had no backup key of its own (TENANTS_TENANT_KEYS was off)")
    if result.readable_elsewhere or not result.key_destroyed:
        count = len(result.readable_elsewhere)
        which = f"{count} of its backups were" if count else "its backups were"
        lines.append(
            f"warning: {which} not encrypted to a key of the tenant's own: copies made elsewhere (offsite, "
            "downloads, storage snapshots) stay readable; delete them there too"
        )
    return lines
