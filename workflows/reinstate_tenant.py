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
    from tenancy.bounds import JOBS, validate_lock_wait, whole
    from tenancy.contracts.provision import ReinstateTenantInput, ReinstateTenantResult
    from tenancy.errors import INVALID_INPUT, InvalidInput, fail
    from tenancy.messages.backup import BackupSelection
    from tenancy.messages.provision import Reinstatement, ReinstatementUndo, TenantDatabase
    from tenancy.messages.restore import SwapRequest
    from tenancy.messages.tenants import TenantRequest
    from tenancy.naming import previous_database_name, scratch_database_name
    from workflows import steps
    from workflows.notify import announce
    from workflows.phase import ShowsPhase
    from workflows.restore_steps import restore_check_swap
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
        tenant = await steps.get_tenant(TenantRequest(tenant_id=req.tenant_id))
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
            tenant = await steps.get_tenant(TenantRequest(tenant_id=tenant.id))
            if tenant.status != "deprovisioned":
                raise fail(
                    INVALID_INPUT,
                    f"tenant {tenant.id} is {tenant.status}, not deprovisioned: only a deprovisioned tenant can be "
                    f"reinstated; to bring back an earlier copy of its data use `tenants restore {tenant.id}`",
                )
            # 1. Nothing of its names is in the way, 2. the backup chosen and checked.
            self._phase = "checking that nothing is in the way"
            await steps.check_before_reinstatement(db)
            self._phase = "checking the backup"
            manifest = await steps.select_backup(BackupSelection(tenant_id=tenant.id, backup_name=req.backup_name))
            self._backup_name = manifest.backup_name
            created_role = False
            try:
                # 3. Its role again (marked, no login yet: the backup's GRANTs name it).
                self._phase = "creating the role"
                created_role = await steps.create_reinstated_role(db)
                # 4. Restore into scratch, check, rename into place. The tenant has no database to copy grants
                # from: its role's, never PUBLIC's.
                counts, _, _ = await restore_check_swap(
                    self._set_phase,
                    names,
                    manifest,
                    jobs=req.jobs,
                    checks=req.checks,
                    role_name=db.role_name,
                    grant_connect=True,
                )
                # 5. The role's login, new password and credentials file, 6. active with TenantReinstated.
                self._phase = "giving the role its login and new credentials"
                credentials = await steps.give_reinstated_role_login(db)
                self._phase = "activating"
                event_id = await steps.activate_reinstated_tenant(
                    Reinstatement(
                        tenant_id=tenant.id, backup_name=manifest.backup_name, backup_taken_at=manifest.started_at
                    )
                )
            except BaseException:
                # Failed or cancelled before the tenant was active again: leave it deprovisioned, as it was.
                self._phase = "undoing the unfinished reinstatement"
                await steps.undo_unfinished_restore(names)
                await steps.undo_reinstatement(ReinstatementUndo(db=db, drop_role=created_role))
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
