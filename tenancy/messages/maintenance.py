"""Between the maintenance workflow and its activities."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class MaintenanceTarget(BaseModel):
    tenant_id: str
    database_name: str


class CleanupRequest(MaintenanceTarget):
    cutoff: datetime
    # Rows older than the cutoff when the run began, counted by an earlier activity (so in the history): what
    # was deleted is this minus what is left, however many attempts it took.
    planned: dict[str, int] = Field(default_factory=dict)


class VacuumRequest(MaintenanceTarget):
    full: bool = False


class MaintenanceRecord(BaseModel):
    """What a maintenance run did, recorded as the tenant's last maintenance."""

    tenant_id: str
    summary: dict[str, Any]
