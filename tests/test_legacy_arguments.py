"""Activities take one model now; attempts the previous release scheduled, still in flight across an upgrade, carry
the old arguments (several values, or a bare one) and still run. Both shapes go through a real worker here."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

from activities.backup import BackupActivities
from activities.catalog import CatalogActivities
from activities.restore import RestoreActivities
from tenancy.messages.backup import BackupNameRequest
from tenancy.messages.restore import KeptDatabaseEnd
from tenancy.messages.tenants import TenantRequest


@workflow.defn(sandboxed=False)
class OldAndNewArguments:
    """Calls activities of the worker on `queue` as the previous release did and as this one does."""

    @workflow.run
    async def run(self, queue: str, tenant_id: str) -> list[Any]:
        once: dict[str, Any] = {
            "task_queue": queue,
            "start_to_close_timeout": timedelta(seconds=30),
            "retry_policy": RetryPolicy(maximum_attempts=1),
        }
        never_kept = f"never_kept_{tenant_id}"
        return [
            await workflow.execute_activity_method(BackupActivities.name_backup, args=[tenant_id, "gzip"], **once),
            await workflow.execute_activity_method(
                BackupActivities.name_backup, BackupNameRequest(tenant_id=tenant_id, compression="zstd"), **once
            ),
            await workflow.execute_activity_method(RestoreActivities.end_kept_database, args=[never_kept, "x"], **once),
            await workflow.execute_activity_method(
                RestoreActivities.end_kept_database, KeptDatabaseEnd(name=never_kept, how="x"), **once
            ),
            (await workflow.execute_activity_method(CatalogActivities.get_tenant, tenant_id, **once)).id,
            (
                await workflow.execute_activity_method(
                    CatalogActivities.get_tenant, TenantRequest(tenant_id=tenant_id), **once
                )
            ).id,
        ]


async def test_activities_run_with_the_arguments_of_both_releases(temporal_env, task_queue, make_tenant):
    tenant = await make_tenant("legacy", entries=0)
    queue = f"tq-{uuid.uuid4().hex[:10]}"
    async with Worker(temporal_env.client, task_queue=queue, workflows=[OldAndNewArguments]):
        old_name, new_name, old_ended, new_ended, old_id, new_id = await temporal_env.client.execute_workflow(
            OldAndNewArguments.run, args=[task_queue, tenant.id], id=f"legacy-{uuid.uuid4().hex[:6]}", task_queue=queue
        )
    assert old_name.startswith(f"tenant_{tenant.id}_") and old_name.endswith(".dump")  # gzip
    assert new_name.startswith(f"tenant_{tenant.id}_") and new_name.endswith(".dump.zst")
    assert (old_ended, new_ended) == (False, False)  # nothing of that name was kept
    assert old_id == new_id == tenant.id
