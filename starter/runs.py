"""Starting a workflow from the command line: meaningful id, TenantId, summary, then progress or the UI link."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, TypeVar, overload

from temporalio.types import MethodAsyncSingleParam

from activities.infra.temporal import connect_client, ui_link
from starter.progress import follow
from tenancy.audit import REQUESTED_BY, local_actor
from tenancy.naming import workflow_id
from tenancy.search import tenant_attributes
from tenancy.settings import Settings

SelfType = TypeVar("SelfType")
ParamType = TypeVar("ParamType")
ReturnType = TypeVar("ReturnType")


@overload
async def start_and_follow(
    settings: Settings,
    run: MethodAsyncSingleParam[SelfType, ParamType, ReturnType],
    arg: ParamType,
    *,
    operation: str,
    tenant_id: str | None,
    summary: str,
    no_wait: Literal[False] = False,
    run_id: str | None = None,
) -> ReturnType: ...


@overload
async def start_and_follow(
    settings: Settings,
    run: MethodAsyncSingleParam[SelfType, ParamType, ReturnType],
    arg: ParamType,
    *,
    operation: str,
    tenant_id: str | None,
    summary: str,
    no_wait: bool,
    run_id: str | None = None,
) -> ReturnType | None: ...


async def start_and_follow(
    settings: Settings,
    run: MethodAsyncSingleParam[SelfType, ParamType, ReturnType],
    arg: ParamType,
    *,
    operation: str,
    tenant_id: str | None,
    summary: str,
    no_wait: bool = False,
    run_id: str | None = None,
) -> ReturnType | None:
    """Start the run; with no_wait print its id and Web UI link and return None, else show progress and return
    its result (a failed run raises WorkflowFailureError, which the command line turns into one line)."""
    client = await connect_client(settings)
    handle = await client.start_workflow(
        run,
        arg,
        id=run_id or workflow_id(operation, tenant_id, datetime.now(UTC)),
        task_queue=settings.task_queue,
        search_attributes=tenant_attributes(tenant_id) if tenant_id else None,
        static_summary=summary,
        memo={REQUESTED_BY: local_actor()},  # the audit trail's actor of what the run does
    )
    if no_wait:
        print(f"started {handle.id}")
        print(f"web ui: {ui_link(settings, handle.id)}")
        return None
    print(f"started {handle.id} — {ui_link(settings, handle.id)}", flush=True)
    return await follow(client, handle)
