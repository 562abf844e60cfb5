"""BackupAllTenantsWorkflow: one BackupTenantWorkflow child per active tenant, a few at a time."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tenancy.bounds import validate_backup
    from tenancy.contracts.backup import BackupTenantInput
    from tenancy.contracts.fleet import FleetBackupInput, FleetResult, TenantOutcome
    from tenancy.contracts.tenants import TenantRef
    from tenancy.errors import INVALID_INPUT, fail
    from tenancy.retention import validate_keep
    from workflows.backup_tenant import BackupTenantWorkflow
    from workflows.fleet import Fleet, FleetProgress, child_options, run_child, run_fleet, start_cursor
    from workflows.validation import check_input


@workflow.defn
class BackupAllTenantsWorkflow:
    def __init__(self) -> None:
        self._progress = FleetProgress()

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

        async def back_up(tenant: TenantRef, child_id: str) -> TenantOutcome:
            backup = BackupTenantInput(
                tenant_id=tenant.id,
                keep=req.keep,
                compression=req.compression,
                compression_level=req.compression_level,
                lock_wait_seconds=req.lock_wait_seconds,
            )
            return await run_child(
                tenant.id,
                child_id,
                lambda: workflow.execute_child_workflow(
                    BackupTenantWorkflow.run, backup, **child_options("backup", tenant.id, child_id)
                ),
                lambda result: {"backup_name": result.backup_name},
            )

        # One tenant's failure never stops the others: it is reported in the summary.
        fleet = Fleet(kind="backup", statuses=["active"], start_child=back_up)
        return await run_fleet(req, start_cursor(req.cursor), fleet, self._progress)
