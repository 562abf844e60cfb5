"""Maintaining a tenant: what each task did."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class MaintainTenantInput(BaseModel):
    tenant_id: str
    tasks: list[str]  # any of backup, cleanup, vacuum, optimize, analyze; run in that order
    days: int = 180
    dry_run: bool = False
    full: bool = False  # VACUUM FULL: only when asked explicitly, never from a schedule
    max_attempts: int = 4  # per task, for lock timeouts and other transient errors
    lock_wait_seconds: int = 0


class CleanupResult(BaseModel):
    rows_deleted: dict[str, int]
    batches: int
    longest_batch_ms: float
    stale_files_removed: int = 0
    skipped: dict[str, str] = Field(default_factory=dict)  # rule → why it does not apply to this tenant


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


class AnalyzeResult(BaseModel):
    tables: int  # analyzed, one statement each
    timed_out: dict[str, str] = Field(default_factory=dict)  # table → which timeout
