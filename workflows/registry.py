"""Every workflow the worker runs."""

from __future__ import annotations

from workflows.backup_fleet import BackupAllTenantsWorkflow
from workflows.backup_tenant import BackupTenantWorkflow

WORKFLOWS = [BackupTenantWorkflow, BackupAllTenantsWorkflow]
