"""Restore drills: a backup is restored into a scratch database, checked as a restore would check it, and
dropped; the outcome is recorded, and a failed drill raises an alert. "A backup never restored is a hope."""

from __future__ import annotations

import zlib

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from tenancy.bounds import validate_drill_fleet
    from tenancy.contracts.backup import DrillInput, DrillResult
    from tenancy.contracts.fleet import DrillFleetInput, FleetResult, TenantOutcome
    from tenancy.contracts.health import Alert
    from tenancy.contracts.tenants import Tenant, TenantRef
    from tenancy.errors import failure_message
    from tenancy.messages.backup import BackupSelection
    from tenancy.messages.health import AlertBatch
    from tenancy.messages.restore import RestoredCheckRequest, ScratchDatabase, ScratchRestoreRequest
    from tenancy.messages.tenants import TenantRequest
    from tenancy.naming import scratch_database_name
    from workflows import steps
    from workflows.fleet import Fleet, FleetProgress, child_options, run_child, run_fleet, skipped, start_cursor
    from workflows.tenant_lock import tenant_lock
    from workflows.validation import check_input

DRILL_SHARED_LOCK = "drill-shared-tenant-lock"
# A drill scheduled during a long maintenance or restore waits for it rather than failing.
DRILL_LOCK_WAIT_SECONDS = 1800
# pg_restore jobs of a drill: it runs beside the tenant's own traffic (a restore's default, RestoreTenantInput.jobs).
DRILL_RESTORE_JOBS = 2


@workflow.defn
class BackupDrillWorkflow:
    @workflow.run
    async def run(self, req: DrillInput) -> DrillResult:
        tenant = await steps.get_tenant_local(TenantRequest(tenant_id=req.tenant_id))
        scratch = ScratchDatabase(
            tenant_id=tenant.id,
            database_name=tenant.database_name,
            scratch_name=scratch_database_name(tenant.database_name, "d" + workflow.uuid4().hex[:9]),
        )
        if workflow.patched(DRILL_SHARED_LOCK):
            # Shared: backups and other drills go on; a restore, maintenance or deprovisioning waits for the drill.
            async with tenant_lock(tenant.id, "drill", DRILL_LOCK_WAIT_SECONDS, shared=True):
                return await self._drill(req, tenant, scratch)
        return await self._drill(req, tenant, scratch)

    async def _drill(self, req: DrillInput, tenant: Tenant, scratch: ScratchDatabase) -> DrillResult:
        started = workflow.time()
        result = DrillResult(tenant_id=tenant.id, backup_name=req.backup_name, ok=False)
        try:
            # 1. Check the backup, 2. restore it into a scratch database, 3. check that as a restore would.
            workflow.set_current_details("checking the backup")
            manifest = await steps.select_backup(BackupSelection(tenant_id=tenant.id, backup_name=req.backup_name))
            result.backup_name = manifest.backup_name
            workflow.set_current_details("restoring into a scratch database")
            tables = await steps.restore_drill_copy(
                ScratchRestoreRequest(
                    tenant_id=tenant.id,
                    database_name=tenant.database_name,
                    scratch_name=scratch.scratch_name,
                    backup_name=manifest.backup_name,
                    compression=manifest.compression,
                    sha256=manifest.sha256,
                    jobs=DRILL_RESTORE_JOBS,
                )
            )
            workflow.set_current_details("verifying the restored database")
            counts = await steps.verify_drill_copy(
                RestoredCheckRequest(
                    tenant_id=tenant.id,
                    scratch_name=scratch.scratch_name,
                    row_counts=manifest.row_counts,
                    checks=req.checks,
                )
            )
            result = result.model_copy(update={"ok": True, "tables": tables, "rows": sum(counts.values())})
        except ActivityError as exc:
            result.error = failure_message(exc)
        finally:
            # 4. The scratch copy never outlives the drill, whatever happened.
            workflow.set_current_details("dropping the scratch database")
            await steps.drop_scratch_database(scratch)
        # 5. The outcome recorded, 6. an alert when the drill failed.
        result.seconds = round(workflow.time() - started, 2)
        await steps.record_drill(result)
        if not result.ok:
            alert = Alert(
                kind="failed_drill",
                tenant_id=tenant.id,
                message=f"tenant {tenant.id}: restore drill of {result.backup_name or 'its newest backup'} failed: "
                f"{result.error}",
            )
            await steps.send_alerts(AlertBatch(alerts=[alert]))
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
