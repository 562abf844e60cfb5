"""The steps restores share (RestoreTenantWorkflow, UndoRestoreWorkflow, ReinstateTenantWorkflow): 1. load a backup
into a scratch database, 2. check it and 3. swap it in; 4. keep or drop the database a swap set aside; 5. clear the
tenant's cache. Each issues the same commands in the same order wherever it is called from."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from tenancy.contracts.backup import BackupManifest
    from tenancy.contracts.restore import DropLaterInput, KeptDatabase
    from tenancy.errors import failure_message
    from tenancy.messages.restore import RestoredCheckRequest, ScratchRestoreRequest, SwapRequest, SwapResult
    from tenancy.messages.tenants import TenantRequest
    from workflows import steps
    from workflows.drop_later import DropPreviousDatabaseWorkflow

# Runs recorded before a swap said whether it set a database aside kept (and scheduled the drop of) one always.
ONLY_WHAT_WAS_SET_ASIDE = "restore-keeps-only-what-it-set-aside"

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
    keep_seconds: int = 0,
) -> tuple[dict[str, int], SwapResult, SwapRequest]:
    """pg_restore into the scratch database, check it against the manifest, swap it in. The caller undoes on any
    failure (RestoreActivities.undo_unfinished_restore). Returns the restored row counts, the swap's result and
    the names as swapped: the set-aside database is kept `keep_seconds` from the swap (its `keep_until`).
    Each step is waited for when cancelled (workflows/steps.py): the undo never runs beside them."""
    phase("restoring into a scratch database")
    await steps.restore_to_scratch(
        ScratchRestoreRequest(
            tenant_id=names.tenant_id,
            database_name=names.database_name,
            scratch_name=names.scratch_name,
            backup_name=manifest.backup_name,
            compression=manifest.compression,
            sha256=manifest.sha256,
            jobs=jobs,
            role_name=role_name,
            grant_connect=grant_connect,
            server=names.server,  # the server the swap is on (None: the tenant's, resolved by the activity)
        )
    )
    phase("verifying the restored database")
    counts = await steps.verify_restored(
        RestoredCheckRequest(
            tenant_id=names.tenant_id,
            scratch_name=names.scratch_name,
            row_counts=manifest.row_counts,
            checks=checks,
            server=names.server,
        )
    )
    phase("swapping the restored database in")
    names = with_keep_until(names, keep_seconds)
    swap = await steps.swap_in_restored(names)
    return counts, swap, names


def with_keep_until(names: SwapRequest, keep_seconds: int) -> SwapRequest:
    """The names of a swap about to be made, the set-aside database kept `keep_seconds` from now on."""
    keep_until = workflow.now() + timedelta(seconds=keep_seconds) if keep_seconds else None
    return names.model_copy(update={"keep_until": keep_until})


async def keep_or_drop_previous(
    phase: Phase,
    names: SwapRequest,
    swap: SwapResult,
    *,
    token: str,
    keep_seconds: int,
    backup_name: str | None,
    record: bool = True,
) -> None:
    """The database the swap set aside: kept `keep_seconds` (recorded in the catalog for `--undo`, then dropped by
    a durable timer of its own), or dropped at once when that is 0. Nothing, when the swap set nothing aside (the
    tenant had no database)."""
    if not swap.set_aside and workflow.patched(ONLY_WHAT_WAS_SET_ASIDE):
        return
    keep_until = names.keep_until
    if not keep_seconds or keep_until is None:
        phase("dropping the previous database")
        await steps.drop_previous_database(names)
        return
    phase("scheduling the drop of the previous database")
    if record:
        await steps.record_kept_database(
            KeptDatabase(
                name=names.previous_name,
                tenant_id=names.tenant_id,
                database_name=names.database_name,
                workflow_id=workflow.info().workflow_id,
                backup_name=backup_name,
                kept_until=keep_until,
                server=names.server,  # None: the activity records the tenant's server
            )
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
        return await steps.clear_tenant_cache(TenantRequest(tenant_id=tenant_id)), None
    except ActivityError as exc:
        return None, failure_message(exc)
