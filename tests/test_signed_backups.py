"""Signed backups: with TENANTS_BACKUP_SIGNING_KEY_FILE set, a backup forged by someone who can write to backup
storage (and holds the public age recipient) is refused by restores and drills before anything changes; a backup
signed by an older key still restores after a rotation; `tenants keys` manages the key file."""

from __future__ import annotations

import json
import os
import stat
import uuid

import psycopg
import pyrage
import pytest
from temporalio.client import WorkflowFailureError

from activities.infra.manifest_signing import create_key_file, read_keyring, rotate_key_file
from starter.check import signing_check
from starter.demo import table_fingerprint
from tenancy.contracts.backup import DrillInput
from tenancy.errors import InvalidInput, failure_message, failure_type
from tests.cli import tenants
from tests.test_restore_workflow import backup, databases_like, restore
from worker import build_worker
from workflows.drill import BackupDrillWorkflow


def change_rows(url: str, dbname: str) -> None:
    """A change a restore would undo; repeatable."""
    with psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname=dbname), autocommit=True) as conn:
        conn.execute("UPDATE time_entries SET minutes = minutes + 1 WHERE id % 3 = 0")


def manifest_path(settings, tenant_id: str, backup_name: str):
    return settings.storage_root / "tenants" / tenant_id / f"{backup_name}.json"


def age_settings(tmp_path, encrypted: bool) -> dict[str, object]:
    if not encrypted:
        return {}
    identity = pyrage.x25519.Identity.generate()
    path = tmp_path / "identity.txt"
    path.write_text(f"{identity}\n")
    path.chmod(0o600)
    return {"age_recipients": [str(identity.to_public())], "age_identity_file": path}


async def refused(env, queue, tenant_id: str, backup_name: str) -> str:
    """Restore the named backup; it must be refused as not authentic. Returns the one-line message."""
    with pytest.raises(WorkflowFailureError) as caught:
        await restore(env, queue, tenant_id, backup_name=backup_name)
    assert failure_type(caught.value) == "BackupNotAuthentic"
    message = failure_message(caught.value)
    assert "\n" not in message and backup_name in message
    return message


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "age"])
async def test_a_forged_backup_is_refused_and_a_signed_one_restores(
    temporal_env, worker_with, settings, make_tenant, tmp_path, encrypted
):
    tenant = await make_tenant(entries=300)
    url = settings.effective_database_url
    key_file = tmp_path / "keys" / "signing.keys"
    create_key_file(key_file)
    age = age_settings(tmp_path, encrypted)

    # The forger: the same code, the public recipient, write access to storage, no signing key. Its archive and
    # manifest agree (sha256, size, row counts): every check but the signature passes.
    async with worker_with(**age) as forger_queue:
        forged = await backup(temporal_env, forger_queue, tenant.id, compression="zstd")
    forged_state = await table_fingerprint(url, tenant.database_name)
    change_rows(url, tenant.database_name)
    genuine_state = await table_fingerprint(url, tenant.database_name)

    async with worker_with(backup_signing_key_file=key_file, **age) as queue:
        genuine = await backup(temporal_env, queue, tenant.id, compression="zstd")
        stored = json.loads(manifest_path(settings, tenant.id, genuine.backup_name).read_text())
        assert stored["key_id"] == read_keyring(key_file).signing.key_id and len(stored["signature"]) == 64
        assert stored["encrypted"] is encrypted

        # 1. No signature at all.
        assert "its manifest is not signed" in await refused(temporal_env, queue, tenant.id, forged.backup_name)
        # 2. A genuine signature (and key id) copied onto the forged manifest.
        path = manifest_path(settings, tenant.id, forged.backup_name)
        document = json.loads(path.read_text())
        path.write_text(json.dumps({**document, "key_id": stored["key_id"], "signature": stored["signature"]}))
        assert "does not match its signature" in await refused(temporal_env, queue, tenant.id, forged.backup_name)
        # 3. The attacker's archive under the genuine backup's name, its manifest's sha256 and size changed to
        # match, the genuine signature kept.
        archive = settings.storage_root / genuine.path
        genuine_bytes = archive.read_bytes()
        archive.write_bytes((settings.storage_root / forged.path).read_bytes())
        path = manifest_path(settings, tenant.id, genuine.backup_name)
        path.write_text(json.dumps({**stored, "sha256": document["sha256"], "size_bytes": document["size_bytes"]}))
        assert "does not match its signature" in await refused(temporal_env, queue, tenant.id, genuine.backup_name)
        assert await table_fingerprint(url, tenant.database_name) == genuine_state  # nothing changed
        assert databases_like(url, tenant.database_name + "\\_\\_%") == []  # no scratch copy left

        # The genuine backup, as written, restores.
        archive.write_bytes(genuine_bytes)
        path.write_text(json.dumps(stored, indent=2))
        change_rows(url, tenant.database_name)
        await restore(temporal_env, queue, tenant.id, backup_name=genuine.backup_name, keep_previous_seconds=0)
        assert await table_fingerprint(url, tenant.database_name) == genuine_state

    # Without a key the forgery is indistinguishable from a real backup: the refusal above is the signature's.
    manifest_path(settings, tenant.id, forged.backup_name).write_text(json.dumps(document))
    async with worker_with(**age) as forger_queue:
        await restore(temporal_env, forger_queue, tenant.id, backup_name=forged.backup_name, keep_previous_seconds=0)
    assert await table_fingerprint(url, tenant.database_name) == forged_state


