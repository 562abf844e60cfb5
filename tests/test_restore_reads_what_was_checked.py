"""pg_restore reads only bytes whose hash matched the manifest: an archive changed in storage after select_backup
checked it (someone with write access to storage, between two activities) is refused before pg_restore sees it,
and no scratch database is left."""

from __future__ import annotations

import uuid

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.restore import RestoreActivities
from tenancy.messages.restore import ScratchRestoreRequest
from tenancy.naming import scratch_database_name
from tests.test_restore_workflow import backup, databases_like


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
async def test_an_archive_changed_after_its_check_is_not_restored(
    temporal_env, task_queue, settings, make_tenant, compression
):
    tenant = await make_tenant(entries=200)
    taken = await backup(temporal_env, task_queue, tenant.id, compression=compression)
    archive = settings.storage_root / "tenants" / tenant.id / taken.backup_name
    request = ScratchRestoreRequest(
        tenant_id=tenant.id,
        database_name=tenant.database_name,
        scratch_name=scratch_database_name(tenant.database_name, uuid.uuid4().hex[:8]),
        backup_name=taken.backup_name,
        compression=compression,
        jobs=1,
    )
    activities = RestoreActivities(settings)

    # Unchanged bytes restore (the same call, so the refusal below is the hash and nothing else).
    tables = await ActivityEnvironment().run(activities.restore_to_scratch, request)
    assert tables >= 1
    await activities._drop(request.scratch_name)

    # One byte changed in the middle, size unchanged: what select_backup saw is no longer what is stored.
    stored = bytearray(archive.read_bytes())
    stored[len(stored) // 2] ^= 0xFF
    archive.write_bytes(bytes(stored))
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(activities.restore_to_scratch, request)
    assert caught.value.type == "BackupRejected" and caught.value.non_retryable
    assert "changed in storage after it was checked" in str(caught.value)
    assert databases_like(settings.effective_database_url, request.scratch_name) == []
