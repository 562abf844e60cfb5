"""Every workflow the worker runs."""

from __future__ import annotations

from workflows.adopt_tenant import AdoptTenantWorkflow
from workflows.backup_fleet import BackupAllTenantsWorkflow
from workflows.backup_tenant import BackupTenantWorkflow
from workflows.deprovision_tenant import DeprovisionTenantWorkflow
from workflows.drill import BackupDrillWorkflow, DrillAllTenantsWorkflow
from workflows.drop_later import DropPreviousDatabaseWorkflow
from workflows.erase_tenant import EraseTenantWorkflow
from workflows.health_check import HealthCheckWorkflow
from workflows.maintain_tenant import MaintainAllTenantsWorkflow, MaintainTenantWorkflow
from workflows.migrate import MigrateAllTenantsWorkflow, MigrateTenantWorkflow
from workflows.move_fleet import MoveAllFromServerWorkflow
from workflows.move_tenant import MoveTenantWorkflow, UndoMoveWorkflow
from workflows.notify import DeliverEventWorkflow, SendWelcomeEmailWorkflow
from workflows.provision_tenant import ProvisionTenantWorkflow
from workflows.reinstate_tenant import ReinstateTenantWorkflow
from workflows.restore_tenant import RestoreTenantWorkflow
from workflows.retention import PinBackupWorkflow, PruneAllTenantsWorkflow, PruneTenantWorkflow
from workflows.sweep import SweepWorkflow
from workflows.tenant_status import ChangeTenantStatusWorkflow, UpdateTenantSettingsWorkflow
from workflows.transfer import CloneTenantWorkflow, ExportTenantWorkflow, ImportTenantWorkflow
from workflows.undo_restore import UndoRestoreWorkflow

WORKFLOWS = [
    BackupTenantWorkflow,
    BackupAllTenantsWorkflow,
    RestoreTenantWorkflow,
    UndoRestoreWorkflow,
    DropPreviousDatabaseWorkflow,
    ProvisionTenantWorkflow,
    AdoptTenantWorkflow,
    ChangeTenantStatusWorkflow,
    UpdateTenantSettingsWorkflow,
    DeprovisionTenantWorkflow,
    EraseTenantWorkflow,
    ReinstateTenantWorkflow,
    MigrateTenantWorkflow,
    MigrateAllTenantsWorkflow,
    SendWelcomeEmailWorkflow,
    DeliverEventWorkflow,
    MaintainTenantWorkflow,
    MaintainAllTenantsWorkflow,
    HealthCheckWorkflow,
    BackupDrillWorkflow,
    DrillAllTenantsWorkflow,
    PinBackupWorkflow,
    PruneTenantWorkflow,
    PruneAllTenantsWorkflow,
    SweepWorkflow,
    MoveTenantWorkflow,
    UndoMoveWorkflow,
    MoveAllFromServerWorkflow,
    ExportTenantWorkflow,
    ImportTenantWorkflow,
    CloneTenantWorkflow,
]
