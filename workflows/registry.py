"""Every workflow the worker runs."""

from __future__ import annotations

from workflows.backup_fleet import BackupAllTenantsWorkflow
from workflows.backup_tenant import BackupTenantWorkflow
from workflows.deprovision_tenant import DeprovisionTenantWorkflow
from workflows.drill import BackupDrillWorkflow, DrillAllTenantsWorkflow
from workflows.drop_later import DropPreviousDatabaseWorkflow
from workflows.health_check import HealthCheckWorkflow
from workflows.maintain_tenant import MaintainAllTenantsWorkflow, MaintainTenantWorkflow
from workflows.migrate import MigrateAllTenantsWorkflow, MigrateTenantWorkflow
from workflows.notify import DeliverEventWorkflow, SendWelcomeEmailWorkflow
from workflows.provision_tenant import ProvisionTenantWorkflow
from workflows.restore_tenant import RestoreTenantWorkflow
from workflows.retention import PinBackupWorkflow, PruneAllTenantsWorkflow, PruneTenantWorkflow
from workflows.tenant_status import ChangeTenantStatusWorkflow, UpdateTenantSettingsWorkflow

WORKFLOWS = [
    BackupTenantWorkflow,
    BackupAllTenantsWorkflow,
    RestoreTenantWorkflow,
    DropPreviousDatabaseWorkflow,
    ProvisionTenantWorkflow,
    ChangeTenantStatusWorkflow,
    UpdateTenantSettingsWorkflow,
    DeprovisionTenantWorkflow,
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
]
