"""RestoreTenantWorkflow: check the backup → restore into scratch → check the restored copy → swap it in →
drop (or keep for a while) the old database → clear the tenant's cache → record the restore.

Nothing touches the tenant's database before the swap; the swap is one transaction; any failure before it
removes the scratch copy and leaves the tenant as it was.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tenancy.bounds import validate_restore
    from tenancy.contracts.restore import RestoreTenantInput, RestoreTenantResult
    from tenancy.contracts.tenants import TenantEvent
    from tenancy.errors import INVALID_INPUT, fail
    from tenancy.lifecycle import CAN_CONNECT
    from tenancy.messages.backup import BackupSelection
    from tenancy.messages.restore import SwapRequest
    from tenancy.messages.tenants import TenantRequest
    from tenancy.naming import previous_database_name, scratch_database_name
    from workflows import steps
    from workflows.phase import ShowsPhase
    from workflows.restore_steps import clear_cache, keep_or_drop_previous, restore_check_swap
    from workflows.tenant_lock import tenant_lock
    from workflows.validation import check_input

KEPT_IN_CATALOG = "restore-kept-database-in-catalog"


def validate_restore_input(req: RestoreTenantInput) -> None:
    def legacy() -> None:  # the checks of runs recorded before the bounds
        if req.backup_name is not None and req.at is not None:
            raise fail(INVALID_INPUT, "give a backup name or a time, not both")
        if not 1 <= req.jobs <= 32:
            raise fail(INVALID_INPUT, "jobs must be between 1 and 32")
        if req.keep_previous_seconds < 0 or req.lock_wait_seconds < 0:
            raise fail(INVALID_INPUT, "durations must not be negative")

    check_input(lambda: validate_restore(req), legacy)


@workflow.defn
class RestoreTenantWorkflow(ShowsPhase):
    def __init__(self) -> None:
        self._phase = "starting"
        self._backup_name: str | None = None

    @workflow.query
    def progress(self) -> dict[str, str | None]:
        return {"phase": self._phase, "backup_name": self._backup_name}

    def _set_phase(self, phase: str) -> None:
        self._phase = phase

    @workflow.run
    async def run(self, req: RestoreTenantInput) -> RestoreTenantResult:
        validate_restore_input(req)
        self._phase = "looking up tenant"
        tenant = await steps.get_tenant(TenantRequest(tenant_id=req.tenant_id))
        if tenant.status == "deprovisioned":
            raise fail(
                INVALID_INPUT,
                f"tenant {tenant.id!r} is deprovisioned: bring it back from a backup with "
                f"`tenants reinstate {tenant.id}`",
            )
        token = workflow.uuid4().hex[:10]
        names = SwapRequest(
            tenant_id=tenant.id,
            database_name=tenant.database_name,
            scratch_name=scratch_database_name(tenant.database_name, token),
            previous_name=previous_database_name(tenant.database_name, token),
        )

        self._phase = "waiting for the tenant lock"
        async with tenant_lock(tenant.id, "restore", req.lock_wait_seconds):
            # 1. Check the backup.
            self._phase = "checking the backup"
            manifest = await steps.select_backup(
                BackupSelection(tenant_id=tenant.id, backup_name=req.backup_name, at=req.at)
            )
            self._backup_name = manifest.backup_name
            try:
                # 2. Restore into scratch, 3. check the restored copy, 4. swap it in.
                counts, swap, names = await restore_check_swap(
                    self._set_phase,
                    names,
                    manifest,
                    jobs=req.jobs,
                    checks=req.checks,
                    role_name=tenant.role_name,
                    grant_connect=tenant.status in CAN_CONNECT,
                    keep_seconds=req.keep_previous_seconds,
                )
            except BaseException:
                # Failed or cancelled, and every activity above has stopped: undo puts the tenant's database back
                # as it was, whether or not the swap had committed.
                self._phase = "undoing the unfinished restore"
                await steps.undo_unfinished_restore(names)
                raise

            # 5. Drop (or keep for a while) the old database, 6. clear the tenant's cache, 7. record the restore.
            keep_until = names.keep_until if swap.set_aside else None
            await keep_or_drop_previous(
                self._set_phase,
                names,
                swap,
                token=token,
                keep_seconds=req.keep_previous_seconds,
                backup_name=manifest.backup_name,
                record=bool(req.keep_previous_seconds) and workflow.patched(KEPT_IN_CATALOG),
            )
            cache_deleted, cache_error = await clear_cache(self._set_phase, tenant.id)

            self._phase = "recording the restore"
            await steps.record_event(
                TenantEvent(
                    tenant_id=tenant.id,
                    type="TenantRestored",
                    data={
                        "backup": manifest.backup_name,
                        "backup_taken_at": manifest.started_at.isoformat(),
                        "previous_database": names.previous_name if swap.set_aside else None,
                        "kept_until": keep_until.isoformat() if keep_until else None,
                        "terminated_sessions": swap.terminated_sessions,
                        "cache_keys_deleted": cache_deleted,
                        "cache_error": cache_error,
                    },
                )
            )
        self._phase = "done"
        return RestoreTenantResult(
            tenant_id=tenant.id,
            backup_name=manifest.backup_name,
            database_name=tenant.database_name,
            row_counts=counts,
            terminated_sessions=swap.terminated_sessions,
            previous_database=names.previous_name if swap.set_aside else "",
            previous_dropped=swap.set_aside and not req.keep_previous_seconds,
            keep_previous_until=keep_until,
            cache_keys_deleted=cache_deleted,
        )
