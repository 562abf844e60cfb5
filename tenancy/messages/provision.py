"""Between provisioning, deprovisioning, reinstatement and adoption workflows and their activities."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class NewTenant(BaseModel):
    """A validated provisioning request: what gets recorded."""

    tenant_id: str
    name: str
    plan: str
    owner_email: str
    database_name: str
    role_name: str
    settings: dict[str, Any] = Field(default_factory=dict)
    # The server asked for (`--server`); None: placement chooses (tenancy.servers.choose_server) when recording.
    server: str | None = None


class TenantDatabase(BaseModel):
    tenant_id: str
    database_name: str
    role_name: str
    server: str | None = None  # where the database is (or goes); None: the tenant's server in the catalog


class TemplateRefresh(BaseModel):
    """Rebuild the template database if the migration files changed. Nothing to say yet: the template and the
    migrations are the worker's settings; a model all the same, so a field can be added without a new signature."""


class ProvisioningUndo(BaseModel):
    db: TenantDatabase
    reason: str  # why provisioning failed: the failed tenant's status reason


class DeprovisionCheck(BaseModel):
    """What deprovisioning finds before it changes anything."""

    database_exists: bool
    # The final backup an earlier attempt took and recorded (TenantFinalBackup), for a re-run to report.
    earlier_final_backup: str | None = None


class FinalBackup(BaseModel):
    """The final backup of a deprovisioning, recorded as soon as it is taken (a re-run after a crash reports it)."""

    tenant_id: str
    backup_name: str


class RoleRemoval(BaseModel):
    role_name: str
    dropped: bool
    # Databases where the role's privileges and objects were removed (REASSIGN OWNED / DROP OWNED) first.
    cleaned_in: list[str] = Field(default_factory=list)
    left_reason: str | None = None  # set when the role exists and is left in place


class ReinstatementUndo(BaseModel):
    db: TenantDatabase
    drop_role: bool  # only when this run created the role (not when it took up one of the tenant's)


class Reinstatement(BaseModel):
    tenant_id: str
    backup_name: str
    backup_taken_at: datetime


class AdoptionPlan(BaseModel):
    """A checked adoption: what is recorded and marked, and what the marks replace (put back by an undo)."""

    tenant_id: str
    name: str
    plan: str
    owner_email: str
    database_name: str
    role_name: str | None = None
    # The tenant is in the catalog with this database already (from before marks): only the marks are written.
    mark_only: bool = False
    database_comment: str | None = None
    role_comment: str | None = None
    # The server holding the database (and role); None: a plan made before servers, on `default`.
    server: str | None = None


class AdoptionUndo(BaseModel):
    plan: AdoptionPlan
    reason: str  # why the adoption did not finish: the failed row's reason
