"""Backups off the box: S3-compatible object storage (moto on loopback) and age encryption at rest."""

from __future__ import annotations

import asyncio
import uuid

import boto3
import psycopg
import pyrage
import pytest
from temporalio.client import WorkflowFailureError

from activities.infra.backup_facts import describe_backups
from activities.infra.storage import S3Storage, open_storage
from starter.demo import table_fingerprint
from tenancy.contracts.backup import BackupTenantInput
from tenancy.contracts.restore import RestoreTenantInput
from tenancy.errors import failure_message, failure_type
from tests.blocking import table_locked, wait_until
from tests.test_restore_workflow import change_everything
from workflows.backup_tenant import BackupTenantWorkflow
from workflows.restore_tenant import RestoreTenantWorkflow

MARKER = "confidential-row-7f3a9c"


async def run(env, queue, workflow, arg):
    return await env.client.execute_workflow(workflow, arg, id=f"w-{uuid.uuid4().hex[:8]}", task_queue=queue)


@pytest.fixture
def s3_settings(s3_endpoint):
    bucket = f"backups-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return {"storage_url": f"s3://{bucket}/prod", "s3_endpoint_url": s3_endpoint, "s3_part_size_mb": 5}


async def test_backup_list_retention_restore_on_object_storage(
    temporal_env, worker_with, settings, make_tenant, s3_settings
):
    tenant = await make_tenant(entries=60_000)  # ~15 MB uncompressed: more than one 5 MiB part
    url = settings.effective_database_url
    storage = open_storage(settings.model_copy(update=s3_settings))
    assert isinstance(storage, S3Storage)
    async with worker_with(**s3_settings) as queue:
        first = await run(
            temporal_env,
            queue,
            BackupTenantWorkflow.run,
            BackupTenantInput(tenant_id=tenant.id, compression="none", keep=1),
        )
        expected = await table_fingerprint(url, tenant.database_name)
        second = await run(
            temporal_env,
            queue,
            BackupTenantWorkflow.run,
            BackupTenantInput(tenant_id=tenant.id, compression="none", keep=1),
        )
        assert second.deleted_by_retention == [first.backup_name]
        listed = storage.describe_backups(tenant.id)
        assert [b.name for b in listed] == [second.backup_name] and listed[0].verified
        head = storage.client.head_object(Bucket=storage.bucket, Key=f"prod/tenants/{tenant.id}/{second.backup_name}")
        assert head["ContentLength"] == second.size_bytes > 5 * 2**20
        assert head["ETag"].strip('"').endswith(f"-{-(-second.size_bytes // (5 * 2**20))}")  # a multipart upload

        change_everything(url, tenant.database_name)
        restored = await run(temporal_env, queue, RestoreTenantWorkflow.run, RestoreTenantInput(tenant_id=tenant.id))
    assert restored.backup_name == second.backup_name
    assert await table_fingerprint(url, tenant.database_name) == expected
    assert storage.pending_uploads() == []


async def test_an_upload_that_fails_midway_leaves_nothing_and_runs_no_retention(
    temporal_env, worker_with, settings, make_tenant, s3_settings
):
    tenant = await make_tenant(entries=60_000)
    storage = open_storage(settings.model_copy(update=s3_settings))
    async with worker_with(**s3_settings) as queue:
        kept = await run(temporal_env, queue, BackupTenantWorkflow.run, BackupTenantInput(tenant_id=tenant.id))
        # The dump writes its first parts, then waits on a lock until cancelled.
        with table_locked(settings.effective_database_url, tenant.database_name, "time_entries"):
            handle = await temporal_env.client.start_workflow(
                BackupTenantWorkflow.run,
                BackupTenantInput(tenant_id=tenant.id, keep=1, compression="none"),
                id=f"w-{uuid.uuid4().hex[:8]}",
                task_queue=queue,
            )
            await wait_until(lambda: storage.pending_uploads(), what="the multipart upload")
            await asyncio.sleep(1)
            await handle.cancel()
            with pytest.raises(WorkflowFailureError):
                await handle.result()
    assert storage.pending_uploads() == []  # aborted: no orphaned parts
    assert [b.name for b in storage.describe_backups(tenant.id)] == [kept.backup_name]  # no retention ran


