"""The sweeper's input and report."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class SweepInput(BaseModel):
    dry_run: bool = False
    # Age after which a `.partial` file or unfinished upload is abandoned, and a run Temporal does not know counts
    # as gone; None: TENANTS_STALE_PARTIAL_HOURS. Bounded (0 to a year) by the workflow.
    stale_hours: int | None = None
    limit: int = 1000  # removable items acted on in one sweep; the rest wait for the next one


class SweepItem(BaseModel):
    # server: a database server the sweep could not look at (name: the server's; never removable)
    kind: Literal["scratch", "previous", "provisioning", "database", "role", "partial", "upload", "work", "server"]
    name: str  # database or role name, file path, or object key
    reason: str
    removable: bool
    removed: bool = False
    upload_id: str | None = None  # S3 multipart uploads
    error: str | None = None
    # The PostgreSQL server of a database or role (None: `default`, and reports made before there were servers).
    server: str | None = None

    def action(self, dry_run: bool) -> str:
        if self.error:
            return "FAILED"
        if self.removed:
            return "removed"
        if self.removable:
            return "would remove" if dry_run else "not removed"
        return "left alone"


class SweepReport(BaseModel):
    swept_at: datetime
    dry_run: bool
    stale_hours: int
    items: list[SweepItem] = Field(default_factory=list)
    more: int = 0  # removable items past the limit, left for the next sweep

    @property
    def removed(self) -> int:
        return sum(i.removed for i in self.items)

    @property
    def failed(self) -> int:
        return sum(i.error is not None for i in self.items)
