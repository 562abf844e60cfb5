"""Between the fleet engine and the catalog: a batch of tenants' outcomes."""

from __future__ import annotations

from pydantic import BaseModel

from tenancy.contracts.fleet import TenantOutcome


class FleetOutcomes(BaseModel):
    fleet_workflow_id: str
    fleet_run_id: str
    outcomes: list[TenantOutcome]
