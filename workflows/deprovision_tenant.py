"""DeprovisionTenantWorkflow: final backup (by default) → end sessions, drop database and role → deprovisioned.
The catalog row and its events stay."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.catalog import CatalogActivities
    from activities.provisioning import ProvisioningActivities
    from activities.tenant_admin import TenantAdminActivities
    from tenancy.models import (
        BackupTenantInput,
        DeprovisionTenantInput,
        DeprovisionTenantResult,
        StatusChange,
        TenantDatabase,
    )
    from tenancy.search import tenant_attributes
    from workflows.backup_tenant import BackupTenantWorkflow
    from workflows.notify import announce
    from workflows.options import QUICK, SLOW_DDL
    from workflows.tenant_lock import tenant_lock


@workflow.defn
class DeprovisionTenantWorkflow:
    @workflow.run
    async def run(self, req: DeprovisionTenantInput) -> DeprovisionTenantResult:
        tenant = await workflow.execute_activity_method(CatalogActivities.get_tenant, req.tenant_id, **QUICK)
        if tenant.status == "deprovisioned":
            return DeprovisionTenantResult(tenant_id=tenant.id, final_backup=None, database_dropped=False)
        db = TenantDatabase(
            tenant_id=tenant.id, database_name=tenant.database_name, role_name=tenant.role_name or tenant.database_name
        )
        async with tenant_lock(tenant.id, "deprovision", req.lock_wait_seconds):
            final_backup = None
            if req.final_backup and tenant.status not in ("failed", "provisioning"):
                # If the final backup fails, nothing is dropped.
                backup = await workflow.execute_child_workflow(
                    BackupTenantWorkflow.run,
                    BackupTenantInput(tenant_id=tenant.id, keep=1_000_000, lock_held_by_parent=True),
                    id=f"backup-{tenant.id}-final-{workflow.info().run_id[:8]}",
                    search_attributes=tenant_attributes(tenant.id),
                    static_summary=f"Final backup of tenant {tenant.id} before deprovisioning",
                )
                final_backup = backup.backup_name
            dropped = await workflow.execute_activity_method(
                ProvisioningActivities.drop_tenant_database, db, **SLOW_DDL
            )
            status = await workflow.execute_activity_method(
                TenantAdminActivities.change_tenant_status,
                StatusChange(tenant_id=tenant.id, status="deprovisioned", reason="deprovisioned"),
                **QUICK,
            )
        await announce(status.event_id)
        return DeprovisionTenantResult(tenant_id=tenant.id, final_backup=final_backup, database_dropped=dropped)
