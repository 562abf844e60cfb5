"""UndoRestoreWorkflow (`tenants restore <id> --undo`): the database the last restore set aside becomes the
tenant's database again, through the same one-transaction swap; the restored one is set aside in turn (so the
undo can itself be undone while it is kept)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.catalog import CatalogActivities
    from activities.restore import RestoreActivities
    from tenancy.durations import MAX_DURATION_SECONDS
    from tenancy.errors import INVALID_INPUT, fail, failure_message
    from tenancy.models import (
        DropLaterInput,
        KeptDatabase,
        SwapRequest,
        TenantEvent,
        UndoRestoreInput,
        UndoRestoreResult,
    )
    from tenancy.naming import previous_database_name
    from workflows.drop_later import DropPreviousDatabaseWorkflow
    from workflows.options import QUICK, SWAP
    from workflows.tenant_lock import tenant_lock

from temporalio.workflow import ActivityCancellationType


def validate_undo_input(req: UndoRestoreInput) -> None:
    if not 0 <= req.keep_previous_seconds <= MAX_DURATION_SECONDS:
        raise fail(INVALID_INPUT, f"keep_previous_seconds must be between 0 and {MAX_DURATION_SECONDS}")
    if not 0 <= req.lock_wait_seconds <= 86_400:
        raise fail(INVALID_INPUT, "lock_wait_seconds must be between 0 and 86400")


@workflow.defn
class UndoRestoreWorkflow:
    def __init__(self) -> None:
        self._phase = "starting"

    @workflow.query
    def progress(self) -> dict[str, str]:
        return {"phase": self._phase}

    @workflow.run
    async def run(self, req: UndoRestoreInput) -> UndoRestoreResult:
        validate_undo_input(req)
        self._phase = "looking up tenant"
        tenant = await workflow.execute_activity_method(CatalogActivities.get_tenant, req.tenant_id, **QUICK)
        token = workflow.uuid4().hex[:10]
        keep_until = (
            workflow.now() + timedelta(seconds=req.keep_previous_seconds) if req.keep_previous_seconds else None
        )
        self._phase = "waiting for the tenant lock"
        async with tenant_lock(tenant.id, "restore-undo", req.lock_wait_seconds):
            self._phase = "finding the kept database"
            kept = await workflow.execute_activity_method(RestoreActivities.find_kept_database, tenant.id, **QUICK)
            names = SwapRequest(
                tenant_id=tenant.id,
                database_name=tenant.database_name,
                scratch_name=kept.name,
                previous_name=previous_database_name(tenant.database_name, token),
                keep_until=keep_until,
            )
            self._phase = "swapping the kept database back in"
            # The swap is one transaction and puts connections back on failure: nothing to compensate.
            swap = await workflow.execute_activity_method(
                RestoreActivities.swap_in_restored,
                names,
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                **SWAP,
            )
            await workflow.execute_activity_method(
                RestoreActivities.end_kept_database, args=[kept.name, "swapped back by an undo"], **QUICK
            )
            if req.keep_previous_seconds:
                self._phase = "keeping the replaced database"
                await workflow.execute_activity_method(
                    RestoreActivities.record_kept_database,
                    KeptDatabase(
                        name=names.previous_name,
                        tenant_id=tenant.id,
                        database_name=tenant.database_name,
                        workflow_id=workflow.info().workflow_id,
                        backup_name=None,
                        kept_until=keep_until,
                    ),
                    **QUICK,
                )
                await workflow.start_child_workflow(
                    DropPreviousDatabaseWorkflow.run,
                    DropLaterInput(
                        tenant_id=tenant.id,
                        database_name=tenant.database_name,
                        previous_name=names.previous_name,
                        delay_seconds=req.keep_previous_seconds,
                    ),
                    id=f"drop-previous-{tenant.id}-{token}",
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                    static_summary=f"Drop {names.previous_name} after {req.keep_previous_seconds}s",
                )
            else:
                self._phase = "dropping the replaced database"
                await workflow.execute_activity_method(RestoreActivities.drop_previous_database, names, **QUICK)

            self._phase = "clearing the tenant's cache"
            cache_error: str | None = None
            try:
                await workflow.execute_activity_method(RestoreActivities.clear_tenant_cache, tenant.id, **QUICK)
            except ActivityError as exc:
                cache_error = failure_message(exc)
            self._phase = "recording the undo"
            await workflow.execute_activity_method(
                RestoreActivities.record_event,
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
                ),
                **QUICK,
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
