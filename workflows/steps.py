"""Every activity call of the workflows, one typed step each: which activity, local or regular, with which timeouts,
retries, heartbeat and cancellation (the policies are in workflows/options.py). A workflow calls
`await steps.dump_database(req)` and reads as the numbered steps of its operation; no call site spreads options.

A step issues the same command wherever it is called from (an activity or a local activity of that type, after the
same workflow.patched checks), so recorded histories replay. Where callers need different commands, or a different
cancellation, there are two steps and their names say why: get_tenant / get_tenant_local, a restore's
restore_to_scratch / verify_restored / swap_in_restored and a drill's or an undo's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.adoption import AdoptionActivities
    from activities.backup import BackupActivities
    from activities.catalog import CatalogActivities
    from activities.deprovision import DeprovisionActivities
    from activities.erasure import ErasureActivities
    from activities.health import HealthActivities
    from activities.maintenance import MaintenanceActivities
    from activities.move import MoveActivities
    from activities.notify import NotifyActivities
    from activities.provisioning import ProvisioningActivities
    from activities.restore import RestoreActivities
    from activities.sweep import SweepActivities
    from activities.tenant_admin import TenantAdminActivities
    from activities.transfer import TransferActivities
    from tenancy.contracts.backup import BackupManifest, DrillResult, DumpResult, RetentionResult
    from tenancy.contracts.health import HealthInput, HealthReport
    from tenancy.contracts.maintenance import (
        AnalyzeResult,
        CleanupResult,
        MaintenancePlan,
        OptimizeResult,
        VacuumResult,
    )
    from tenancy.contracts.provision import AdoptTenantInput, MigrationResult, ProvisionTenantInput, WelcomeMail
    from tenancy.contracts.restore import KeptDatabase
    from tenancy.contracts.sweep import SweepInput, SweepReport
    from tenancy.contracts.tenants import (
        DeliverEventInput,
        SettingsChange,
        SettingsChangeResult,
        StatusChange,
        StatusChangeResult,
        Tenant,
        TenantEvent,
        TenantRef,
    )
    from tenancy.contracts.transfer import (
        ExportWritten,
        ImportAbandoned,
        ImportFacts,
        InspectImportRequest,
        MaskRequest,
        StageRequest,
        WriteExportRequest,
    )
    from tenancy.messages.backup import (
        BackupNameRequest,
        BackupSelection,
        DiscardRequest,
        DumpRequest,
        PinRequest,
        RetentionRequest,
    )
    from tenancy.messages.erasure import ErasedBackups, ErasureRecord, TenantKeyState
    from tenancy.messages.fleet import FleetOutcomes
    from tenancy.messages.health import AlertBatch, FleetHealth, HealthPage, HealthPageRequest
    from tenancy.messages.locks import LockOutcome, LockRequest, TenantPage
    from tenancy.messages.maintenance import CleanupRequest, MaintenanceRecord, MaintenanceTarget, VacuumRequest
    from tenancy.messages.move import (
        CopyCheck,
        CopyFacts,
        CopyRequest,
        CopyResult,
        FreezeRequest,
        FreezeResult,
        KeptSource,
        MoveBackRequest,
        MoveCheck,
        MovePlan,
        ServerMoveRequest,
        SetAsideRequest,
        Switched,
        SwitchRequest,
        UnfinishedMove,
    )
    from tenancy.messages.provision import (
        AdoptionPlan,
        AdoptionUndo,
        DeprovisionCheck,
        FinalBackup,
        NewTenant,
        ProvisioningUndo,
        Reinstatement,
        ReinstatementUndo,
        RoleRemoval,
        TemplateRefresh,
        TenantDatabase,
    )
    from tenancy.messages.restore import (
        KeptDatabaseEnd,
        PreviousDatabase,
        RestoredCheckRequest,
        ScratchDatabase,
        ScratchRestoreRequest,
        SwapRequest,
        SwapResult,
    )
    from tenancy.messages.tenants import TenantRequest
    from workflows.options import (
        HEALTH_STEP,
        LOCAL,
        LONG,
        PATIENT,
        QUICK,
        QUICK_HEARTBEAT,
        QUICK_UNTIL_DONE,
        SLOW_DDL,
        SLOW_DDL_HEARTBEAT,
        SLOW_DDL_UNTIL_DONE,
        STORAGE,
        SWAP,
        SWAP_UNTIL_DONE,
        maintenance_task,
    )

A = TypeVar("A")
R = TypeVar("R")

# Calls to the backup storage are regular activities; runs recorded before made them local activities, and replay so.
STORAGE_NOT_LOCAL = "storage-calls-in-regular-activities"
# What a compensation may undo is cancelled and waited for; runs recorded before did not wait, and replay so.
COMPENSATIONS_WAIT = "compensations-wait-for-cancelled-work"

# Cancelled and waited for until the activity has stopped (and cleaned up after itself).
WAIT = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED


def _undoable() -> ActivityCancellationType:
    """How an activity that a compensation may undo is cancelled: waited for, so the undo never runs beside the
    work it undoes. Runs recorded before this did not wait (TRY_CANCEL) and replay as they ran."""
    if workflow.patched(COMPENSATIONS_WAIT):
        return WAIT
    return ActivityCancellationType.TRY_CANCEL


async def _on_storage(activity: Callable[[Any, A], Awaitable[R]], arg: A) -> R:
    """A call that reads or changes the backup storage: a regular activity (a local one runs inside the run's
    workflow task, which a slow store would hold up); runs recorded before made it a local activity."""
    if workflow.patched(STORAGE_NOT_LOCAL):
        return await workflow.execute_activity_method(activity, arg, **STORAGE)
    return await workflow.execute_local_activity_method(activity, arg, **LOCAL)


# The catalog: tenants, pages of them, locks, fleet outcomes.


async def validate_new_tenant(req: ProvisionTenantInput) -> NewTenant:
    return await workflow.execute_activity_method(CatalogActivities.validate_new_tenant, req, **QUICK)


async def get_tenant(req: TenantRequest) -> Tenant:
    return await workflow.execute_activity_method(CatalogActivities.get_tenant, req, **QUICK)


async def get_tenant_local(req: TenantRequest) -> Tenant:
    """A local activity: backups and drills run by the thousand in fleet runs, where a round trip through the
    server per look-up would dominate a small tenant's run."""
    return await workflow.execute_local_activity_method(CatalogActivities.get_tenant, req, **LOCAL)


