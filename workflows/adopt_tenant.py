"""AdoptTenantWorkflow (`tenants adopt`): check → record the tenant → under its lock, mark the database (and
role) as the tenant's and record it active with a TenantAdopted event. A tenant already recorded with that
database (from before marks) only gets the marks. What does not finish is undone: the marks' comments put back,
the row recorded as failed."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tenancy.contracts.provision import AdoptTenantInput, AdoptTenantResult
    from tenancy.errors import failure_message
    from tenancy.messages.provision import AdoptionUndo
    from workflows import steps
    from workflows.notify import announce
    from workflows.phase import ShowsPhase
    from workflows.tenant_lock import tenant_lock


@workflow.defn
class AdoptTenantWorkflow(ShowsPhase):
    def __init__(self) -> None:
        self._phase = "starting"

    @workflow.query
    def progress(self) -> dict[str, str]:
        return {"phase": self._phase}

    @workflow.run
    async def run(self, req: AdoptTenantInput) -> AdoptTenantResult:
        # 1. Check what is adopted.
        self._phase = "checking"
        plan = await steps.check_adoption(req)
        # 2. Record the tenant.
        self._phase = "recording the tenant"
        await steps.record_adoption(plan)
        try:
            # 3. Under its lock, mark the database (and role) and record it active.
            async with tenant_lock(plan.tenant_id, "adopt", req.lock_wait_seconds):
                self._phase = "marking the database"
                event_id = await steps.adopt_database(plan)
        except BaseException as exc:
            self._phase = "undoing"
            await steps.undo_adoption(AdoptionUndo(plan=plan, reason=failure_message(exc)))
            raise
        # 4. The TenantAdopted event to the webhook.
        await announce(event_id)
        self._phase = "done"
        return AdoptTenantResult(
            tenant_id=plan.tenant_id,
            database_name=plan.database_name,
            role_name=plan.role_name,
            mark_only=plan.mark_only,
            event_id=event_id,
        )
