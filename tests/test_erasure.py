"""Erasure reaches the backups (crypto-shredding): with tenant keys, a tenant's backups are encrypted only to a key
of its own; erasing it destroys that key, so a copy of a backup left anywhere can no longer be read by anyone.
Real workflows on a real Temporal server and real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from pathlib import Path

import psycopg
import pyrage
import pytest
from temporalio.exceptions import ApplicationError

from activities.infra.catalog import Catalog
from activities.infra.storage import open_storage
from activities.infra.tenant_keys import (
    check_tenant_keys,
    shredded_with_key,
    tenant_identities,
    tenant_recipient,
    unwrap_identity,
)
from starter.demo import table_fingerprint
from starter.erase_cmd import erasure_lines
from tenancy.contracts.backup import BackupTenantInput
from tenancy.contracts.erasure import EraseTenantInput, EraseTenantResult
from tenancy.contracts.restore import RestoreTenantInput
from tenancy.errors import BACKUP_REJECTED, TENANT_KEY_DESTROYED, InvalidInput
from tenancy.messages.backup import PinRequest
from tests.cli import tenants
from tests.recording import RECORD, save_history
from workflows.backup_tenant import BackupTenantWorkflow
from workflows.erase_tenant import EraseTenantWorkflow
from workflows.restore_tenant import RestoreTenantWorkflow
from workflows.retention import PinBackupWorkflow

MARKER = "erasure-marker-7f3a"


def master_identity(tmp_path: Path, name: str = "master.txt") -> tuple[pyrage.x25519.Identity, Path]:
    identity = pyrage.x25519.Identity.generate()
    path = tmp_path / name
    path.write_text(f"# the operator's master identity, for a test\n{identity}\n")
    path.chmod(0o600)
    return identity, path


async def run(env, queue: str, workflow, arg, prefix: str):
    return await env.client.execute_workflow(workflow, arg, id=f"{prefix}-{uuid.uuid4().hex[:8]}", task_queue=queue)


def undecryptable(data: bytes, identities: list) -> bool:
    try:
        pyrage.decrypt(data, identities)
    except pyrage.DecryptError:
        return True
    return False


async def remaining_keys(catalog: Catalog, settings, master: pyrage.x25519.Identity) -> dict[str, object]:
    """Every tenant key still in the catalog that this master identity unwraps, by tenant."""
    async with await psycopg.AsyncConnection.connect(
        psycopg.conninfo.make_conninfo(settings.effective_database_url, dbname=settings.catalog_database)
    ) as conn:
        rows = await (
            await conn.execute("SELECT tenant_id, wrapped_identity FROM tenant_keys WHERE wrapped_identity IS NOT NULL")
        ).fetchall()
    keys = {}
    for tenant_id, wrapped in rows:
        with contextlib.suppress(pyrage.DecryptError):  # wrapped to another test's master: not this deployment's
            keys[tenant_id] = unwrap_identity(bytes(wrapped), [master])
    return keys


async def test_an_erased_tenants_backup_copy_is_unreadable_with_every_remaining_key(
    temporal_env, worker_with, settings, catalog, make_tenant, backups_of, tmp_path
):
    master, master_file = master_identity(tmp_path)
    keys_on = {"tenant_keys": True, "age_recipients": [str(master.to_public())], "age_identity_file": master_file}
    tenant = await make_tenant("er", entries=50)
    url = settings.effective_database_url
    with psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname=tenant.database_name), autocommit=True) as conn:
        conn.execute("UPDATE projects SET name = %s WHERE id = 1", [MARKER])
    # Another tenant with a key of its own: a key that remains after the erasure, to try on the copy.
    other = f"er-other-{uuid.uuid4().hex[:6]}"
    await tenant_recipient(catalog, keys_on["age_recipients"], other)

    async with worker_with(**keys_on) as queue:
        taken = await run(
            temporal_env,
            queue,
            BackupTenantWorkflow.run,
            BackupTenantInput(tenant_id=tenant.id, compression="none"),
            "b",
        )
        await run(
            temporal_env,
            queue,
            PinBackupWorkflow.run,
            PinRequest(tenant_id=tenant.id, backup_name=taken.backup_name, pinned=True),
            "pin",
        )
        assert (await catalog.backup_facts(tenant.id))[taken.backup_name]["pinned"]
        # The copy "left anywhere": an offsite sync, a download, a storage snapshot.
        copy = tmp_path / "copy-left-elsewhere.age"
        shutil.copyfile(settings.storage_root / taken.path, copy)
        stored = copy.read_bytes()
        assert stored.startswith(b"age-encryption.org/v1") and MARKER.encode() not in stored
        manifest = open_storage(settings).read_manifest(tenant.id, taken.backup_name)
        assert manifest is not None and manifest.encryption_key == "tenant" and manifest.restorable
        tenant_key = await catalog.tenant_key(tenant.id)
        assert manifest.recipients == [tenant_key["recipient"]] != keys_on["age_recipients"]
        # Encrypted to the tenant's key only: the master alone cannot read it (only unwrap the key).
        assert undecryptable(stored, [master])
        assert not undecryptable(stored, [(await remaining_keys(catalog, settings, master))[tenant.id]])

        # Restorable before the erasure.
        expected = await table_fingerprint(url, tenant.database_name)
        with psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname=tenant.database_name), autocommit=True) as c:
            c.execute("DELETE FROM time_entries")
        await run(temporal_env, queue, RestoreTenantWorkflow.run, RestoreTenantInput(tenant_id=tenant.id), "r")
        assert await table_fingerprint(url, tenant.database_name) == expected

        erased: EraseTenantResult = await run(
            temporal_env, queue, EraseTenantWorkflow.run, EraseTenantInput(tenant_id=tenant.id), "erase"
        )
        # Safe to run again: nothing left to do, the same outcome.
        again: EraseTenantResult = await run(
            temporal_env, queue, EraseTenantWorkflow.run, EraseTenantInput(tenant_id=tenant.id), "erase"
        )

    assert erased.deprovisioned and erased.database_dropped and erased.key_destroyed
    assert erased.backups_deleted == [taken.backup_name]  # pinned, and deleted all the same
    assert erased.readable_elsewhere == []
    assert not again.deprovisioned and again.key_destroyed and again.backups_deleted == []
    assert (await catalog.get_tenant(tenant.id)).status == "deprovisioned"
    assert not await catalog.database_exists(tenant.database_name)
    assert backups_of(tenant.id) == []
    assert await catalog.backup_facts(tenant.id) == {}
    key_row = await catalog.tenant_key(tenant.id)
    assert key_row["wrapped_identity"] is None and key_row["destroyed_at"] is not None
    assert key_row["destroyed_by"].startswith("erase-")
    events = [e for e in await catalog.events(tenant.id) if e["type"] == "TenantErased"]
    # One per run (newest first): the first deleted the backup, the second found nothing left.
    assert [e["data"]["backups_deleted"] for e in events] == [0, 1]
    assert all(e["data"]["key_destroyed"] for e in events)
    audited = [(a["action"], a["detail"].get("reason")) for a in await catalog.audit_entries(tenant_id=tenant.id)]
    assert ("backup.delete", "erasure") in audited and audited.count(("tenant.erase", None)) == 2

    # The copy left elsewhere: unreadable with the master identity and with every key that remains.
    remaining = await remaining_keys(catalog, settings, master)
    assert tenant.id not in remaining and other in remaining
    assert undecryptable(stored, [master])
    for tenant_id, key in remaining.items():
        assert undecryptable(stored, [key]), f"the key of {tenant_id} reads the erased tenant's backup"

    # Nothing of it can be backed up or restored again: one clear, typed line.
    for attempt in (
        tenant_recipient(catalog, keys_on["age_recipients"], tenant.id),
        tenant_identities(catalog, master_file, tenant.id, taken.backup_name),
    ):
        with pytest.raises(ApplicationError) as caught:
            await attempt
        assert caught.value.type == TENANT_KEY_DESTROYED and caught.value.non_retryable
        assert f"tenant {tenant.id!r} was erased" in str(caught.value)


async def test_erase_without_tenant_keys_deletes_every_backup_and_says_copies_stay_readable(
    temporal_env, task_queue, cli_env, settings, catalog, make_tenant, backups_of
):
    tenant = await make_tenant("er", entries=20)
    taken = await run(
        temporal_env,
        task_queue,
        BackupTenantWorkflow.run,
        BackupTenantInput(tenant_id=tenant.id, compression="none"),
        "b",
    )
    assert backups_of(tenant.id)

    refused = await tenants(cli_env, "erase", tenant.id)
    assert refused.returncode == 2 and "pass --yes" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert (await catalog.get_tenant(tenant.id)).status == "active"

    done = await tenants(cli_env, "erase", tenant.id, "--yes")
    assert done.returncode == 0, done.stderr
    assert f"{tenant.id} erased; backups deleted: 1" in done.stdout
    assert "no backup key of its own" in done.stdout
    assert "copies made elsewhere" in done.stdout and "stay readable" in done.stdout
    assert (await catalog.get_tenant(tenant.id)).status == "deprovisioned"
    assert backups_of(tenant.id) == []
    assert await catalog.tenant_key(tenant.id) is None
    erased = [e for e in await catalog.events(tenant.id) if e["type"] == "TenantErased"]
    assert erased and erased[0]["data"]["readable_elsewhere"] == 1
    assert taken.backup_name not in open_storage(settings).list_backups(tenant.id)


@pytest.mark.one_server  # catalog rows and age: the same on any PostgreSQL
async def test_tenant_keys_are_made_once_under_a_race_and_unwrap_only_with_the_master(
    temporal_env, settings, catalog, tmp_path
):
    master, master_file = master_identity(tmp_path)
    _, wrong_file = master_identity(tmp_path, "wrong.txt")
    tenant_id = f"er-race-{uuid.uuid4().hex[:6]}"
    recipients = await asyncio.gather(
        *[tenant_recipient(catalog, [str(master.to_public())], tenant_id) for _ in range(6)]
    )
    assert len(set(recipients)) == 1
    [identity] = await tenant_identities(catalog, master_file, tenant_id, "b")
    assert str(identity.to_public()) == recipients[0]

    with pytest.raises(ApplicationError) as caught:
        await tenant_identities(catalog, wrong_file, tenant_id, "b")
    assert caught.value.type == BACKUP_REJECTED and "cannot unwrap the key" in str(caught.value)
    assert "AGE-SECRET-KEY" not in str(caught.value)

    # Tenant keys on with no master to wrap them to: the worker refuses to start, in one line.
    with pytest.raises(InvalidInput, match="TENANTS_TENANT_KEYS=on needs TENANTS_AGE_RECIPIENTS"):
        check_tenant_keys(settings.model_copy(update={"tenant_keys": True, "age_recipients": []}))
    from worker import build_worker

    with pytest.raises(InvalidInput):
        build_worker(temporal_env.client, settings.model_copy(update={"tenant_keys": True}), "tq-never")


def test_what_erase_says_about_copies_elsewhere():
    shredded = EraseTenantResult(tenant_id="acme", deprovisioned=True, key_destroyed=True, backups_deleted=["a"])
    lines = erasure_lines(shredded)
    assert "its backup key is destroyed" in lines[-1] and not any("warning" in line for line in lines)
    mixed = shredded.model_copy(update={"readable_elsewhere": ["a"]})
    assert "warning: 1 of its backups were not encrypted to a key of the tenant's own" in erasure_lines(mixed)[-1]
    assert not shredded_with_key(None)


@pytest.mark.skipif(not RECORD, reason="records the history only when TENANTS_RECORD_HISTORIES=1")
async def test_record_erase_history(temporal_env, worker_with, make_tenant, tmp_path):
    """A history of every step of an erasure (deprovisioning, key, backups, event) for tests/test_replay.py."""
    master, master_file = master_identity(tmp_path)
    keys_on = {"tenant_keys": True, "age_recipients": [str(master.to_public())], "age_identity_file": master_file}
    tenant = await make_tenant("er", entries=10)
    async with worker_with(**keys_on) as queue:
        await run(temporal_env, queue, BackupTenantWorkflow.run, BackupTenantInput(tenant_id=tenant.id), "b")
        handle = await temporal_env.client.start_workflow(
            EraseTenantWorkflow.run,
            EraseTenantInput(tenant_id=tenant.id),
            id=f"replay-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
        await handle.result()
        save_history(await handle.fetch_history(), "EraseTenantWorkflow")


@pytest.mark.one_server  # heartbeat details and storage listing: nothing of the PostgreSQL version
async def test_a_retried_erasure_still_reports_what_an_earlier_attempt_deleted(settings):
    import dataclasses

    from temporalio.testing import ActivityEnvironment

    from activities.erasure import ErasureActivities
    from tenancy.messages.progress import HeartbeatDetails
    from tenancy.messages.tenants import TenantRequest

    tenant_id = f"er-{uuid.uuid4().hex[:8]}"
    gone = f"tenant_{tenant_id}_2026-01-01_00-00-00.dump.gz"
    env = ActivityEnvironment()
    # The first attempt deleted `gone` (not encrypted to the tenant's key) and then timed out.
    earlier = HeartbeatDetails(erased=[gone], readable_elsewhere=[gone]).to_heartbeat()
    env.info = dataclasses.replace(env.info, heartbeat_details=[earlier], attempt=2)
    result = await env.run(ErasureActivities(settings).erase_tenant_backups, TenantRequest(tenant_id=tenant_id))
    assert result.deleted == [gone] and result.readable_elsewhere == [gone]
