"""Pins and pruning: PinBackupWorkflow and PruneTenantWorkflow (retention on demand, or only explained)."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tenancy.bounds import validate_prune
    from tenancy.contracts.backup import RetentionResult
    from tenancy.contracts.fleet import FleetResult, PruneInput, TenantOutcome
    from tenancy.contracts.tenants import TenantRef
    from tenancy.errors import INVALID_INPUT, fail
    from tenancy.messages.backup import PinRequest, RetentionRequest
    from workflows import steps
    from workflows.fleet import Fleet, FleetProgress, child_options, run_child, run_fleet, start_cursor
    from workflows.tenant_lock import tenant_lock
    from workflows.validation import check_input


@workflow.defn
class PinBackupWorkflow:
    @workflow.run
    async def run(self, req: PinRequest) -> bool:
        async with tenant_lock(req.tenant_id, "pin", 60):
            return await steps.set_pinned(req)


@workflow.defn
class PruneTenantWorkflow:
    @workflow.run
    async def run(self, req: PruneInput) -> RetentionResult:
        check_input(lambda: validate_prune(req, fleet=False))
        if req.tenant_id is None:  # checked above in new runs; never an assert (it would fail the task forever)
            raise fail(INVALID_INPUT, "prune one tenant: its id is missing")
        request = RetentionRequest(tenant_id=req.tenant_id, keep=req.keep, dry_run=req.dry_run)
        if req.dry_run:  # reads only: no lock needed
            return await steps.apply_retention(request)
        async with tenant_lock(req.tenant_id, "prune", 60):
            return await steps.apply_retention(request)


@workflow.defn
class PruneAllTenantsWorkflow:
    def __init__(self) -> None:
        self._progress = FleetProgress()

    @workflow.query
    def progress(self) -> dict[str, int]:
        return self._progress.as_dict()

    @workflow.run
    async def run(self, req: PruneInput) -> FleetResult:
        check_input(lambda: validate_prune(req, fleet=True))

        async def prune(tenant: TenantRef, child_id: str) -> TenantOutcome:
            one = req.model_copy(update={"tenant_id": tenant.id, "cursor": None})
            return await run_child(
                tenant.id,
                child_id,
                lambda: workflow.execute_child_workflow(
                    PruneTenantWorkflow.run, one, **child_options("prune", tenant.id, child_id, legacy_cancels=False)
                ),
                lambda result: {"detail": explain(result)},
            )

        fleet = Fleet(kind="prune", statuses=["active", "inactive", "suspended"], start_child=prune)
        return await run_fleet(req, start_cursor(req.cursor), fleet, self._progress)


def explain(result: RetentionResult) -> str:
    return "; ".join(f"{'keep' if d.keep else 'DELETE'} {d.name}: {d.reason}" for d in result.decisions) or "no backups"
