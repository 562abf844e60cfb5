"""Runs over the whole fleet: their options, cursor and summary."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class TenantOutcome(BaseModel):
    tenant_id: str
    ok: bool
    workflow_id: str
    backup_name: str | None = None
    error: str | None = None
    detail: str | None = None
    skipped: bool = False


# A fleet run carries only this many failed outcomes in full (the rest are counted): its payload stays small
# whatever the fleet's size. Every outcome is in the catalog's fleet_outcomes (`tenants runs show <id>`).
FAILURES_CARRIED = 100


class FleetCursor(BaseModel):
    """Where a fleet run is in the catalog, and what it has done so far: carried across continue-as-new."""

    started_at: datetime  # of the first run (a drill fleet picks its tenants by that week)
    after: str | None = None  # the last tenant started, by id: the next run starts after it
    outcomes: list[TenantOutcome] = Field(default_factory=list)  # runs recorded before counters carried all of them
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[TenantOutcome] = Field(default_factory=list)  # the first FAILURES_CARRIED, in full
    failures_not_shown: int = 0

    def count(self, outcome: TenantOutcome) -> None:
        self.total += 1
        if outcome.skipped:
            self.skipped += 1
        elif not outcome.ok:
            self.failed += 1
            if len(self.failures) < FAILURES_CARRIED:
                self.failures.append(outcome)
            else:
                self.failures_not_shown += 1
        else:
            self.succeeded += 1

    def summary(self, workflow_id: str) -> FleetResult:
        return FleetResult(
            total=self.total,
            succeeded=self.succeeded,
            failed=self.failed,
            skipped=self.skipped,
            outcomes=list(self.failures),
            failures_not_shown=self.failures_not_shown,
            workflow_id=workflow_id,
        )


class FleetOptions(BaseModel):
    concurrency: int = 4
    page_size: int = 200  # tenants read from the catalog at a time
    history_limit: int = 10_000  # events; the run continues as new before its history grows past this
    cursor: FleetCursor | None = None


class FleetInput(FleetOptions):
    pass


class FleetBackupInput(FleetOptions):
    keep: int = 7
    compression: Literal["gzip", "zstd", "none"] = "zstd"
    compression_level: int = 1  # tenancy.settings.DEFAULT_COMPRESSION_LEVELS
    lock_wait_seconds: int = 0


class FleetResult(BaseModel):
    total: int
    succeeded: int
    failed: int
    skipped: int = 0
    # Runs of the fleet engine: the failed outcomes only (the first FAILURES_CARRIED); every tenant's outcome is in
    # the catalog under `workflow_id`. Older runs: every outcome, and no workflow_id.
    outcomes: list[TenantOutcome]
    failures_not_shown: int = 0
    workflow_id: str | None = None

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
