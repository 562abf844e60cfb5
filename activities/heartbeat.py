"""Heartbeat long activities in the background: keeps them alive and lets cancellation reach them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Any

from temporalio import activity

# Twice a second: the worker sends at most one heartbeat a second to the server (worker.HEARTBEAT_THROTTLE), and
# the server's answer to it is how a cancellation reaches the activity: within about a second, whatever its length.
INTERVAL = 0.5


class Heartbeater:
    """`async with Heartbeater(lambda: {"bytes_written": n}):` heartbeats the current details every interval.

    The details are what a retried attempt finds in `activity.info().heartbeat_details`, and what `tenants` shows
    as the run's progress.
    """

    def __init__(self, details: Callable[[], Any] = lambda: None, interval: float = INTERVAL) -> None:
        self._details = details
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def beat(self) -> None:
        details = self._details()
        if details is None:
            activity.heartbeat()
        else:
            activity.heartbeat(details)

    async def _loop(self) -> None:
        while True:
            self.beat()
            await asyncio.sleep(self._interval)

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
