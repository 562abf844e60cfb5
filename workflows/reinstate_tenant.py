"""ReinstateTenantWorkflow: a deprovisioned tenant comes back from one of its backups. Under the tenant's lock:
nothing of its names is in the way → choose and check the backup → its role again (marked, no login yet: the
backup's GRANTs name it) → restore into a scratch database → verify it → rename it into place → the role's login,
new password and credentials file → active, with a TenantReinstated event.

A failure or cancellation before the end removes the scratch copy, the database if it was already renamed into
place, and the role if this run created it: the tenant stays deprovisioned, as it was.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.catalog import CatalogActivities
    from activities.deprovision import DeprovisionActivities
    from activities.provisioning import ProvisioningActivities
    from activities.restore import RestoreActivities
    from tenancy.bounds import JOBS, validate_lock_wait, whole
    from tenancy.contracts.provision import ReinstateTenantInput, ReinstateTenantResult
    from tenancy.errors import INVALID_INPUT, InvalidInput, fail
    from tenancy.messages.backup import BackupSelection
    from tenancy.messages.provision import Reinstatement, ReinstatementUndo, TenantDatabase
    from tenancy.messages.restore import SwapRequest
    from tenancy.naming import previous_database_name, scratch_database_name
    from workflows.notify import announce
    from workflows.options import LONG, QUICK
    from workflows.phase import ShowsPhase
    from workflows.restore_steps import WAIT_FOR_CLEANUP, restore_check_swap
    from workflows.tenant_lock import tenant_lock


def validate_reinstate_input(req: ReinstateTenantInput) -> None:
    try:
        whole("--jobs", req.jobs, *JOBS)
        validate_lock_wait(req.lock_wait_seconds)
    except InvalidInput as exc:
        raise fail(INVALID_INPUT, str(exc)) from None


@workflow.defn
class ReinstateTenantWorkflow(ShowsPhase):
    def __init__(self) -> None:
        self._phase = "starting"
        self._backup_name: str | None = None

    @workflow.query
    def progress(self) -> dict[str, str | None]:
        return {"phase": self._phase, "backup_name": self._backup_name}

    def _set_phase(self, phase: str) -> None:
        self._phase = phase

    @workflow.run
    async def run(self, req: ReinstateTenantInput) -> ReinstateTenantResult:
        validate_reinstate_input(req)
        self._phase = "looking up tenant"
        tenant = await workflow.execute_activity_method(CatalogActivities.get_tenant, req.tenant_id, **QUICK)
        token = workflow.uuid4().hex[:10]
        names = SwapRequest(
            tenant_id=tenant.id,
            database_name=tenant.database_name,
            scratch_name=scratch_database_name(tenant.database_name, token),
            previous_name=previous_database_name(tenant.database_name, token),
        )
        db = TenantDatabase(
            tenant_id=tenant.id, database_name=tenant.database_name, role_name=tenant.role_name or tenant.database_name
        )

        self._phase = "waiting for the tenant lock"
        async with tenant_lock(tenant.id, "reinstate", req.lock_wait_seconds):
            tenant = await workflow.execute_activity_method(CatalogActivities.get_tenant, tenant.id, **QUICK)
            if tenant.status != "deprovisioned":
                raise fail(
                    INVALID_INPUT,
                    f"tenant {tenant.id} is {tenant.status}, not deprovisioned: only a deprovisioned tenant can be "
                    f"reinstated; to bring back an earlier copy of its data use `tenants restore {tenant.id}`",
                )
            self._phase = "checking that nothing is in the way"
            await workflow.execute_activity_method(DeprovisionActivities.check_before_reinstatement, db, **QUICK)
            self._phase = "checking the backup"
            manifest = await workflow.execute_activity_method(
                RestoreActivities.select_backup,
                BackupSelection(tenant_id=tenant.id, backup_name=req.backup_name),
                **LONG,
            )
            self._backup_name = manifest.backup_name
            created_role = False
            try:
                self._phase = "creating the role"
                created_role = await workflow.execute_activity_method(
                    DeprovisionActivities.create_reinstated_role, db, cancellation_type=WAIT_FOR_CLEANUP, **QUICK
                )
                # The tenant has no database to copy grants from: its role's, never PUBLIC's.
                counts, _, _ = await restore_check_swap(
                    self._set_phase,
                    names,
                    manifest,
                    jobs=req.jobs,
                    checks=req.checks,
                    role_name=db.role_name,
                    grant_connect=True,
                )
                self._phase = "giving the role its login and new credentials"
                credentials = await workflow.execute_activity_method(
                    ProvisioningActivities.create_tenant_role, db, cancellation_type=WAIT_FOR_CLEANUP, **QUICK
                )
                self._phase = "activating"
                event_id = await workflow.execute_activity_method(
                    DeprovisionActivities.activate_reinstated_tenant,
                    Reinstatement(
                        tenant_id=tenant.id, backup_name=manifest.backup_name, backup_taken_at=manifest.started_at
                    ),
                    **QUICK,
                )
            except BaseException:
                # Failed or cancelled before the tenant was active again: leave it deprovisioned, as it was.
                self._phase = "undoing the unfinished reinstatement"
                await workflow.execute_activity_method(RestoreActivities.undo_unfinished_restore, names, **QUICK)
                await workflow.execute_activity_method(
                    DeprovisionActivities.undo_reinstatement,
                    ReinstatementUndo(db=db, drop_role=created_role),
                    **QUICK,
                )
                raise

        await announce(event_id)
        self._phase = "done"
        return ReinstateTenantResult(
            tenant_id=tenant.id,
            backup_name=manifest.backup_name,
            database_name=tenant.database_name,
            role_name=db.role_name,
            row_counts=counts,
            credentials_file=credentials,
        )
