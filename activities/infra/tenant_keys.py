"""Per-tenant age keys (TENANTS_TENANT_KEYS=on): crypto-shredding for erasure.

Each tenant gets an x25519 identity of its own on its first backup. Its recipient (public) is what the tenant's
backups are encrypted to, and nothing else: not the operator's master recipients, or the master could still read
them once the tenant is erased. Its identity is kept in the catalog only wrapped (age-encrypted) to the master
recipients (TENANTS_AGE_RECIPIENTS); restores and drills unwrap it with the master identity
(TENANTS_AGE_IDENTITY_FILE). Erasure destroys the wrapped identity: every copy of the tenant's backups, wherever it
was copied to, can no longer be decrypted by anyone.

Key material never leaves these functions except as pyrage objects handed to the decryption: never logged, never
returned by an activity, never put in a manifest (which records the public recipient and `encryption_key`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

import pyrage

from activities.infra.archive import load_identities
from activities.infra.catalog import Catalog
from tenancy.contracts.backup import DumpResult
from tenancy.errors import BACKUP_REJECTED, TENANT_KEY_DESTROYED, InvalidInput, fail
from tenancy.settings import Settings

# DumpResult.encryption_key: where the identity that reads a backup comes from.
MASTER_KEY: Final = "master"  # the operator's identity file (TENANTS_AGE_IDENTITY_FILE)
TENANT_KEY: Final = "tenant"  # the tenant's own key, unwrapped from the catalog with the operator's identity file


def check_tenant_keys(settings: Settings) -> None:
    """Refuse to start a worker with tenant keys on and no master recipient to wrap them to: the keys would be
    kept in the clear, or not at all."""
    if settings.tenant_keys and not [r for r in settings.age_recipients if r.strip()]:
        raise InvalidInput(
            "TENANTS_TENANT_KEYS=on needs TENANTS_AGE_RECIPIENTS: the master recipient(s) each tenant key is "
            "wrapped to (restores unwrap it with TENANTS_AGE_IDENTITY_FILE)"
        )


def _destroyed_message(tenant_id: str, row: dict[str, Any]) -> str:
    when = row["destroyed_at"].isoformat(timespec="seconds") if row.get("destroyed_at") else "earlier"
    return (
        f"tenant {tenant_id!r} was erased: its backup key was destroyed ({when}, by {row.get('destroyed_by')}); "
        "nothing of it can be backed up or restored"
    )


async def tenant_recipient(catalog: Catalog, master_recipients: list[str], tenant_id: str) -> str:
    """The recipient the tenant's backups are encrypted to; its key is made on the first call (race-safe: one
    key per tenant, whoever inserts first). A destroyed key refuses (TenantKeyDestroyed)."""
    row = await catalog.tenant_key(tenant_id)
    if row is None:
        identity = pyrage.x25519.Identity.generate()
        masters = [pyrage.x25519.Recipient.from_str(r.strip()) for r in master_recipients if r.strip()]
        if not masters:  # the worker checks this at start-up (check_tenant_keys); a clear error all the same
            raise fail(BACKUP_REJECTED, "TENANTS_TENANT_KEYS=on needs TENANTS_AGE_RECIPIENTS to wrap tenant keys")
        wrapped = pyrage.encrypt(str(identity).encode(), masters)
        row = await catalog.add_tenant_key(tenant_id, str(identity.to_public()), wrapped)
    if row["destroyed_at"] is not None or row["wrapped_identity"] is None:
        raise fail(TENANT_KEY_DESTROYED, _destroyed_message(tenant_id, row))
    return str(row["recipient"])


def unwrap_identity(wrapped: bytes, master_identities: list) -> pyrage.x25519.Identity:
    """A tenant's identity from its wrapped form, with the master identities; raises pyrage.DecryptError."""
    return pyrage.x25519.Identity.from_str(pyrage.decrypt(wrapped, master_identities).decode().strip())


async def tenant_identities(catalog: Catalog, identity_file: Path | None, tenant_id: str, backup_name: str) -> list:
    """The identity that reads the tenant's backups, unwrapped with the master identity file. A tenant with no key
    or a destroyed one, a missing identity file or one that does not unwrap the key: one clear line."""
    row = await catalog.tenant_key(tenant_id)
    if row is None:
        raise fail(
            BACKUP_REJECTED,
            f"backup {backup_name!r} is encrypted to a key of tenant {tenant_id!r}, which the catalog does not have",
        )
    if row["destroyed_at"] is not None or row["wrapped_identity"] is None:
        raise fail(TENANT_KEY_DESTROYED, _destroyed_message(tenant_id, row))
    masters = await asyncio.to_thread(load_identities, identity_file, backup_name)
    try:
        return [unwrap_identity(bytes(row["wrapped_identity"]), masters)]
    except (pyrage.DecryptError, pyrage.IdentityError, UnicodeDecodeError):
        raise fail(
            BACKUP_REJECTED,
            f"cannot unwrap the key of tenant {tenant_id!r} with TENANTS_AGE_IDENTITY_FILE ({identity_file}): "
            "it holds no identity of the master recipient the key was wrapped to",
        ) from None


async def identities_for(catalog: Catalog, identity_file: Path | None, backup: DumpResult) -> list | None:
    """What decrypts this backup (a manifest, or a dump's result): None when it is not encrypted; the tenant's
    unwrapped key when it was encrypted to it; else the master identity file's identities."""
    if not backup.encrypted:
        return None
    if backup.encryption_key == TENANT_KEY:
        return await tenant_identities(catalog, identity_file, backup.tenant_id, backup.backup_name)
    return await asyncio.to_thread(load_identities, identity_file, backup.backup_name)


def shredded_with_key(backup: DumpResult | None) -> bool:
    """Destroying the tenant's key makes every copy of this backup unreadable: it was encrypted to that key only.
    A backup in the clear, encrypted to the master, or whose manifest is missing (unknown) is not."""
    return backup is not None and backup.encrypted and backup.encryption_key == TENANT_KEY
