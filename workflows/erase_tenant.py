"""EraseTenantWorkflow: under the tenant's lock, deprovision it WITHOUT a final backup (when it is not already) →
destroy its backup key → delete every backup of it (pinned ones too) and their catalog facts → record TenantErased.
The catalog row and its events stay: they say the tenant existed and was erased, not what it held.

Why the key before the backups: with tenant keys on, destroying the key makes every copy of every backup
unreadable at once, wherever it was copied to; deleting them is then storage hygiene. A run that fails after the
key is gone cannot leave readable data behind; one that deleted first and failed before the key would leave any
copy made elsewhere readable. Deprovisioning comes first because its checks (the database is the tenant's) stop
the run before anything is dropped or destroyed.

Every step is safe to repeat, and so is the whole run: a tenant already deprovisioned goes straight to its key.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tenancy.bounds import validate_lock_wait
    from tenancy.contracts.erasure import EraseTenantInput, EraseTenantResult
    from tenancy.contracts.tenants import StatusChange
    from tenancy.errors import INVALID_INPUT, InvalidInput, fail
    from tenancy.messages.erasure import ErasureRecord
    from tenancy.messages.provision import TenantDatabase
    from tenancy.messages.tenants import TenantRequest
    from tenancy.naming import validate_tenant_id
    from workflows import steps
    from workflows.notify import announce
    from workflows.phase import ShowsPhase
    from workflows.tenant_lock import tenant_lock


@workflow.defn
class EraseTenantWorkflow(ShowsPhase):
    def __init__(self) -> None:
        self._phase = "starting"

    @workflow.query
    def progress(self) -> dict[str, str]:
        return {"phase": self._phase}

    @workflow.run
    async def run(self, req: EraseTenantInput) -> EraseTenantResult:
        try:
            validate_tenant_id(req.tenant_id)
            validate_lock_wait(req.lock_wait_seconds)
        except InvalidInput as exc:
            raise fail(INVALID_INPUT, str(exc)) from None
        self._phase = "looking up tenant"
        tenant = await steps.get_tenant(TenantRequest(tenant_id=req.tenant_id))
        self._phase = "waiting for the tenant lock"
        async with tenant_lock(tenant.id, "erase", req.lock_wait_seconds):
            tenant = await steps.get_tenant(TenantRequest(tenant_id=tenant.id))
            result = EraseTenantResult(tenant_id=tenant.id, deprovisioned=tenant.status != "deprovisioned")
            status_event: int | None = None
            if result.deprovisioned:
                # 1. Deprovisioned as DeprovisionTenantWorkflow does it, less the final backup: checked before the
                #    first drop, then its copies, its database, its role.
                db = TenantDatabase(
                    tenant_id=tenant.id,
                    database_name=tenant.database_name,
                    role_name=tenant.role_name or tenant.database_name,
                )
                self._phase = "checking the tenant's database"
                await steps.check_before_deprovisioning(db)
                self._phase = "dropping the tenant's leftover databases"
                result.leftover_databases = await steps.drop_leftover_databases(db)
                self._phase = "dropping the tenant's database"
                result.database_dropped = await steps.drop_tenant_database(db)
                self._phase = "dropping the tenant's role"
                result.role_left = (await steps.drop_tenant_role(db)).left_reason
                self._phase = "recording the deprovisioning"
                status = await steps.change_tenant_status(
                    StatusChange(tenant_id=tenant.id, status="deprovisioned", reason="erased")
                )
                status_event = status.event_id
            # 2. The key: from here on, no copy of a backup encrypted to it can be read.
            self._phase = "destroying the tenant's backup key"
            key = await steps.destroy_tenant_key(TenantRequest(tenant_id=tenant.id))
            result.key_destroyed = key.existed
            # 3. Every backup, pinned or not, and the catalog's facts about them.
            self._phase = "deleting the tenant's backups"
            erased = await steps.erase_tenant_backups(TenantRequest(tenant_id=tenant.id))
            result.backups_deleted, result.readable_elsewhere = erased.deleted, erased.readable_elsewhere
            # 4. The record of it.
            self._phase = "recording the erasure"
            result.event_id = await steps.record_erasure(
                ErasureRecord(
                    tenant_id=tenant.id,
                    deprovisioned=result.deprovisioned,
                    key_destroyed=result.key_destroyed,
                    backups_deleted=len(result.backups_deleted),
                    readable_elsewhere=len(result.readable_elsewhere),
                )
            )
        await announce(status_event)
        await announce(result.event_id)
        self._phase = "done"
        return result
