"""Recorded histories of every workflow replay on the current code without non-determinism errors: the check
to run before deploying a change to a workflow (see docs/operations.md).

The histories in tests/histories/ were recorded from real runs and are append-only (tests/recording.py): after an
intended, patched change, add histories of the new code with TENANTS_RECORD_HISTORIES=1 .venv/bin/pytest -k record
"""

from __future__ import annotations

import json
import uuid

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.infra.storage import open_storage
from tenancy.contracts.backup import BackupTenantInput, DrillInput
from tenancy.contracts.fleet import DrillFleetInput, FleetBackupInput, FleetInput, FleetMaintenanceInput, PruneInput
from tenancy.contracts.health import HealthInput
from tenancy.contracts.maintenance import MaintainTenantInput
from tenancy.contracts.provision import DeprovisionTenantInput, ProvisionTenantInput
from tenancy.contracts.restore import RestoreTenantInput
from tenancy.contracts.sweep import SweepInput
from tenancy.contracts.tenants import SettingsChange, StatusChange
from tenancy.messages.backup import PinRequest
from tests.recording import HISTORIES, RECORD, recorded_sums, save_history, sha256_of, workflow_id_of
from workflows.backup_fleet import BackupAllTenantsWorkflow
from workflows.backup_tenant import BackupTenantWorkflow
from workflows.deprovision_tenant import DeprovisionTenantWorkflow
from workflows.drill import BackupDrillWorkflow, DrillAllTenantsWorkflow
from workflows.health_check import HealthCheckWorkflow
from workflows.maintain_tenant import MaintainAllTenantsWorkflow, MaintainTenantWorkflow
from workflows.migrate import MigrateAllTenantsWorkflow
from workflows.provision_tenant import ProvisionTenantWorkflow
from workflows.registry import WORKFLOWS
from workflows.restore_tenant import RestoreTenantWorkflow
from workflows.retention import PinBackupWorkflow, PruneAllTenantsWorkflow, PruneTenantWorkflow
from workflows.sweep import SweepWorkflow
from workflows.tenant_status import ChangeTenantStatusWorkflow, UpdateTenantSettingsWorkflow


def test_recorded_histories_are_never_changed_or_deleted():
    sums = recorded_sums()
    on_disk = {p.name for p in HISTORIES.glob("*.json")}
    assert sorted(set(sums) - on_disk) == [], "recorded histories were deleted"
    assert sorted(on_disk - set(sums)) == [], "histories added by hand: record them with tests/recording.save_history"
    changed = [name for name, digest in sums.items() if sha256_of(HISTORIES / name) != digest]
    assert changed == [], "recorded histories were changed: add new ones instead"
    # Named by workflow type and date (those recorded before the rule keep their names: never renamed).
    for name in (n for n in on_disk if "--" in n):
        kind, date = name.split("--", 1)[0].rsplit("-", 1)
        assert kind.endswith("Workflow") and len(date) == 8 and date.isdigit(), name


async def test_recorded_histories_replay_on_the_current_code():
    files = sorted(HISTORIES.glob("*.json"))
    recorded = {
        json.loads(f.read_text())["events"][0]["workflowExecutionStartedEventAttributes"]["workflowType"]["name"]
        for f in files
    }
    # Every workflow type the worker runs has at least one recorded history.
    assert {w.__temporal_workflow_definition.name for w in WORKFLOWS} <= recorded
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    for path in files:
        await replayer.replay_workflow(WorkflowHistory.from_json(workflow_id_of(path), path.read_text()))


@pytest.mark.skipif(not RECORD, reason="records the histories only when TENANTS_RECORD_HISTORIES=1")
async def test_record_histories(temporal_env, task_queue, make_tenant, catalog, settings):
    client = temporal_env.client
    tenant = await make_tenant(entries=100)
    runs = [
        (BackupTenantWorkflow.run, BackupTenantInput(tenant_id=tenant.id)),
        (BackupAllTenantsWorkflow.run, FleetBackupInput(keep=3)),
        (RestoreTenantWorkflow.run, RestoreTenantInput(tenant_id=tenant.id, keep_previous_seconds=1)),
        (MaintainTenantWorkflow.run, MaintainTenantInput(tenant_id=tenant.id, tasks=["backup", "cleanup", "analyze"])),
        (MaintainAllTenantsWorkflow.run, FleetMaintenanceInput(tasks=["cleanup"], dry_run=True)),
        (MigrateAllTenantsWorkflow.run, FleetInput()),
        (HealthCheckWorkflow.run, HealthInput(send_alerts=True)),
        (BackupDrillWorkflow.run, DrillInput(tenant_id=tenant.id)),
        (DrillAllTenantsWorkflow.run, DrillFleetInput()),
        (PruneAllTenantsWorkflow.run, PruneInput(dry_run=True)),
        (PruneTenantWorkflow.run, PruneInput(tenant_id=tenant.id, dry_run=False)),
    ]
    provisioned = f"replay-{uuid.uuid4().hex[:6]}"
    runs += [
        (
            ProvisionTenantWorkflow.run,
            ProvisionTenantInput(name="Replay", plan="pro", owner_email="r@example.com", tenant_id=provisioned),
        ),
        (UpdateTenantSettingsWorkflow.run, SettingsChange(tenant_id=provisioned, changes={"language": "es"})),
        (ChangeTenantStatusWorkflow.run, StatusChange(tenant_id=provisioned, status="suspended", reason="replay")),
        (DeprovisionTenantWorkflow.run, DeprovisionTenantInput(tenant_id=provisioned)),
        (SweepWorkflow.run, SweepInput(dry_run=True)),
    ]
    HISTORIES.mkdir(exist_ok=True)
    try:
        for run, arg in [*runs, (PinBackupWorkflow.run, None)]:
            if arg is None:
                arg = PinRequest(
                    tenant_id=tenant.id, backup_name=open_storage(settings).list_backups(tenant.id)[-1], pinned=True
                )
            handle = await client.start_workflow(run, arg, id=f"replay-{uuid.uuid4().hex[:8]}", task_queue=task_queue)
            await handle.result()
            save_history(await handle.fetch_history(), run.__qualname__.split(".")[0])
        # The children and the workflows they start, recorded too.
        seen: list[str] = []
        async for execution in client.list_workflows(
            "WorkflowType IN ('SendWelcomeEmailWorkflow', 'DeliverEventWorkflow', 'DropPreviousDatabaseWorkflow', "
            "'MigrateTenantWorkflow') AND ExecutionStatus = 'Completed'"
        ):
            if seen.count(execution.workflow_type) >= 2:  # two of each are enough
                continue
            seen.append(execution.workflow_type)
            history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
            save_history(history, execution.workflow_type)
    finally:
        await catalog.drop_tenant(provisioned)