async def list_tenant_page(page: TenantPage) -> list[TenantRef]:
    return await workflow.execute_local_activity_method(CatalogActivities.list_tenant_page, page, **LOCAL)


async def record_fleet_outcomes(batch: FleetOutcomes) -> int:
    return await workflow.execute_local_activity_method(CatalogActivities.record_fleet_outcomes, batch, **LOCAL)


async def acquire_tenant_lock(req: LockRequest) -> LockOutcome:
    return await workflow.execute_local_activity_method(CatalogActivities.acquire_tenant_lock, req, **LOCAL)


async def release_tenant_lock(req: LockRequest) -> bool:
    return await workflow.execute_local_activity_method(CatalogActivities.release_tenant_lock, req, **LOCAL)


# Backups: name, dump, verify, discard, retention, pins.


async def name_backup(req: BackupNameRequest) -> str:
    return await _on_storage(BackupActivities.name_backup, req)


async def dump_database(req: DumpRequest) -> DumpResult:
    """Waited for when cancelled: pg_dump is killed and the partial file removed before the run ends."""
    return await workflow.execute_activity_method(BackupActivities.dump_database, req, cancellation_type=WAIT, **LONG)


async def verify_backup(dump: DumpResult) -> BackupManifest:
    return await workflow.execute_activity_method(BackupActivities.verify_backup, dump, cancellation_type=WAIT, **LONG)


async def discard_backup(req: DiscardRequest) -> None:
    await _on_storage(BackupActivities.discard_backup, req)


async def apply_retention(req: RetentionRequest) -> RetentionResult:
    return await _on_storage(BackupActivities.apply_retention, req)


async def set_pinned(req: PinRequest) -> bool:
    return await _on_storage(BackupActivities.set_pinned, req)


# Restores (and reinstatements): the backup chosen, restored into a scratch database, checked, swapped in.


async def select_backup(selection: BackupSelection) -> BackupManifest:
    return await workflow.execute_activity_method(RestoreActivities.select_backup, selection, **LONG)


async def restore_to_scratch(req: ScratchRestoreRequest) -> int:
    """A restore's (or reinstatement's) pg_restore, waited for when cancelled: the undo drops the scratch database
    once pg_restore has stopped. The first of a restore's undoable steps: whether the next ones are waited for is
    decided here, before it is scheduled, where runs since COMPENSATIONS_WAIT recorded it."""
    _undoable()
    return await workflow.execute_activity_method(
        RestoreActivities.restore_to_scratch, req, cancellation_type=WAIT, **LONG
    )


