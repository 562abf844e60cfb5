"""The `tenants` command as a user runs it: a real process against the test session's servers."""

from __future__ import annotations

import json
import os

import pytest

from tests.cli import tenants


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["backup"], "one of the arguments --tenant --all --check is required"),
        (["backup", "--tenant", "Bad;Name"], "invalid tenant id"),
        (["backup", "--tenant", "acme", "--keep", "0"], "--keep must be a whole number of at least 1"),
        (["backup", "--all", "--keep", "-2"], "--keep must be a whole number of at least 1"),
        (["backup", "--tenant", "acme", "--keep", "ten"], "invalid int value"),
        (["backup", "--tenant", "acme", "--compression", "zstd", "--level", "40"], "between 0 and 22"),
        (["backup", "--tenant", "acme", "--compression", "lz4"], "invalid choice"),
        (["nonsense"], "invalid choice"),
    ],
)
async def test_bad_input_is_one_clear_line_and_exit_2(cli_env, args, message):
    done = await tenants(cli_env, *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


async def test_unknown_tenant_is_a_clear_error(cli_env):
    done = await tenants(cli_env, "backup", "--tenant", "no-such-tenant")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "tenants: error: tenant 'no-such-tenant' is not in the catalog [TenantNotFound]"
    )


async def test_invalid_setting_is_a_clear_error(cli_env):
    done = await tenants({**cli_env, "TENANTS_KEEP": "0"}, "list")
    assert done.returncode == 2
    assert "invalid setting TENANTS_KEEP" in done.stderr and "Traceback" not in done.stderr


