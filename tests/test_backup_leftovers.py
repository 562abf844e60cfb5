"""No leftovers and no lost copies: a worker killed mid-backup leaves exactly one backup behind it (local folder and
S3), retention never rotates out the last restorable backups in favour of ones the workers cannot decrypt, a worker
whose identity cannot read its own backups refuses to start, and a pin set while a drill runs survives it."""

from __future__ import annotations

import asyncio
import signal
import uuid

import boto3
import pytest

from activities.infra.backup_facts import describe_backups
from activities.infra.storage import open_storage
from tenancy.contracts.backup import BackupTenantInput, DrillInput
from tenancy.contracts.health import HealthInput
from tenancy.errors import InvalidInput
from tenancy.messages.backup import PinRequest
from tests.blocking import partial_files, table_locked, wait_until
from tests.test_offsite import identity_file, run
from tests.test_restore_resilience import worker_process
from worker import build_worker
from workflows.backup_tenant import BackupTenantWorkflow
from workflows.drill import BackupDrillWorkflow
from workflows.health_check import HealthCheckWorkflow
from workflows.retention import PinBackupWorkflow


async def _killed_mid_dump_then_finished(temporal_env, settings, tenant, extra_env: dict, midway):
    """Start a backup on a worker process, SIGKILL it while pg_dump is writing, let a second worker finish."""
    queue = f"tq-kill-{uuid.uuid4().hex[:8]}"
    url = settings.effective_database_url
    with table_locked(url, tenant.database_name):  # pg_dump waits on the lock: the run is mid-dump for as long
        first = worker_process(temporal_env, settings, queue, extra_env)
        try:
            handle = await temporal_env.client.start_workflow(
                BackupTenantWorkflow.run,
                BackupTenantInput(tenant_id=tenant.id, keep=5),
                id=f"backup-{tenant.id}-{uuid.uuid4().hex[:6]}",
                task_queue=queue,
            )
            await wait_until(midway, timeout=60, what="the dump to start writing")
            first.send_signal(signal.SIGKILL)  # a real crash: no clean-up of any kind
            first.wait()
        finally:
            if first.poll() is None:
                first.kill()
    assert midway(), "the dead attempt left nothing behind to clean up: the test proves nothing"
    second = worker_process(temporal_env, settings, queue, extra_env)
    try:
        return await asyncio.wait_for(handle.result(), timeout=180)
    finally:
        second.terminate()
        second.wait()


async def test_a_worker_killed_mid_backup_leaves_exactly_one_backup_and_no_partial(
    temporal_env, settings, make_tenant, backups_of, s3_endpoint
):
    local_tenant = await make_tenant(entries=2000)
    s3_tenant = await make_tenant(entries=2000)
    bucket = f"backups-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    s3 = {"storage_url": f"s3://{bucket}/prod", "s3_endpoint_url": s3_endpoint, "s3_part_size_mb": 5}
    s3_env = {
        "TENANTS_STORAGE_URL": s3["storage_url"],
        "TENANTS_S3_ENDPOINT_URL": s3_endpoint,
        "TENANTS_S3_PART_SIZE_MB": "5",
    }
    s3_storage = open_storage(settings.model_copy(update=s3))
    folder = settings.storage_root / "tenants" / local_tenant.id

    # Both crashes at once: each run waits a heartbeat timeout before its retry.
    local, remote = await asyncio.gather(
        _killed_mid_dump_then_finished(temporal_env, settings, local_tenant, {}, lambda: bool(partial_files(folder))),
        _killed_mid_dump_then_finished(
            temporal_env, settings, s3_tenant, s3_env, lambda: bool(s3_storage.pending_uploads())
        ),
    )

    assert [p.name for p in backups_of(local_tenant.id)] == [local.backup_name, local.backup_name + ".json"]
    assert partial_files(folder) == []
    assert s3_storage.list_backups(s3_tenant.id) == [remote.backup_name]
    assert s3_storage.read_manifest(s3_tenant.id, remote.backup_name).verified
    assert s3_storage.pending_uploads() == []  # the dead attempt's upload was aborted by the retry


