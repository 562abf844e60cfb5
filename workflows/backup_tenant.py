"""BackupTenantWorkflow: dump → verify → retention, under the tenant's operation lock."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.backup import BackupActivities
    from activities.catalog import CatalogActivities
    from tenancy.bounds import validate_backup
    from tenancy.contracts.backup import BackupTenantInput, BackupTenantResult
    from tenancy.errors import INVALID_INPUT, fail
    from tenancy.messages.backup import DumpRequest, RetentionRequest
    from tenancy.retention import validate_keep
    from workflows.options import LOCAL, LONG, storage_activity
    from workflows.phase import ShowsPhase
    from workflows.tenant_lock import tenant_lock
    from workflows.validation import check_input

from temporalio.workflow import ActivityCancellationType

NAME_IN_WORKFLOW = "backup-named-in-workflow"


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
        tenant = await workflow.execute_local_activity_method(CatalogActivities.get_tenant, req.tenant_id, **LOCAL)
        self._phase = "waiting for the tenant lock"
        async with tenant_lock(tenant.id, "backup", req.lock_wait_seconds, req.lock_held_by_parent):
            name: str | None = None
            if workflow.patched(NAME_IN_WORKFLOW):
                # Named once per run: a retried dump knows what a dead attempt left under that name.
                name = self._backup_name = await storage_activity(
                    BackupActivities.name_backup, tenant.id, req.compression
                )
            self._phase = "dumping"
            dump = await workflow.execute_activity_method(
                BackupActivities.dump_database,
                DumpRequest(
                    tenant_id=tenant.id,
                    database_name=tenant.database_name,
                    compression=req.compression,
                    compression_level=req.compression_level,
                    backup_name=name,
                ),
                # Wait for pg_dump to be killed and the partial file removed before the run ends.
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                **LONG,
            )

            name = self._backup_name = dump.backup_name
            self._phase = "verifying"
            try:
                manifest = await workflow.execute_activity_method(
                    BackupActivities.verify_backup,
                    dump,
                    cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                    **LONG,
                )
            except ActivityError:
                # A backup that fails verification is removed and retention does not run.
                await storage_activity(BackupActivities.discard_backup, tenant.id, name)
                raise

            self._phase = "applying retention"
            retention = await storage_activity(
                BackupActivities.apply_retention,
                RetentionRequest(tenant_id=tenant.id, keep=req.keep, newest_backup=name),
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
