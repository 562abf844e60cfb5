"""AdoptTenantWorkflow (`tenants adopt`): check → record the tenant → under its lock, mark the database (and
role) as the tenant's and record it active with a TenantAdopted event. A tenant already recorded with that
database (from before marks) only gets the marks. What does not finish is undone: the marks' comments put back,
the row recorded as failed."""

from __future__ import annotations

from temporalio import workflow
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.adoption import AdoptionActivities
    from tenancy.contracts.provision import AdoptTenantInput, AdoptTenantResult
    from tenancy.errors import failure_message
    from workflows.notify import announce
    from workflows.options import HEARTBEAT_TIMEOUT, QUICK
    from workflows.phase import ShowsPhase
    from workflows.tenant_lock import tenant_lock

# The marking is undone by undo_adoption: it heartbeats and is waited for when cancelled.
_UNDOABLE = {
    "heartbeat_timeout": HEARTBEAT_TIMEOUT,
    "cancellation_type": ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
}


@workflow.defn
class AdoptTenantWorkflow(ShowsPhase):
    def __init__(self) -> None:
        self._phase = "starting"

    @workflow.query
    def progress(self) -> dict[str, str]:
        return {"phase": self._phase}

    @workflow.run
    async def run(self, req: AdoptTenantInput) -> AdoptTenantResult:
        self._phase = "checking"
        plan = await workflow.execute_activity_method(AdoptionActivities.check_adoption, req, **QUICK)
        self._phase = "recording the tenant"
        await workflow.execute_activity_method(AdoptionActivities.record_adoption, plan, **QUICK)
        try:
            async with tenant_lock(plan.tenant_id, "adopt", req.lock_wait_seconds):
                self._phase = "marking the database"
                event_id = await workflow.execute_activity_method(
                    AdoptionActivities.adopt_database, plan, **QUICK, **_UNDOABLE
                )
        except BaseException as exc:
            self._phase = "undoing"
            await workflow.execute_activity_method(
                AdoptionActivities.undo_adoption, args=[plan, failure_message(exc)], **QUICK
            )
            raise
        await announce(event_id)
        self._phase = "done"
        return AdoptTenantResult(
            tenant_id=plan.tenant_id,
            database_name=plan.database_name,
            role_name=plan.role_name,
            mark_only=plan.mark_only,
            event_id=event_id,
        )
