"""Between workflows and activities: a request about one tenant, by its id (look it up, activate it, clear its
cache, find the database a restore kept)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, model_validator


class TenantRequest(BaseModel):
    tenant_id: str

    @model_validator(mode="before")
    @classmethod
    def _bare_id(cls, data: Any) -> Any:
        # Attempts scheduled by the previous release (in flight across an upgrade) carry the bare id.
        return {"tenant_id": data} if isinstance(data, str) else data