async def test_retention_keeps_the_last_restorable_backups_when_newer_ones_cannot_be_decrypted(
    temporal_env, worker_with, settings, make_tenant, catalog, tmp_path
):
    tenant = await make_tenant(entries=200)
    recipient, identity = identity_file(tmp_path, "identity.txt")
    storage = open_storage(settings)
    async with worker_with(age_recipients=[recipient], age_identity_file=identity) as queue:
        restorable = [
            (await run(temporal_env, queue, BackupTenantWorkflow.run, BackupTenantInput(tenant_id=tenant.id, keep=2)))
            for _ in range(2)
        ]
    assert all(r.restorable for r in restorable)
    # A worker that encrypts but holds no identity: its backups are checked by checksum only.
    async with worker_with(age_recipients=[recipient]) as queue:
        unproven = [
            (await run(temporal_env, queue, BackupTenantWorkflow.run, BackupTenantInput(tenant_id=tenant.id, keep=2)))
            for _ in range(3)
        ]
        report = await run(temporal_env, queue, HealthCheckWorkflow.run, HealthInput(send_alerts=False))
    assert not any(u.restorable for u in unproven)
    left = storage.list_backups(tenant.id)
    assert {r.backup_name for r in restorable} <= set(left)  # never rotated out
    assert {u.backup_name for u in unproven} <= set(left)  # newer than the kept good copies: kept too
    assert all(u.deleted_by_retention == [] for u in unproven)
    listed = {b.name: b for b in await describe_backups(storage, catalog, tenant.id)}
    assert listed[restorable[-1].backup_name].restorable and not listed[unproven[-1].backup_name].restorable
    health = next(t for t in report.tenants if t.tenant_id == tenant.id)
    assert health.last_backup_at == listed[unproven[-1].backup_name].taken_at
    assert health.last_restorable_at == listed[restorable[-1].backup_name].taken_at


async def test_a_worker_whose_identity_reads_none_of_its_recipients_refuses_to_start(temporal_env, settings, tmp_path):
    recipient, _ = identity_file(tmp_path, "backup-key.txt")
    _, other = identity_file(tmp_path, "some-other-key.txt")
    wrong = settings.model_copy(update={"age_recipients": [recipient], "age_identity_file": other})
    with pytest.raises(InvalidInput, match="holds no identity for any of TENANTS_AGE_RECIPIENTS"):
        build_worker(temporal_env.client, wrong, f"tq-{uuid.uuid4().hex[:8]}")


async def test_a_pin_set_while_a_drill_runs_survives_the_drill(
    temporal_env, task_queue, settings, make_tenant, catalog
):
    tenant = await make_tenant(entries=40_000)  # a drill of a second or two
    taken = await run(temporal_env, task_queue, BackupTenantWorkflow.run, BackupTenantInput(tenant_id=tenant.id))
    drill = await temporal_env.client.start_workflow(
        BackupDrillWorkflow.run,
        DrillInput(tenant_id=tenant.id),
        id=f"drill-{tenant.id}-{uuid.uuid4().hex[:6]}",
        task_queue=task_queue,
    )

    async def drill_is_restoring() -> bool:
        description = await drill.describe()
        return any(
            a.activity_type.name in ("restore_to_scratch", "verify_restored")
            for a in description.raw_description.pending_activities
        )

    for _ in range(300):
        if await drill_is_restoring():
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the drill was never caught restoring")
    # The drill holds the tenant in shared mode: a pin (and a backup) go ahead.
    await run(
        temporal_env,
        task_queue,
        PinBackupWorkflow.run,
        PinRequest(tenant_id=tenant.id, backup_name=taken.backup_name, pinned=True),
    )
    result = await drill.result()

    assert result.ok and result.backup_name == taken.backup_name
    listed = {b.name: b for b in await describe_backups(open_storage(settings), catalog, tenant.id)}
    assert listed[taken.backup_name].pinned  # the drill's record did not undo the pin
    assert listed[taken.backup_name].drill_ok is True
