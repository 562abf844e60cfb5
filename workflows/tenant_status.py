"""Status and settings changes of a tenant, each a small workflow under the tenant's lock."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.catalog import CatalogActivities
    from activities.tenant_admin import TenantAdminActivities
    from tenancy.contracts.tenants import SettingsChange, SettingsChangeResult, StatusChange, StatusChangeResult
    from workflows.notify import announce
    from workflows.options import QUICK
    from workflows.tenant_lock import tenant_lock


@workflow.defn
class ChangeTenantStatusWorkflow:
    """activate / deactivate / suspend: provisioning → active ⇄ inactive, active/inactive → suspended → active."""

    @workflow.run
    async def run(self, change: StatusChange) -> StatusChangeResult:
        await workflow.execute_activity_method(CatalogActivities.get_tenant, change.tenant_id, **QUICK)
        async with tenant_lock(change.tenant_id, f"status:{change.status}", 0):
            result = await workflow.execute_activity_method(TenantAdminActivities.change_tenant_status, change, **QUICK)
        await announce(result.event_id)
        return result


@workflow.defn
class UpdateTenantSettingsWorkflow:
    @workflow.run
    async def run(self, change: SettingsChange) -> SettingsChangeResult:
        await workflow.execute_activity_method(CatalogActivities.get_tenant, change.tenant_id, **QUICK)
        async with tenant_lock(change.tenant_id, "settings", 0):
            result = await workflow.execute_activity_method(
                TenantAdminActivities.update_tenant_settings, change, **QUICK
            )
        await announce(result.event_id)
        return result