async def verify_restored(req: RestoredCheckRequest) -> dict[str, int]:
    """A restore's checks of the restored copy; the undo waits for them to stop."""
    return await workflow.execute_activity_method(
        RestoreActivities.verify_restored, req, cancellation_type=_undoable(), **LONG
    )


async def swap_in_restored(names: SwapRequest) -> SwapResult:
    """A restore's swap; the undo waits for it to stop (it then finds whether the swap committed)."""
    return await workflow.execute_activity_method(
        RestoreActivities.swap_in_restored, names, cancellation_type=_undoable(), **SWAP
    )


async def swap_kept_back_in(names: SwapRequest) -> SwapResult:
    """An undo's swap of the kept database back in: one transaction that puts connections back on failure,
    waited for when cancelled."""
    return await workflow.execute_activity_method(
        RestoreActivities.swap_in_restored, names, cancellation_type=WAIT, **SWAP
    )


async def restore_drill_copy(req: ScratchRestoreRequest) -> int:
    """A drill's pg_restore: nothing to undo but the scratch copy, which the drill drops whatever happened."""
    return await workflow.execute_activity_method(RestoreActivities.restore_to_scratch, req, **LONG)


async def verify_drill_copy(req: RestoredCheckRequest) -> dict[str, int]:
    return await workflow.execute_activity_method(RestoreActivities.verify_restored, req, **LONG)


async def undo_unfinished_restore(names: SwapRequest) -> str:
    return await workflow.execute_activity_method(RestoreActivities.undo_unfinished_restore, names, **QUICK)


async def drop_previous_database(req: PreviousDatabase) -> bool:
    return await workflow.execute_activity_method(RestoreActivities.drop_previous_database, req, **QUICK)


async def drop_scratch_database(req: ScratchDatabase) -> None:
    await workflow.execute_activity_method(RestoreActivities.drop_scratch_database, req, **QUICK)


async def record_kept_database(kept: KeptDatabase) -> None:
    await workflow.execute_activity_method(RestoreActivities.record_kept_database, kept, **QUICK)


async def end_kept_database(req: KeptDatabaseEnd) -> bool:
    return await workflow.execute_activity_method(RestoreActivities.end_kept_database, req, **QUICK)


async def find_kept_database(req: TenantRequest) -> KeptDatabase:
    return await workflow.execute_activity_method(RestoreActivities.find_kept_database, req, **QUICK)


async def record_drill(result: DrillResult) -> None:
    await workflow.execute_activity_method(RestoreActivities.record_drill, result, **QUICK)


async def clear_tenant_cache(req: TenantRequest) -> int | None:
    return await workflow.execute_activity_method(RestoreActivities.clear_tenant_cache, req, **QUICK)


async def record_event(event: TenantEvent) -> int:
    return await workflow.execute_activity_method(RestoreActivities.record_event, event, **QUICK)


# Provisioning and migrations. What undo_provisioning may undo heartbeats, so a cancellation reaches it.


async def check_plan_limit(new: NewTenant) -> int:
    return await workflow.execute_activity_method(ProvisioningActivities.check_plan_limit, new, **QUICK)


async def record_provisioning(new: NewTenant) -> Tenant:
    return await workflow.execute_activity_method(ProvisioningActivities.record_provisioning, new, **QUICK)


async def create_tenant_database(db: TenantDatabase) -> MigrationResult:
    return await workflow.execute_activity_method(
        ProvisioningActivities.create_tenant_database, db, cancellation_type=_undoable(), **SLOW_DDL_HEARTBEAT
    )


async def create_tenant_role(db: TenantDatabase) -> str:
    """Provisioning's role; returns where its credentials are kept."""
    return await workflow.execute_activity_method(
        ProvisioningActivities.create_tenant_role, db, cancellation_type=_undoable(), **QUICK_HEARTBEAT
    )


async def seed_tenant_database(db: TenantDatabase) -> bool:
    return await workflow.execute_activity_method(
        ProvisioningActivities.seed_tenant_database, db, cancellation_type=_undoable(), **QUICK_HEARTBEAT
    )


async def activate_tenant(req: TenantRequest) -> int | None:
    return await workflow.execute_activity_method(ProvisioningActivities.activate_tenant, req, **QUICK)


async def undo_provisioning(undo: ProvisioningUndo) -> None:
    await workflow.execute_activity_method(ProvisioningActivities.undo_provisioning, undo, **QUICK)


