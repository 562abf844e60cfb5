"""Fan a per-tenant child workflow out over the catalog: page by page, a few at a time, each failure kept to its
tenant, continuing as new before the history grows large (fleets of thousands of tenants)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.catalog import CatalogActivities
    from tenancy.contracts.fleet import FleetCursor, FleetResult, TenantOutcome
    from tenancy.contracts.tenants import TenantRef
    from tenancy.errors import failure_message
    from tenancy.messages.locks import TenantPage
    from workflows.options import LOCAL


class FanOutProgress:
    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self.failed = 0

    def as_dict(self) -> dict[str, int]:
        return {"total": self.total, "done": self.done, "failed": self.failed}


async def run_child(
    tenant_id: str,
    child_id: str,
    start: Callable[[], Awaitable[Any]],
    describe: Callable[[Any], dict[str, Any]] = lambda result: {},
) -> TenantOutcome:
    """Run one tenant's child workflow; its failure becomes a failed outcome with the clearest message."""
    try:
        result = await start()
    except ChildWorkflowError as exc:
        return TenantOutcome(tenant_id=tenant_id, ok=False, workflow_id=child_id, error=failure_message(exc))
    # `describe` may say more, including that a run which completed did not succeed (a failed drill).
    return TenantOutcome(**{"tenant_id": tenant_id, "ok": True, "workflow_id": child_id, **describe(result)})


async def fan_out(
    tenants: list[TenantRef],
    concurrency: int,
    one: Callable[[TenantRef], Awaitable[TenantOutcome]],
    progress: FanOutProgress,
) -> list[TenantOutcome]:
    slots = asyncio.Semaphore(concurrency)

    async def guarded(tenant: TenantRef) -> TenantOutcome:
        async with slots:
            outcome = await one(tenant)
        progress.done += 1
        progress.failed += not outcome.ok
        return outcome

    return list(await asyncio.gather(*(guarded(t) for t in tenants)))


async def fan_out_catalog(
    *,
    statuses: list[str],
    cursor: FleetCursor,
    page_size: int,
    history_limit: int,
    concurrency: int,
    one: Callable[[TenantRef], Awaitable[TenantOutcome]],
    progress: FanOutProgress,
) -> tuple[FleetCursor, bool]:
    """Run `one` for every tenant with one of `statuses`, a page of the catalog at a time. Returns the cursor and
    whether the fleet is done; when it is not, the caller continues as new with the cursor."""
    progress.done = progress.total = len(cursor.outcomes)
    progress.failed = sum(not o.ok for o in cursor.outcomes)
    while True:
        page = await workflow.execute_local_activity_method(
            CatalogActivities.list_tenant_page,
            TenantPage(after=cursor.after, limit=page_size, statuses=statuses),
            **LOCAL,
        )
        if not page:
            return cursor, True
        progress.total += len(page)
        cursor.outcomes += await fan_out(page, concurrency, one, progress)
        cursor.after = page[-1].id
        if len(page) < page_size:
            return cursor, True
        info = workflow.info()
        if info.is_continue_as_new_suggested() or info.get_current_history_length() > history_limit:
            return cursor, False


# Children's ids carry the time the fleet run started. workflow.now() in the first task is not that: a query that
# arrives before the task starts gives it the started event's time on replay instead (TMPRL1100 on the child ids).
STARTED_AT_FROM_HISTORY = "fleet-started-at-from-start-event"


def start_cursor(cursor: FleetCursor | None) -> FleetCursor:
    if cursor is not None:
        return cursor
    if workflow.patched(STARTED_AT_FROM_HISTORY):
        # The WorkflowExecutionStarted event's time: the same on every replay (info().start_time is the first
        # task's time, which moves like workflow.now()).
        return FleetCursor(started_at=workflow.info().workflow_start_time)
    return FleetCursor(started_at=workflow.now())


def skipped(tenant: TenantRef) -> TenantOutcome:
    return TenantOutcome(tenant_id=tenant.id, ok=True, skipped=True, workflow_id="", detail=f"skipped: {tenant.status}")


def result_of(cursor: FleetCursor) -> FleetResult:
    return FleetResult.of(cursor.outcomes)


def finish_fleet(req: Any, cursor: FleetCursor, done: bool) -> FleetResult:
    """The fleet's summary when it is done; otherwise continue as new with the cursor (this does not return)."""
    if not done:
        workflow.continue_as_new(req.model_copy(update={"cursor": cursor}))
    return result_of(cursor)
