"""The fleet engine of runs recorded before the sliding window (workflows/fleet.py): page by page, a few at a time,
every outcome carried across continue-as-new. Kept only so those runs replay; new runs never come here."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tenancy.contracts.fleet import FleetCursor, FleetResult, TenantOutcome
    from tenancy.contracts.tenants import TenantRef
    from tenancy.messages.locks import TenantPage
    from workflows import steps


async def fan_out(
    tenants: list[TenantRef],
    concurrency: int,
    one: Callable[[TenantRef], Awaitable[TenantOutcome]],
    progress: Any,  # workflows.fleet.FleetProgress
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
    progress: Any,  # workflows.fleet.FleetProgress
) -> tuple[FleetCursor, bool]:
    """Run `one` for every tenant with one of `statuses`, a page of the catalog at a time. Returns the cursor and
    whether the fleet is done; when it is not, the caller continues as new with the cursor."""
    progress.done = progress.total = len(cursor.outcomes)
    progress.failed = sum(not o.ok for o in cursor.outcomes)
    while True:
        page = await steps.list_tenant_page(TenantPage(after=cursor.after, limit=page_size, statuses=statuses))
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


def result_of(cursor: FleetCursor) -> FleetResult:
    return FleetResult.of(cursor.outcomes)


def finish_fleet(req: Any, cursor: FleetCursor, done: bool) -> FleetResult:
    """The fleet's summary when it is done; otherwise continue as new with the cursor (this does not return)."""
    if not done:
        workflow.continue_as_new(req.model_copy(update={"cursor": cursor}))
    return result_of(cursor)
