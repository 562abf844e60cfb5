"""Status and settings changes of a tenant, each a small workflow under the tenant's lock."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tenancy.contracts.tenants import SettingsChange, SettingsChangeResult, StatusChange, StatusChangeResult
    from tenancy.messages.tenants import TenantRequest
    from workflows import steps
    from workflows.notify import announce
    from workflows.tenant_lock import tenant_lock


@workflow.defn
class ChangeTenantStatusWorkflow:
    """activate / deactivate / suspend: provisioning → active ⇄ inactive, active/inactive → suspended → active."""

    @workflow.run
    async def run(self, change: StatusChange) -> StatusChangeResult:
        await steps.get_tenant(TenantRequest(tenant_id=change.tenant_id))
        async with tenant_lock(change.tenant_id, f"status:{change.status}", 0):
            result = await steps.change_tenant_status(change)
        await announce(result.event_id)
        return result


@workflow.defn
class UpdateTenantSettingsWorkflow:
    @workflow.run
    async def run(self, change: SettingsChange) -> SettingsChangeResult:
        await steps.get_tenant(TenantRequest(tenant_id=change.tenant_id))
        async with tenant_lock(change.tenant_id, "settings", 0):
            result = await steps.update_tenant_settings(change)
        await announce(result.event_id)
        return result
