"""Never block the loop: while activities wait on a slow backup storage, another activity on the same worker keeps
heartbeating on time (a blocked event loop would stop every activity's heartbeats, and let no cancellation in).
Calls to the storage are regular activities, never local ones (those run inside the run's workflow task)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, Worker

from activities.backup import BackupActivities
from activities.health import HealthActivities
from activities.infra.storage import LocalStorage
from activities.restore import RestoreActivities
from tenancy.contracts.backup import DumpResult
from tenancy.contracts.fleet import PruneInput
from tenancy.messages.backup import BackupNameRequest, BackupSelection
from tenancy.messages.health import HealthPageRequest
from tenancy.naming import backup_name
from worker import HEARTBEAT_THROTTLE, activities_of
from workflows.registry import WORKFLOWS
from workflows.retention import PruneTenantWorkflow
from workflows.steps import STORAGE_NOT_LOCAL

SLOW = 3.0  # seconds each storage call of the tenant under test takes
HEARTBEAT_TIMEOUT = timedelta(seconds=2)  # a loop blocked for SLOW seconds misses it


@activity.defn
async def heartbeat_steadily(seconds: float) -> float:
    """Heartbeat every 0.1 s for `seconds`; returns the longest wait between two heartbeats."""
    loop = asyncio.get_running_loop()
    last = loop.time()
    end, longest = last + seconds, 0.0
    while last < end:
        activity.heartbeat()
        await asyncio.sleep(0.1)
        longest, last = max(longest, loop.time() - last), loop.time()
    return longest


@workflow.defn(sandboxed=False)
class StorageBesideHeartbeats:
    """Activities that wait on the storage, all at once, beside one that heartbeats; the longest heartbeat gap."""

    @workflow.run
    async def run(self, tenant_id: str) -> float:
        once = {"start_to_close_timeout": timedelta(seconds=30), "retry_policy": RetryPolicy(maximum_attempts=1)}
        heartbeats = workflow.start_activity(
            heartbeat_steadily, SLOW + 1.5, heartbeat_timeout=HEARTBEAT_TIMEOUT, **once
        )
        missing = backup_name(tenant_id, datetime(2020, 1, 1, tzinfo=UTC), "gzip")
        dump = DumpResult(
            tenant_id=tenant_id,
            database_name="none",
            backup_name=missing,
            compression="gzip",
            compression_level=6,
            size_bytes=0,
            sha256="",
            server_version="15",
            tool_version="15",
            started_at=workflow.now(),
            finished_at=workflow.now(),
            row_counts={},
        )
        waiting = [
            workflow.execute_activity_method(
                BackupActivities.name_backup, BackupNameRequest(tenant_id=tenant_id, compression="gzip"), **once
            ),
            workflow.execute_activity_method(BackupActivities.verify_backup, dump, **once),
            workflow.execute_activity_method(
                RestoreActivities.select_backup, BackupSelection(tenant_id=tenant_id, backup_name=missing), **once
            ),
            # The page of tenants that starts with this one (ids that begin with it sort right after it).
            workflow.execute_activity_method(
                HealthActivities.check_health_page, HealthPageRequest(after=tenant_id[:-1], limit=1), **once
            ),
        ]
        await asyncio.gather(*waiting, return_exceptions=True)  # missing backups fail: only the wait matters
        return await heartbeats


async def test_activities_waiting_on_storage_leave_other_activities_heartbeating(
    temporal_env, settings, make_tenant, monkeypatch
):
    tenant = await make_tenant("nb", entries=0)

    def slowed(method):
        def call(self, key: str, *args):
            if f"/{tenant.id}/" in key:
                time.sleep(SLOW)
            return method(self, key, *args)

        return call

    for name in ("_size", "_get", "_usage"):  # exists, size, read_manifest, usage
        monkeypatch.setattr(LocalStorage, name, slowed(getattr(LocalStorage, name)))

    client = temporal_env.client
    queue = f"tq-{uuid.uuid4().hex[:10]}"
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[StorageBesideHeartbeats],
        activities=[
            heartbeat_steadily,
            *activities_of(BackupActivities(settings), RestoreActivities(settings), HealthActivities(settings, client)),
        ],
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        default_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
    )
    async with worker:
        started = time.monotonic()
        longest_gap = await client.execute_workflow(
            StorageBesideHeartbeats.run, tenant.id, id=f"nonblocking-{uuid.uuid4().hex[:6]}", task_queue=queue
        )
        took = time.monotonic() - started
    assert longest_gap < 1.0, f"heartbeats stalled for {longest_gap:.1f} s while the storage was slow"
    assert took < 3 * SLOW  # the slow calls overlapped: none waited for another


async def test_storage_activities_run_as_regular_activities(temporal_env, task_queue, make_tenant):
    tenant = await make_tenant("nb", entries=0)
    handle = await temporal_env.client.start_workflow(
        PruneTenantWorkflow.run,
        PruneInput(tenant_id=tenant.id, dry_run=True),
        id=f"prune-{uuid.uuid4().hex[:6]}",
        task_queue=task_queue,
    )
    assert (await handle.result()).decisions == []
    events = [e async for e in handle.fetch_history_events()]
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    markers = [e.marker_recorded_event_attributes for e in events if e.HasField("marker_recorded_event_attributes")]
    assert scheduled == ["apply_retention"]
    assert [m.marker_name for m in markers] == ["core_patch", "core_patch"]  # no local activity
    # Behind a patch: runs recorded before still replay their local activity.
    assert any(STORAGE_NOT_LOCAL.encode() in m.details["patch-data"].payloads[0].data for m in markers)
    await Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter).replay_workflow(
        await handle.fetch_history()
    )
