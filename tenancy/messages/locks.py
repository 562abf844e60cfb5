"""Between workflows and the catalog: tenant locks and catalog pages."""

from __future__ import annotations

from pydantic import BaseModel


class LockRequest(BaseModel):
    tenant_id: str
    operation: str
    workflow_id: str
    run_id: str
    shared: bool = False  # a drill: goes together with other drills and with backups


class LockOutcome(BaseModel):
    acquired: bool
    holder_workflow_id: str | None = None
    holder_operation: str | None = None
    holder_namespace: str | None = None  # when the holder is another deployment's (another Temporal namespace)


class TenantPage(BaseModel):
    after: str | None = None
    limit: int = 200
    statuses: list[str]
    server: str | None = None  # only the tenants on this server (a move of a whole server); None: every server
