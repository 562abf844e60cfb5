"""The audit trail: real runs append who accessed which backup and changed which tenant (the command line's
user@host, a memo's requester, a schedule, or the run itself), `tenants audit` shows it, and the table refuses
to be rewritten."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import errors

from activities.infra.pg import conninfo_for
from starter.cli import build_parser
from starter.schedules import build_schedule
from tenancy.audit import (
    BACKUP_DRILL,
    BACKUP_RESTORE,
    REQUESTED_BY,
    TENANT_DEPROVISION,
    TENANT_STATUS,
    backup_read_action,
    deletion_reason,
    event_action,
    local_actor,
    parse_since,
    run_actor,
)
from tenancy.contracts.backup import BackupTenantInput, DrillInput
from tenancy.contracts.fleet import PruneInput
from tenancy.contracts.restore import RestoreTenantInput
from tenancy.contracts.tenants import StatusChange
from tenancy.errors import InvalidInput
from tenancy.messages.backup import PinRequest
from tenancy.schedules import ScheduleDeclaration
from tests.cli import tenants
from workflows.backup_tenant import BackupTenantWorkflow
from workflows.drill import BackupDrillWorkflow
from workflows.restore_tenant import RestoreTenantWorkflow
from workflows.retention import PinBackupWorkflow, PruneAllTenantsWorkflow
from workflows.tenant_status import ChangeTenantStatusWorkflow


def test_the_vocabulary_of_the_trail():
    assert event_action("TenantStatusChanged", {"new_status": "suspended"}) == TENANT_STATUS
    assert event_action("TenantStatusChanged", {"new_status": "deprovisioned"}) == TENANT_DEPROVISION
    assert event_action("TenantMaintained", {}) is None  # not a lifecycle change
    assert backup_read_action("BackupDrillWorkflow") == BACKUP_DRILL
    assert backup_read_action("RestoreTenantWorkflow") == BACKUP_RESTORE
    assert (deletion_reason("PruneTenantWorkflow"), deletion_reason("BackupTenantWorkflow")) == ("prune", "retention")
    assert run_actor(" ana@laptop ", "daily-backup") == "ana@laptop"  # the memo says more than the schedule
    assert run_actor(None, "daily-backup") == "schedule:daily-backup"
    assert run_actor(None, None) is None and run_actor(42, None) is None
    now = datetime(2026, 1, 15, 12, tzinfo=UTC)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("24h", now) == now - timedelta(hours=24)
    assert parse_since("2026-01-10", now) == datetime(2026, 1, 10, tzinfo=UTC)
    assert parse_since("2026-01-10T08:00+02:00", now) == datetime(2026, 1, 10, 6, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="invalid --since 'last week'"):
        parse_since("last week", now)


async def test_backup_accesses_and_changes_are_audited_with_who_asked(
    temporal_env, task_queue, cli_env, make_tenant, catalog, settings, capsys
):
    tenant = await make_tenant("aud", entries=50)
    client, me, token = temporal_env.client, local_actor(), uuid.uuid4().hex[:6]

    async def run(workflow, arg, kind: str, requested_by: str | None = None):
        run_id = f"audit-{kind}-{tenant.id}-{token}"
        memo = {REQUESTED_BY: requested_by} if requested_by else None
        return run_id, await client.execute_workflow(workflow, arg, id=run_id, task_queue=task_queue, memo=memo)

    # A run started without a memo acts for itself; the command line's runs and listings act for its user@host;
    # another starter names its requester in the memo.
    first_id, first = await run(BackupTenantWorkflow.run, BackupTenantInput(tenant_id=tenant.id, keep=1), "backup")
    done = await tenants(cli_env, "backup", "--tenant", tenant.id, "--keep", "1", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout[done.stdout.index("{") :])  # after the line naming the run
    second = result["backup_name"]
    assert result["deleted_by_retention"] == [first.backup_name]
    assert (await tenants(cli_env, "restore", tenant.id, "--list")).returncode == 0
    restore = RestoreTenantInput(tenant_id=tenant.id, keep_previous_seconds=0)
    await run(RestoreTenantWorkflow.run, restore, "restore", requested_by="ana@ops")
    drill_id, drill = await run(BackupDrillWorkflow.run, DrillInput(tenant_id=tenant.id), "drill")
    assert drill.ok
    pin, unpin = (PinRequest(tenant_id=tenant.id, backup_name=second, pinned=p) for p in (True, False))
    pin_id, _ = await run(PinBackupWorkflow.run, pin, "pin")
    unpin_id, _ = await run(PinBackupWorkflow.run, unpin, "unpin")
    suspend = StatusChange(tenant_id=tenant.id, status="suspended", reason="audit test")
    status_id, _ = await run(ChangeTenantStatusWorkflow.run, suspend, "status", requested_by="ops-bot@ci")
    # A fleet's children act for whoever started the fleet.
    fleet_id, _ = await run(PruneAllTenantsWorkflow.run, PruneInput(dry_run=True), "prune", requested_by="ops-bot@ci")

    capsys.readouterr()
    assert await audit_command("--tenant", tenant.id, "--json", settings=settings) == 0
    rows = json.loads(capsys.readouterr().out)
    seen = {(r["action"], r["backup_name"], r["actor"]) for r in rows}
    assert {
        ("backup.create", first.backup_name, f"workflow:{first_id}"),
        ("backup.create", second, me),
        ("backup.delete", first.backup_name, me),  # by the retention of the command line's backup
        ("backup.list", None, me),  # restore --list
        ("backup.restore", second, "ana@ops"),  # its bytes read
        ("tenant.restore", second, "ana@ops"),  # swapped in as the tenant's database
        ("backup.drill", second, f"workflow:{drill_id}"),
        ("backup.pin", second, f"workflow:{pin_id}"),
        ("backup.unpin", second, f"workflow:{unpin_id}"),
        ("tenant.status", None, "ops-bot@ci"),
        ("backup.list", None, "ops-bot@ci"),  # the prune's dry run, in the fleet's child
    } <= seen, sorted(seen, key=str)
    assert all(r["tenant_id"] == tenant.id for r in rows)
    assert [r["at"] for r in rows] == sorted(r["at"] for r in rows)  # oldest first, as a log reads
    by_action = {r["action"]: r for r in rows}
    assert by_action["backup.delete"]["detail"]["reason"] == "retention"
    assert by_action["backup.delete"]["workflow_id"].startswith(f"backup-{tenant.id}-")
    status = by_action["tenant.status"]
    assert status["workflow_id"] == status_id
    assert (status["detail"]["old_status"], status["detail"]["new_status"], status["detail"]["reason"]) == (
        "active",
        "suspended",
        "audit test",
    )
    child = next(r for r in rows if r["action"] == "backup.list" and r["actor"] == "ops-bot@ci")
    assert child["detail"]["purpose"] == "prune dry run"
    assert child["workflow_id"] != fleet_id and fleet_id in child["workflow_id"]  # the child's own run

    # Filters: by action prefix and time; a --since that is no time is refused before anything is read.
    pins = await catalog.audit_entries(tenant.id, datetime.now(UTC) - timedelta(hours=1), "backup.p")
    assert [r["action"] for r in pins] == ["backup.pin"]
    assert await catalog.audit_entries(tenant.id, datetime.now(UTC) + timedelta(minutes=5)) == []
    with pytest.raises(InvalidInput, match="invalid --since 'last tuesday'"):
        await audit_command("--since", "last tuesday", settings=settings)

    # Append-only: no row can be changed or removed, not even by the catalog's owner.
    with psycopg.connect(conninfo_for(settings.effective_database_url, settings.catalog_database)) as conn:
        for statement in (
            "UPDATE audit_log SET actor = 'nobody' WHERE tenant_id = %(t)s",
            "DELETE FROM audit_log WHERE tenant_id = %(t)s",
            "TRUNCATE audit_log",
        ):
            with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement, {"t": tenant.id} if "%(t)s" in statement else None)
            conn.rollback()
    assert len(await catalog.audit_entries(tenant.id)) == len(rows)


async def audit_command(*argv: str, settings) -> int:
    """`tenants audit ARGV`, parsed by the command line's parser and run in this process."""
    args = build_parser().parse_args(["audit", *argv])
    return await args.handler(args, settings)


