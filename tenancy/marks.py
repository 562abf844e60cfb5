"""Marks: what this project writes on each database and role it creates, so that it never acts on one it did not
create. A mark is a `COMMENT ON DATABASE/ROLE` holding a small JSON document behind a fixed prefix. Pure: the
reading and writing against PostgreSQL is in activities/infra/marks.py.

Undo, deprovisioning and the sweeper drop only what carries a mark of the expected kind and tenant.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ValidationError

PREFIX = "tenant-lifecycle:"

MarkKind = Literal[
    "tenant",  # a tenant's live database (created by provisioning or a restore, or adopted)
    "scratch",  # where a restore or a drill loads a backup before it is checked
    "previous",  # a tenant database a restore set aside (kept until `keep_until`, for `tenants restore --undo`)
    "provisioning",  # a database being copied from the template, before it takes the tenant's name
    "role",  # a tenant's login role (or, for a tenant without one, the NOLOGIN role its restored objects belong to)
    "restorer",  # the short-lived login role one restore attempt connects as (tenancy/restore_roles.py)
]


class Mark(BaseModel):
    kind: MarkKind
    tenant_id: str
    workflow_id: str | None = None  # the run that created (or last re-marked) the object
    run_id: str | None = None
    at: datetime | None = None
    keep_until: datetime | None = None  # previous databases: not dropped before this

    def comment(self) -> str:
        return PREFIX + self.model_dump_json(exclude_none=True)

    def is_of(self, tenant_id: str, *kinds: str) -> bool:
        return self.tenant_id == tenant_id and (not kinds or self.kind in kinds)

    def made_by(self, workflow_id: str, run_id: str | None = None) -> bool:
        return self.workflow_id == workflow_id and (run_id is None or self.run_id == run_id)


def parse_mark(comment: str | None) -> Mark | None:
    """The mark in a comment; None for no comment, someone else's comment, or one that does not parse."""
    if not comment or not comment.startswith(PREFIX):
        return None
    try:
        return Mark.model_validate_json(comment[len(PREFIX) :])
    except ValidationError:
        return None
