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
    from tenancy.bounds import validate_lock_wait
    from tenancy.contracts.backup import BackupTenantInput, BackupTenantResult
    from tenancy.contracts.provision import DeprovisionTenantInput, DeprovisionTenantResult
    from tenancy.contracts.tenants import StatusChange
    from tenancy.errors import BACKUP_REJECTED, INVALID_INPUT, InvalidInput, fail
    from tenancy.messages.provision import FinalBackup, TenantDatabase
    from tenancy.messages.tenants import TenantRequest
    from tenancy.search import tenant_attributes
    from workflows import steps
    from workflows.backup_tenant import BackupTenantWorkflow
    from workflows.notify import announce
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
        tenant = await steps.get_tenant(TenantRequest(tenant_id=req.tenant_id))
        if tenant.status == "deprovisioned":
            return DeprovisionTenantResult(tenant_id=tenant.id, final_backup=None, database_dropped=False)
        db = TenantDatabase(
            tenant_id=tenant.id, database_name=tenant.database_name, role_name=tenant.role_name or tenant.database_name
        )
        async with tenant_lock(tenant.id, "deprovision", req.lock_wait_seconds):
            final_backup = None
            if req.final_backup and tenant.status not in ("failed", "provisioning"):
                # If the final backup fails, nothing is dropped.
                backup = await self._final_backup(tenant.id)
                final_backup = backup.backup_name
            dropped = await steps.drop_tenant_database(db)
            status = await steps.change_tenant_status(
                StatusChange(tenant_id=tenant.id, status="deprovisioned", reason="deprovisioned")
            )
        await announce(status.event_id)
        return DeprovisionTenantResult(tenant_id=tenant.id, final_backup=final_backup, database_dropped=dropped)

    async def _final_backup(self, tenant_id: str) -> BackupTenantResult:
        """A backup taken under this run's lock, that prunes none of the tenant's backups: they outlive it."""
        return await workflow.execute_child_workflow(
            BackupTenantWorkflow.run,
            BackupTenantInput(tenant_id=tenant_id, lock_held_by_parent=True, apply_retention=False),
            id=f"backup-{tenant_id}-final-{workflow.info().run_id[:8]}",
            search_attributes=tenant_attributes(tenant_id),
            static_summary=f"Final backup of tenant {tenant_id} before deprovisioning",
        )

    async def _run(self, req: DeprovisionTenantInput) -> DeprovisionTenantResult:
        try:
            validate_lock_wait(req.lock_wait_seconds)
        except InvalidInput as exc:
            raise fail(INVALID_INPUT, str(exc)) from None
        # 1. Look the tenant up: validates the id, the lock is taken on a tenant of the catalog.
        self._phase = "looking up tenant"
        tenant = await steps.get_tenant(TenantRequest(tenant_id=req.tenant_id))
        # 2. Its lock; read it again under the lock: another run may have deprovisioned it meanwhile.
        self._phase = "waiting for the tenant lock"
        async with tenant_lock(tenant.id, "deprovision", req.lock_wait_seconds):
            tenant = await steps.get_tenant(TenantRequest(tenant_id=tenant.id))
            if tenant.status == "deprovisioned":
                self._phase = "done"
                return DeprovisionTenantResult(tenant_id=tenant.id, final_backup=None, database_dropped=False)
            db = TenantDatabase(
                tenant_id=tenant.id,
                database_name=tenant.database_name,
                role_name=tenant.role_name or tenant.database_name,
            )
            # 3. Check everything before the first drop: the database is the tenant's.
            self._phase = "checking the tenant's database"
            check = await steps.check_before_deprovisioning(db)
            final_backup = None if check.database_exists else check.earlier_final_backup
            if check.database_exists and req.final_backup and tenant.status not in ("failed", "provisioning"):
                # 4. The final backup. If it fails, or would not restore, nothing is dropped.
                self._phase = "taking the final backup"
                backup = await self._final_backup(tenant.id)
                if not backup.restorable:
                    raise fail(
                        BACKUP_REJECTED,
                        f"the final backup {backup.backup_name} of tenant {tenant.id} was not read by pg_restore "
                        "(an encrypted backup needs the worker's age identity, TENANTS_AGE_IDENTITY_FILE), so it "
                        "is not known to restore; nothing was dropped",
                    )
                final_backup = backup.backup_name
                await steps.record_final_backup(FinalBackup(tenant_id=tenant.id, backup_name=final_backup))
            # 5. The tenant's leftover copies (scratch, kept previous), 6. its database, 7. its role.
            self._phase = "dropping the tenant's leftover databases"
            leftovers = await steps.drop_leftover_databases(db)
            self._phase = "dropping the tenant's database"
            dropped = await steps.drop_tenant_database(db)
            self._phase = "dropping the tenant's role"
            role = await steps.drop_tenant_role(db)
            # 8. Deprovisioned, with its event.
            self._phase = "recording the deprovisioning"
            status = await steps.change_tenant_status(
                StatusChange(tenant_id=tenant.id, status="deprovisioned", reason="deprovisioned")
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