async def test_after_rotation_old_backups_restore_until_their_key_is_removed(
    temporal_env, worker_with, settings, make_tenant, tmp_path
):
    tenant = await make_tenant(entries=200)
    url = settings.effective_database_url
    key_file = tmp_path / "signing.keys"
    old_key = create_key_file(key_file)
    async with worker_with(backup_signing_key_file=key_file) as queue:
        first = await backup(temporal_env, queue, tenant.id)
        first_state = await table_fingerprint(url, tenant.database_name)
        new_key = rotate_key_file(key_file)  # read at every use: no worker restart
        change_rows(url, tenant.database_name)
        second = await backup(temporal_env, queue, tenant.id)
        signed_by = {
            name: json.loads(manifest_path(settings, tenant.id, name).read_text())["key_id"]
            for name in (first.backup_name, second.backup_name)
        }
        assert signed_by == {first.backup_name: old_key.key_id, second.backup_name: new_key.key_id}

        await restore(temporal_env, queue, tenant.id, backup_name=first.backup_name, keep_previous_seconds=0)
        assert await table_fingerprint(url, tenant.database_name) == first_state

        # The old key removed: what it signed is refused, by restores and drills alike.
        key_file.write_text(new_key.line() + "\n")
        change_rows(url, tenant.database_name)
        changed = await table_fingerprint(url, tenant.database_name)
        message = await refused(temporal_env, queue, tenant.id, first.backup_name)
        assert f"signed by key {old_key.key_id!r}, which is not in the keyring" in message
        drill = await temporal_env.client.execute_workflow(
            BackupDrillWorkflow.run,
            DrillInput(tenant_id=tenant.id, backup_name=first.backup_name),
            id=f"drill-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
        assert not drill.ok and "not in the keyring" in (drill.error or "")
        assert await table_fingerprint(url, tenant.database_name) == changed


def keys_env(tmp_path, key_file) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTS_")}
    env.update(TENANTS_STATE_DIR=str(tmp_path / "state"), TENANTS_BACKUP_SIGNING_KEY_FILE=str(key_file))
    return env


async def test_keys_init_rotate_list_from_the_command_line(tmp_path):
    key_file = tmp_path / "made" / "signing.keys"
    env = keys_env(tmp_path, key_file)

    made = await tenants(env, "keys", "init")
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    first = read_keyring(key_file).signing
    before = key_file.read_bytes()

    again = await tenants(env, "keys", "init")
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "exists: not overwritten" in again.stderr
    assert key_file.read_bytes() == before

    rotated = await tenants(env, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    keyring = read_keyring(key_file)
    assert [k.key_id for k in keyring.keys][1:] == [first.key_id]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    listed = await tenants(env, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[3:]]
    assert [(row[0], row[1]) for row in rows] == [(keyring.signing.key_id, "signs"), (first.key_id, "verifies")]
    assert not any(
        line.split(":", 1)[1] in listed.stdout for line in key_file.read_text().splitlines() if not line.startswith("#")
    )


async def test_check_says_whether_backups_are_authenticated_and_a_bad_key_file_stops_the_worker(
    cli_env, temporal_env, settings, tmp_path
):
    unsigned = await tenants(cli_env, "backup", "--check")
    assert unsigned.returncode == 0, unsigned.stdout
    said = [line for line in unsigned.stdout.splitlines() if " signing " in line]
    assert len(said) == 1 and said[0].startswith("warn") and "backups are not authenticated" in said[0]
    key_file = tmp_path / "signing.keys"
    key = create_key_file(key_file)
    signed = await tenants({**cli_env, "TENANTS_BACKUP_SIGNING_KEY_FILE": str(key_file)}, "backup", "--check")
    assert signed.returncode == 0, signed.stdout
    assert f"backups signed with key {key.key_id}" in signed.stdout and "not authenticated" not in signed.stdout

    broken = tmp_path / "broken.keys"
    broken.write_text("not a key\n")
    assert signing_check(settings.model_copy(update={"backup_signing_key_file": broken})) == (
        "signing",
        False,
        f"backup signing key file {broken}, line 1: expected key_id:base64secret",
    )
    with pytest.raises(InvalidInput, match="line 1"):
        build_worker(temporal_env.client, settings.model_copy(update={"backup_signing_key_file": broken}), "unused")


async def test_backups_taken_before_signing_are_signed_once_when_their_bytes_still_match(
    temporal_env, worker_with, settings, make_tenant, cli_env, tmp_path
):
    tenant = await make_tenant(entries=200)
    key_file = tmp_path / "signing.keys"
    async with worker_with() as unsigned_queue:  # before signing was turned on
        kept = await backup(temporal_env, unsigned_queue, tenant.id, compression="zstd")
        tampered = await backup(temporal_env, unsigned_queue, tenant.id, compression="zstd", keep=10)
    archive = settings.storage_root / "tenants" / tenant.id / tampered.backup_name
    stored = bytearray(archive.read_bytes())
    stored[len(stored) // 2] ^= 0xFF
    archive.write_bytes(bytes(stored))
    create_key_file(key_file)
    env = {**cli_env, "TENANTS_BACKUP_SIGNING_KEY_FILE": str(key_file)}

    async with worker_with(backup_signing_key_file=key_file) as queue:
        await refused(temporal_env, queue, tenant.id, kept.backup_name)  # unsigned: refused once a key is set
        looked = await tenants(env, "keys", "sign-existing", "--tenant", tenant.id, "--dry-run")
        assert looked.returncode == 0, looked.stderr
        assert f"would sign  {tenant.id}  {kept.backup_name}" in looked.stdout
        assert "bytes no longer match" in looked.stdout
        await refused(temporal_env, queue, tenant.id, kept.backup_name)  # a dry run signs nothing

        signed = await tenants(env, "keys", "sign-existing", "--tenant", tenant.id)
        assert signed.returncode == 0, signed.stderr
        assert f"signed      {tenant.id}  {kept.backup_name}" in signed.stdout
        assert f"left        {tenant.id}  {tampered.backup_name}: its bytes no longer match" in signed.stdout
        restored = await restore(temporal_env, queue, tenant.id, backup_name=kept.backup_name)
        assert restored.backup_name == kept.backup_name
        await refused(temporal_env, queue, tenant.id, tampered.backup_name)  # never vouched for

    unknown = await tenants(env, "keys", "sign-existing", "--tenant", "no-such-tenant")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
