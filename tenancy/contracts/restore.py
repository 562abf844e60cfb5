"""Restoring a tenant, keeping the database it replaced, and undoing a restore."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class RestoreTenantInput(BaseModel):
    tenant_id: str
    backup_name: str | None = None
    at: datetime | None = None
    jobs: int = 2
    # SQL queries run in the restored database before it is swapped in; each must return true.
    checks: list[str] = Field(default_factory=list)
    # Keep the replaced database (renamed aside) this long before dropping it, for `tenants restore --undo`;
    # 0 drops it at once.
    keep_previous_seconds: int = 86_400
    lock_wait_seconds: int = 0


class KeptDatabase(BaseModel):
    """A tenant database a restore set aside (`<db>__old_<token>`), kept for `tenants restore --undo`."""

    name: str
    tenant_id: str
    database_name: str
    workflow_id: str
    backup_name: str | None = None
    kept_until: datetime
    server: str | None = None  # where it is kept; None: the tenant's server (rows written before: `default`)


class RestoreTenantResult(BaseModel):
    tenant_id: str
    backup_name: str
    database_name: str
    row_counts: dict[str, int]
    terminated_sessions: int
    previous_database: str
    previous_dropped: bool
    keep_previous_until: datetime | None = None
    cache_keys_deleted: int | None = None


class DropLaterInput(BaseModel):
    tenant_id: str
    database_name: str
    previous_name: str
    delay_seconds: int
    server: str | None = None  # where it is (a move's source); None: the tenant's server in the catalog


class UndoRestoreInput(BaseModel):
    tenant_id: str
    # How long the database the undo replaces (the restored one) is kept in turn; 0 drops it at once.
    keep_previous_seconds: int = 86_400
    lock_wait_seconds: int = 0


class UndoRestoreResult(BaseModel):
    tenant_id: str
    database_name: str
    restored_from: str  # the kept database that is the tenant's database again
    backup_name: str | None  # the backup whose restore was undone
    replaced_database: str  # the restored database, now set aside in turn
    replaced_kept_until: datetime | None
    terminated_sessions: int