@pytest.mark.one_server  # how a scheduled run names its actor does not change with PostgreSQL
async def test_a_scheduled_run_acts_for_its_schedule(temporal_env, task_queue, settings, catalog):
    """The daily sweep, started by its schedule, removes an abandoned `.partial` file: audited as the schedule's."""
    token = f"gone-{uuid.uuid4().hex[:8]}"
    partial = settings.storage_root / "tenants" / token / f".tenant_{token}_x.dump.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"x" * 100)
    old = (datetime.now(UTC) - timedelta(days=2)).timestamp()
    os.utime(partial, (old, old))
    schedule_id = f"audit-sweep-{uuid.uuid4().hex[:6]}"
    decl = ScheduleDeclaration(id=schedule_id, workflow="sweep", every="day", at="05:30")
    handle = await temporal_env.client.create_schedule(
        schedule_id, build_schedule(decl, settings.model_copy(update={"task_queue": task_queue}))
    )
    try:
        await handle.trigger()
        for _ in range(150):
            rows = await catalog.audit_entries(token, action_prefix="sweep.")
            if rows:
                break
            await asyncio.sleep(0.2)
    finally:
        await handle.delete()
    assert [(r["action"], r["actor"]) for r in rows] == [("sweep.remove", f"schedule:{schedule_id}")]
    assert rows[0]["detail"]["kind"] == "partial" and rows[0]["workflow_id"].startswith(schedule_id)
    assert not partial.exists()
