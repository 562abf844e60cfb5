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
    # Decided once per run by the workflow (BackupActivities.name_backup), so a retried attempt knows which
    # partial file or upload a dead attempt left and removes it. None: runs recorded before that name it here.
    backup_name: str | None = None


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
    shared: bool = False  # a drill: goes together with other drills and with backups


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
    restorable: bool = False  # known to restore: its table of contents was read, or a drill passed


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
    # Keep the replaced database (renamed aside) this long before dropping it, for `tenants restore --undo`;
    # 0 drops it at once.
    keep_previous_seconds: int = 86_400
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
    scratch_name: str  # the database swapped in: a restored copy, or a kept previous one (undo)
    previous_name: str
    keep_until: datetime | None = None  # written in the set-aside database's mark


class KeptDatabase(BaseModel):
    """A tenant database a restore set aside (`<db>__old_<token>`), kept for `tenants restore --undo`."""

    name: str
    tenant_id: str
    database_name: str
    workflow_id: str
    backup_name: str | None = None
    kept_until: datetime


class SwapResult(BaseModel):
    terminated_sessions: int
    set_aside: bool = True  # False: the tenant had no database, the incoming one simply took its name


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
    leftover_databases: list[str] = Field(default_factory=list)  # the tenant's scratch/previous copies dropped
    role_left: str | None = None  # why the role was left in place (not marked as this tenant's), if it was


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
    skipped: dict[str, str] = Field(default_factory=dict)  # rule → why it does not apply to this tenant


class VacuumRequest(MaintenanceTarget):
    full: bool = False


class VacuumResult(BaseModel):
    dead_tuples_before: int
    dead_tuples_after: int
    tables: int = 0  # vacuumed, one statement each
    timed_out: dict[str, str] = Field(default_factory=dict)  # table → which timeout


class IndexBloat(BaseModel):
    index: str
    table: str
    bytes: int
    bloat: float


class OptimizeResult(BaseModel):
    rebuilt: list[IndexBloat]
    bytes_before: int
    bytes_after: int
    leftovers_dropped: list[str] = Field(default_factory=list)  # invalid copies of interrupted rebuilds
    timed_out: dict[str, str] = Field(default_factory=dict)  # index (or table analyzed) → which timeout


class MaintenancePlan(BaseModel):
    """What a run would do, with nothing changed (--dry-run)."""

    cleanup_rows: dict[str, int]
    indexes_to_rebuild: list[IndexBloat]
    dead_tuples: int
    skipped: dict[str, str] = Field(default_factory=dict)  # cleanup rule → why it does not apply here
    leftover_indexes: list[str] = Field(default_factory=list)  # of interrupted rebuilds: optimize drops them


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
    # The newest backup known to restore (its table of contents read, or a passed drill): the age that matters.
    last_restorable_at: datetime | None = None
    restorable_age_hours: float | None = None


class Alert(BaseModel):
    kind: Literal["stale_backup", "stale_restorable_backup", "over_quota", "failed_run", "failed_drill"]
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


class DeprovisionCheck(BaseModel):
    """What deprovisioning finds before it changes anything."""

    database_exists: bool
    # The final backup an earlier attempt took and recorded (TenantFinalBackup), for a re-run to report.
    earlier_final_backup: str | None = None


class RoleRemoval(BaseModel):
    role_name: str
    dropped: bool
    # Databases where the role's privileges and objects were removed (REASSIGN OWNED / DROP OWNED) first.
    cleaned_in: list[str] = Field(default_factory=list)
    left_reason: str | None = None  # set when the role exists and is left in place


class ReinstateTenantInput(BaseModel):
    tenant_id: str
    backup_name: str | None = None  # None: the newest restorable backup
    jobs: int = 2
    checks: list[str] = Field(default_factory=list)  # SQL run in the restored database; each must return true
    lock_wait_seconds: int = 0


class ReinstatementUndo(BaseModel):
    db: TenantDatabase
    drop_role: bool  # only when this run created the role (not when it took up one of the tenant's)


class Reinstatement(BaseModel):
    tenant_id: str
    backup_name: str
    backup_taken_at: datetime


class ReinstateTenantResult(BaseModel):
    tenant_id: str
    backup_name: str
    database_name: str
    role_name: str
    row_counts: dict[str, int]
    # Where the role's new credentials are kept (a 0600 file on the worker's host); never the password itself.
    credentials_file: str


class SweepInput(BaseModel):
    dry_run: bool = False
    # Age after which a `.partial` file or unfinished upload is abandoned, and a run Temporal does not know counts
    # as gone; None: TENANTS_STALE_PARTIAL_HOURS. Bounded (0 to a year) by the workflow.
    stale_hours: int | None = None
    limit: int = 1000  # removable items acted on in one sweep; the rest wait for the next one


class SweepItem(BaseModel):
    kind: Literal["scratch", "previous", "provisioning", "database", "role", "partial", "upload", "work"]
    name: str  # database or role name, file path, or object key
    reason: str
    removable: bool
    removed: bool = False
    upload_id: str | None = None  # S3 multipart uploads
    error: str | None = None

    def action(self, dry_run: bool) -> str:
        if self.error:
            return "FAILED"
        if self.removed:
            return "removed"
        if self.removable:
            return "would remove" if dry_run else "not removed"
        return "left alone"


class SweepReport(BaseModel):
    swept_at: datetime
    dry_run: bool
    stale_hours: int
    items: list[SweepItem] = Field(default_factory=list)
    more: int = 0  # removable items past the limit, left for the next sweep

    @property
    def removed(self) -> int:
        return sum(i.removed for i in self.items)

    @property
    def failed(self) -> int:
        return sum(i.error is not None for i in self.items)


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


class AdoptTenantInput(BaseModel):
    """`tenants adopt`: register an existing database as a tenant (or mark a tenant's unmarked database)."""

    tenant_id: str
    database_name: str
    plan: str = "free"
    # Adopted databases come without an owner on record: a placeholder that can never receive mail.
    owner_email: str = "unknown@adopted.invalid"
    name: str | None = None  # display name; the tenant id when not given
    role_name: str | None = None  # an existing role to record (and mark) as the tenant's
    lock_wait_seconds: int = 0


class AdoptionPlan(BaseModel):
    """A checked adoption: what is recorded and marked, and what the marks replace (put back by an undo)."""

    tenant_id: str
    name: str
    plan: str
    owner_email: str
    database_name: str
    role_name: str | None = None
    # The tenant is in the catalog with this database already (from before marks): only the marks are written.
    mark_only: bool = False
    database_comment: str | None = None
    role_comment: str | None = None


class AdoptTenantResult(BaseModel):
    tenant_id: str
    database_name: str
    role_name: str | None
    mark_only: bool
    event_id: int | None


class AnalyzeResult(BaseModel):
    tables: int  # analyzed, one statement each
    timed_out: dict[str, str] = Field(default_factory=dict)  # table → which timeout
