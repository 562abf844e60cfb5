"""Restore drills: a backup is restored into a scratch database, checked as a restore would check it, and
dropped; the outcome is recorded, and a failed drill raises an alert. "A backup never restored is a hope."""

from __future__ import annotations

import zlib

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.catalog import CatalogActivities
    from activities.health import HealthActivities
    from activities.restore import RestoreActivities
    from tenancy.bounds import validate_drill_fleet
    from tenancy.contracts.backup import DrillInput, DrillResult
    from tenancy.contracts.fleet import DrillFleetInput, FleetResult, TenantOutcome
    from tenancy.contracts.health import Alert
    from tenancy.contracts.tenants import Tenant, TenantRef
    from tenancy.errors import failure_message
    from tenancy.messages.backup import BackupSelection
    from tenancy.messages.restore import RestoredCheckRequest, ScratchRestoreRequest, SwapRequest
    from tenancy.naming import scratch_database_name
    from workflows.fleet import Fleet, FleetProgress, child_options, run_child, run_fleet, skipped, start_cursor
    from workflows.options import LOCAL, LONG, QUICK
    from workflows.tenant_lock import tenant_lock
    from workflows.validation import check_input

DRILL_SHARED_LOCK = "drill-shared-tenant-lock"
# A drill scheduled during a long maintenance or restore waits for it rather than failing.
DRILL_LOCK_WAIT_SECONDS = 1800


@workflow.defn
class BackupDrillWorkflow:
    @workflow.run
    async def run(self, req: DrillInput) -> DrillResult:
        tenant = await workflow.execute_local_activity_method(CatalogActivities.get_tenant, req.tenant_id, **LOCAL)
        names = SwapRequest(
            tenant_id=tenant.id,
            database_name=tenant.database_name,
            scratch_name=scratch_database_name(tenant.database_name, "d" + workflow.uuid4().hex[:9]),
            previous_name="",
        )
        if workflow.patched(DRILL_SHARED_LOCK):
            # Shared: backups and other drills go on; a restore, maintenance or deprovisioning waits for the drill.
            async with tenant_lock(tenant.id, "drill", DRILL_LOCK_WAIT_SECONDS, shared=True):
                return await self._drill(req, tenant, names)
        return await self._drill(req, tenant, names)

    async def _drill(self, req: DrillInput, tenant: Tenant, names: SwapRequest) -> DrillResult:
        started = workflow.time()
        result = DrillResult(tenant_id=tenant.id, backup_name=req.backup_name, ok=False)
        try:
            workflow.set_current_details("checking the backup")
            manifest = await workflow.execute_activity_method(
                RestoreActivities.select_backup,
                BackupSelection(tenant_id=tenant.id, backup_name=req.backup_name),
                **LONG,
            )
            result.backup_name = manifest.backup_name
            workflow.set_current_details("restoring into a scratch database")
            tables = await workflow.execute_activity_method(
                RestoreActivities.restore_to_scratch,
                ScratchRestoreRequest(
                    tenant_id=tenant.id,
                    database_name=tenant.database_name,
                    scratch_name=names.scratch_name,
                    backup_name=manifest.backup_name,
                    compression=manifest.compression,
                    jobs=2,
                ),
                **LONG,
            )
            workflow.set_current_details("verifying the restored database")
            counts = await workflow.execute_activity_method(
                RestoreActivities.verify_restored,
                RestoredCheckRequest(
                    tenant_id=tenant.id,
                    scratch_name=names.scratch_name,
                    row_counts=manifest.row_counts,
                    checks=req.checks,
                ),
                **LONG,
            )
            result = result.model_copy(update={"ok": True, "tables": tables, "rows": sum(counts.values())})
        except ActivityError as exc:
            result.error = failure_message(exc)
        finally:
            # The scratch copy never outlives the drill, whatever happened.
            workflow.set_current_details("dropping the scratch database")
            await workflow.execute_activity_method(RestoreActivities.drop_scratch_database, names, **QUICK)
        result.seconds = round(workflow.time() - started, 2)
        await workflow.execute_activity_method(RestoreActivities.record_drill, result, **QUICK)
        if not result.ok:
            alert = Alert(
                kind="failed_drill",
                tenant_id=tenant.id,
                message=f"tenant {tenant.id}: restore drill of {result.backup_name or 'its newest backup'} failed: "
                f"{result.error}",
            )
            await workflow.execute_activity_method(HealthActivities.send_alerts, [alert], **QUICK)
        return result


@workflow.defn
class DrillAllTenantsWorkflow:
    """The weekly drill: every active tenant's newest backup, or a rotating share of tenants each week."""

    def __init__(self) -> None:
        self._progress = FleetProgress()

    @workflow.query
    def progress(self) -> dict[str, int]:
        return self._progress.as_dict()

    @workflow.run
    async def run(self, req: DrillFleetInput) -> FleetResult:
        check_input(lambda: validate_drill_fleet(req))
        cursor = start_cursor(req.cursor)
        week = cursor.started_at.isocalendar().week

        async def drill(tenant: TenantRef, child_id: str) -> TenantOutcome:
            if (zlib.crc32(tenant.id.encode()) + week) % req.every_weeks:
                return skipped(TenantRef(id=tenant.id, status=f"drilled another week (1 in {req.every_weeks})"))
            return await run_child(
                tenant.id,
                child_id,
                lambda: workflow.execute_child_workflow(
                    BackupDrillWorkflow.run,
                    DrillInput(tenant_id=tenant.id),
                    **child_options("drill", tenant.id, child_id),
                ),
                lambda result: {"ok": result.ok, "backup_name": result.backup_name, "error": result.error},
            )

        fleet = Fleet(kind="drill", statuses=["active"], start_child=drill)
        return await run_fleet(req, cursor, fleet, self._progress)
