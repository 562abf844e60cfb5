"""Backing a tenant up, its backups as people see them, and drills."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator


class BackupTenantInput(BaseModel):
    tenant_id: str
    keep: int = 7
    compression: Literal["gzip", "zstd", "none"] = "zstd"
    compression_level: int = 1  # tenancy.settings.DEFAULT_COMPRESSION_LEVELS
    lock_wait_seconds: int = 0
    # Set by a parent run that holds the tenant's lock (deprovisioning, maintenance).
    lock_held_by_parent: bool = False
    # False: the backup is taken and verified, and no backup is deleted (`keep` is not used). A deprovisioning's
    # final backup and the backup before a maintenance never prune the tenant's history.
    apply_retention: bool = True


class DumpResult(BaseModel):
    tenant_id: str
    # age encryption of the stored bytes: to these public recipients (never a private key)
    encrypted: bool = False
    recipients: list[str] = Field(default_factory=list)
    # Whose key the recipient is, so restores know where the identity comes from: "master", the operator's
    # (TENANTS_AGE_IDENTITY_FILE); "tenant", the tenant's own (TENANTS_TENANT_KEYS), unwrapped from the catalog.
    encryption_key: Literal["master", "tenant"] = "master"
    database_name: str
    backup_name: str
    format: Literal["custom"] = "custom"
    compression: str
    compression_level: int
    # What wraps the custom archive in the stored bytes (under age, when encrypted): "zstd", a stream the worker
    # compressed around an uncompressed archive, unpacked before pg_restore reads it; "none", pg_restore reads the
    # archive as stored (gzip, or zstd done by pg_dump 16+ itself, are inside it). Absent from older records,
    # when zstd was always a stream.
    stream_compression: Literal["zstd", "none"] = "none"
    size_bytes: int
    sha256: str
    server_version: str
    tool_version: str
    started_at: datetime
    finished_at: datetime
    row_counts: dict[str, int]

    @model_validator(mode="before")
    @classmethod
    def _stream_of_older_records(cls, data: Any) -> Any:
        if isinstance(data, dict) and "stream_compression" not in data:
            data = {**data, "stream_compression": "zstd" if data.get("compression") == "zstd" else "none"}
        return data


class BackupManifest(DumpResult):
    """The immutable record of a backup, written once when it is verified. `verified`: its bytes were read back
    and match (checksum-verified); `restorable`: besides, pg_restore read its table of contents (with the age
    identity when encrypted). What changes later (pins, drills) lives in the catalog's `backups` table."""

    verified: bool
    restorable: bool = False
    verified_at: datetime | None = None
    toc_entries: int = 0
    workflow_id: str | None = None
    # Written by earlier versions, which kept these in the manifest; the catalog's row wins when there is one.
    pinned: bool = False
    drilled_at: datetime | None = None
    drill_ok: bool | None = None
    # HMAC-SHA256 of the stored document, by the key `key_id` (tenancy/signing.py); None: not signed. `key_id` is
    # covered by the signature, `signature` is not.
    key_id: str | None = None
    signature: str | None = None
    # An archive brought in by `tenants import` or `tenants clone`: {tenant, installation, backup} it came from.
    imported_from: dict[str, str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _restorable_of_older_manifests(cls, data: Any) -> Any:
        # Manifests from before `restorable` existed: the table of contents was read unless it was encrypted
        # and checked by checksum only (then toc_entries stayed 0).
        if isinstance(data, dict) and "restorable" not in data:
            data = {**data, "restorable": bool(data.get("verified")) and int(data.get("toc_entries") or 0) > 0}
        return data


class RetentionDecision(BaseModel):
    name: str
    keep: bool
    reason: str


class RetentionResult(BaseModel):
    kept: list[str]
    deleted: list[str]
    decisions: list[RetentionDecision] = Field(default_factory=list)
    policy: str = "keep"


class DrillInput(BaseModel):
    tenant_id: str
    backup_name: str | None = None  # None: the newest verified backup
    checks: list[str] = Field(default_factory=list)


class DrillResult(BaseModel):
    tenant_id: str
    backup_name: str | None
    ok: bool
    tables: int = 0
    rows: int = 0
    seconds: float = 0
    error: str | None = None


class BackupTenantResult(BaseModel):
    tenant_id: str
    backup_name: str
    path: str
    size_bytes: int
    sha256: str
    compression: str
    row_counts: dict[str, int]
    # What retention deleted and kept; both empty when the run applied none (apply_retention=False).
    deleted_by_retention: list[str]
    kept: list[str]
    restorable: bool = False  # pg_restore read its table of contents (see BackupManifest)


class BackupInfo(BaseModel):
    """One backup as `tenants restore --list` shows it."""

    name: str
    taken_at: datetime
    size_bytes: int
    verified: bool
    compression: str | None = None
    sha256: str | None = None
    encrypted: bool = False
    pinned: bool = False
    drilled_at: datetime | None = None
    drill_ok: bool | None = None
    restorable: bool = False  # known to restore: its table of contents was read, or a drill passed
