"""BackupAllTenantsWorkflow: one BackupTenantWorkflow child per active tenant, a few at a time."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tenancy.bounds import validate_backup
    from tenancy.contracts.backup import BackupTenantInput
    from tenancy.contracts.fleet import FleetBackupInput, FleetResult, TenantOutcome
    from tenancy.contracts.tenants import TenantRef
    from tenancy.errors import INVALID_INPUT, fail
    from tenancy.naming import workflow_id
    from tenancy.retention import validate_keep
    from tenancy.search import tenant_attributes
    from workflows.backup_tenant import BackupTenantWorkflow
    from workflows.fanout import FanOutProgress, fan_out_catalog, finish_fleet, run_child, start_cursor
    from workflows.validation import check_input


@workflow.defn
class BackupAllTenantsWorkflow:
    def __init__(self) -> None:
        self._progress = FanOutProgress()

    @workflow.query
    def progress(self) -> dict[str, int]:
        return self._progress.as_dict()

    @workflow.run
    async def run(self, req: FleetBackupInput) -> FleetResult:
        def legacy() -> None:  # the checks of runs recorded before the bounds
            validate_keep(req.keep, most=None)
            if req.concurrency < 1:
                raise fail(INVALID_INPUT, "concurrency must be at least 1")

        check_input(lambda: validate_backup(req), legacy)
        cursor = start_cursor(req.cursor)

        async def back_up(tenant: TenantRef) -> TenantOutcome:
            child_id = workflow_id("backup", tenant.id, cursor.started_at)
            return await run_child(
                tenant.id,
                child_id,
                lambda: workflow.execute_child_workflow(
                    BackupTenantWorkflow.run,
                    BackupTenantInput(
                        tenant_id=tenant.id,
                        keep=req.keep,
                        compression=req.compression,
                        compression_level=req.compression_level,
                        lock_wait_seconds=req.lock_wait_seconds,
                    ),
                    id=child_id,
                    search_attributes=tenant_attributes(tenant.id),
                    static_summary=f"Backup of tenant {tenant.id} (fleet run {workflow.info().workflow_id})",
                    parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
                ),
                lambda result: {"backup_name": result.backup_name},
            )

        # One tenant's failure never stops the others: it is reported in the summary.
        cursor, done = await fan_out_catalog(
            statuses=["active"],
            cursor=cursor,
            page_size=req.page_size,
            history_limit=req.history_limit,
            concurrency=req.concurrency,
            one=back_up,
            progress=self._progress,
        )
        return finish_fleet(req, cursor, done)
