"""Exporting a tenant to one file, importing such a file as a new tenant, and cloning a tenant (both in one run)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from tenancy.contracts.backup import BackupManifest


class ExportTenantInput(BaseModel):
    tenant_id: str
    output: str  # an absolute path on the worker's host, or s3://bucket/key
    lock_wait_seconds: int = 0  # for the backup's dump, the only time the tenant's lock is held


class ExportTenantResult(BaseModel):
    tenant_id: str
    output: str
    size_bytes: int
    sha256: str  # of the whole export file
    backup_name: str
    schema_version: str | None
    format_version: int
    row_counts: dict[str, int]


class ImportTenantInput(BaseModel):
    source: str  # an export file: an absolute path on the worker's host, or s3://bucket/key
    tenant_id: str  # the new tenant's id
    server: str | None = None  # where its database goes; None: placed as provisioning places it
    plan: str | None = None  # None: the exported tenant's plan
    owner_email: str | None = None  # None: the exported tenant's owner
    name: str | None = None  # None: the exported tenant's display name
    jobs: int = 2


class ImportTenantResult(BaseModel):
    tenant_id: str
    source_tenant_id: str
    source_installation: dict[str, str]
    database_name: str
    role_name: str
    credentials_file: str
    backup_name: str  # the imported archive, now a backup of the new tenant
    row_counts: dict[str, int]
    schema_version: str | None
    migrated: list[str] = Field(default_factory=list)  # tenant migrations applied after the restore


class CloneTenantInput(BaseModel):
    tenant_id: str  # the source
    new_tenant_id: str
    # The masking SQL file's content, run as the new tenant's role on the scratch copy before it is swapped in.
    mask_sql: str | None = None
    mask_timeout_seconds: int = 600  # the masking SQL's statement timeout
    server: str | None = None
    plan: str | None = None
    owner_email: str | None = None
    name: str | None = None
    jobs: int = 2
    lock_wait_seconds: int = 0  # for the source's dump


class CloneTenantResult(BaseModel):
    tenant_id: str
    source_tenant_id: str
    database_name: str
    role_name: str
    credentials_file: str
    backup_name: str  # the source's archive, as a backup of the new tenant (unmasked: it is the source's data)
    row_counts: dict[str, int]
    masked: bool
    mask_seconds: float | None = None


# Between the transfer workflows and their activities.


class WriteExportRequest(BaseModel):
    tenant_id: str
    backup_name: str
    output: str


class ExportWritten(BaseModel):
    output: str
    size_bytes: int
    sha256: str
    schema_version: str | None
    members: list[str]


class InspectImportRequest(BaseModel):
    source: str
    new_tenant_id: str
    server: str | None = None
    plan: str | None = None
    owner_email: str | None = None


class ImportFacts(BaseModel):
    """What an export file holds, every check passed: its tenant.json and its archive's manifest (as signed)."""

    document: dict[str, Any]  # tenant.json, validated (tenancy.transfer.TenantDocument)
    manifest: BackupManifest
    archive_size: int
    file_sha256: str


class StageRequest(BaseModel):
    """Put an archive into this installation's storage as a backup of the new tenant: from an export file
    (`source`) or from another tenant's backup (`from_tenant`, `from_backup`: a clone)."""

    new_tenant_id: str
    new_database_name: str
    expected_sha256: str
    imported_from: dict[str, str]
    source: str | None = None
    manifest: BackupManifest | None = None  # with `source`: the manifest inspect_import checked
    from_tenant: str | None = None
    from_backup: str | None = None


class MaskRequest(BaseModel):
    tenant_id: str
    database_name: str
    scratch_name: str
    sql: str
    timeout_seconds: int
    server: str | None = None


class ImportAbandoned(BaseModel):
    """After an import or clone failed past provisioning (the new tenant deprovisioned by then)."""

    tenant_id: str
    backup_name: str | None
    reason: str
    event_type: str = "TenantImportFailed"
