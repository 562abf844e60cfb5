"""Tenants as the catalog knows them, and changes of their status and settings."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

TenantStatus = Literal["provisioning", "active", "inactive", "suspended", "deprovisioned", "failed"]


class Tenant(BaseModel):
    id: str
    name: str
    plan: str
    status: TenantStatus
    owner_email: str
    database_name: str
    settings: dict[str, Any] = Field(default_factory=dict)
    status_reason: str | None = None
    role_name: str | None = None
    last_maintenance: dict[str, Any] | None = None
    server: str = "default"  # the PostgreSQL server holding its database (tenancy/servers.py)
    created_at: datetime
    updated_at: datetime


class TenantEvent(BaseModel):
    tenant_id: str
    type: str
    data: dict[str, Any] = Field(default_factory=dict)


class DeliverEventInput(BaseModel):
    """A catalog event to deliver to the webhook (DeliverEventWorkflow, and its activity)."""

    event_id: int

    @model_validator(mode="before")
    @classmethod
    def _bare_id(cls, data: Any) -> Any:
        # Runs started by the previous release (and their recorded histories) carry the bare id.
        return {"event_id": data} if isinstance(data, int) else data


class StatusChange(BaseModel):
    tenant_id: str
    status: TenantStatus
    reason: str | None = None


class StatusChangeResult(BaseModel):
    tenant_id: str
    old_status: str
    new_status: str
    terminated_sessions: int = 0
    event_id: int | None = None


class SettingsChangeResult(BaseModel):
    tenant_id: str
    settings: dict[str, Any]
    event_id: int


class SettingsChange(BaseModel):
    tenant_id: str
    changes: dict[str, Any]


class TenantRef(BaseModel):
    id: str
    status: str
