"""Pydantic models exchanged by the command line, workflows and activities."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

TenantStatus = Literal["provisioning", "active", "inactive", "suspended", "deprovisioned", "failed"]


class Tenant(BaseModel):
    id: str
    name: str
    plan: str
    status: TenantStatus
    owner_email: str
    database_name: str
    settings: dict[str, Any] = Field(default_factory=dict)
    status_reason: str | None = None
    role_name: str | None = None
    last_maintenance: dict[str, Any] | None = None
    created_at: datetime
    updated_at: datetime


class BackupTenantInput(BaseModel):
    tenant_id: str
    keep: int = 7
    compression: Literal["gzip", "zstd", "none"] = "gzip"
    compression_level: int = 6
    lock_wait_seconds: int = 0
    # Set by a parent run that holds the tenant's lock (deprovisioning, maintenance).
    lock_held_by_parent: bool = False


class DumpRequest(BaseModel):
    tenant_id: str
    database_name: str
    compression: Literal["gzip", "zstd", "none"]
    compression_level: int


class DumpResult(BaseModel):
    tenant_id: str
    # age encryption of the stored bytes: to these public recipients (never a private key)
    encrypted: bool = False
    recipients: list[str] = Field(default_factory=list)
    database_name: str
    backup_name: str
    format: Literal["custom"] = "custom"
    compression: str
    compression_level: int
    size_bytes: int
    sha256: str
    server_version: str
    tool_version: str
    started_at: datetime
    finished_at: datetime
    row_counts: dict[str, int]


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

    @model_validator(mode="before")
    @classmethod
    def _restorable_of_older_manifests(cls, data: Any) -> Any:
        # Manifests from before `restorable` existed: the table of contents was read unless it was encrypted
        # and checked by checksum only (then toc_entries stayed 0).
        if isinstance(data, dict) and "restorable" not in data:
            data = {**data, "restorable": bool(data.get("verified")) and int(data.get("toc_entries") or 0) > 0}
        return data


class RetentionRequest(BaseModel):
    tenant_id: str
    keep: int
    # The backup this run just verified: retention refuses to run if it is not among the kept.
    newest_backup: str | None = None
    dry_run: bool = False


class RetentionDecision(BaseModel):
    name: str
    keep: bool
    reason: str


class RetentionResult(BaseModel):
    kept: list[str]
    deleted: list[str]
    decisions: list[RetentionDecision] = Field(default_factory=list)
    policy: str = "keep"


class PinRequest(BaseModel):
    tenant_id: str
    backup_name: str
    pinned: bool


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
    deleted_by_retention: list[str]
    kept: list[str]
    restorable: bool = False  # pg_restore read its table of contents (see BackupManifest)


class LockRequest(BaseModel):
    tenant_id: str
    operation: str
    workflow_id: str
    run_id: str


class LockOutcome(BaseModel):
    acquired: bool
    holder_workflow_id: str | None = None
    holder_operation: str | None = None


class FleetBackupInput(BaseModel):
    keep: int = 7
    compression: Literal["gzip", "zstd", "none"] = "gzip"
    compression_level: int = 6
    concurrency: int = 4
    lock_wait_seconds: int = 0
    page_size: int = 200
    history_limit: int = 10_000
    cursor: FleetCursor | None = None


class TenantOutcome(BaseModel):
    tenant_id: str
    ok: bool
    workflow_id: str
    backup_name: str | None = None
    error: str | None = None
    detail: str | None = None
    skipped: bool = False


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


class BackupSelection(BaseModel):
    tenant_id: str
    # A name, or None for the newest verified backup (taken at or before `at` when given).
    backup_name: str | None = None
    at: datetime | None = None


class RestoreTenantInput(BaseModel):
    tenant_id: str
    backup_name: str | None = None
    at: datetime | None = None
    jobs: int = 2
    # SQL queries run in the restored database before it is swapped in; each must return true.
    checks: list[str] = Field(default_factory=list)
    # Keep the replaced database (renamed aside) this long before dropping it; 0 drops it at once.
    keep_previous_seconds: int = 0
    lock_wait_seconds: int = 0


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


class RestoredCheckRequest(BaseModel):
    tenant_id: str
    scratch_name: str
    row_counts: dict[str, int]
    checks: list[str]


class SwapRequest(BaseModel):
    tenant_id: str
    database_name: str
    scratch_name: str
    previous_name: str


class SwapResult(BaseModel):
    terminated_sessions: int


class TenantEvent(BaseModel):
    tenant_id: str
    type: str
    data: dict[str, Any] = Field(default_factory=dict)


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


class ProvisionTenantInput(BaseModel):
    name: str
    plan: str
    owner_email: str
    tenant_id: str | None = None  # derived from the name when not given
    settings: dict[str, Any] = Field(default_factory=dict)


class NewTenant(BaseModel):
    """A validated provisioning request: what gets recorded."""

    tenant_id: str
    name: str
    plan: str
    owner_email: str
    database_name: str
    role_name: str
    settings: dict[str, Any] = Field(default_factory=dict)


class TenantDatabase(BaseModel):
    tenant_id: str
    database_name: str
    role_name: str


class MigrationResult(BaseModel):
    database_name: str
    applied: list[str]
    version: str | None


class ProvisionTenantResult(BaseModel):
    tenant_id: str
    database_name: str
    role_name: str
    schema_version: str | None
    # Where the role's generated credentials are kept (a 0600 file); the password never enters the history.
    credentials_file: str
    welcome_mail_workflow_id: str | None


class StatusChange(BaseModel):
    tenant_id: str
    status: TenantStatus
    reason: str | None = None


class StatusChangeResult(BaseModel):
    tenant_id: str
    old_status: str
    new_status: str
    terminated_sessions: int = 0
    event_id: int | None = None


class SettingsChangeResult(BaseModel):
    tenant_id: str
    settings: dict[str, Any]
    event_id: int


class SettingsChange(BaseModel):
    tenant_id: str
    changes: dict[str, Any]


class DeprovisionTenantInput(BaseModel):
    tenant_id: str
    final_backup: bool = True
    lock_wait_seconds: int = 0


class DeprovisionTenantResult(BaseModel):
    tenant_id: str
    final_backup: str | None
    database_dropped: bool


class WelcomeMail(BaseModel):
    tenant_id: str
    tenant_name: str
    owner_email: str


class TenantRef(BaseModel):
    id: str
    status: str


class TenantPage(BaseModel):
    after: str | None = None
    limit: int = 200
    statuses: list[str]


class FleetCursor(BaseModel):
    """Where a fleet run is in the catalog, and what it has done so far: carried across continue-as-new."""

    started_at: datetime  # of the first run: children's ids carry it, across continue-as-new too
    after: str | None = None
    outcomes: list[TenantOutcome] = Field(default_factory=list)


class FleetOptions(BaseModel):
    concurrency: int = 4
    page_size: int = 200  # tenants read from the catalog at a time
    history_limit: int = 10_000  # events; the run continues as new before its history grows past this
    cursor: FleetCursor | None = None


class FleetInput(FleetOptions):
    pass


class FleetResult(BaseModel):
    total: int
    succeeded: int
    failed: int
    skipped: int = 0
    outcomes: list[TenantOutcome]

    @classmethod
    def of(cls, outcomes: list[TenantOutcome]) -> FleetResult:
        skipped = sum(o.skipped for o in outcomes)
        failed = sum(not o.ok for o in outcomes)
        return cls(
            total=len(outcomes),
            succeeded=len(outcomes) - failed - skipped,
            failed=failed,
            skipped=skipped,
            outcomes=outcomes,
        )


class MaintainTenantInput(BaseModel):
    tenant_id: str
    tasks: list[str]  # any of backup, cleanup, vacuum, optimize, analyze; run in that order
    days: int = 180
    dry_run: bool = False
    full: bool = False  # VACUUM FULL: only when asked explicitly, never from a schedule
    max_attempts: int = 4  # per task, for lock timeouts and other transient errors
    lock_wait_seconds: int = 0


class MaintenanceTarget(BaseModel):
    tenant_id: str
    database_name: str


class CleanupRequest(MaintenanceTarget):
    cutoff: datetime
    # Rows older than the cutoff when the run began, counted by an earlier activity (so in the history): what
    # was deleted is this minus what is left, however many attempts it took.
    planned: dict[str, int] = Field(default_factory=dict)


class CleanupResult(BaseModel):
    rows_deleted: dict[str, int]
    batches: int
    longest_batch_ms: float
    stale_files_removed: int = 0


class VacuumRequest(MaintenanceTarget):
    full: bool = False


class VacuumResult(BaseModel):
    dead_tuples_before: int
    dead_tuples_after: int


class IndexBloat(BaseModel):
    index: str
    table: str
    bytes: int
    bloat: float


class OptimizeResult(BaseModel):
    rebuilt: list[IndexBloat]
    bytes_before: int
    bytes_after: int


class MaintenancePlan(BaseModel):
    """What a run would do, with nothing changed (--dry-run)."""

    cleanup_rows: dict[str, int]
    indexes_to_rebuild: list[IndexBloat]
    dead_tuples: int


class TaskReport(BaseModel):
    task: str
    ok: bool
    seconds: float
    detail: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class MaintainTenantResult(BaseModel):
    tenant_id: str
    dry_run: bool
    ok: bool
    cutoff: datetime | None
    size_before: int
    size_after: int
    tasks: list[TaskReport]
    plan: MaintenancePlan | None = None
    error: str | None = None


class FleetMaintenanceInput(FleetOptions):
    tasks: list[str]
    days: int = 180
    dry_run: bool = False
    full: bool = False
    max_attempts: int = 4


class HealthInput(BaseModel):
    send_alerts: bool = True
    failure_window_hours: int = 24


class TenantHealth(BaseModel):
    tenant_id: str
    status: str
    last_backup_at: datetime | None
    backup_age_hours: float | None
    database_bytes: int | None
    quota_bytes: int | None
    last_maintenance_at: str | None
    failed_runs: int = 0
    backup_bytes: int = 0  # storage used by the tenant's backups


class Alert(BaseModel):
    kind: Literal["stale_backup", "over_quota", "failed_run", "failed_drill"]
    tenant_id: str | None
    message: str


class HealthReport(BaseModel):
    checked_at: datetime
    tenants: list[TenantHealth]
    alerts: list[Alert]
    storage: str = ""
    storage_used_bytes: int = 0
    storage_free_bytes: int | None = None  # None for object storage


class PruneInput(FleetOptions):
    tenant_id: str | None = None  # None: every active tenant
    keep: int = 7
    dry_run: bool = True


class DrillFleetInput(FleetOptions):
    every_weeks: int = 1
