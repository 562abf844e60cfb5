"""The tenant's operation lock, taken around every mutating operation (backup now; restore and maintenance)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tenancy.errors import TENANT_BUSY, fail
    from tenancy.messages.locks import LockRequest
    from workflows import steps

POLL = timedelta(seconds=5)


@asynccontextmanager
async def tenant_lock(
    tenant_id: str, operation: str, wait_seconds: int, held_by_parent: bool = False, shared: bool = False
) -> AsyncIterator[None]:
    """Hold the tenant's lock for the block. Waits up to `wait_seconds` for another run to finish, then fails
    with a non-retryable TenantBusy naming the run that holds it.

    `shared` (drills): held together with other drills and with backups; other operations wait for it.

    A child run of an operation that holds the lock (the final backup of a deprovisioning, the backup before a
    maintenance) checks that its parent holds it and neither takes nor releases it.

    The lock names this run's namespace and carries a lease, renewed by the run's heartbeating activities (and its
    children's, under its lock) and by every take: another run takes it over only once this one is seen ended in
    its namespace, or cannot be seen and its lease has run out (tenancy/locks.py).
    """
    info = workflow.info()
    if held_by_parent and info.parent is not None:
        request = LockRequest(
            tenant_id=tenant_id, operation=operation, workflow_id=info.parent.workflow_id, run_id=info.parent.run_id
        )
        outcome = await steps.acquire_tenant_lock(request)
        if not outcome.acquired:
            raise fail(TENANT_BUSY, f"tenant {tenant_id!r} is busy: {outcome.holder_workflow_id} holds it")
        yield
        return
    request = LockRequest(
        tenant_id=tenant_id, operation=operation, workflow_id=info.workflow_id, run_id=info.run_id, shared=shared
    )
    waited = timedelta(0)
    while True:
        outcome = await steps.acquire_tenant_lock(request)
        if outcome.acquired:
            break
        if waited >= timedelta(seconds=wait_seconds):
            held_in = f" (namespace {outcome.holder_namespace})" if outcome.holder_namespace else ""
            raise fail(
                TENANT_BUSY,
                f"tenant {tenant_id!r} is busy: {outcome.holder_operation} run {outcome.holder_workflow_id}{held_in} "
                "is in progress; try again when it has finished",
            )
        await workflow.sleep(POLL)
        waited += POLL
    try:
        yield
    finally:
        await steps.release_tenant_lock(request)
