"""Between the move workflows (workflows/move_tenant.py) and their activities (activities/move.py)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class MovePlan(BaseModel):
    """The names of one move, fixed when the run starts: every activity of it acts on these only."""

    tenant_id: str
    database_name: str
    role_name: str | None = None
    source: str
    target: str
    rehearsal_name: str  # the first copy on the target (scratch: dropped before the freeze)
    final_name: str  # the copy made while the source is frozen (scratch until it takes the tenant's name)
    aside_name: str  # the source database's name once set aside on the source server


class MoveCheck(BaseModel):
    """What the checks before a move found."""

    source_major: int
    target_major: int
    dump_major: int  # the newer of the two (tenancy/servers.py move_dump_major)
    tools_version: str
    # The source's own major, when it differs and its pg_dump is there: what the copy falls back to when the
    # target refuses the newer pg_dump's archive (a newer major of an older minor release may not know what the
    # source's own pg_dump does; pg_restore reads archives of older pg_dumps).
    fallback_major: int | None = None
    # The source database as it was, put back exactly when a move is undone before its switch.
    source_allows_connections: bool
    source_connection_limit: int


class CopyRequest(BaseModel):
    plan: MovePlan
    scratch_name: str
    dump_major: int  # the pg_dump's
    restore_major: int | None = None  # the pg_restore's (the target's major); None: dump_major
    jobs: int = 1


class CopyResult(BaseModel):
    tables: int
    seconds: float


class CopyCheck(BaseModel):
    plan: MovePlan
    scratch_name: str
    # True: the source is frozen, so every table's row count and every sequence's value must be equal; False (the
    # rehearsal): the same tables and sequences must be there.
    exact: bool
    checks: list[str] = Field(default_factory=list)


class CopyFacts(BaseModel):
    row_counts: dict[str, int]
    sequences: dict[str, int | None]


class FreezeRequest(BaseModel):
    tenant_id: str
    server: str
    database_name: str


class FreezeResult(BaseModel):
    terminated_sessions: int
    frozen_at: datetime  # when new sessions were refused (the worker's clock)
    source_frozen_at: datetime | None = None  # the same on the source server's clock (the switch's session check)


class SwitchRequest(BaseModel):
    plan: MovePlan
    connection_limit: int  # the source's, before the freeze: the target gets it
    # When the source was frozen: a session of its database begun since (a superuser's) stops the switch.
    frozen_at: datetime | None = None


class Switched(BaseModel):
    opened_at: datetime  # when the tenant's database on its new server let sessions in (the worker's clock)


class SetAsideRequest(BaseModel):
    """A tenant database left behind on `server`: renamed to `aside_name`, marked `previous`, closed, and (with
    `keep_until`) recorded as kept on that server."""

    tenant_id: str
    server: str
    database_name: str
    aside_name: str
    keep_until: datetime | None  # None: dropped at once by the caller
    # The tenant's login role there: it may log in on that server no more (NOLOGIN; an undo gives it back).
    role_name: str | None = None


class UnfinishedMove(BaseModel):
    plan: MovePlan
    allows_connections: bool
    connection_limit: int


class KeptSource(BaseModel):
    """A tenant database a move left behind on its source server, kept for `tenants move --undo`."""

    name: str
    server: str
    database_name: str
    workflow_id: str  # the move's
    kept_until: datetime
    current_server: str  # where the tenant is now
    role_name: str | None = None  # the tenant's login role: given back its login on the source
    connection_limit: int  # of its database there, given back to the kept one


class MoveBackRequest(BaseModel):
    """The kept source database becomes the tenant's database again (the current one is frozen already)."""

    kept: KeptSource
    tenant_id: str


class ServerMoveRequest(BaseModel):
    """A whole-server move (workflows/move_fleet.py): its source, the target asked for (None: placement's), and
    the tenant a target is being chosen for."""

    source: str
    target: str | None = None
    tenant_id: str | None = None
