"""Health of the fleet and its alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel


class HealthInput(BaseModel):
    send_alerts: bool = True
    failure_window_hours: int = 24
    page_size: int = 100  # tenants one activity checks (tenancy.bounds.HEALTH_PAGE_SIZE)


class TenantHealth(BaseModel):
    tenant_id: str
    status: str
    last_backup_at: datetime | None
    backup_age_hours: float | None
    database_bytes: int | None
    quota_bytes: int | None
    last_maintenance_at: str | None
    failed_runs: int = 0
    backup_bytes: int = 0  # storage used by the tenant's backups
    # The newest backup known to restore (its table of contents read, or a passed drill): the age that matters.
    last_restorable_at: datetime | None = None
    restorable_age_hours: float | None = None
    server: str | None = None  # the PostgreSQL server of its database (None: rows written before servers)


class Alert(BaseModel):
    kind: Literal[
        "stale_backup", "stale_restorable_backup", "over_quota", "failed_run", "failed_drill", "server_unreachable"
    ]
    tenant_id: str | None
    message: str


class HealthReport(BaseModel):
    checked_at: datetime
    tenants: list[TenantHealth]
    alerts: list[Alert]
    storage: str = ""
    storage_used_bytes: int = 0
    storage_free_bytes: int | None = None  # None for object storage
    # The run's result stays small whatever the fleet's size (tenancy.health.HealthTally): it shows the tenants that
    # need attention first and counts the rest; every alert was delivered all the same.
    tenants_not_shown: int = 0
    alerts_not_shown: int = 0