async def test_backup_list_and_check_end_to_end(cli_env, make_tenant, settings):
    tenant = await make_tenant(entries=100)

    listed = await tenants(cli_env, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert tenant.id in [t["id"] for t in json.loads(listed.stdout)]

    done = await tenants(cli_env, "backup", "--tenant", tenant.id, "--keep", "3")
    assert done.returncode == 0, done.stderr
    assert "backup   tenant_" + tenant.id in done.stdout
    assert done.stderr.splitlines()[-1] == "done"  # progress lines, down to the final state
    archive = next(line.split(None, 1)[1] for line in done.stdout.splitlines() if line.startswith("path"))
    assert os.path.isfile(archive)

    started = await tenants(cli_env, "backup", "--tenant", tenant.id, "--no-wait")
    assert started.returncode == 0
    assert started.stdout.splitlines()[0].startswith(f"started backup-{tenant.id}-")
    assert "/namespaces/default/workflows/backup-" in started.stdout

    check = await tenants(cli_env, "backup", "--check")
    assert check.returncode == 0, check.stdout
    assert "FAIL" not in check.stdout
    for name in ("PostgreSQL", "pg_dump", "pg_restore", "storage", "Temporal", "worker"):
        assert name in check.stdout


async def test_check_names_what_is_missing(cli_env):
    done = await tenants({**cli_env, "TENANTS_TEMPORAL_ADDRESS": "127.0.0.1:1"}, "backup", "--check")
    assert done.returncode == 1
    assert "FAIL  Temporal" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


async def test_restore_from_the_command_line(cli_env, make_tenant, settings):
    tenant = await make_tenant(entries=100)
    assert (await tenants(cli_env, "backup", "--tenant", tenant.id)).returncode == 0

    listed = await tenants(cli_env, "restore", tenant.id, "--list")
    assert listed.returncode == 0
    assert f"tenant_{tenant.id}_" in listed.stdout and "yes" in listed.stdout

    unconfirmed = await tenants(cli_env, "restore", tenant.id, "--latest")
    assert unconfirmed.returncode == 2
    assert "refusing to restore without confirmation: pass --yes" in unconfirmed.stderr

    for args, message in [
        (["--latest", "--yes", "--keep-previous", "soon"], "invalid duration"),
        (["--at", "yesterday", "--yes"], "invalid time"),
        (["--at", "2001-01-01 00:00", "--yes"], "no verified backup taken at or before"),
        (["--backup", "../../etc/passwd", "--yes"], "is not the name of a backup"),
    ]:
        done = await tenants(cli_env, "restore", tenant.id, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr

    nothing = await tenants(cli_env, "restore", tenant.id, "--undo", "--yes")
    assert nothing.returncode == 2 and "no database kept from a restore" in nothing.stderr

    done = await tenants(cli_env, "restore", tenant.id, "--latest", "--yes")
    assert done.returncode == 0, done.stderr
    assert f"restored  {tenant.id} from tenant_{tenant.id}_" in done.stdout
    assert "counts equal to the backup's" in done.stdout
    assert f"`tenants restore {tenant.id} --undo` swaps it back" in done.stdout

    shown = await tenants(cli_env, "show", tenant.id)
    assert shown.returncode == 0 and f"kept       {tenant.database_name}__old_" in shown.stdout

    undone = await tenants(cli_env, "restore", tenant.id, "--undo", "--yes", "--keep-previous", "0")
    assert undone.returncode == 0, undone.stderr
    assert f"undone    {tenant.id}" in undone.stdout and "dropped" in undone.stdout
    assert "kept  " not in (await tenants(cli_env, "show", tenant.id)).stdout


async def test_provision_status_and_show_from_the_command_line(cli_env, catalog):
    import uuid

    tenant_id = f"cli-{uuid.uuid4().hex[:8]}"
    try:
        done = await tenants(
            cli_env, "provision", "Cli Co", "--plan", "pro", "--owner", "cli@example.com", "--id", tenant_id
        )
        assert done.returncode == 0, done.stderr
        assert f"tenant    {tenant_id} is active" in done.stdout and "password" in done.stdout
        again = await tenants(
            cli_env, "provision", "Cli Co", "--plan", "pro", "--owner", "cli@example.com", "--id", tenant_id
        )
        assert again.returncode == 2 and "already exists" in again.stderr

        done = await tenants(cli_env, "suspend", tenant_id, "--reason", "payment_failed")
        assert done.returncode == 0, done.stderr
        assert f"{tenant_id}: active → suspended" in done.stdout and "Traceback" not in done.stderr
        bad = await tenants(cli_env, "deactivate", tenant_id)
        assert bad.returncode == 2 and "cannot become inactive" in bad.stderr

        done = await tenants(cli_env, "settings", tenant_id, "--set", "language=es", "--feature", "advanced_reports=on")
        assert done.returncode == 0 and '"advanced_reports": true' in done.stdout
        bad = await tenants(cli_env, "settings", tenant_id, "--set", "timezone=Mars/Base")
        assert bad.returncode == 2 and "IANA" in bad.stderr

        shown = await tenants(cli_env, "show", tenant_id)
        assert shown.returncode == 0
        assert "status     suspended (payment_failed)" in shown.stdout and "TenantStatusChanged" in shown.stdout

        refused = await tenants(cli_env, "deprovision", tenant_id)
        assert refused.returncode == 2 and "pass --yes" in refused.stderr
        done = await tenants(cli_env, "deprovision", tenant_id, "--no-final-backup", "--yes")
        assert done.returncode == 0, done.stderr
        assert "deprovisioned; final backup: none" in done.stdout
    finally:
        await catalog.drop_tenant(tenant_id)


async def test_maintenance_from_the_command_line(cli_env, make_tenant):
    tenant = await make_tenant(entries=200)
    dry = await tenants(cli_env, "maintenance", "--tenant", tenant.id, "--cleanup", "--optimize", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run for" in dry.stdout and "rows older than 180 days would be deleted" in dry.stdout
    done = await tenants(cli_env, "maintenance", "--tenant", tenant.id, "--cleanup", "--days", "30", "--analyze")
    assert done.returncode == 0, done.stderr
    assert "ok     cleanup" in done.stdout and "ok     analyze" in done.stdout
    shown = await tenants(cli_env, "show", tenant.id)
    assert "maintained" in shown.stdout and "cleanup, analyze" in shown.stdout
    for args, message in [
        (["--tenant", tenant.id], "no maintenance task asked"),
        (["--tenant", tenant.id, "--cleanup", "--days", "0"], "--days must be"),
        (["--tenant", tenant.id, "--analyze", "--full"], "--full goes with --vacuum"),
    ]:
        bad = await tenants(cli_env, "maintenance", *args)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)


async def test_drill_prune_and_pin_from_the_command_line(cli_env, make_tenant):
    tenant = await make_tenant(entries=100)
    for _ in range(2):
        assert (await tenants(cli_env, "backup", "--tenant", tenant.id)).returncode == 0
    listed = await tenants(cli_env, "restore", tenant.id, "--list", "--json")
    oldest, newest = sorted(b["name"] for b in json.loads(listed.stdout))

    drill = await tenants(cli_env, "drill", tenant.id, "--latest")
    assert drill.returncode == 0, drill.stderr
    assert f"drill passed: {newest}" in drill.stdout

    pinned = await tenants(cli_env, "pin", tenant.id, oldest)
    assert pinned.returncode == 0 and "pinned" in pinned.stdout
    dry = await tenants(cli_env, "prune", "--tenant", tenant.id, "--keep", "1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"{oldest}  keep" in dry.stdout and "pinned" in dry.stdout
    assert "0 would delete" in dry.stdout
    await tenants(cli_env, "unpin", tenant.id, oldest)
    done = await tenants(cli_env, "prune", "--tenant", tenant.id, "--keep", "1")
    assert "1 deleted" in done.stdout
    bad = await tenants(cli_env, "pin", tenant.id, "../etc/passwd")
    assert bad.returncode == 2 and "is not the name of a backup" in bad.stderr
