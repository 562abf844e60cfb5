"""The fleet engine: one per-tenant child workflow for every tenant of the catalog, at most `concurrency` in flight.

Every fleet run (backup, maintain, migrate, prune, drill) is a few lines on top of `run_fleet`:
- a sliding window: as soon as one child ends the next starts, fed from catalog pages (no page waits for its
  slowest tenant);
- one tenant's failure never stops the others: it becomes a failed outcome;
- every outcome goes to the catalog (fleet_outcomes, in batches), while the run itself carries only the cursor,
  counters and the first failures, so its payload and history stay bounded for any fleet size;
- before the history grows large the run drains its window and continues as new after the last tenant started;
- children's ids derive from the fleet run's own workflow id: `<kind>-<tenant>@<fleet workflow id>`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from tenancy.contracts.fleet import FleetCursor, FleetOptions, FleetResult, TenantOutcome
    from tenancy.contracts.tenants import TenantRef
    from tenancy.errors import failure_message
    from tenancy.messages.fleet import FleetOutcomes
    from tenancy.messages.locks import TenantPage
    from tenancy.naming import workflow_id
    from tenancy.search import tenant_attributes
    from workflows import steps
    from workflows.fleet_legacy import fan_out_catalog, finish_fleet

# Runs recorded before the engine went page by page, with children named after the fleet's start time.
SLIDING_WINDOW = "fleet-sliding-window"
# Children's ids carry the time the fleet run started (older runs): the started event's time, the same on replay.
STARTED_AT_FROM_HISTORY = "fleet-started-at-from-start-event"
# Outcomes are written to the catalog 50 at a time (a few hundred local activities for 10,000 tenants), or after
# 5 seconds, so `tenants runs show` follows a run of slow tenants too.
OUTCOMES_PER_WRITE = 50
OUTCOMES_WRITE_AFTER = timedelta(seconds=5)


class FleetProgress:
    """What the `progress` query of every fleet run answers."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self.failed = 0

    def as_dict(self) -> dict[str, int]:
        return {"total": self.total, "done": self.done, "failed": self.failed}


# One tenant's child: given the tenant and the child's id, start it and say how it went.
StartChild = Callable[[TenantRef, str], Coroutine[Any, Any, TenantOutcome]]


@dataclass(frozen=True)
class Fleet:
    kind: str  # names the children: backup, maintenance, migrate, prune, drill
    statuses: list[str]  # which tenants of the catalog the run goes over
    start_child: StartChild
    server: str | None = None  # only the tenants on this server; None: every server


def child_id(kind: str, tenant_id: str) -> str:
    return f"{kind}-{tenant_id}@{workflow.info().workflow_id}"


def child_options(kind: str, tenant_id: str, child_id: str, *, legacy_cancels: bool = True) -> dict[str, Any]:
    """The same options for every fleet's children: found by tenant, named in the UI, cancelled with the fleet.
    (`legacy_cancels=False`: older runs of that fleet left the parent close policy at its default.)"""
    cancels = legacy_cancels or workflow.patched(SLIDING_WINDOW)
    return {
        "id": child_id,
        "search_attributes": tenant_attributes(tenant_id),
        "static_summary": f"{kind} of tenant {tenant_id} (fleet run {workflow.info().workflow_id})",
        "parent_close_policy": (
            workflow.ParentClosePolicy.REQUEST_CANCEL if cancels else workflow.ParentClosePolicy.TERMINATE
        ),
    }


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


def skipped(tenant: TenantRef) -> TenantOutcome:
    return TenantOutcome(tenant_id=tenant.id, ok=True, skipped=True, workflow_id="", detail=f"skipped: {tenant.status}")


def start_cursor(cursor: FleetCursor | None) -> FleetCursor:
    if cursor is not None:
        return cursor
    if workflow.patched(STARTED_AT_FROM_HISTORY):
        # The WorkflowExecutionStarted event's time: the same on every replay (info().start_time is the first
        # task's time, which moves like workflow.now()).
        return FleetCursor(started_at=workflow.info().workflow_start_time)
    return FleetCursor(started_at=workflow.now())