async def drop_tenant_database(db: TenantDatabase) -> bool:
    return await workflow.execute_activity_method(ProvisioningActivities.drop_tenant_database, db, **SLOW_DDL)


async def refresh_template(req: TemplateRefresh) -> str | None:
    return await workflow.execute_activity_method(ProvisioningActivities.refresh_template, req, **SLOW_DDL)


async def refresh_server_templates(req: TemplateRefresh) -> dict[str, str | None]:
    return await workflow.execute_activity_method(MaintenanceActivities.refresh_server_templates, req, **SLOW_DDL)


async def migrate_tenant_database(db: TenantDatabase) -> MigrationResult:
    return await workflow.execute_activity_method(ProvisioningActivities.migrate_tenant_database, db, **SLOW_DDL)


# Deprovisioning and reinstatement.


async def check_before_deprovisioning(db: TenantDatabase) -> DeprovisionCheck:
    return await workflow.execute_activity_method(DeprovisionActivities.check_before_deprovisioning, db, **QUICK)


async def record_final_backup(req: FinalBackup) -> int:
    return await workflow.execute_activity_method(DeprovisionActivities.record_final_backup, req, **QUICK)


async def drop_leftover_databases(db: TenantDatabase) -> list[str]:
    return await workflow.execute_activity_method(DeprovisionActivities.drop_leftover_databases, db, **SLOW_DDL)


async def drop_tenant_role(db: TenantDatabase) -> RoleRemoval:
    return await workflow.execute_activity_method(DeprovisionActivities.drop_tenant_role, db, **SLOW_DDL)


# Erasure: the tenant's key destroyed, its backups deleted, the erasure recorded.


async def destroy_tenant_key(req: TenantRequest) -> TenantKeyState:
    return await workflow.execute_activity_method(ErasureActivities.destroy_tenant_key, req, **QUICK)


async def erase_tenant_backups(req: TenantRequest) -> ErasedBackups:
    # Heartbeats: what an attempt deleted reaches the next one's report.
    return await workflow.execute_activity_method(ErasureActivities.erase_tenant_backups, req, **HEALTH_STEP)


async def record_erasure(record: ErasureRecord) -> int:
    return await workflow.execute_activity_method(ErasureActivities.record_erasure, record, **QUICK)


async def check_before_reinstatement(db: TenantDatabase) -> None:
    await workflow.execute_activity_method(DeprovisionActivities.check_before_reinstatement, db, **QUICK)


async def create_reinstated_role(db: TenantDatabase) -> bool:
    """Waited for when cancelled: the undo drops the role only once this has stopped."""
    return await workflow.execute_activity_method(
        DeprovisionActivities.create_reinstated_role, db, cancellation_type=WAIT, **QUICK
    )


async def give_reinstated_role_login(db: TenantDatabase) -> str:
    """The reinstated role's login and new password (ProvisioningActivities.create_tenant_role); returns where
    its credentials are kept. Waited for when cancelled, like every step a reinstatement's undo may undo."""
    return await workflow.execute_activity_method(
        ProvisioningActivities.create_tenant_role, db, cancellation_type=WAIT, **QUICK
    )


async def activate_reinstated_tenant(reinstatement: Reinstatement) -> int | None:
    return await workflow.execute_activity_method(
        DeprovisionActivities.activate_reinstated_tenant, reinstatement, **QUICK
    )


async def undo_reinstatement(undo: ReinstatementUndo) -> list[str]:
    return await workflow.execute_activity_method(DeprovisionActivities.undo_reinstatement, undo, **QUICK)


# Adoption. The marking heartbeats and is waited for when cancelled: undo_adoption puts back what it replaced.


async def check_adoption(req: AdoptTenantInput) -> AdoptionPlan:
    return await workflow.execute_activity_method(AdoptionActivities.check_adoption, req, **QUICK)


async def record_adoption(plan: AdoptionPlan) -> None:
    await workflow.execute_activity_method(AdoptionActivities.record_adoption, plan, **QUICK)


async def adopt_database(plan: AdoptionPlan) -> int:
    return await workflow.execute_activity_method(
        AdoptionActivities.adopt_database, plan, cancellation_type=WAIT, **QUICK_HEARTBEAT
    )


async def undo_adoption(undo: AdoptionUndo) -> None:
    await workflow.execute_activity_method(AdoptionActivities.undo_adoption, undo, **QUICK)


# Health checks and alerts.


async def check_health(req: HealthInput) -> HealthReport:
    """The whole fleet in one activity: runs recorded before the check went page by page."""
    return await workflow.execute_activity_method(HealthActivities.check_health, req, **QUICK)


