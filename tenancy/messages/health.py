"""Between the health check workflow and its activities: one page of tenants, and the fleet-wide facts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, model_validator

from tenancy.contracts.health import Alert, TenantHealth


class HealthPageRequest(BaseModel):
    after: str | None = None  # the last tenant id of the previous page
    limit: int = 100
    failure_window_hours: int = 24
    # How many more rows the run shows, of tenants with an alert and of the others: the rest stay out of its history.
    alerted_rows: int = 0
    healthy_rows: int = 0


class HealthPage(BaseModel):
    checked: int  # tenants checked in this page
    last_tenant_id: str | None
    rows: list[TenantHealth]  # at most `alerted_rows` of tenants with an alert and `healthy_rows` of others
    alerts: list[Alert]  # every alert of the page


class FleetHealth(BaseModel):
    storage: str
    storage_used_bytes: int
    storage_free_bytes: int | None
    alerts: list[Alert]  # failed fleet runs (no tenant)


class AlertBatch(BaseModel):
    alerts: list[Alert]

    @model_validator(mode="before")
    @classmethod
    def _bare_list(cls, data: Any) -> Any:
        # Attempts scheduled by the previous release (in flight across an upgrade) carry the bare list.
        return {"alerts": data} if isinstance(data, list) else data
