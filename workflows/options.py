"""Timeouts and retry policies the activity calls of workflows/steps.py pick from. Typed (TypedDict), so mypy checks
every `**POLICY` against the call it is spread into."""

from __future__ import annotations

from datetime import timedelta
from typing import TypedDict

from temporalio.common import RetryPolicy

from tenancy.errors import NON_RETRYABLE


class Policy(TypedDict):
    """How long one attempt may take, and how attempts are retried (regular and local activities alike)."""

    start_to_close_timeout: timedelta
    retry_policy: RetryPolicy


class HeartbeatPolicy(Policy):
    """An activity that heartbeats: a worker that died is noticed within `heartbeat_timeout`, and a cancellation
    reaches the activity."""

    heartbeat_timeout: timedelta


class PatientPolicy(Policy):
    """Retried for as long as `schedule_to_close_timeout` (receivers that go down for a while)."""

    schedule_to_close_timeout: timedelta


# Catalog look-ups and locks: quick, retried on transient database errors.
QUICK = Policy(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        maximum_interval=timedelta(seconds=20),
        maximum_attempts=10,
        non_retryable_error_types=NON_RETRYABLE,
    ),
)

# Activities that heartbeat do so every half second, and reach the server every second (worker.HEARTBEAT_THROTTLE):
# a worker that died is noticed within this, and its activity retried elsewhere.
HEARTBEAT_TIMEOUT = timedelta(seconds=10)

# Long work on the data (dump, verify): a cancellation reaches the activity within about a second.
LONG = HeartbeatPolicy(
    start_to_close_timeout=timedelta(hours=6),
    heartbeat_timeout=HEARTBEAT_TIMEOUT,
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=5),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=5),
        maximum_attempts=3,
        non_retryable_error_types=NON_RETRYABLE,
    ),
)

# CREATE DATABASE and migrations: longer than a catalog update, retried a few times.
SLOW_DDL = Policy(
    start_to_close_timeout=timedelta(minutes=10),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=2),
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=5,
        non_retryable_error_types=NON_RETRYABLE,
    ),
)

# Short catalog and bookkeeping calls run as local activities, with the same timeouts and retries as QUICK: in the
# worker that runs the workflow, with no round trip through the server to schedule them (what dominates small
# tenants' backups in a fleet run).
LOCAL = QUICK

# Activities that read or change the backup storage: regular activities, never local ones (a local activity runs
# inside the run's workflow task, which a slow store would hold up), with minutes for a store with many backups.
STORAGE = Policy(start_to_close_timeout=timedelta(minutes=10), retry_policy=QUICK["retry_policy"])

# A health check's steps (a page of tenants; the whole storage listed): they heartbeat while they read.
HEALTH_STEP = HeartbeatPolicy(**STORAGE, heartbeat_timeout=HEARTBEAT_TIMEOUT)

# The swap of a restore: short, but heartbeating, so a cancellation reaches it and the undo waits for it to stop.
SWAP = HeartbeatPolicy(**QUICK, heartbeat_timeout=HEARTBEAT_TIMEOUT)

# What follows a committed switch (a move's set aside, its record): it must not be lost, so retried without a
# maximum (a server's blip outlasts QUICK's ten attempts); a typed non-retryable error still stops it.
UNTIL_DONE_RETRIES = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=0,
    non_retryable_error_types=NON_RETRYABLE,
)
# Setting aside (or dropping) the database a move left on the old server: retried for half an hour, then given up
# (the run records that it was left, and ends): the tenant is already on its new server, and the run must not hold
# the tenant's lock for as long as the old server stays down.
AFTER_SWITCH_PATIENCE = timedelta(minutes=30)


class PatientHeartbeatPolicy(HeartbeatPolicy):
    schedule_to_close_timeout: timedelta


SWAP_UNTIL_DONE = PatientHeartbeatPolicy(
    start_to_close_timeout=timedelta(seconds=30),
    heartbeat_timeout=HEARTBEAT_TIMEOUT,
    retry_policy=UNTIL_DONE_RETRIES,
    schedule_to_close_timeout=AFTER_SWITCH_PATIENCE,
)
SLOW_DDL_UNTIL_DONE = PatientPolicy(
    start_to_close_timeout=timedelta(minutes=10),
    retry_policy=UNTIL_DONE_RETRIES,
    schedule_to_close_timeout=AFTER_SWITCH_PATIENCE,
)
QUICK_UNTIL_DONE = Policy(start_to_close_timeout=timedelta(seconds=30), retry_policy=UNTIL_DONE_RETRIES)

# Short steps that a compensation may undo (provisioning's role and seed, an adoption's marks): they heartbeat, so a
# cancellation reaches them.
QUICK_HEARTBEAT = SWAP

# CREATE DATABASE that provisioning's undo may drop: heartbeating too.
SLOW_DDL_HEARTBEAT = HeartbeatPolicy(**SLOW_DDL, heartbeat_timeout=HEARTBEAT_TIMEOUT)

# Mail servers and webhook receivers go down for a while: keep trying for a day, backing off to 10 minutes.
PATIENT = PatientPolicy(
    start_to_close_timeout=timedelta(seconds=30),
    schedule_to_close_timeout=timedelta(days=1),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=10)
    ),
)


def maintenance_task(max_attempts: int) -> HeartbeatPolicy:
    """A maintenance task (cleanup, vacuum, optimize, analyze): hours, heartbeating; lock timeouts come back later
    (backing off to five minutes) rather than waiting on the lock, `max_attempts` times at most."""
    return HeartbeatPolicy(
        start_to_close_timeout=timedelta(hours=6),
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
        retry_policy=RetryPolicy(
            initial_interval=timedelta(seconds=5),
            backoff_coefficient=3.0,
            maximum_interval=timedelta(minutes=5),
            maximum_attempts=max_attempts,
            non_retryable_error_types=NON_RETRYABLE,
        ),
    )