async def check_health_page(req: HealthPageRequest) -> HealthPage:
    return await workflow.execute_activity_method(HealthActivities.check_health_page, req, **HEALTH_STEP)


async def check_fleet_health(req: HealthInput) -> FleetHealth:
    return await workflow.execute_activity_method(HealthActivities.check_fleet_health, req, **HEALTH_STEP)


async def send_alerts(batch: AlertBatch) -> list[str]:
    return await workflow.execute_activity_method(HealthActivities.send_alerts, batch, **QUICK)


# Maintenance. A task is tried `max_attempts` times at most (the run's input), backing off on lock timeouts.


async def database_size(target: MaintenanceTarget) -> int:
    return await workflow.execute_activity_method(MaintenanceActivities.database_size, target, **QUICK)


async def plan_maintenance(req: CleanupRequest, *, max_attempts: int) -> MaintenancePlan:
    return await workflow.execute_activity_method(
        MaintenanceActivities.plan_maintenance, req, **maintenance_task(max_attempts)
    )


async def count_old_rows(req: CleanupRequest, *, max_attempts: int) -> dict[str, int]:
    return await workflow.execute_activity_method(
        MaintenanceActivities.count_old_rows, req, **maintenance_task(max_attempts)
    )


async def cleanup_old_rows(req: CleanupRequest, *, max_attempts: int) -> CleanupResult:
    return await workflow.execute_activity_method(
        MaintenanceActivities.cleanup_old_rows, req, **maintenance_task(max_attempts)
    )


async def vacuum_database(req: VacuumRequest, *, max_attempts: int) -> VacuumResult:
    return await workflow.execute_activity_method(
        MaintenanceActivities.vacuum_database, req, **maintenance_task(max_attempts)
    )


async def optimize_indexes(target: MaintenanceTarget, *, max_attempts: int) -> OptimizeResult:
    return await workflow.execute_activity_method(
        MaintenanceActivities.optimize_indexes, target, **maintenance_task(max_attempts)
    )


async def analyze_database(target: MaintenanceTarget, *, max_attempts: int) -> AnalyzeResult | None:
    """None only in histories recorded before analyze reported anything."""
    return await workflow.execute_activity_method(
        MaintenanceActivities.analyze_database, target, **maintenance_task(max_attempts)
    )


async def record_maintenance(record: MaintenanceRecord) -> int:
    return await workflow.execute_activity_method(MaintenanceActivities.record_maintenance, record, **QUICK)


# Messages: retried for a day, each in a workflow of its own (workflows/notify.py).


async def send_welcome_email(mail: WelcomeMail) -> bool:
    return await workflow.execute_activity_method(NotifyActivities.send_welcome_email, mail, **PATIENT)


async def deliver_event(req: DeliverEventInput) -> int | None:
    return await workflow.execute_activity_method(NotifyActivities.deliver_event, req, **PATIENT)


# The sweeper.


async def find_orphans(req: SweepInput) -> SweepReport:
    return await workflow.execute_activity_method(SweepActivities.find_orphans, req, **LONG)


async def remove_orphans(report: SweepReport) -> SweepReport:
    return await workflow.execute_activity_method(SweepActivities.remove_orphans, report, **LONG)


# Status and settings of a tenant.


async def change_tenant_status(change: StatusChange) -> StatusChangeResult:
    return await workflow.execute_activity_method(TenantAdminActivities.change_tenant_status, change, **QUICK)


async def update_tenant_settings(change: SettingsChange) -> SettingsChangeResult:
    return await workflow.execute_activity_method(TenantAdminActivities.update_tenant_settings, change, **QUICK)


# Export, import, clone (workflows/transfer.py).


async def write_export(req: WriteExportRequest) -> ExportWritten:
    return await workflow.execute_activity_method(TransferActivities.write_export, req, **LONG)


async def inspect_import(req: InspectImportRequest) -> ImportFacts:
    return await workflow.execute_activity_method(TransferActivities.inspect_import, req, **LONG)


async def stage_import(req: StageRequest) -> BackupManifest:
    """Waited for when cancelled: the undo deletes what it staged once it has stopped."""
    return await workflow.execute_activity_method(TransferActivities.stage_import, req, cancellation_type=WAIT, **LONG)


async def mask_scratch(req: MaskRequest) -> float:
    """A clone's masking of its scratch copy; waited for when cancelled (the undo drops that copy)."""
    return await workflow.execute_activity_method(TransferActivities.mask_scratch, req, cancellation_type=WAIT, **LONG)


