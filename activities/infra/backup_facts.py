"""A tenant's backups as retention, restore, health and the command line see them: what storage holds and each
manifest says (the immutable record), with what the catalog knows on top (pins, drill outcomes, restorable)."""

from __future__ import annotations

import asyncio
from typing import Any

from activities.infra.catalog import Catalog
from activities.infra.storage import Storage
from tenancy.contracts.backup import BackupInfo
from tenancy.retention import CalendarEntry
from tenancy.selection import BackupEntry


def with_facts(info: BackupInfo, facts: dict[str, Any] | None) -> BackupInfo:
    if not facts:
        return info
    update: dict[str, Any] = {}
    if facts.get("pinned") is not None:
        update["pinned"] = facts["pinned"]
    if facts.get("drilled_at") is not None:
        update["drilled_at"] = facts["drilled_at"]
        update["drill_ok"] = facts["drill_ok"]
    if facts.get("restorable"):
        update["restorable"] = info.verified
    return info.model_copy(update=update)


async def describe_backups(storage: Storage, catalog: Catalog, tenant_id: str) -> list[BackupInfo]:
    """Every backup of the tenant, oldest first, with the catalog's facts."""
    infos = await asyncio.to_thread(storage.describe_backups, tenant_id)
    facts = await catalog.backup_facts(tenant_id)
    return [with_facts(info, facts.get(info.name)) for info in infos]


def retention_entry(info: BackupInfo) -> CalendarEntry:
    return CalendarEntry(
        name=info.name,
        taken_at=info.taken_at,
        verified=info.verified,
        size_bytes=info.size_bytes,
        pinned=info.pinned,
        restorable=info.restorable,
        drill_failed=info.drill_ok is False,
    )


def restore_candidate(info: BackupInfo) -> BackupEntry:
    """What a restore may pick by time: a verified backup whose last drill did not fail."""
    return BackupEntry(name=info.name, taken_at=info.taken_at, verified=info.verified and info.drill_ok is not False)
