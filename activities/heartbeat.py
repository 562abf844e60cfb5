"""Heartbeat long activities in the background: keeps them alive, lets cancellation reach them, and records how far
they got (tenancy.messages.progress.HeartbeatDetails) for `tenants` and for a retried attempt; the beats also renew the
lease of the tenant lock their run holds (activities/infra/leases.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from types import TracebackType
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.infra.leases import renew_lock_leases
from tenancy.errors import WORKER_SHUTDOWN
from tenancy.messages.progress import HeartbeatDetails

T = TypeVar("T")

# A cancellation reaches an activity only in the server's answer to a heartbeat, and the worker sends one every
# second at most (worker.HEARTBEAT_THROTTLE): beating every half second keeps both the cancel and the progress
# `tenants` shows within about a second, whatever the heartbeat timeout.
CEILING = 0.5
# Below this, beats cost more than they tell.
FLOOR = 0.1


def beat_interval(heartbeat_timeout: timedelta | None) -> float:
    """A third of the activity's heartbeat timeout (two beats may be lost before the server gives up on the
    attempt), within [FLOOR, CEILING]; CEILING when the activity has no heartbeat timeout."""
    if heartbeat_timeout is None:
        return CEILING
    return min(CEILING, max(FLOOR, heartbeat_timeout.total_seconds() / 3))


def recorded_details() -> HeartbeatDetails:
    """What the previous attempt of this activity last heartbeated (empty on a first attempt)."""
    return HeartbeatDetails.from_heartbeat(activity.info().heartbeat_details)


class Heartbeater:
    """`async with Heartbeater(lambda: HeartbeatDetails(bytes_written=n)):` heartbeats the current details at
    `beat_interval` of the activity's heartbeat timeout.

    It goes on beating while the worker shuts down gracefully: the server must not give up on an attempt that is
    finishing or stopping cleanly in the grace period, and a cancel must still reach it. Whether to stop early is
    the activity's decision (see `stop_on_worker_shutdown`).
    """

    def __init__(
        self, details: Callable[[], HeartbeatDetails | None] = lambda: None, interval: float | None = None
    ) -> None:
        self._details = details
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    @property
    def interval(self) -> float:
        if self._interval is None:
            self._interval = beat_interval(activity.info().heartbeat_timeout)
        return self._interval

    def beat(self) -> None:
        details = self._details()
        if details is None:
            activity.heartbeat()
        else:
            activity.heartbeat(details.to_heartbeat())
        # A run that holds a tenant's lock keeps its lease while its activities beat (throttled, in the background).
        renew_lock_leases()

    async def _loop(self) -> None:
        while True:
            self.beat()
            await asyncio.sleep(self.interval)

    async def __aenter__(self) -> Heartbeater:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def stop_on_worker_shutdown(work: Awaitable[T], what: str) -> T:
    """`work`'s result, unless the worker begins a graceful shutdown first: then `work` is cancelled (its own
    cleanup runs and is waited for) and a retryable WorkerShutdown error lets another worker run the activity
    again. For work that cannot resume: stopped cleanly now rather than cancelled at the end of the grace period,
    and the retry starts sooner."""
    task = asyncio.ensure_future(work)
    shutdown = asyncio.ensure_future(activity.wait_for_worker_shutdown())
    try:
        await asyncio.wait([task, shutdown], return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the activity itself is cancelled: the work stops with it
        task.cancel()
        await asyncio.wait([task])
        raise
    finally:
        shutdown.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.wait([task])
    raise ApplicationError(
        f"the worker is shutting down: {what} stopped and starts over on another worker",
        type=WORKER_SHUTDOWN,
        category=ApplicationErrorCategory.BENIGN,  # expected on every deploy: no warning with a traceback
    )