async def abandon_import(req: ImportAbandoned) -> None:
    await workflow.execute_activity_method(TransferActivities.abandon_import, req, **QUICK)


async def check_transferable(req: TenantRequest) -> None:
    await workflow.execute_activity_method(TransferActivities.check_transferable, req, **QUICK)


async def check_imported_database(db: TenantDatabase) -> None:
    await workflow.execute_activity_method(TransferActivities.check_imported_database, db, **QUICK)


async def drop_staged_backup(req: BackupSelection) -> None:
    await workflow.execute_activity_method(TransferActivities.drop_staged_backup, req, **QUICK)


# Moves between servers (workflows/move_tenant.py). What the undo of an unfinished move may undo is waited for when
# cancelled: the undo never runs beside the work it undoes.


async def check_move(plan: MovePlan) -> MoveCheck:
    return await workflow.execute_activity_method(MoveActivities.check_move, plan, **QUICK)


async def prepare_move_target(plan: MovePlan) -> list[str]:
    return await workflow.execute_activity_method(
        MoveActivities.prepare_target, plan, cancellation_type=WAIT, **QUICK_HEARTBEAT
    )


async def copy_to_target(req: CopyRequest) -> CopyResult:
    return await workflow.execute_activity_method(MoveActivities.copy_to_target, req, cancellation_type=WAIT, **LONG)


async def verify_move_copy(req: CopyCheck) -> CopyFacts:
    return await workflow.execute_activity_method(MoveActivities.verify_copy, req, cancellation_type=WAIT, **LONG)


async def drop_move_copy(req: CopyRequest) -> bool:
    return await workflow.execute_activity_method(
        MoveActivities.drop_copy, req, cancellation_type=WAIT, **SLOW_DDL_HEARTBEAT
    )


async def freeze_database(req: FreezeRequest) -> FreezeResult:
    return await workflow.execute_activity_method(MoveActivities.freeze_database, req, cancellation_type=WAIT, **SWAP)


async def switch_to_target(req: SwitchRequest) -> Switched:
    return await workflow.execute_activity_method(MoveActivities.switch_to_target, req, cancellation_type=WAIT, **SWAP)


async def set_aside_database(req: SetAsideRequest) -> bool:
    return await workflow.execute_activity_method(MoveActivities.set_aside, req, **SWAP)


async def drop_set_aside_database(req: SetAsideRequest) -> bool:
    return await workflow.execute_activity_method(MoveActivities.drop_set_aside, req, **SLOW_DDL)


# After a committed switch (workflows/move_tenant.py, patched): the same activities, retried until done.


async def set_aside_database_until_done(req: SetAsideRequest) -> bool:
    return await workflow.execute_activity_method(MoveActivities.set_aside, req, **SWAP_UNTIL_DONE)


async def drop_set_aside_database_until_done(req: SetAsideRequest) -> bool:
    return await workflow.execute_activity_method(MoveActivities.drop_set_aside, req, **SLOW_DDL_UNTIL_DONE)


async def record_event_until_done(event: TenantEvent) -> int:
    return await workflow.execute_activity_method(RestoreActivities.record_event, event, **QUICK_UNTIL_DONE)


async def undo_unfinished_move(req: UnfinishedMove) -> str:
    return await workflow.execute_activity_method(MoveActivities.undo_unfinished_move, req, **SLOW_DDL_HEARTBEAT)


async def find_kept_source(req: TenantRequest) -> KeptSource:
    return await workflow.execute_activity_method(MoveActivities.find_kept_source, req, **QUICK)


async def move_back(req: MoveBackRequest) -> Switched:
    return await workflow.execute_activity_method(MoveActivities.move_back, req, cancellation_type=WAIT, **SWAP)


async def undo_unfinished_move_back(req: MoveBackRequest) -> str:
    return await workflow.execute_activity_method(MoveActivities.undo_unfinished_move_back, req, **SLOW_DDL)


# A whole server moved (workflows/move_fleet.py).


async def check_server_move(req: ServerMoveRequest) -> str:
    return await workflow.execute_activity_method(MoveActivities.check_server_move, req, **QUICK)


async def choose_move_target(req: ServerMoveRequest) -> str:
    return await workflow.execute_activity_method(MoveActivities.choose_move_target, req, **QUICK)


async def server_tenants_left(req: ServerMoveRequest) -> int:
    return await workflow.execute_activity_method(MoveActivities.server_tenants_left, req, **QUICK)
