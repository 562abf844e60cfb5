"""Heartbeats and context, done once: the heartbeater beats at a fraction of the activity's heartbeat timeout and its
typed details reach both a retried attempt and the `tenants` progress line; every log line inside an activity
carries its tenant, workflow, run, activity and attempt; the Web UI shows a run's phase; and a worker that shuts
down stops a dump cleanly, for another worker to start over."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import structlog
from temporalio import activity, workflow
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.heartbeat import Heartbeater, beat_interval, recorded_details
from activities.infra.interceptors import LogContextAndMetrics
from starter.progress import _heartbeat_details, _render
from tenancy.contracts.backup import BackupTenantInput
from tenancy.contracts.provision import WelcomeMail
from tenancy.errors import WORKER_SHUTDOWN
from tenancy.messages.progress import HeartbeatDetails
from tests.blocking import partial_files, table_locked
from worker import GRACEFUL_SHUTDOWN, build_worker
from workflows.backup_tenant import BackupTenantWorkflow
from workflows.notify import SendWelcomeEmailWorkflow


@contextlib.contextmanager
def log_lines() -> Iterator[list[dict[str, Any]]]:
    """Every log line (structlog's and the standard library's) emitted meanwhile, as the JSON the worker writes."""
    lines: list[dict[str, Any]] = []
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.contextvars.merge_contextvars, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(default=str),
        ],
    )

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(formatter.format(record)))

    root = logging.getLogger()
    handler, level = Keep(), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_the_beat_interval_is_a_third_of_the_heartbeat_timeout_within_bounds():
    assert beat_interval(timedelta(seconds=0.6)) == pytest.approx(0.2)
    assert beat_interval(timedelta(seconds=0.15)) == 0.1  # floor
    assert beat_interval(timedelta(seconds=10)) == 0.5  # ceiling: a cancel still arrives within about a second
    assert beat_interval(None) == 0.5


async def test_the_heartbeater_beats_at_a_third_of_the_activitys_heartbeat_timeout():
    async def long_activity() -> None:
        async with Heartbeater(lambda: HeartbeatDetails(bytes_written=1)):
            await asyncio.sleep(0.9)

    def beats_with(timeout: timedelta) -> tuple[ActivityEnvironment, list[Any]]:
        env = ActivityEnvironment()
        env.info = dataclasses.replace(env.info, heartbeat_timeout=timeout)
        beats: list[Any] = []
        env.on_heartbeat = lambda *details: beats.append(details)
        return env, beats

    short_env, short_beats = beats_with(timedelta(seconds=0.45))  # every 0.15 s
    long_env, long_beats = beats_with(timedelta(seconds=20))  # every 0.5 s
    await asyncio.gather(short_env.run(long_activity), long_env.run(long_activity))
    assert 5 <= len(short_beats) <= 8, short_beats
    assert len(long_beats) == 2, long_beats
    assert short_beats[0] == ({"bytes_written": 1},)  # only what is set: the dict earlier releases read


def test_details_recorded_by_the_previous_release_are_read():
    """A retried attempt reads what a worker of the previous release heartbeated (plain dicts), and what it cannot
    trust is dropped (starting over is only slower)."""
    assert HeartbeatDetails.from_heartbeat([{"backup_name": "b.dump", "bytes_written": 5}]).backup_name == "b.dump"
    old_cleanup = HeartbeatDetails.from_heartbeat([{"batches": 3, "next_block": {"per_table": 12, "r": {"h": 4}}}])
    assert old_cleanup.batches == 3 and old_cleanup.next_block == {"r": {"h": 4}}
    table = HeartbeatDetails.from_heartbeat([{"after": [False, "public", "a"], "tables": 1, "timed_out": {}}])
    assert table.after == [False, "public", "a"] and table.tables == 1
    assert HeartbeatDetails.from_heartbeat([{"bytes_written": "lots"}]) == HeartbeatDetails()
    assert HeartbeatDetails.from_heartbeat([]) == HeartbeatDetails()
    assert HeartbeatDetails.from_heartbeat(None) == HeartbeatDetails()


# A test-only activity and workflow: the first attempt heartbeats progress and fails; the second reads it back,
# shows it while it runs, and logs.
second_attempt_may_end = asyncio.Event()


@activity.defn
async def copy_in_two_attempts(req: WelcomeMail) -> dict[str, Any]:
    if activity.info().attempt == 1:
        async with Heartbeater(lambda: HeartbeatDetails(backup_name="b.dump", bytes_written=3 * 1024 * 1024)):
            await asyncio.sleep(0.3)
        raise ApplicationError("the first attempt dies")
    found = recorded_details()
    structlog.get_logger("tests.probe").info("resuming", at=found.bytes_written)  # bound to nothing
    async with Heartbeater(lambda: found):
        await second_attempt_may_end.wait()
    return found.model_dump(exclude_none=True)


@workflow.defn(sandboxed=False)
class CopyInTwoAttemptsWorkflow:
    @workflow.run
    async def run(self, req: WelcomeMail) -> dict[str, Any]:
        workflow.logger.info("copy started")
        return await workflow.execute_activity(
            copy_in_two_attempts,
            req,
            start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=timedelta(seconds=5),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=2),
        )


async def test_typed_details_reach_the_retried_attempt_and_the_progress_line_and_logs_carry_the_context(
    temporal_env,
):
    client = temporal_env.client
    assert client.data_converter is pydantic_data_converter
    queue = f"tq-{uuid.uuid4().hex[:10]}"
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    second_attempt_may_end.clear()
    with log_lines() as lines:
        async with Worker(
            client,
            task_queue=queue,
            workflows=[CopyInTwoAttemptsWorkflow],
            activities=[copy_in_two_attempts],
            interceptors=[LogContextAndMetrics()],
        ):
            handle = await client.start_workflow(
                CopyInTwoAttemptsWorkflow.run,
                WelcomeMail(tenant_id=tenant, tenant_name="Acme", owner_email="a@example.com"),
                id=f"copy-{tenant}",
                task_queue=queue,
            )
            line = ""
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and "written" not in line:
                description = await handle.describe()
                attempts = [p.attempt for p in description.raw_description.pending_activities]
                if attempts == [2]:
                    line = _render({"phase": "dumping"}, await _heartbeat_details(client, handle))
                await asyncio.sleep(0.1)
            second_attempt_may_end.set()
            result = await handle.result()
    assert result == {"backup_name": "b.dump", "bytes_written": 3 * 1024 * 1024}
    assert line == "dumping — 3.0 MiB written", line

    resuming = next(line for line in lines if line.get("event") == "resuming")
    assert resuming["tenant_id"] == tenant
    assert resuming["workflow_id"] == handle.id
    assert resuming["run_id"] == handle.result_run_id
    assert resuming["activity"] == "copy_in_two_attempts"
    assert resuming["attempt"] == 2
    started = next(line for line in lines if str(line.get("event", "")).startswith("copy started"))
    assert started["tenant_id"] == tenant
    assert started["workflow"] == "CopyInTwoAttemptsWorkflow"
    assert started["run_id"] == handle.result_run_id


async def test_the_worker_binds_the_context_of_its_real_activities(temporal_env, task_queue, settings):
    """The worker's own registration: a line that binds only the tenant and workflow gets the rest."""
    assert not settings.smtp_host
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    with log_lines() as lines:
        sent = await temporal_env.client.execute_workflow(
            SendWelcomeEmailWorkflow.run,
            WelcomeMail(tenant_id=tenant, tenant_name="Acme", owner_email="a@example.com"),
            id=f"welcome-{tenant}",
            task_queue=task_queue,
        )
    assert sent is False
    line = next(line for line in lines if str(line.get("event", "")).startswith("no SMTP server configured"))
    assert line["tenant_id"] == tenant
    assert line["workflow_id"] == f"welcome-{tenant}"
    assert line["run_id"]
    assert line["activity"] == "send_welcome_email"
    assert line["attempt"] == 1


