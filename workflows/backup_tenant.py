"""BackupTenantWorkflow: 1. the tenant's operation lock → 2. the backup's name → 3. dump → 4. verify (a backup that
fails is discarded) → 5. retention (unless the parent asked for none)."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from tenancy.bounds import validate_backup
    from tenancy.contracts.backup import BackupTenantInput, BackupTenantResult, RetentionResult
    from tenancy.errors import INVALID_INPUT, fail
    from tenancy.messages.backup import BackupNameRequest, DiscardRequest, DumpRequest, RetentionRequest
    from tenancy.messages.tenants import TenantRequest
    from tenancy.retention import validate_keep
    from workflows import steps
    from workflows.phase import ShowsPhase
    from workflows.tenant_lock import tenant_lock
    from workflows.validation import check_input

NAME_IN_WORKFLOW = "backup-named-in-workflow"
# A parent that wants no retention says so (apply_retention=False) and the step is skipped; runs recorded before
# were asked for keep=MAX_KEEP instead, and ran retention with it.
WITHOUT_RETENTION = "backup-without-retention"


def backups_total():
    # Replay-safe: the workflow meter does not count again when a history is replayed.
    return workflow.metric_meter().create_counter("tenants_backups", "Tenant backups by outcome")


def validate_backup_input(req: BackupTenantInput) -> None:
    def legacy() -> None:  # the checks of runs recorded before the bounds
        validate_keep(req.keep, most=None)
        top = 9 if req.compression == "gzip" else 22
        if not 0 <= req.compression_level <= top:
            raise fail(INVALID_INPUT, f"{req.compression} level must be between 0 and {top}")

    check_input(lambda: validate_backup(req), legacy)


@workflow.defn
class BackupTenantWorkflow(ShowsPhase):
    def __init__(self) -> None:
        self._phase = "starting"
        self._backup_name: str | None = None

    @workflow.query
    def progress(self) -> dict[str, str | None]:
        return {"phase": self._phase, "backup_name": self._backup_name}

    @workflow.run
    async def run(self, req: BackupTenantInput) -> BackupTenantResult:
        try:
            result = await self._run(req)
        except Exception:  # a failed backup; not a cancellation, nor the worker evicting this run from its cache
            backups_total().with_additional_attributes({"outcome": "failed"}).add(1)
            raise
        backups_total().with_additional_attributes({"outcome": "ok"}).add(1)
        return result

    async def _run(self, req: BackupTenantInput) -> BackupTenantResult:
        validate_backup_input(req)
        self._phase = "looking up tenant"
        tenant = await steps.get_tenant_local(TenantRequest(tenant_id=req.tenant_id))
        # 1. The lock (a parent that holds it, deprovisioning or maintenance, lends it).
        self._phase = "waiting for the tenant lock"
        async with tenant_lock(tenant.id, "backup", req.lock_wait_seconds, req.lock_held_by_parent):
            # 2. The name, decided once per run: a retried dump knows what a dead attempt left under it.
            name: str | None = None
            if workflow.patched(NAME_IN_WORKFLOW):
                name = self._backup_name = await steps.name_backup(
                    BackupNameRequest(tenant_id=tenant.id, compression=req.compression)
                )
            # 3. The dump.
            self._phase = "dumping"
            dump = await steps.dump_database(
                DumpRequest(
                    tenant_id=tenant.id,
                    database_name=tenant.database_name,
                    compression=req.compression,
                    compression_level=req.compression_level,
                    backup_name=name,
                )
            )
            name = self._backup_name = dump.backup_name
            # 4. Verified, or removed (and no retention runs).
            self._phase = "verifying"
            try:
                manifest = await steps.verify_backup(dump)
            except ActivityError:
                await steps.discard_backup(DiscardRequest(tenant_id=tenant.id, backup_name=name))
                raise
            # 5. Retention, unless the parent asked for none.
            retention = RetentionResult(kept=[], deleted=[])
            if req.apply_retention or not workflow.patched(WITHOUT_RETENTION):
                self._phase = "applying retention"
                retention = await steps.apply_retention(
                    RetentionRequest(tenant_id=tenant.id, keep=req.keep, newest_backup=name)
                )

        self._phase = "done"
        return BackupTenantResult(
            tenant_id=tenant.id,
            backup_name=name,
            path=f"tenants/{tenant.id}/{name}",
            size_bytes=manifest.size_bytes,
            sha256=manifest.sha256,
            compression=manifest.compression,
            row_counts=manifest.row_counts,
            deleted_by_retention=retention.deleted,
            kept=retention.kept,
            restorable=manifest.restorable,
        )
