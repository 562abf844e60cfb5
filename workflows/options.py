"""Timeouts and retry policies shared by the workflows."""

from __future__ import annotations

from datetime import timedelta

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

# The swap of a restore: short, but heartbeating, so a cancellation reaches it and the undo waits for it to stop.
SWAP = {**QUICK, "heartbeat_timeout": HEARTBEAT_TIMEOUT}

COMPENSATIONS_WAIT = "compensations-wait-for-cancelled-work"


def undoable_cancellation() -> ActivityCancellationType:
    """How an activity that a compensation may undo is cancelled: waited for, so the undo never runs beside the
    work it undoes. Runs recorded before this did not wait (TRY_CANCEL) and replay as they ran."""
    if workflow.patched(COMPENSATIONS_WAIT):
        return ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
    return ActivityCancellationType.TRY_CANCEL
