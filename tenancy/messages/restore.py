"""Between restore workflows and their activities: scratch restore, checks, swap."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class ScratchRestoreRequest(BaseModel):
    tenant_id: str
    database_name: str
    scratch_name: str
    backup_name: str
    compression: str
    jobs: int
    # When the tenant's database is missing (a reinstated or broken tenant) its grants cannot be copied: the
    # restored database then lets in this role only (CONNECT, TEMPORARY when grant_connect), never PUBLIC.
    role_name: str | None = None
    grant_connect: bool = True
    # The sha256 of the backup select_backup checked: the restore reads only those bytes (None: older callers).
    sha256: str | None = None
    # The server to restore onto (a move's or an import's target); None: the tenant's server in the catalog.
    server: str | None = None


class RestoredCheckRequest(BaseModel):
    tenant_id: str
    scratch_name: str
    row_counts: dict[str, int]
    checks: list[str]
    server: str | None = None  # where the scratch copy is; None: the tenant's server in the catalog


class ScratchDatabase(BaseModel):
    """A scratch copy of the tenant's database (`<db>__rs_<token>`): a restore's or a drill's."""

    tenant_id: str
    database_name: str
    scratch_name: str
    server: str | None = None  # where it is; None: the tenant's server in the catalog


class PreviousDatabase(BaseModel):
    """A database a restore set aside (`<db>__old_<token>`)."""

    tenant_id: str
    database_name: str
    previous_name: str
    server: str | None = None  # where it is; None: the tenant's server in the catalog


class SwapRequest(PreviousDatabase, ScratchDatabase):
    """A swap: the scratch database (a restored copy, or a kept previous one for an undo) becomes the tenant's
    database, which is set aside under the previous name."""

    keep_until: datetime | None = None  # written in the set-aside database's mark


class KeptDatabaseEnd(BaseModel):
    """A kept database that is no longer kept: dropped, or swapped back by an undo."""

    name: str
    how: str


class SwapResult(BaseModel):
    terminated_sessions: int
    set_aside: bool = True  # False: the tenant had no database, the incoming one simply took its name
