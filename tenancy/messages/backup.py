"""Between backup workflows and their activities: dump, verify, retention, pins, selection."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel


class DumpRequest(BaseModel):
    tenant_id: str
    database_name: str
    compression: Literal["gzip", "zstd", "none"]
    compression_level: int
    # Decided once per run by the workflow (BackupActivities.name_backup), so a retried attempt knows which
    # partial file or upload a dead attempt left and removes it. None: runs recorded before that name it here.
    backup_name: str | None = None
    server: str | None = None  # the server to dump from; None: the tenant's server in the catalog


class BackupNameRequest(BaseModel):
    """The name of the backup a run is about to take (BackupActivities.name_backup)."""

    tenant_id: str
    compression: str  # checked by the activity against the known extensions


class DiscardRequest(BaseModel):
    """A backup that failed verification, to remove."""

    tenant_id: str
    backup_name: str


class RetentionRequest(BaseModel):
    tenant_id: str
    keep: int
    # The backup this run just verified: retention refuses to run if it is not among the kept.
    newest_backup: str | None = None
    dry_run: bool = False


class PinRequest(BaseModel):
    tenant_id: str
    backup_name: str
    pinned: bool


class BackupSelection(BaseModel):
    tenant_id: str
    # A name, or None for the newest verified backup (taken at or before `at` when given).
    backup_name: str | None = None
    at: datetime | None = None
    # The server it is to be restored onto, whose pg_restore must read it; None: the tenant's server in the catalog.
    server: str | None = None
