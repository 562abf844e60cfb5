"""Erasing a tenant: deprovisioned without a final backup, its backup key destroyed, every backup deleted."""

from __future__ import annotations

from pydantic import BaseModel, Field


class EraseTenantInput(BaseModel):
    tenant_id: str
    lock_wait_seconds: int = 0


class EraseTenantResult(BaseModel):
    tenant_id: str
    # What this run deprovisioned (False: the tenant was already deprovisioned).
    deprovisioned: bool
    database_dropped: bool = False
    leftover_databases: list[str] = Field(default_factory=list)
    role_left: str | None = None
    # The tenant had a key of its own (TENANTS_TENANT_KEYS) and it is destroyed: every copy encrypted to it is
    # unreadable, wherever it is.
    key_destroyed: bool = False
    backups_deleted: list[str] = Field(default_factory=list)
    # Deleted backups that were not encrypted to the tenant's key (in the clear, or to the operator's master key):
    # copies of them made elsewhere stay readable.
    readable_elsewhere: list[str] = Field(default_factory=list)
    event_id: int | None = None
