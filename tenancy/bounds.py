"""The bounds of every number a run is given, in one pure place.

A run checks its input against them before it does anything, so a bad number fails the run at once with a clear
InvalidInput, instead of overflowing a date, a timer or a retry policy later on: there it would fail the workflow
task, which Temporal retries forever, sometimes while the run holds a tenant's lock.
"""

from __future__ import annotations

from tenancy.checks import validate_checks
from tenancy.contracts.backup import BackupTenantInput
from tenancy.contracts.fleet import DrillFleetInput, FleetBackupInput, FleetMaintenanceInput, FleetOptions, PruneInput
from tenancy.contracts.health import HealthInput
from tenancy.contracts.maintenance import MaintainTenantInput
from tenancy.contracts.restore import RestoreTenantInput, UndoRestoreInput
from tenancy.durations import MAX_DURATION_SECONDS
from tenancy.errors import InvalidInput
from tenancy.maintenance import ordered_tasks, validate_days
from tenancy.retention import validate_keep

DAY = 86_400
MAX_LOCK_WAIT_SECONDS = DAY  # a run that waits longer for a busy tenant is better started again later
MAX_KEEP_PREVIOUS_SECONDS = MAX_DURATION_SECONDS
CONCURRENCY = (1, 64)
PAGE_SIZE = (1, 1000)
# Events. Temporal refuses a history past 51,200 events, and the run only checks between pages (a page of
# 1,000 children adds several thousand): leave room.
HISTORY_LIMIT = (100, 40_000)
EVERY_WEEKS = (1, 52)
JOBS = (1, 32)
MAX_ATTEMPTS = (1, 100)
HEALTH_PAGE_SIZE = (1, 500)  # tenants one health check activity reads: its result stays far below the payload limit
FAILURE_WINDOW_HOURS = (1, 24 * 366)
COMPRESSION_LEVELS = {"gzip": (0, 9), "zstd": (0, 22), "none": (0, 22)}


def whole(name: str, value: object, low: int, high: int) -> int:
    """`value` when it is a whole number from `low` to `high`; else InvalidInput naming the option."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{name} must be a whole number from {low} to {high} (got {value!r})")
    return value


def validate_lock_wait(seconds: int) -> int:
    return whole("--wait-lock", seconds, 0, MAX_LOCK_WAIT_SECONDS)


def validate_compression(compression: str, level: int) -> int:
    if compression not in COMPRESSION_LEVELS:
        raise InvalidInput(f"unknown compression {compression!r}: use {', '.join(COMPRESSION_LEVELS)}")
    return whole(f"--level for {compression}", level, *COMPRESSION_LEVELS[compression])


def validate_fleet(req: FleetOptions) -> None:
    whole("--concurrency", req.concurrency, *CONCURRENCY)
    whole("page_size", req.page_size, *PAGE_SIZE)
    whole("history_limit", req.history_limit, *HISTORY_LIMIT)


def validate_backup(req: BackupTenantInput | FleetBackupInput) -> None:
    validate_keep(req.keep)
    validate_compression(req.compression, req.compression_level)
    validate_lock_wait(req.lock_wait_seconds)
    if isinstance(req, FleetBackupInput):
        validate_fleet(req)


def validate_keep_previous(seconds: int) -> int:
    return whole("--keep-previous (seconds)", seconds, 0, MAX_KEEP_PREVIOUS_SECONDS)


def validate_restore(req: RestoreTenantInput) -> None:
    if req.backup_name is not None and req.at is not None:
        raise InvalidInput("give a backup name or a time, not both")
    whole("--jobs", req.jobs, *JOBS)
    validate_keep_previous(req.keep_previous_seconds)
    validate_lock_wait(req.lock_wait_seconds)
    validate_checks(req.checks)


def validate_undo(req: UndoRestoreInput) -> None:
    validate_keep_previous(req.keep_previous_seconds)
    validate_lock_wait(req.lock_wait_seconds)


def validate_maintenance(req: MaintainTenantInput | FleetMaintenanceInput) -> list[str]:
    """The tasks to run, in order. Days are checked whatever the tasks: the run computes its cutoff anyway."""
    tasks = ordered_tasks(req.tasks)
    validate_days(req.days)
    whole("max_attempts", req.max_attempts, *MAX_ATTEMPTS)
    if isinstance(req, MaintainTenantInput):
        validate_lock_wait(req.lock_wait_seconds)
    else:
        validate_fleet(req)
    return tasks


def validate_prune(req: PruneInput, fleet: bool) -> None:
    if not fleet and req.tenant_id is None:
        raise InvalidInput("prune one tenant: its id is missing")
    validate_keep(req.keep)
    validate_fleet(req)  # one tenant's run gets its fleet's options: checked there, harmless here


def validate_drill_fleet(req: DrillFleetInput) -> None:
    whole("--every-weeks", req.every_weeks, *EVERY_WEEKS)
    validate_fleet(req)


def validate_health(req: HealthInput) -> None:
    whole("page_size", req.page_size, *HEALTH_PAGE_SIZE)
    whole("failure_window_hours", req.failure_window_hours, *FAILURE_WINDOW_HOURS)
