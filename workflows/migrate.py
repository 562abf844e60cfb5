"""Bring tenant databases to the newest schema: MigrateTenantWorkflow for one, MigrateAllTenantsWorkflow for all
(each tenant a child run, a few at a time)."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tenancy.bounds import validate_fleet
    from tenancy.contracts.fleet import FleetInput, FleetResult, TenantOutcome
    from tenancy.contracts.provision import MigrateTenantInput, MigrationResult
    from tenancy.contracts.tenants import TenantRef
    from tenancy.errors import INVALID_INPUT, fail
    from tenancy.messages.provision import TemplateRefresh, TenantDatabase
    from tenancy.messages.tenants import TenantRequest
    from workflows import steps
    from workflows.fleet import Fleet, FleetProgress, child_options, run_child, run_fleet, start_cursor
    from workflows.tenant_lock import tenant_lock
    from workflows.validation import check_input


@workflow.defn
class MigrateTenantWorkflow:
    @workflow.run
    async def run(self, req: MigrateTenantInput) -> MigrationResult:
        tenant = await steps.get_tenant(TenantRequest(tenant_id=req.tenant_id))
        db = TenantDatabase(
            tenant_id=tenant.id, database_name=tenant.database_name, role_name=tenant.role_name or tenant.database_name
        )
        async with tenant_lock(tenant.id, "migrate", 60):
            return await steps.migrate_tenant_database(db)


@workflow.defn
class MigrateAllTenantsWorkflow:
    def __init__(self) -> None:
        self._progress = FleetProgress()

    @workflow.query
    def progress(self) -> dict[str, int]:
        return self._progress.as_dict()

    @workflow.run
    async def run(self, req: FleetInput) -> FleetResult:
        def legacy() -> None:  # the checks of runs recorded before the bounds
            if req.concurrency < 1:
                raise fail(INVALID_INPUT, "concurrency must be at least 1")

        check_input(lambda: validate_fleet(req), legacy)
        if req.cursor is None:  # the template first, once, so the children do not race to rebuild it
            if workflow.patched("template-on-every-server"):
                await steps.refresh_server_templates(TemplateRefresh())  # each server has its own template
            else:
                await steps.refresh_template(TemplateRefresh())
        cursor = start_cursor(req.cursor)

        async def migrate(tenant: TenantRef, child_id: str) -> TenantOutcome:
            return await run_child(
                tenant.id,
                child_id,
                lambda: workflow.execute_child_workflow(
                    MigrateTenantWorkflow.run,
                    MigrateTenantInput(tenant_id=tenant.id),
                    **child_options("migrate", tenant.id, child_id),
                ),
                lambda result: {"detail": f"at {result.version}; applied: {', '.join(result.applied) or 'nothing'}"},
            )

        fleet = Fleet(kind="migrate", statuses=["active", "inactive", "suspended"], start_child=migrate)
        return await run_fleet(req, cursor, fleet, self._progress)
