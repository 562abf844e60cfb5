"""Live progress of a run: the workflow's `progress` query plus the heartbeat details of its running activity."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, TextIO

from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError
from temporalio.service import RPCError

from starter.output import human_size


async def _heartbeat_details(client: Client, handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
    description = await handle.describe()
    for pending in description.raw_description.pending_activities:
        if pending.heartbeat_details.payloads:
            values = await client.data_converter.decode(pending.heartbeat_details.payloads)
            if values and isinstance(values[0], dict):
                return values[0]
    return {}


def _render(progress: dict[str, Any], details: dict[str, Any]) -> str:
    if "total" in progress:
        return f"{progress['done']}/{progress['total']} tenants done, {progress['failed']} failed"
    line = str(progress.get("phase", ""))
    if "bytes_written" in details:
        line += f" — {human_size(details['bytes_written'])} written"
    elif "tables_restored" in details:
        line += f" — {details['tables_restored']} tables loaded"
    elif "bytes_read" in details:
        line += f" — {human_size(details['bytes_read'])} checked"
    return line


async def follow(client: Client, handle: WorkflowHandle[Any, Any], out: TextIO = sys.stderr) -> Any:
    """Wait for the run's result while showing its progress (one updating line on a terminal)."""
    result = asyncio.ensure_future(handle.result())
    shown = ""
    tty = out.isatty()
    final = False
    while not final:
        final = result.done()  # one last look after the end shows the final state
        try:
            line = _render(await handle.query("progress"), await _heartbeat_details(client, handle))
        except (RPCError, WorkflowQueryFailedError):
            line = shown  # not started yet, failed, or a run with nothing to report
        if line and line != shown:
            if tty:
                out.write("\r\033[K" + line)
            else:
                out.write(line + "\n")
            out.flush()
            shown = line
        if not final:
            await asyncio.wait([result], timeout=0.5)
    if tty and shown:
        out.write("\n")
    return await result
