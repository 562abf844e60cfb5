"""Live progress of a run: the workflow's `progress` query plus the heartbeat details of its running activity."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, TextIO, TypeVar

from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError
from temporalio.service import RPCError

from starter.output import human_size
from tenancy.messages.progress import HeartbeatDetails

ReturnType = TypeVar("ReturnType")


async def _heartbeat_details(client: Client, handle: WorkflowHandle[Any, Any]) -> HeartbeatDetails:
    """What the run's running activity last heartbeated (activities.heartbeat), empty when nothing is running."""
    description = await handle.describe()
    for pending in description.raw_description.pending_activities:
        if pending.heartbeat_details.payloads:
            values = await client.data_converter.decode(pending.heartbeat_details.payloads)
            return HeartbeatDetails.from_heartbeat(values)
    return HeartbeatDetails()


def _render(progress: dict[str, Any], details: HeartbeatDetails) -> str:
    if "total" in progress:
        return f"{progress['done']}/{progress['total']} tenants done, {progress['failed']} failed"
    line = str(progress.get("phase", ""))
    if details.bytes_written is not None:
        line += f" — {human_size(details.bytes_written)} written"
    elif details.tables_restored is not None:
        line += f" — {details.tables_restored} tables loaded"
    elif details.bytes_read is not None:
        line += f" — {human_size(details.bytes_read)} checked"
    return line


def cancel_hint(client: Client, workflow_id: str) -> str:
    """The command that cancels the run, with the server and namespace when they are not the CLI's defaults."""
    command = f"temporal workflow cancel --workflow-id {workflow_id}"
    if client.namespace != "default":
        command += f" --namespace {client.namespace}"
    address = client.service_client.config.target_host
    if address not in ("localhost:7233", "127.0.0.1:7233"):
        command += f" --address {address}"
    return command


async def follow(client: Client, handle: WorkflowHandle[Any, ReturnType], out: TextIO = sys.stderr) -> ReturnType:
    """Wait for the run's result while showing its progress (one updating line on a terminal).

    Ctrl-C stops following, not the run: one line says so and how to cancel it, then KeyboardInterrupt (exit 130).
    """
    result = asyncio.ensure_future(handle.result())
    shown = ""
    tty = out.isatty()
    final = False
    try:
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
    except (asyncio.CancelledError, KeyboardInterrupt):
        # asyncio.run cancels this task on Ctrl-C and raises KeyboardInterrupt once it has ended.
        result.cancel()
        out.write(
            ("\n" if tty and shown else "")
            + f"tenants: stopped following {handle.id}; the run goes on in the worker. "
            + f"To cancel it: {cancel_hint(client, handle.id)}\n"
        )
        out.flush()
        raise
    if tty and shown:
        out.write("\n")
    return await result
