"""DeprovisionTenantWorkflow: under the tenant's lock, a final backup (by default) checked restorable → the
tenant's leftover copies (scratch, kept previous) → its database → its role's privileges everywhere, then the
role → credentials → deprovisioned. The catalog row and its events stay.

It completes or changes nothing: everything is checked before the first drop (the database is the tenant's,
the final backup restores), and a re-run after a crash finishes the job (each step is idempotent; when an
earlier attempt already dropped the database it reports that attempt's final backup instead of taking one).
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.catalog import CatalogActivities
    from activities.deprovision import DeprovisionActivities
    from activities.provisioning import ProvisioningActivities
    from activities.tenant_admin import TenantAdminActivities
    from tenancy.bounds import validate_lock_wait
    from tenancy.contracts.backup import BackupTenantInput
    from tenancy.contracts.provision import DeprovisionTenantInput, DeprovisionTenantResult
    from tenancy.contracts.tenants import StatusChange
    from tenancy.errors import BACKUP_REJECTED, INVALID_INPUT, InvalidInput, fail
    from tenancy.messages.provision import TenantDatabase
    from tenancy.retention import MAX_KEEP
    from tenancy.search import tenant_attributes
    from workflows.backup_tenant import BackupTenantWorkflow
    from workflows.notify import announce
    from workflows.options import QUICK, SLOW_DDL
    from workflows.phase import ShowsPhase
    from workflows.tenant_lock import tenant_lock

# Runs started before this change (recorded in tests/histories) replay on the original path below it.
COMPLETES_OR_CHANGES_NOTHING = "deprovision-completes-or-changes-nothing"


@workflow.defn
class DeprovisionTenantWorkflow(ShowsPhase):
    def __init__(self) -> None:
        self._phase = "starting"

    @workflow.query
    def progress(self) -> dict[str, str]:
        return {"phase": self._phase}

    @workflow.run
    async def run(self, req: DeprovisionTenantInput) -> DeprovisionTenantResult:
        if workflow.patched(COMPLETES_OR_CHANGES_NOTHING):
            return await self._run(req)
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
                    BackupTenantInput(tenant_id=tenant.id, keep=MAX_KEEP, lock_held_by_parent=True),
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

    async def _run(self, req: DeprovisionTenantInput) -> DeprovisionTenantResult:
        try:
            validate_lock_wait(req.lock_wait_seconds)
        except InvalidInput as exc:
            raise fail(INVALID_INPUT, str(exc)) from None
        self._phase = "looking up tenant"
        # Validates the id: the lock is taken on a tenant of the catalog.
        tenant = await workflow.execute_activity_method(CatalogActivities.get_tenant, req.tenant_id, **QUICK)
        self._phase = "waiting for the tenant lock"
        async with tenant_lock(tenant.id, "deprovision", req.lock_wait_seconds):
            # Read again under the lock: another run may have deprovisioned it meanwhile.
            tenant = await workflow.execute_activity_method(CatalogActivities.get_tenant, tenant.id, **QUICK)
            if tenant.status == "deprovisioned":
                self._phase = "done"
                return DeprovisionTenantResult(tenant_id=tenant.id, final_backup=None, database_dropped=False)
            db = TenantDatabase(
                tenant_id=tenant.id,
                database_name=tenant.database_name,
                role_name=tenant.role_name or tenant.database_name,
            )
            self._phase = "checking the tenant's database"
            check = await workflow.execute_activity_method(
                DeprovisionActivities.check_before_deprovisioning, db, **QUICK
            )
            final_backup = None if check.database_exists else check.earlier_final_backup
            if check.database_exists and req.final_backup and tenant.status not in ("failed", "provisioning"):
                # If the final backup fails, or would not restore, nothing is dropped.
                self._phase = "taking the final backup"
                backup = await workflow.execute_child_workflow(
                    BackupTenantWorkflow.run,
                    BackupTenantInput(tenant_id=tenant.id, keep=MAX_KEEP, lock_held_by_parent=True),
                    id=f"backup-{tenant.id}-final-{workflow.info().run_id[:8]}",
                    search_attributes=tenant_attributes(tenant.id),
                    static_summary=f"Final backup of tenant {tenant.id} before deprovisioning",
                )
                if not backup.restorable:
                    raise fail(
                        BACKUP_REJECTED,
                        f"the final backup {backup.backup_name} of tenant {tenant.id} was not read by pg_restore "
                        "(an encrypted backup needs the worker's age identity, TENANTS_AGE_IDENTITY_FILE), so it "
                        "is not known to restore; nothing was dropped",
                    )
                final_backup = backup.backup_name
                await workflow.execute_activity_method(
                    DeprovisionActivities.record_final_backup, args=[tenant.id, final_backup], **QUICK
                )
            self._phase = "dropping the tenant's leftover databases"
            leftovers = await workflow.execute_activity_method(
                DeprovisionActivities.drop_leftover_databases, db, **SLOW_DDL
            )
            self._phase = "dropping the tenant's database"
            dropped = await workflow.execute_activity_method(
                ProvisioningActivities.drop_tenant_database, db, **SLOW_DDL
            )
            self._phase = "dropping the tenant's role"
            role = await workflow.execute_activity_method(DeprovisionActivities.drop_tenant_role, db, **SLOW_DDL)
            self._phase = "recording the deprovisioning"
            status = await workflow.execute_activity_method(
                TenantAdminActivities.change_tenant_status,
                StatusChange(tenant_id=tenant.id, status="deprovisioned", reason="deprovisioned"),
                **QUICK,
            )
        await announce(status.event_id)
        self._phase = "done"
        return DeprovisionTenantResult(
            tenant_id=tenant.id,
            final_backup=final_backup,
            database_dropped=dropped,
            leftover_databases=leftovers,
            role_left=role.left_reason,
        )
