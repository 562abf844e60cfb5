"""Provisioning, deprovisioning, reinstating and adopting tenants."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator


class ProvisionTenantInput(BaseModel):
    name: str
    plan: str
    owner_email: str
    tenant_id: str | None = None  # derived from the name when not given
    settings: dict[str, Any] = Field(default_factory=dict)
    server: str | None = None  # the server for its database (`--server`); None: placement chooses


class MigrateTenantInput(BaseModel):
    tenant_id: str

    @model_validator(mode="before")
    @classmethod
    def _bare_id(cls, data: Any) -> Any:
        # Runs started by the previous release (and their recorded histories) carry the bare id.
        return {"tenant_id": data} if isinstance(data, str) else data


class MigrationResult(BaseModel):
    database_name: str
    applied: list[str]
    version: str | None


class ProvisionTenantResult(BaseModel):
    tenant_id: str
    database_name: str
    role_name: str
    schema_version: str | None
    # Where the role's generated credentials are kept (a 0600 file); the password never enters the history.
    credentials_file: str
    welcome_mail_workflow_id: str | None
    server: str | None = None  # the server its database was placed on


class DeprovisionTenantInput(BaseModel):
    tenant_id: str
    final_backup: bool = True
    lock_wait_seconds: int = 0


class DeprovisionTenantResult(BaseModel):
    tenant_id: str
    final_backup: str | None
    database_dropped: bool
    leftover_databases: list[str] = Field(default_factory=list)  # the tenant's scratch/previous copies dropped
    role_left: str | None = None  # why the role was left in place (not marked as this tenant's), if it was


class WelcomeMail(BaseModel):
    tenant_id: str
    tenant_name: str
    owner_email: str


class ReinstateTenantInput(BaseModel):
    tenant_id: str
    backup_name: str | None = None  # None: the newest restorable backup
    jobs: int = 2
    checks: list[str] = Field(default_factory=list)  # SQL run in the restored database; each must return true
    lock_wait_seconds: int = 0


class ReinstateTenantResult(BaseModel):
    tenant_id: str
    backup_name: str
    database_name: str
    role_name: str
    row_counts: dict[str, int]
    # Where the role's new credentials are kept (a 0600 file on the worker's host); never the password itself.
    credentials_file: str


class AdoptTenantInput(BaseModel):
    """`tenants adopt`: register an existing database as a tenant (or mark a tenant's unmarked database)."""

    tenant_id: str
    database_name: str
    plan: str = "free"
    # Adopted databases come without an owner on record: a placeholder that can never receive mail.
    owner_email: str = "unknown@adopted.invalid"
    name: str | None = None  # display name; the tenant id when not given
    role_name: str | None = None  # an existing role to record (and mark) as the tenant's
    lock_wait_seconds: int = 0
    server: str | None = None  # the server holding the database (`--server`); None: `default`, or as recorded


class AdoptTenantResult(BaseModel):
    tenant_id: str
    database_name: str
    role_name: str | None
    mark_only: bool
    event_id: int | None
