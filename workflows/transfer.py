"""Export, import and clone of a tenant.

ExportTenantWorkflow: a backup (child run: the dump is the only time the tenant's lock is held, and the archive is
verified and signed like every backup) → the export file written from it.

ImportTenantWorkflow: the export file checked whole (nothing is created before) → a new tenant provisioned (child
run: new role, new credentials, the plan's limit) → its archive put into storage as a backup of the new tenant →
restored through the scratch-verify-swap path (child RestoreTenantWorkflow) → migrated to this installation's
tenant schema → TenantImported.

CloneTenantWorkflow: both in one run, with no file: a backup of the source → a new tenant → the archive as its
backup → restored into scratch → masked (optional SQL, as the new tenant's role) → verified → swapped in; when masked,
a backup of the masked database is taken and the staged archive (the source's unmasked data) deleted, so the clone
keeps no unmasked copy. Export and clone are refused up front with TENANTS_TENANT_KEYS (no other tenant could read the
archive); an import's restored database is checked for code that would run as the admin before it is migrated.

A failure after the new tenant was provisioned deprovisions it (child run: database, role and credentials of it
go), deletes the backup this run staged and records the tenant `failed`, so the id may be used again.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tenancy.contracts.backup import BackupTenantInput, BackupTenantResult
    from tenancy.contracts.provision import (
        DeprovisionTenantInput,
        ProvisionTenantInput,
        ProvisionTenantResult,
    )
    from tenancy.contracts.restore import RestoreTenantInput
    from tenancy.contracts.tenants import TenantEvent
    from tenancy.contracts.transfer import (
        CloneTenantInput,
        CloneTenantResult,
        ExportTenantInput,
        ExportTenantResult,
        ImportAbandoned,
        ImportTenantInput,
        ImportTenantResult,
        InspectImportRequest,
        MaskRequest,
        StageRequest,
        WriteExportRequest,
    )
    from tenancy.errors import INVALID_INPUT, InvalidInput, fail, failure_message
    from tenancy.messages.backup import BackupSelection
    from tenancy.messages.provision import TenantDatabase
    from tenancy.messages.restore import RestoredCheckRequest, ScratchRestoreRequest, SwapRequest
    from tenancy.messages.tenants import TenantRequest
    from tenancy.naming import (
        backup_name,
        previous_database_name,
        scratch_database_name,
        validate_email,
        validate_tenant_id,
    )
    from tenancy.search import tenant_attributes
    from tenancy.transfer import FORMAT_VERSION, TenantDocument, validate_location, validate_mask_sql
    from workflows import steps
    from workflows.backup_tenant import BackupTenantWorkflow
    from workflows.deprovision_tenant import DeprovisionTenantWorkflow
    from workflows.phase import ShowsPhase
    from workflows.provision_tenant import ProvisionTenantWorkflow
    from workflows.restore_steps import with_keep_until
    from workflows.restore_tenant import RestoreTenantWorkflow
    from workflows.tenant_lock import tenant_lock

MAX_JOBS = 32
MAX_MASK_TIMEOUT_SECONDS = 86_400


def _checked(check) -> None:
    try:
        check()
    except InvalidInput as exc:
        raise fail(INVALID_INPUT, str(exc)) from None


def _validate_new(new_id: str, owner: str | None, jobs: int) -> None:
    validate_tenant_id(new_id)
    if owner is not None:
        validate_email(owner)
    if not 1 <= jobs <= MAX_JOBS:
        raise InvalidInput(f"jobs must be between 1 and {MAX_JOBS}")


def validate_export_input(req: ExportTenantInput) -> None:
    def check() -> None:
        validate_tenant_id(req.tenant_id)
        validate_location(req.output)
        if req.lock_wait_seconds < 0:
            raise InvalidInput("the lock wait must not be negative")

    _checked(check)


def validate_import_input(req: ImportTenantInput) -> None:
    def check() -> None:
        validate_location(req.source, "the export file")
        _validate_new(req.tenant_id, req.owner_email, req.jobs)

    _checked(check)


def validate_clone_input(req: CloneTenantInput) -> None:
    def check() -> None:
        validate_tenant_id(req.tenant_id)
        _validate_new(req.new_tenant_id, req.owner_email, req.jobs)
        if req.new_tenant_id == req.tenant_id:
            raise InvalidInput("the clone needs an id of its own")
        validate_mask_sql(req.mask_sql)
        if not 1 <= req.mask_timeout_seconds <= MAX_MASK_TIMEOUT_SECONDS:
            raise InvalidInput(f"the masking timeout must be between 1 and {MAX_MASK_TIMEOUT_SECONDS} seconds")
        if req.lock_wait_seconds < 0:
            raise InvalidInput("the lock wait must not be negative")

    _checked(check)


def _run_token() -> str:
    return workflow.info().run_id[:8]


async def _backup_of(tenant_id: str, lock_wait_seconds: int, why: str) -> BackupTenantResult:
    """A verified (and signed) backup that prunes none of the tenant's others; its dump holds the tenant's lock."""
    return await workflow.execute_child_workflow(
        BackupTenantWorkflow.run,
        BackupTenantInput(tenant_id=tenant_id, apply_retention=False, lock_wait_seconds=lock_wait_seconds),
        id=f"backup-{tenant_id}-{why}-{_run_token()}",
        search_attributes=tenant_attributes(tenant_id),
        static_summary=f"Backup of tenant {tenant_id} for its {why}",
    )


async def _provision(new: ProvisionTenantInput, why: str) -> ProvisionTenantResult:
    if new.tenant_id is None:
        raise fail(INVALID_INPUT, f"the new tenant's id must be given for an {why}")
    return await workflow.execute_child_workflow(
        ProvisionTenantWorkflow.run,
        new,
        id=f"provision-{new.tenant_id}-{why}-{_run_token()}",
        search_attributes=tenant_attributes(new.tenant_id),
        static_summary=f"New tenant {new.tenant_id} for an {why}",
    )


async def _undo_new_tenant(tenant_id: str, staged: str | None, exc: BaseException, event_type: str) -> None:
    """What a failure after provisioning leaves: the new tenant deprovisioned, the backup staged deleted, the
    tenant recorded failed (its id free again)."""
    await workflow.execute_child_workflow(
        DeprovisionTenantWorkflow.run,
        DeprovisionTenantInput(tenant_id=tenant_id, final_backup=False),
        id=f"deprovision-{tenant_id}-undo-{_run_token()}",
        search_attributes=tenant_attributes(tenant_id),
        static_summary=f"Undo of the unfinished tenant {tenant_id}",
    )
    await steps.abandon_import(
        ImportAbandoned(tenant_id=tenant_id, backup_name=staged, reason=failure_message(exc), event_type=event_type)
    )


@workflow.defn
class ExportTenantWorkflow(ShowsPhase):
    def __init__(self) -> None:
        self._phase = "starting"

    @workflow.query
    def progress(self) -> dict[str, str]:
        return {"phase": self._phase}

    @workflow.run
    async def run(self, req: ExportTenantInput) -> ExportTenantResult:
        validate_export_input(req)
        if workflow.patched("transfer-refuses-tenant-keys"):
            self._phase = "checking the tenant can be exported"
            await steps.check_transferable(TenantRequest(tenant_id=req.tenant_id))
        self._phase = "looking up tenant"
        tenant = await steps.get_tenant(TenantRequest(tenant_id=req.tenant_id))
        # 1. The backup (the only lock held), 2. the file written from it.
        self._phase = "backing up"
        backup = await _backup_of(tenant.id, req.lock_wait_seconds, "export")
        self._phase = "writing the export file"
        written = await steps.write_export(
            WriteExportRequest(tenant_id=tenant.id, backup_name=backup.backup_name, output=req.output)
        )
        self._phase = "done"
        return ExportTenantResult(
            tenant_id=tenant.id,
            output=written.output,
            size_bytes=written.size_bytes,
            sha256=written.sha256,
            backup_name=backup.backup_name,
            schema_version=written.schema_version,
            format_version=FORMAT_VERSION,
            row_counts=backup.row_counts,
        )


@workflow.defn
class ImportTenantWorkflow(ShowsPhase):
    def __init__(self) -> None:
        self._phase = "starting"

    @workflow.query
    def progress(self) -> dict[str, str]:
        return {"phase": self._phase}

    @workflow.run
    async def run(self, req: ImportTenantInput) -> ImportTenantResult:
        validate_import_input(req)
        # 1. Everything checked before anything is created.
        self._phase = "checking the export file"
        facts = await steps.inspect_import(
            InspectImportRequest(
                source=req.source,
                new_tenant_id=req.tenant_id,
                server=req.server,
                plan=req.plan,
                owner_email=req.owner_email,
            )
        )
        document = TenantDocument.model_validate(facts.document)
        exported = document.tenant
        # 2. The new tenant.
        self._phase = "provisioning the new tenant"
        new = await _provision(
            ProvisionTenantInput(
                name=req.name or exported.name,
                plan=req.plan or exported.plan,
                owner_email=req.owner_email or exported.owner_email,
                tenant_id=req.tenant_id,
                settings=exported.settings,
                server=req.server,
            ),
            "import",
        )
        staged: str | None = None
        imported_from = {
            "tenant": exported.id,
            "installation": f"{document.source.namespace}/{document.source.catalog_database}",
            "backup": document.backup_name,
        }
        try:
            # Named inside: a name that cannot be made still undoes the new tenant.
            staged = backup_name(new.tenant_id, facts.manifest.started_at, facts.manifest.compression)
            # 3. The archive as the new tenant's backup, 4. restored (scratch, verify, swap), 5. migrated.
            self._phase = "staging the archive"
            manifest = await steps.stage_import(
                StageRequest(
                    new_tenant_id=new.tenant_id,
                    new_database_name=new.database_name,
                    expected_sha256=facts.manifest.sha256,
                    imported_from=imported_from,
                    source=req.source,
                    manifest=facts.manifest,
                )
            )
            staged = manifest.backup_name
            self._phase = "restoring"
            restored = await workflow.execute_child_workflow(
                RestoreTenantWorkflow.run,
                RestoreTenantInput(tenant_id=new.tenant_id, backup_name=staged, jobs=req.jobs, keep_previous_seconds=0),
                id=f"restore-{new.tenant_id}-import-{_run_token()}",
                search_attributes=tenant_attributes(new.tenant_id),
                static_summary=f"Restore of tenant {new.tenant_id} from its import",
            )
            if workflow.patched("import-checks-database"):
                # The restored database is the archive's: no code of its may run while the admin migrates it.
                self._phase = "checking the imported database"
                await steps.check_imported_database(
                    TenantDatabase(tenant_id=new.tenant_id, database_name=new.database_name, role_name=new.role_name)
                )
            self._phase = "migrating"
            migration = await steps.migrate_tenant_database(
                TenantDatabase(tenant_id=new.tenant_id, database_name=new.database_name, role_name=new.role_name)
            )
            self._phase = "recording the import"
            await steps.record_event(
                TenantEvent(
                    tenant_id=new.tenant_id,
                    type="TenantImported",
                    data={**imported_from, "backup_imported": staged, "file_sha256": facts.file_sha256},
                )
            )
        except BaseException as exc:
            self._phase = "undoing the unfinished import"
            await _undo_new_tenant(new.tenant_id, staged, exc, "TenantImportFailed")
            raise
        self._phase = "done"
        return ImportTenantResult(
            tenant_id=new.tenant_id,
            source_tenant_id=exported.id,
            source_installation=document.source.model_dump(),
            database_name=new.database_name,
            role_name=new.role_name,
            credentials_file=new.credentials_file,
            backup_name=staged,
            row_counts=restored.row_counts,
            schema_version=migration.version,
            migrated=migration.applied,
        )


@workflow.defn
class CloneTenantWorkflow(ShowsPhase):
    def __init__(self) -> None:
        self._phase = "starting"

    @workflow.query
    def progress(self) -> dict[str, str]:
        return {"phase": self._phase}

    def _set_phase(self, phase: str) -> None:
        self._phase = phase

    @workflow.run
    async def run(self, req: CloneTenantInput) -> CloneTenantResult:
        validate_clone_input(req)
        if workflow.patched("transfer-refuses-tenant-keys"):
            self._phase = "checking the tenant can be cloned"
            await steps.check_transferable(TenantRequest(tenant_id=req.tenant_id))
        self._phase = "looking up tenant"
        source = await steps.get_tenant(TenantRequest(tenant_id=req.tenant_id))
        # 1. The source's backup (its lock held for the dump only), 2. the new tenant.
        self._phase = "backing up the source"
        backup = await _backup_of(source.id, req.lock_wait_seconds, "clone")
        self._phase = "provisioning the new tenant"
        new = await _provision(
            ProvisionTenantInput(
                name=req.name or source.name,
                plan=req.plan or source.plan,
                owner_email=req.owner_email or source.owner_email,
                tenant_id=req.new_tenant_id,
                settings=source.settings,
                server=req.server,
            ),
            "clone",
        )
        staged: str | None = None
        mask_seconds: float | None = None
        try:
            # 3. The source's archive as the new tenant's backup.
            self._phase = "staging the archive"
            manifest = await steps.stage_import(
                StageRequest(
                    new_tenant_id=new.tenant_id,
                    new_database_name=new.database_name,
                    expected_sha256=backup.sha256,
                    imported_from={
                        "tenant": source.id,
                        "installation": workflow.info().namespace,
                        "backup": backup.backup_name,
                    },
                    from_tenant=source.id,
                    from_backup=backup.backup_name,
                )
            )
            staged = manifest.backup_name
            async with tenant_lock(new.tenant_id, "clone", 0):
                # 4. Checked like any backup restored, 5. into scratch, 6. masked, 7. verified, 8. swapped in.
                self._phase = "checking the backup"
                selected = await steps.select_backup(BackupSelection(tenant_id=new.tenant_id, backup_name=staged))
                token = workflow.uuid4().hex[:10]
                names = SwapRequest(
                    tenant_id=new.tenant_id,
                    database_name=new.database_name,
                    scratch_name=scratch_database_name(new.database_name, token),
                    previous_name=previous_database_name(new.database_name, token),
                )
                try:
                    self._phase = "restoring into a scratch database"
                    await steps.restore_to_scratch(
                        ScratchRestoreRequest(
                            tenant_id=new.tenant_id,
                            database_name=new.database_name,
                            scratch_name=names.scratch_name,
                            backup_name=staged,
                            compression=selected.compression,
                            sha256=selected.sha256,
                            jobs=req.jobs,
                            role_name=new.role_name,
                            grant_connect=True,
                        )
                    )
                    if req.mask_sql is not None:
                        self._phase = "masking the scratch copy"
                        mask_seconds = await steps.mask_scratch(
                            MaskRequest(
                                tenant_id=new.tenant_id,
                                database_name=new.database_name,
                                scratch_name=names.scratch_name,
                                sql=req.mask_sql,
                                timeout_seconds=req.mask_timeout_seconds,
                            )
                        )
                    self._phase = "verifying the restored database"
                    counts = await steps.verify_restored(
                        RestoredCheckRequest(
                            tenant_id=new.tenant_id,
                            scratch_name=names.scratch_name,
                            row_counts=selected.row_counts,
                            checks=[],
                        )
                    )
                    self._phase = "swapping the restored database in"
                    names = with_keep_until(names, 0)
                    swap = await steps.swap_in_restored(names)
                except BaseException:
                    self._phase = "undoing the unfinished restore"
                    await steps.undo_unfinished_restore(names)
                    raise
                if swap.set_aside:
                    self._phase = "dropping the provisioned database"
                    await steps.drop_previous_database(names)
            kept = staged
            if req.mask_sql is not None and workflow.patched("clone-drops-unmasked-archive"):
                # The staged archive is the source's UNMASKED data: the clone keeps a backup of its masked database
                # instead (taken first, so it always has one), and the staged one goes from storage and catalog.
                self._phase = "backing up the masked clone"
                masked = await _backup_of(new.tenant_id, req.lock_wait_seconds, "masked")
                self._phase = "deleting the unmasked archive"
                await steps.drop_staged_backup(BackupSelection(tenant_id=new.tenant_id, backup_name=staged))
                kept, staged = masked.backup_name, None
            self._phase = "recording the clone"
            await steps.record_event(
                TenantEvent(
                    tenant_id=new.tenant_id,
                    type="TenantCloned",
                    data={"tenant": source.id, "backup": backup.backup_name, "masked": req.mask_sql is not None},
                )
            )
        except BaseException as exc:
            self._phase = "undoing the unfinished clone"
            await _undo_new_tenant(new.tenant_id, staged, exc, "TenantCloneFailed")
            raise
        self._phase = "done"
        return CloneTenantResult(
            tenant_id=new.tenant_id,
            source_tenant_id=source.id,
            database_name=new.database_name,
            role_name=new.role_name,
            credentials_file=new.credentials_file,
            backup_name=kept,
            row_counts=counts,
            masked=req.mask_sql is not None,
            mask_seconds=mask_seconds,
        )
