"""The steps restores share (RestoreTenantWorkflow, UndoRestoreWorkflow, ReinstateTenantWorkflow): load a backup into
a scratch database, check it and swap it in; keep or drop the database a swap set aside; clear the tenant's cache.
Each issues the same commands in the same order wherever it is called from."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from temporalio import workflow
from temporalio.exceptions import ActivityError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.restore import RestoreActivities
    from tenancy.errors import failure_message
    from tenancy.models import (
        BackupManifest,
        DropLaterInput,
        KeptDatabase,
        RestoredCheckRequest,
        ScratchRestoreRequest,
        SwapRequest,
        SwapResult,
    )
    from workflows.drop_later import DropPreviousDatabaseWorkflow
    from workflows.options import LONG, QUICK, SWAP

# What an undo may undo is cancelled and waited for: undo never runs beside the work it undoes.
WAIT_FOR_CLEANUP = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED

Phase = Callable[[str], None]


async def restore_check_swap(
    phase: Phase,
    names: SwapRequest,
    manifest: BackupManifest,
    *,
    jobs: int,
    checks: list[str],
    role_name: str | None,
    grant_connect: bool,
) -> tuple[dict[str, int], SwapResult]:
    """pg_restore into the scratch database, check it against the manifest, swap it in. The caller undoes on any
    failure (RestoreActivities.undo_unfinished_restore); returns the restored row counts and the swap's result."""
    phase("restoring into a scratch database")
    await workflow.execute_activity_method(
        RestoreActivities.restore_to_scratch,
        ScratchRestoreRequest(
            tenant_id=names.tenant_id,
            database_name=names.database_name,
            scratch_name=names.scratch_name,
            backup_name=manifest.backup_name,
            compression=manifest.compression,
            jobs=jobs,
            role_name=role_name,
            grant_connect=grant_connect,
        ),
        cancellation_type=WAIT_FOR_CLEANUP,
        **LONG,
    )
    phase("verifying the restored database")
    counts = await workflow.execute_activity_method(
        RestoreActivities.verify_restored,
        RestoredCheckRequest(
            tenant_id=names.tenant_id,
            scratch_name=names.scratch_name,
            row_counts=manifest.row_counts,
            checks=checks,
        ),
        cancellation_type=WAIT_FOR_CLEANUP,
        **LONG,
    )
    phase("swapping the restored database in")
    swap = await workflow.execute_activity_method(
        RestoreActivities.swap_in_restored, names, cancellation_type=WAIT_FOR_CLEANUP, **SWAP
    )
    return counts, swap


async def keep_or_drop_previous(
    phase: Phase,
    names: SwapRequest,
    *,
    token: str,
    keep_seconds: int,
    keep_until: datetime | None,
    backup_name: str | None,
    record: bool = True,
) -> None:
    """The database the swap set aside: kept `keep_seconds` (recorded in the catalog for `--undo`, then dropped by
    a durable timer of its own), or dropped at once when that is 0."""
    if not keep_seconds or keep_until is None:
        phase("dropping the previous database")
        await workflow.execute_activity_method(RestoreActivities.drop_previous_database, names, **QUICK)
        return
    phase("scheduling the drop of the previous database")
    if record:
        await workflow.execute_activity_method(
            RestoreActivities.record_kept_database,
            KeptDatabase(
                name=names.previous_name,
                tenant_id=names.tenant_id,
                database_name=names.database_name,
                workflow_id=workflow.info().workflow_id,
                backup_name=backup_name,
                kept_until=keep_until,
            ),
            **QUICK,
        )
    await workflow.start_child_workflow(
        DropPreviousDatabaseWorkflow.run,
        DropLaterInput(
            tenant_id=names.tenant_id,
            database_name=names.database_name,
            previous_name=names.previous_name,
            delay_seconds=keep_seconds,
        ),
        id=f"drop-previous-{names.tenant_id}-{token}",
        parent_close_policy=workflow.ParentClosePolicy.ABANDON,
        static_summary=f"Drop {names.previous_name} after {keep_seconds}s",
    )


async def clear_cache(phase: Phase, tenant_id: str) -> tuple[int | None, str | None]:
    """Delete the tenant's cache keys: (keys deleted, error). The data is in place either way: a cache that could
    not be cleared is reported, never a failed run."""
    phase("clearing the tenant's cache")
    try:
        return await workflow.execute_activity_method(RestoreActivities.clear_tenant_cache, tenant_id, **QUICK), None
    except ActivityError as exc:
        return None, failure_message(exc)
