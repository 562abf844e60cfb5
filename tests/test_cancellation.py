"""Cancellation and progress are prompt: a cancel reaches a running dump within about a second whatever its length,
the run ends CANCELED with nothing left behind, heartbeats (what `tenants` shows as progress) reach the server
every second, and Ctrl-C while following a run leaves the run going with one line saying how to cancel it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
import uuid

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import CancelledError

from starter.progress import _heartbeat_details, _render
from tenancy.contracts.backup import BackupTenantInput
from tests.blocking import partial_files, table_locked
from tests.cli import cli_environment
from workflows.backup_tenant import BackupTenantWorkflow

HOLD = 5.0  # seconds the dump is held on a real lock; a cancel that never arrives lets it finish (a failure)


async def dump_running(client, handle) -> None:
    """Until the run's dump activity has started (and is waiting on the lock)."""
    for _ in range(300):
        description = await handle.describe()
        if any(p.activity_type.name == "dump_database" for p in description.raw_description.pending_activities):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the dump never started")


@contextlib.contextmanager
def held_for(settings, database: str, seconds: float):
    """The tenant's time_entries locked so pg_dump waits; released after `seconds` (or on leaving)."""
    with table_locked(settings.effective_database_url, database) as conn:
        release = asyncio.get_running_loop().call_later(seconds, conn.rollback)  # the lock goes
        try:
            yield
        finally:
            release.cancel()


async def test_a_cancel_reaches_a_held_dump_and_the_run_ends_canceled_leaving_nothing(
    temporal_env, task_queue, settings, make_tenant, backups_of
):
    tenant = await make_tenant("cancel", entries=20)
    client = temporal_env.client
    folder = settings.storage_root / "tenants" / tenant.id
    with held_for(settings, tenant.database_name, HOLD):
        handle = await client.start_workflow(
            BackupTenantWorkflow.run,
            BackupTenantInput(tenant_id=tenant.id),
            id=f"backup-{tenant.id}-{uuid.uuid4().hex[:6]}",
            task_queue=task_queue,
        )
        await dump_running(client, handle)
        await asyncio.sleep(1.5)  # well into the dump, and past the worker's first heartbeat
        requested = time.monotonic()
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as ended:
            await asyncio.wait_for(handle.result(), 30)
        latency = time.monotonic() - requested
    print(f"cancel latency: {latency:.2f} s")
    assert isinstance(ended.value.cause, CancelledError)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert latency < 3, f"the cancel took {latency:.1f} s to end the run"
    assert backups_of(tenant.id) == []  # no backup, verified or not
    assert partial_files(folder) == []  # and no partial file


async def test_progress_of_a_dump_reaches_the_server_every_second(temporal_env, task_queue, settings, make_tenant):
    """`tenants` reads the dump's heartbeat details from the server: they are never more than ~1 s old, so bytes
    written show up within 2 s (throttled to 80 % of the 20 s heartbeat timeout, they stayed at 0 B for 16 s)."""
    tenant = await make_tenant("progress", entries=20)
    client = temporal_env.client
    with held_for(settings, tenant.database_name, HOLD):
        handle = await client.start_workflow(
            BackupTenantWorkflow.run,
            BackupTenantInput(tenant_id=tenant.id),
            id=f"backup-{tenant.id}-{uuid.uuid4().hex[:6]}",
            task_queue=task_queue,
        )
        await dump_running(client, handle)
        beats = set()
        oldest = 0.0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            description = await handle.describe()
            dump = next(
                p for p in description.raw_description.pending_activities if p.activity_type.name == "dump_database"
            )
            if dump.HasField("last_heartbeat_time"):
                beat = dump.last_heartbeat_time.ToDatetime().timestamp()
                beats.add(beat)
                server_now = time.time()
                oldest = max(oldest, server_now - beat)
            await asyncio.sleep(0.2)
        line = _render(await handle.query("progress"), await _heartbeat_details(client, handle))
        await handle.cancel()
        with contextlib.suppress(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 30)
    assert len(beats) >= 3, beats  # a new heartbeat about every second over 3 s
    assert oldest < 2.0, f"the progress shown was {oldest:.1f} s old"
    assert line.startswith("dumping") and "B written" in line


async def test_ctrl_c_while_following_leaves_the_run_going_and_says_how_to_cancel_it(
    temporal_env, task_queue, settings, make_tenant, backups_of
):
    tenant = await make_tenant("ctrlc", entries=20)
    client = temporal_env.client
    with held_for(settings, tenant.database_name, 30):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "starter.cli",
            "backup",
            "--tenant",
            tenant.id,
            env=cli_environment(temporal_env, settings, task_queue),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            started = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert started.startswith("started "), started
            workflow_id = started.split()[1]
            handle = client.get_workflow_handle(workflow_id)
            await dump_running(client, handle)
            await asyncio.sleep(1)  # following, with its progress line shown
            proc.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(proc.wait(), 15)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        stderr = (await proc.stderr.read()).decode()

        assert code == 130
        assert "Traceback" not in stderr
        said = [line for line in stderr.splitlines() if "goes on in the worker" in line]
        assert len(said) == 1 and said[0] == stderr.strip().splitlines()[-1], stderr
        assert f"temporal workflow cancel --workflow-id {workflow_id}" in said[0]
        # The run goes on; cancelled as the line says, it ends CANCELED.
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 30)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert backups_of(tenant.id) == []
