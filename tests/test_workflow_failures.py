"""Workflows fail, never hang: a bug in workflow code fails the run with a readable error (the worker's
workflow_failure_exception_types), a bad input fails it at once with InvalidInput, and a non-determinism error
still only fails the task, so a fixed worker continues the run."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from tenancy.contracts.fleet import DrillFleetInput, FleetBackupInput, PruneInput
from tenancy.contracts.maintenance import MaintainTenantInput
from tenancy.contracts.restore import RestoreTenantInput
from tenancy.errors import failure_message, failure_type
from worker import WORKFLOW_BUGS, build_worker
from workflows.backup_fleet import BackupAllTenantsWorkflow
from workflows.drill import DrillAllTenantsWorkflow
from workflows.maintain_tenant import MaintainTenantWorkflow
from workflows.restore_tenant import RestoreTenantWorkflow
from workflows.retention import PruneTenantWorkflow


@workflow.defn(sandboxed=False)
class BuggyWorkflow:
    """Test only: the kinds of bug that used to fail the workflow task forever."""

    @workflow.run
    async def run(self, bug: str) -> str:
        await workflow.sleep(timedelta(milliseconds=1))  # past the first task, as the swap of a restore is
        if bug == "zero":
            return str(1 / len(bug.replace("zero", "")))
        if bug == "overflow":
            return str(workflow.now() + timedelta(days=3_000_000))
        assert bug == "fine", "an assertion in workflow code"
        return bug


@workflow.defn(name="ChangedUnderneath", sandboxed=False)
class ChangedUnderneathV1:
    """Test only: the deployed code (v1), and the code a broken deploy replaced it with (v2)."""

    def __init__(self) -> None:
        self.go = False
        self.waiting = False

    @workflow.signal
    def proceed(self) -> None:
        self.go = True

    @workflow.query
    def is_waiting(self) -> bool:
        return self.waiting

    @workflow.run
    async def run(self) -> str:
        await workflow.sleep(timedelta(milliseconds=1))
        self.waiting = True
        await workflow.wait_condition(lambda: self.go)
        return "finished by the fixed worker"


@workflow.defn(name="ChangedUnderneath", sandboxed=False)
class ChangedUnderneathV2(ChangedUnderneathV1):
    @workflow.run
    async def run(self) -> str:
        # A different first command than the recorded one: non-deterministic.
        await workflow.execute_child_workflow("NoSuchWorkflow", id=f"never-{workflow.info().workflow_id}")
        return "never"


def test_a_nondeterminism_error_is_not_among_the_types_that_fail_the_run():
    from temporalio.worker.workflow_sandbox._restrictions import RestrictedWorkflowAccessError

    for kind in (workflow.NondeterminismError, RestrictedWorkflowAccessError):
        assert not any(issubclass(kind, listed) for listed in WORKFLOW_BUGS)
    for bug in (ZeroDivisionError, OverflowError, AssertionError, KeyError, TypeError, ValueError):
        assert any(issubclass(bug, listed) for listed in WORKFLOW_BUGS)


@pytest.mark.parametrize(
    ("bug", "kind", "message"),
    [
        ("zero", "ZeroDivisionError", "division by zero"),
        ("overflow", "OverflowError", "out of range"),
        ("assert", "AssertionError", "an assertion in workflow code"),
    ],
)
async def test_a_bug_in_workflow_code_fails_the_run_promptly_with_its_message(
    temporal_env, settings, bug, kind, message
):
    queue = f"tq-{uuid.uuid4().hex[:10]}"
    async with build_worker(temporal_env.client, settings, queue, workflows=[BuggyWorkflow]):
        started = time.monotonic()
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(
                temporal_env.client.execute_workflow(
                    BuggyWorkflow.run, bug, id=f"buggy-{uuid.uuid4().hex[:8]}", task_queue=queue
                ),
                15,
            )
        elapsed = time.monotonic() - started
    assert failure_type(failed.value) == kind
    assert message in failure_message(failed.value)
    assert elapsed < 5


async def test_a_nondeterminism_error_fails_only_the_task_and_a_fixed_worker_continues_the_run(temporal_env, settings):
    client = temporal_env.client
    queue = f"tq-{uuid.uuid4().hex[:10]}"
    # Not keeping the run in its cache (no sticky queue), so the next task goes at once to the next worker.
    first = Worker(client, task_queue=queue, workflows=[ChangedUnderneathV1], max_cached_workflows=0)
    async with first:
        handle = await client.start_workflow(
            ChangedUnderneathV1.run,
            id=f"changed-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
            task_timeout=timedelta(seconds=2),  # a task handed to a worker as it stops comes back sooner
        )
        for _ in range(100):
            if await handle.query(ChangedUnderneathV1.is_waiting):
                break
            await asyncio.sleep(0.1)

    async with build_worker(client, settings, queue, workflows=[ChangedUnderneathV2]):
        await handle.signal(ChangedUnderneathV1.proceed)
        causes: list[int] = []
        for _ in range(300):
            history = await handle.fetch_history()
            causes = [
                e.workflow_task_failed_event_attributes.cause
                for e in history.events
                if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
            ]
            if causes:
                break
            await asyncio.sleep(0.1)
    assert causes == [WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_NON_DETERMINISTIC_ERROR]
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING  # not failed: waiting for a fix

    async with build_worker(client, settings, queue, workflows=[ChangedUnderneathV1]):
        assert await asyncio.wait_for(handle.result(), 30) == "finished by the fixed worker"


@pytest.mark.parametrize(
    ("run", "arg", "message"),
    [
        (
            RestoreTenantWorkflow.run,
            RestoreTenantInput(tenant_id="acme", keep_previous_seconds=10**12),
            "--keep-previous",
        ),
        (MaintainTenantWorkflow.run, MaintainTenantInput(tenant_id="acme", tasks=["vacuum"], days=10**9), "--days"),
        (PruneTenantWorkflow.run, PruneInput(tenant_id=None, dry_run=False), "its id is missing"),
        (DrillAllTenantsWorkflow.run, DrillFleetInput(every_weeks=0), "--every-weeks"),
        (BackupAllTenantsWorkflow.run, FleetBackupInput(concurrency=0), "--concurrency"),
    ],
    ids=["restore", "maintenance", "prune", "drill-fleet", "backup-fleet"],
)
async def test_an_input_out_of_bounds_fails_the_run_at_once(temporal_env, task_queue, run, arg, message):
    started = time.monotonic()
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(
            temporal_env.client.execute_workflow(run, arg, id=f"bounds-{uuid.uuid4().hex[:8]}", task_queue=task_queue),
            15,
        )
    assert failure_type(failed.value) == "InvalidInput"
    assert message in failure_message(failed.value)
    assert isinstance(failed.value.cause, ApplicationError) and failed.value.cause.non_retryable
    assert time.monotonic() - started < 5
