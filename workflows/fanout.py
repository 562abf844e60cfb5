"""Fan a per-tenant child workflow out over many tenants, a few at a time, each failure kept to its tenant."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from tenancy.errors import failure_message
    from tenancy.models import TenantOutcome


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
    return TenantOutcome(tenant_id=tenant_id, ok=True, workflow_id=child_id, **describe(result))


async def fan_out(
    tenant_ids: list[str],
    concurrency: int,
    one: Callable[[str], Awaitable[TenantOutcome]],
    progress: FanOutProgress,
) -> list[TenantOutcome]:
    progress.total = len(tenant_ids)
    slots = asyncio.Semaphore(concurrency)

    async def guarded(tenant_id: str) -> TenantOutcome:
        async with slots:
            outcome = await one(tenant_id)
        progress.done += 1
        progress.failed += not outcome.ok
        return outcome

    return list(await asyncio.gather(*(guarded(t) for t in tenant_ids)))
