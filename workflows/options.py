"""Timeouts and retry policies shared by the workflows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityCancellationType

from tenancy.errors import NON_RETRYABLE

# Catalog look-ups and locks: quick, retried on transient database errors.
QUICK = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1),
        maximum_interval=timedelta(seconds=20),
        maximum_attempts=10,
        non_retryable_error_types=NON_RETRYABLE,
    ),
}

# Activities that heartbeat do so every half second, and reach the server every second (worker.HEARTBEAT_THROTTLE):
# a worker that died is noticed within this, and its activity retried elsewhere.
HEARTBEAT_TIMEOUT = timedelta(seconds=10)

# Long work on the data (dump, verify): a cancellation reaches the activity within about a second.
LONG = {
    "start_to_close_timeout": timedelta(hours=6),
    "heartbeat_timeout": HEARTBEAT_TIMEOUT,
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=5),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=5),
        maximum_attempts=3,
        non_retryable_error_types=NON_RETRYABLE,
    ),
}

# CREATE DATABASE and migrations: longer than a catalog update, retried a few times.
SLOW_DDL = {
    "start_to_close_timeout": timedelta(minutes=10),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=2),
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=5,
        non_retryable_error_types=NON_RETRYABLE,
    ),
}

# Short catalog and bookkeeping calls run as local activities, with the same timeouts and retries as QUICK: in the
# worker that runs the workflow, with no round trip through the server to schedule them (what dominates small
# tenants' backups in a fleet run).
LOCAL = QUICK

# Activities that read or change the backup storage: regular activities, never local ones (a local activity runs
# inside the run's workflow task, which a slow store would hold up), with minutes for a store with many backups.
STORAGE = {**QUICK, "start_to_close_timeout": timedelta(minutes=10)}
STORAGE_NOT_LOCAL = "storage-calls-in-regular-activities"

# A health check's steps (a page of tenants; the whole storage listed): they heartbeat while they read.
HEALTH_STEP = {**STORAGE, "heartbeat_timeout": HEARTBEAT_TIMEOUT}

# The swap of a restore: short, but heartbeating, so a cancellation reaches it and the undo waits for it to stop.
SWAP = {**QUICK, "heartbeat_timeout": HEARTBEAT_TIMEOUT}

COMPENSATIONS_WAIT = "compensations-wait-for-cancelled-work"


def undoable_cancellation() -> ActivityCancellationType:
    """How an activity that a compensation may undo is cancelled: waited for, so the undo never runs beside the
    work it undoes. Runs recorded before this did not wait (TRY_CANCEL) and replay as they ran."""
    if workflow.patched(COMPENSATIONS_WAIT):
        return ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
    return ActivityCancellationType.TRY_CANCEL


async def storage_activity(method: Callable[..., Any], *args: Any) -> Any:
    """Call an activity that reads or changes the backup storage: a regular activity; runs recorded before were
    calling it as a local activity, and replay so."""
    if workflow.patched(STORAGE_NOT_LOCAL):
        return await workflow.execute_activity_method(method, args=list(args), **STORAGE)
    return await workflow.execute_local_activity_method(method, args=list(args), **LOCAL)
