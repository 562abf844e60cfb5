"""Pins and pruning: PinBackupWorkflow and PruneTenantWorkflow (retention on demand, or only explained)."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.backup import BackupActivities
    from tenancy.bounds import validate_prune
    from tenancy.contracts.backup import RetentionResult
    from tenancy.contracts.fleet import FleetResult, PruneInput, TenantOutcome
    from tenancy.contracts.tenants import TenantRef
    from tenancy.errors import INVALID_INPUT, fail
    from tenancy.messages.backup import PinRequest, RetentionRequest
    from tenancy.naming import workflow_id
    from tenancy.search import tenant_attributes
    from workflows.fanout import FanOutProgress, fan_out_catalog, finish_fleet, run_child, start_cursor
    from workflows.options import LOCAL
    from workflows.tenant_lock import tenant_lock
    from workflows.validation import check_input


@workflow.defn
class PinBackupWorkflow:
    @workflow.run
    async def run(self, req: PinRequest) -> bool:
        async with tenant_lock(req.tenant_id, "pin", 60):
            return await workflow.execute_local_activity_method(BackupActivities.set_pinned, req, **LOCAL)


@workflow.defn
class PruneTenantWorkflow:
    @workflow.run
    async def run(self, req: PruneInput) -> RetentionResult:
        check_input(lambda: validate_prune(req, fleet=False))
        if req.tenant_id is None:  # checked above in new runs; never an assert (it would fail the task forever)
            raise fail(INVALID_INPUT, "prune one tenant: its id is missing")
        request = RetentionRequest(tenant_id=req.tenant_id, keep=req.keep, dry_run=req.dry_run)
        if req.dry_run:  # reads only: no lock needed
            return await workflow.execute_local_activity_method(BackupActivities.apply_retention, request, **LOCAL)
        async with tenant_lock(req.tenant_id, "prune", 60):
            return await workflow.execute_local_activity_method(BackupActivities.apply_retention, request, **LOCAL)


@workflow.defn
class PruneAllTenantsWorkflow:
    def __init__(self) -> None:
        self._progress = FanOutProgress()

    @workflow.query
    def progress(self) -> dict[str, int]:
        return self._progress.as_dict()

    @workflow.run
    async def run(self, req: PruneInput) -> FleetResult:
        check_input(lambda: validate_prune(req, fleet=True))
        cursor = start_cursor(req.cursor)

        async def prune(tenant: TenantRef) -> TenantOutcome:
            child_id = workflow_id("prune", tenant.id, cursor.started_at)
            return await run_child(
                tenant.id,
                child_id,
                lambda: workflow.execute_child_workflow(
                    PruneTenantWorkflow.run,
                    req.model_copy(update={"tenant_id": tenant.id, "cursor": None}),
                    id=child_id,
                    search_attributes=tenant_attributes(tenant.id),
                ),
                lambda result: {
                    "detail": "; ".join(
                        f"{'keep' if d.keep else 'DELETE'} {d.name}: {d.reason}" for d in result.decisions
                    )
                    or "no backups"
                },
            )

        cursor, done = await fan_out_catalog(
            statuses=["active", "inactive", "suspended"],
            cursor=cursor,
            page_size=req.page_size,
            history_limit=req.history_limit,
            concurrency=req.concurrency,
            one=prune,
            progress=self._progress,
        )
        return finish_fleet(req, cursor, done)
