"""Every workflow the worker runs."""

from __future__ import annotations

from workflows.backup_fleet import BackupAllTenantsWorkflow
from workflows.backup_tenant import BackupTenantWorkflow
from workflows.drop_later import DropPreviousDatabaseWorkflow
from workflows.restore_tenant import RestoreTenantWorkflow

WORKFLOWS = [BackupTenantWorkflow, BackupAllTenantsWorkflow, RestoreTenantWorkflow, DropPreviousDatabaseWorkflow]
