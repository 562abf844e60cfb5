"""Between the erasure workflow and its activities."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class TenantKeyState(BaseModel):
    """The tenant's key after destruction; no key material, only whether there was one and its end."""

    tenant_id: str
    existed: bool
    destroyed_at: datetime | None = None
    destroyed_by: str | None = None


class ErasedBackups(BaseModel):
    tenant_id: str
    deleted: list[str] = Field(default_factory=list)
    readable_elsewhere: list[str] = Field(default_factory=list)  # see EraseTenantResult
    facts_forgotten: int = 0  # catalog rows (pins, drills) removed


class ErasureRecord(BaseModel):
    tenant_id: str
    deprovisioned: bool
    key_destroyed: bool
    backups_deleted: int
    readable_elsewhere: int
