"""BackupAllTenantsWorkflow: one BackupTenantWorkflow child per active tenant, a few at a time."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.catalog import CatalogActivities
    from tenancy.errors import INVALID_INPUT, InvalidInput, fail
    from tenancy.models import BackupTenantInput, FleetBackupInput, FleetBackupResult, TenantOutcome
    from tenancy.naming import workflow_id
    from tenancy.retention import validate_keep
    from tenancy.search import tenant_attributes
    from workflows.backup_tenant import BackupTenantWorkflow
    from workflows.fanout import FanOutProgress, fan_out, run_child
    from workflows.options import QUICK


@workflow.defn
class BackupAllTenantsWorkflow:
    def __init__(self) -> None:
        self._progress = FanOutProgress()

    @workflow.query
    def progress(self) -> dict[str, int]:
        return self._progress.as_dict()

    @workflow.run
    async def run(self, req: FleetBackupInput) -> FleetBackupResult:
        try:
            validate_keep(req.keep)
        except InvalidInput as exc:
            raise fail(INVALID_INPUT, str(exc)) from None
        if req.concurrency < 1:
            raise fail(INVALID_INPUT, "concurrency must be at least 1")

        tenant_ids = await workflow.execute_activity_method(CatalogActivities.list_active_tenant_ids, **QUICK)
        started = workflow.now()

        async def back_up(tenant_id: str) -> TenantOutcome:
            child_id = workflow_id("backup", tenant_id, started)
            return await run_child(
                tenant_id,
                child_id,
                lambda: workflow.execute_child_workflow(
                    BackupTenantWorkflow.run,
                    BackupTenantInput(
                        tenant_id=tenant_id,
                        keep=req.keep,
                        compression=req.compression,
                        compression_level=req.compression_level,
                        lock_wait_seconds=req.lock_wait_seconds,
                    ),
                    id=child_id,
                    search_attributes=tenant_attributes(tenant_id),
                    static_summary=f"Backup of tenant {tenant_id} (fleet run {workflow.info().workflow_id})",
                    parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
                ),
                lambda result: {"backup_name": result.backup_name},
            )

        # One tenant's failure never stops the others: it is reported in the summary.
        outcomes = await fan_out(tenant_ids, req.concurrency, back_up, self._progress)
        failed = sum(not o.ok for o in outcomes)
        return FleetBackupResult(
            total=len(outcomes), succeeded=len(outcomes) - failed, failed=failed, outcomes=outcomes
        )