async def run_fleet(req: FleetOptions, cursor: FleetCursor, fleet: Fleet, progress: FleetProgress) -> FleetResult:
    """Run `fleet` over the catalog from `cursor`; returns the summary, or continues as new (does not return)."""
    if not workflow.patched(SLIDING_WINDOW):
        return await _page_by_page(req, cursor, fleet, progress)
    return await _SlidingWindow(req, cursor, fleet, progress).run()


class _SlidingWindow:
    def __init__(self, req: FleetOptions, cursor: FleetCursor, fleet: Fleet, progress: FleetProgress) -> None:
        self.req = req
        self.cursor = cursor
        self.fleet = fleet
        self.progress = progress
        self.unwritten: list[TenantOutcome] = []
        self.write_timer: asyncio.Task[None] | None = None  # one at a time: a few timer events per run
        # A run continued from one that carried every outcome: those are counted and written like the others.
        for outcome in cursor.outcomes:
            self._count(outcome)
        cursor.outcomes = []

    def _count(self, outcome: TenantOutcome) -> None:
        self.cursor.count(outcome)
        self.unwritten.append(outcome)

    async def _write_outcomes(self) -> None:
        if not self.unwritten:
            return
        info = workflow.info()
        batch = FleetOutcomes(fleet_workflow_id=info.workflow_id, fleet_run_id=info.run_id, outcomes=self.unwritten)
        self.unwritten = []
        await steps.record_fleet_outcomes(batch)

    async def _page(self, after: str | None) -> list[TenantRef]:
        return await steps.list_tenant_page(
            TenantPage(after=after, limit=self.req.page_size, statuses=self.fleet.statuses, server=self.fleet.server)
        )

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > self.req.history_limit

    async def run(self) -> FleetResult:
        waiting: deque[TenantRef] = deque()
        fetched_after, more = self.cursor.after, True
        running: dict[asyncio.Task[TenantOutcome], TenantRef] = {}
        draining = False  # the history is long: start no more children, let those in flight end, continue as new
        while True:
            while not draining and len(running) < self.req.concurrency:
                if not waiting and more:
                    page = await self._page(fetched_after)
                    more = len(page) == self.req.page_size
                    if page:
                        fetched_after = page[-1].id
                    waiting.extend(page)
                if not waiting:
                    break
                tenant = waiting.popleft()
                task = asyncio.create_task(self.fleet.start_child(tenant, child_id(self.fleet.kind, tenant.id)))
                running[task] = tenant
                self.cursor.after = tenant.id
            self.progress.total = self.cursor.total + len(running) + len(waiting)
            self.progress.done, self.progress.failed = self.cursor.total, self.cursor.failed
            if not running:
                break
            if self.unwritten and self.write_timer is None:
                self.write_timer = asyncio.create_task(asyncio.sleep(OUTCOMES_WRITE_AFTER.total_seconds()))
            await workflow.wait(
                [*running, *([self.write_timer] if self.write_timer else [])], return_when=asyncio.FIRST_COMPLETED
            )
            for task in [t for t in running if t.done()]:  # in the order they started: deterministic
                del running[task]
                self._count(task.result())
            timer_fired = self.write_timer is not None and self.write_timer.done()
            if timer_fired:
                self.write_timer = None
            if len(self.unwritten) >= OUTCOMES_PER_WRITE or timer_fired:
                await self._write_outcomes()
            draining = draining or self._history_is_long()
        await self._write_outcomes()
        if self.write_timer is not None:
            self.write_timer.cancel()
        if waiting or more:  # drained early: the rest of the fleet in a fresh run
            workflow.continue_as_new(self.req.model_copy(update={"cursor": self.cursor}))
        return self.cursor.summary(workflow.info().workflow_id)


async def _page_by_page(req: FleetOptions, cursor: FleetCursor, fleet: Fleet, progress: FleetProgress) -> FleetResult:
    """Runs recorded before the sliding window: page by page, every outcome carried, children named after the
    fleet's start time."""

    async def one(tenant: TenantRef) -> TenantOutcome:
        return await fleet.start_child(tenant, workflow_id(fleet.kind, tenant.id, cursor.started_at))

    cursor, done = await fan_out_catalog(
        statuses=fleet.statuses,
        cursor=cursor,
        page_size=req.page_size,
        history_limit=req.history_limit,
        concurrency=req.concurrency,
        one=one,
        progress=progress,
    )
    return finish_fleet(req, cursor, done)