def identity_file(tmp_path, name: str) -> tuple[str, object]:
    identity = pyrage.x25519.Identity.generate()
    path = tmp_path / name
    path.write_text(f"# created for a test\n{identity}\n")
    path.chmod(0o600)
    return str(identity.to_public()), path


async def test_encrypted_backup_restores_with_the_identity_and_fails_clearly_without_it(
    temporal_env, worker_with, settings, make_tenant, tmp_path
):
    tenant = await make_tenant(entries=2000)
    url = settings.effective_database_url
    with psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname=tenant.database_name), autocommit=True) as conn:
        conn.execute("UPDATE projects SET name = %s WHERE id = 1", [MARKER])
    recipient, right = identity_file(tmp_path, "right.txt")
    _, wrong = identity_file(tmp_path, "wrong.txt")

    # The backup worker holds the public recipient only.
    async with worker_with(age_recipients=[recipient]) as queue:
        taken = await run(
            temporal_env, queue, BackupTenantWorkflow.run, BackupTenantInput(tenant_id=tenant.id, compression="none")
        )
    stored = (settings.storage_root / taken.path).read_bytes()
    assert stored.startswith(b"age-encryption.org/v1")
    assert MARKER.encode() not in stored
    manifest = open_storage(settings).read_manifest(tenant.id, taken.backup_name)
    assert manifest.encrypted and manifest.recipients == [recipient] and manifest.verified
    expected = await table_fingerprint(url, tenant.database_name)
    change_everything(url, tenant.database_name)
    changed = await table_fingerprint(url, tenant.database_name)

    for changes, message in [
        ({}, "is encrypted: set TENANTS_AGE_IDENTITY_FILE"),
        ({"age_identity_file": wrong}, "cannot decrypt the backup with the configured identity"),
    ]:
        async with worker_with(**changes) as queue:
            with pytest.raises(WorkflowFailureError) as caught:
                await run(temporal_env, queue, RestoreTenantWorkflow.run, RestoreTenantInput(tenant_id=tenant.id))
        assert failure_type(caught.value) == "BackupRejected"
        assert message in failure_message(caught.value)
        assert await table_fingerprint(url, tenant.database_name) == changed  # nothing changed

    async with worker_with(age_identity_file=right) as queue:
        await run(temporal_env, queue, RestoreTenantWorkflow.run, RestoreTenantInput(tenant_id=tenant.id, jobs=2))
    assert await table_fingerprint(url, tenant.database_name) == expected