async def dump_running(handle) -> None:
    for _ in range(300):
        description = await handle.describe()
        if any(p.activity_type.name == "dump_database" for p in description.raw_description.pending_activities):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the dump never started")


async def test_the_web_ui_shows_the_phase_of_a_running_backup(temporal_env, task_queue, settings, make_tenant):
    tenant = await make_tenant("phase", entries=20)
    client = temporal_env.client
    with table_locked(settings.effective_database_url, tenant.database_name):
        handle = await client.start_workflow(
            BackupTenantWorkflow.run,
            BackupTenantInput(tenant_id=tenant.id),
            id=f"backup-{tenant.id}-{uuid.uuid4().hex[:6]}",
            task_queue=task_queue,
        )
        await dump_running(handle)
        # What the Web UI asks a run for its current details.
        metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        await handle.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(handle.result(), 30)
    assert metadata.current_details == "dumping"


async def test_a_worker_shutting_down_stops_its_dump_cleanly_for_another_worker(
    temporal_env, settings, make_tenant, backups_of
):
    tenant = await make_tenant("shutdown", entries=20)
    client = temporal_env.client
    queue = f"tq-{uuid.uuid4().hex[:10]}"
    folder = settings.storage_root / "tenants" / tenant.id
    with table_locked(settings.effective_database_url, tenant.database_name):
        worker = build_worker(client, settings, queue)
        running = asyncio.create_task(worker.run())
        try:
            handle = await client.start_workflow(
                BackupTenantWorkflow.run,
                BackupTenantInput(tenant_id=tenant.id),
                id=f"backup-{tenant.id}-{uuid.uuid4().hex[:6]}",
                task_queue=queue,
            )
            await dump_running(handle)
            await asyncio.sleep(0.5)  # pg_dump started, its partial file open
            assert partial_files(folder) != []
            asked = time.monotonic()
            await worker.shutdown()
            took = time.monotonic() - asked
            description = await handle.describe()
            await handle.terminate("test over")
        finally:
            if not running.done():
                await worker.shutdown()
            await running
    dump = next(p for p in description.raw_description.pending_activities if p.activity_type.name == "dump_database")
    assert took < GRACEFUL_SHUTDOWN.total_seconds() / 2, f"the worker took {took:.1f} s to stop"
    assert dump.last_failure.application_failure_info.type == WORKER_SHUTDOWN
    assert dump.attempt == 2 and dump.state == PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED
    assert partial_files(folder) == []
    assert backups_of(tenant.id) == []
