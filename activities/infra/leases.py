"""Renewing the leases of tenant locks from the holders' heartbeats (why and how long: tenancy/locks.py).

Each worker has one LockLeases, made available to its activities by the LockLeaseRenewal interceptor; the shared
Heartbeater (activities/heartbeat.py) asks it, at every beat, to renew the leases of the activity's run, which it
does at most every quarter of the lease per run, in the background: a renewal that fails is logged, and never fails
or delays the activity (three in a row may fail before the lease runs out).
"""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from activities.infra.catalog import Catalog
from tenancy.locks import renewal_due
from tenancy.log import get_logger

# Runs remembered per worker (last renewal, parent) before the oldest are forgotten.
_REMEMBERED_RUNS = 10_000


class LockLeases:
    def __init__(self, catalog: Catalog, client: Client, lease_seconds: int) -> None:
        self.catalog = catalog
        self.client = client
        self.lease = timedelta(seconds=lease_seconds)
        self._renewed: dict[str, float] = {}  # run id → when (monotonic) its renewal last started here
        self._parents: dict[str, str | None] = {}  # run id → its parent's run id
        self._tasks: set[asyncio.Task[None]] = set()

    def renew_if_due(self, info: activity.Info) -> None:
        """Start renewing the leases of the activity's run, when a quarter of the lease has passed since the last
        renewal this worker made for it."""
        namespace, workflow_id, run_id = info.workflow_namespace, info.workflow_id, info.workflow_run_id
        if namespace is None or workflow_id is None or run_id is None:  # an activity no workflow runs holds nothing
            return
        now = time.monotonic()
        if not renewal_due(self._renewed.get(run_id), now, self.lease.total_seconds()):
            return
        if len(self._renewed) >= _REMEMBERED_RUNS:
            self._renewed.clear()
        self._renewed[run_id] = now
        task = asyncio.create_task(self._renew(namespace, workflow_id, run_id))
        self._tasks.add(task)  # held until done: the event loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def _renew(self, namespace: str, workflow_id: str, run_id: str) -> None:
        try:
            if await self.catalog.renew_lock_leases(namespace, run_id, self.lease):
                return
            # No lock of its own: a child run working under its parent's lock (the backup of a deprovisioning or
            # of a maintenance run) keeps its parent's lease alive.
            parent = await self._parent(workflow_id, run_id)
            if parent is not None:
                await self.catalog.renew_lock_leases(namespace, parent, self.lease)
        except Exception as exc:  # the next one is due in a quarter of the lease; the work goes on
            get_logger("activities.leases", workflow_id=workflow_id, run_id=run_id).warning(
                "could not renew the lease of a tenant lock", error=str(exc)
            )

    async def _parent(self, workflow_id: str, run_id: str) -> str | None:
        if run_id not in self._parents:
            description = await self.client.get_workflow_handle(workflow_id, run_id=run_id).describe()
            if len(self._parents) >= _REMEMBERED_RUNS:
                self._parents.clear()
            self._parents[run_id] = description.parent_run_id
        return self._parents[run_id]


_CURRENT: ContextVar[LockLeases | None] = ContextVar("lock_leases", default=None)


def renew_lock_leases() -> None:
    """From an activity's heartbeat: renew its run's lock leases if due (nothing outside a worker's activity)."""
    leases = _CURRENT.get()
    if leases is not None:
        leases.renew_if_due(activity.info())


class LockLeaseRenewal(Interceptor):
    """Makes the worker's LockLeases available to the Heartbeater of every activity it runs."""

    def __init__(self, leases: LockLeases) -> None:
        self.leases = leases

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _WithLeases(next, self.leases)


class _WithLeases(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, leases: LockLeases) -> None:
        super().__init__(next)
        self.leases = leases

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        token = _CURRENT.set(self.leases)
        try:
            return await self.next.execute_activity(input)
        finally:
            _CURRENT.reset(token)
