"""UndoRestoreWorkflow (`tenants restore <id> --undo`): the database the last restore set aside becomes the
tenant's database again, through the same one-transaction swap; the restored one is set aside in turn (so the
undo can itself be undone while it is kept)."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tenancy.bounds import validate_undo
    from tenancy.contracts.restore import UndoRestoreInput, UndoRestoreResult
    from tenancy.contracts.tenants import TenantEvent
    from tenancy.errors import INVALID_INPUT, InvalidInput, fail
    from tenancy.messages.restore import KeptDatabaseEnd, SwapRequest
    from tenancy.messages.tenants import TenantRequest
    from tenancy.naming import previous_database_name
    from workflows import steps
    from workflows.phase import ShowsPhase
    from workflows.restore_steps import clear_cache, keep_or_drop_previous, with_keep_until
    from workflows.tenant_lock import tenant_lock


def validate_undo_input(req: UndoRestoreInput) -> None:
    try:
        validate_undo(req)
    except InvalidInput as exc:
        raise fail(INVALID_INPUT, str(exc)) from None


@workflow.defn
class UndoRestoreWorkflow(ShowsPhase):
    def __init__(self) -> None:
        self._phase = "starting"

    @workflow.query
    def progress(self) -> dict[str, str]:
        return {"phase": self._phase}

    def _set_phase(self, phase: str) -> None:
        self._phase = phase

    @workflow.run
    async def run(self, req: UndoRestoreInput) -> UndoRestoreResult:
        validate_undo_input(req)
        self._phase = "looking up tenant"
        tenant = await steps.get_tenant(TenantRequest(tenant_id=req.tenant_id))
        token = workflow.uuid4().hex[:10]
        self._phase = "waiting for the tenant lock"
        async with tenant_lock(tenant.id, "restore-undo", req.lock_wait_seconds):
            # 1. The database the last restore kept.
            self._phase = "finding the kept database"
            kept = await steps.find_kept_database(TenantRequest(tenant_id=tenant.id))
            names = SwapRequest(
                tenant_id=tenant.id,
                database_name=tenant.database_name,
                scratch_name=kept.name,
                previous_name=previous_database_name(tenant.database_name, token),
            )
            names = with_keep_until(names, req.keep_previous_seconds)  # kept from the swap on
            keep_until = names.keep_until
            # 2. Swapped back in: one transaction that puts connections back on failure, nothing to compensate.
            self._phase = "swapping the kept database back in"
            swap = await steps.swap_kept_back_in(names)
            await steps.end_kept_database(KeptDatabaseEnd(name=kept.name, how="swapped back by an undo"))
            # 3. Keep or drop the restored database, 4. clear the cache, 5. record the undo.
            await keep_or_drop_previous(
                self._set_phase, names, swap, token=token, keep_seconds=req.keep_previous_seconds, backup_name=None
            )
            _, cache_error = await clear_cache(self._set_phase, tenant.id)
            self._phase = "recording the undo"
            await steps.record_event(
                TenantEvent(
                    tenant_id=tenant.id,
                    type="TenantRestoreUndone",
                    data={
                        "restored_from": kept.name,
                        "undone_restore": kept.workflow_id,
                        "undone_backup": kept.backup_name,
                        "replaced_database": names.previous_name,
                        "kept_until": keep_until.isoformat() if keep_until else None,
                        "terminated_sessions": swap.terminated_sessions,
                        "cache_error": cache_error,
                    },
                )
            )
        self._phase = "done"
        return UndoRestoreResult(
            tenant_id=tenant.id,
            database_name=tenant.database_name,
            restored_from=kept.name,
            backup_name=kept.backup_name,
            replaced_database=names.previous_name,
            replaced_kept_until=keep_until,
            terminated_sessions=swap.terminated_sessions,
        )