async def test_drill_of_a_good_backup_passes_and_of_a_tampered_one_fails_and_alerts(
    temporal_env, worker_with, settings, make_tenant, catalog
):
    from tenancy.contracts.backup import DrillInput
    from tests.servers import WebhookReceiver
    from workflows.drill import BackupDrillWorkflow

    tenant = await make_tenant(entries=3000)
    with WebhookReceiver() as hook:
        async with worker_with(alert_webhook_url=hook.url) as queue:
            good = await run(temporal_env, queue, BackupTenantWorkflow.run, BackupTenantInput(tenant_id=tenant.id))
            passed = await run(temporal_env, queue, BackupDrillWorkflow.run, DrillInput(tenant_id=tenant.id))
            assert passed.ok and passed.backup_name == good.backup_name and passed.rows >= 3000
            facts = {b.name: b for b in await describe_backups(open_storage(settings), catalog, tenant.id)}
            assert facts[good.backup_name].drill_ok is True and facts[good.backup_name].drilled_at is not None
            assert facts[good.backup_name].restorable

            path = settings.storage_root / good.path
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0x01
            path.write_bytes(bytes(data))
            failed = await run(
                temporal_env,
                queue,
                BackupDrillWorkflow.run,
                DrillInput(tenant_id=tenant.id, backup_name=good.backup_name),
            )
            await wait_until(lambda: hook.received, what="the alert")
    assert not failed.ok and "does not match its manifest" in failed.error
    facts = {b.name: b for b in await describe_backups(open_storage(settings), catalog, tenant.id)}
    assert facts[good.backup_name].drill_ok is False
    # The manifest, the immutable record, is never rewritten by a drill.
    assert open_storage(settings).read_manifest(tenant.id, good.backup_name).drill_ok is None
    alerts = [a for body in hook.events() for a in body["alerts"]]
    assert alerts[0]["kind"] == "failed_drill" and alerts[0]["tenant_id"] == tenant.id
    with psycopg.connect(settings.effective_database_url) as conn:  # no scratch copy left behind
        assert (
            conn.execute(
                "SELECT count(*) FROM pg_database WHERE datname LIKE %s", [tenant.database_name + "\\_\\_%"]
            ).fetchone()[0]
            == 0
        )
    assert [e["type"] for e in await catalog.events(tenant.id)][:2] == ["BackupDrilled", "BackupDrilled"]


async def test_calendar_retention_keeps_pinned_backups_and_prune_explains(
    temporal_env, worker_with, settings, make_tenant
):
    from datetime import UTC, datetime, timedelta

    from tenancy.contracts.fleet import PruneInput
    from tenancy.messages.backup import PinRequest
    from tenancy.naming import backup_name
    from workflows.retention import PinBackupWorkflow, PruneTenantWorkflow

    tenant = await make_tenant(entries=50)
    storage = open_storage(settings)
    async with worker_with() as queue:
        taken = await run(temporal_env, queue, BackupTenantWorkflow.run, BackupTenantInput(tenant_id=tenant.id))
    # A history: copies of that verified backup under the names of backups taken 1 to 40 days ago.
    manifest = storage.read_manifest(tenant.id, taken.backup_name)
    source = (settings.storage_root / taken.path).read_bytes()
    names = []
    for days in range(1, 41):
        name = backup_name(tenant.id, datetime.now(UTC) - timedelta(days=days, hours=1), "gzip")
        with storage.open_for_write(tenant.id, name) as sink:
            sink.write(source)
        storage.write_manifest(manifest.model_copy(update={"backup_name": name}))
        names.append(name)
    oldest = names[-1]
    calendar = {
        "retention_policy": "calendar",
        "calendar_keep_all_days": 7,
        "calendar_daily_days": 7,
        "calendar_weekly_weeks": 2,
        "calendar_monthly_months": 0,
        "calendar_yearly_years": 0,
    }
    async with worker_with(**calendar) as queue:
        await run(
            temporal_env, queue, PinBackupWorkflow.run, PinRequest(tenant_id=tenant.id, backup_name=oldest, pinned=True)
        )
        dry = await run(temporal_env, queue, PruneTenantWorkflow.run, PruneInput(tenant_id=tenant.id, dry_run=True))
        assert len(storage.list_backups(tenant.id)) == 41  # a dry run deletes nothing
        reasons = {d.name: (d.keep, d.reason) for d in dry.decisions}
        assert reasons[oldest] == (True, "pinned")
        assert reasons[taken.backup_name] == (True, "newest verified backup")
        assert reasons[names[2]][0] and "within 7 days" in reasons[names[2]][1]
        assert not reasons[names[30]][0]
        done = await run(temporal_env, queue, PruneTenantWorkflow.run, PruneInput(tenant_id=tenant.id, dry_run=False))
    assert sorted(done.deleted) == sorted(n for n, (keep, _) in reasons.items() if not keep)
    left = storage.list_backups(tenant.id)
    assert oldest in left and taken.backup_name in left and len(left) == len(done.kept)
    assert all(name not in left for name in done.deleted)
