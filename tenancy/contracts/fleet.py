"""Runs over the whole fleet: their options, cursor and summary."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


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


class FleetMaintenanceInput(FleetOptions):
    tasks: list[str]
    days: int = 180
    dry_run: bool = False
    full: bool = False
    max_attempts: int = 4


class PruneInput(FleetOptions):
    tenant_id: str | None = None  # None: every active tenant
    keep: int = 7
    dry_run: bool = True


class DrillFleetInput(FleetOptions):
    every_weeks: int = 1
