"""Fleet runs stay replayable when the command line's progress query arrives during their first workflow task.

The per-tenant child ids carry the time the fleet run started. Taken from workflow.now() in the first task, that
time differed on replay when a query had reached the worker before the task started (the worker then runs the
workflow with the start event's time): TMPRL1100 on the child ids, and a run that could no longer be queried, nor
continued by another worker. Each fleet type is started with no worker polling yet while a task queries it in a
tight loop, then replayed; the dev server holds such a query until the first task is done, so the history is
also replayed with its tasks' start times moved, which is what replay saw in the runs that broke.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory, WorkflowQueryFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.worker import Replayer

from tenancy.contracts.fleet import DrillFleetInput, FleetBackupInput, FleetInput, FleetMaintenanceInput, PruneInput
from worker import build_worker
from workflows.backup_fleet import BackupAllTenantsWorkflow
from workflows.drill import DrillAllTenantsWorkflow
from workflows.maintain_tenant import MaintainAllTenantsWorkflow
from workflows.migrate import MigrateAllTenantsWorkflow
from workflows.registry import WORKFLOWS
from workflows.retention import PruneAllTenantsWorkflow

SMALL = {"concurrency": 2, "page_size": 2}
FLEETS = {
    "backup": (BackupAllTenantsWorkflow.run, FleetBackupInput(keep=2, **SMALL)),
    "maintenance": (MaintainAllTenantsWorkflow.run, FleetMaintenanceInput(tasks=["analyze"], **SMALL)),
    "migrate": (MigrateAllTenantsWorkflow.run, FleetInput(**SMALL)),
    "prune": (PruneAllTenantsWorkflow.run, PruneInput(keep=3, dry_run=True, **SMALL)),
    "drill": (DrillAllTenantsWorkflow.run, DrillFleetInput(**SMALL)),
}


async def query_until_done(client: Client, workflow_id: str, done: asyncio.Event) -> int:
    """Query `progress` back to back until the run ends; the number of answers."""
    answered = 0
    handle = client.get_workflow_handle(workflow_id)
    while not done.is_set():
        with contextlib.suppress(RPCError, WorkflowQueryFailedError):
            await asyncio.wait_for(handle.query("progress"), 10)
            answered += 1
    return answered


async def histories_of(client: Client, workflow_id: str, first_run_id: str) -> list[WorkflowHistory]:
    """Every run of the fleet run, following continue-as-new from the first."""
    histories, run_id = [], first_run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        histories.append(history)
        last = history.events[-1]
        continued = last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
        run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id if continued else ""
    return histories


def tasks_started_later(history: WorkflowHistory, by_ms: int = 27) -> WorkflowHistory:
    """The same history with every workflow task started `by_ms` later: what a worker sees on replay when the
    original run's first task had been handed the time of the start event (a query before the task started)."""
    events = []
    for event in history.events:
        copy = HistoryEvent()
        copy.CopyFrom(event)
        if copy.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            copy.event_time.FromNanoseconds(copy.event_time.ToNanoseconds() + by_ms * 1_000_000)
        events.append(copy)
    return WorkflowHistory(history.workflow_id, events)


@pytest.mark.one_server  # replay of the fleet engine's commands: the same on any server
@pytest.mark.parametrize("fleet", list(FLEETS))
async def test_a_fleet_run_queried_from_its_first_task_replays_cleanly(
    fleet, temporal_env, settings, make_tenant, backups_of
):
    client = temporal_env.client
    for _ in range(2):
        await make_tenant("fr", entries=20)
    run, arg = FLEETS[fleet]
    queue = f"tq-{uuid.uuid4().hex[:10]}"
    fleet_id = f"{fleet}-all-{uuid.uuid4().hex[:8]}"

    # Started before any worker polls its queue, queried from that moment: the first task comes with a query.
    handle = await client.start_workflow(run, arg, id=fleet_id, task_queue=queue)
    done = asyncio.Event()
    querying = asyncio.create_task(query_until_done(client, fleet_id, done))
    await asyncio.sleep(0.5)
    async with build_worker(client, settings, queue):
        latest = client.get_workflow_handle_for(run, fleet_id)
        result: Any = None
        # Other tests' tenants are in the catalog too: a child failing for them is fine, the replay is the point.
        with contextlib.suppress(WorkflowFailureError):
            result = await asyncio.wait_for(latest.result(), 60)
        done.set()
        answered = await querying
        assert (await latest.query("progress"))["total"] >= 2  # still answers once finished
    assert answered > 0  # queried while it ran, not only once it was over

    histories = await histories_of(client, fleet_id, handle.first_execution_run_id or handle.run_id)
    first = histories[0]
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    for history in [*histories, *map(tasks_started_later, histories)]:
        replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert replayed.replay_failure is None, f"{fleet}: {replayed.replay_failure}"
    # The children's ids derive from the fleet's own workflow id, never from the time of one of its tasks.
    children = [
        e.start_child_workflow_execution_initiated_event_attributes.workflow_id
        for e in first.events
        if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
    ]
    assert children and all(child.endswith(f"@{fleet_id}") for child in children), (fleet_id, children)
    assert result is None or result.total >= 2
