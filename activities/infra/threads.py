"""Blocking work (storage calls, files, fsync, uploads) off the event loop: the loop runs every activity's
heartbeats, so one blocking call there stalls them all, and a cancellation reaches no activity meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def to_the_end_in_thread(fn: Callable[..., T], /, *args: Any) -> T:
    """`asyncio.to_thread`, except that a cancellation waits for the thread to finish before it goes through: what
    the thread cleans up (a partial file, an unfinished upload) is gone when the activity reports it cancelled."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait([work])
        raise


@contextlib.asynccontextmanager
async def entered_in_thread(manager: contextlib.AbstractContextManager[T]) -> AsyncIterator[T]:
    """`async with entered_in_thread(cm) as x:` enters and leaves a blocking context manager in a thread (a storage
    writer creates an upload or a file on entry; fsyncs and renames, or uploads its last part, on exit)."""
    entering = asyncio.ensure_future(asyncio.to_thread(manager.__enter__))
    try:
        value = await asyncio.shield(entering)
    except asyncio.CancelledError as cancel:
        await asyncio.wait([entering])
        if not entering.cancelled() and entering.exception() is None:
            await to_the_end_in_thread(manager.__exit__, type(cancel), cancel, cancel.__traceback__)
        raise
    try:
        yield value
    except BaseException as exc:
        if not await to_the_end_in_thread(manager.__exit__, type(exc), exc, exc.__traceback__):
            raise
    else:
        await to_the_end_in_thread(manager.__exit__, None, None, None)
