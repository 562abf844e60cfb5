"""Moving a tenant's database to another PostgreSQL server (MoveTenantWorkflow), and undoing a move."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from tenancy.contracts.fleet import FleetOptions, FleetResult

DEFAULT_KEEP_SOURCE_SECONDS = 86_400
# Every run of a move (and of its undo) has a workflow id that starts so: `tenants move --undo` tells the databases
# a move kept (kept_databases.workflow_id) from those a restore kept. A fleet starting moves names them so too.
MOVE_ID_PREFIX = "move-"


class MoveTenantInput(BaseModel):
    """One tenant to move. A fleet run (`tenants move --all-from`) starts one run per tenant with `source` set: a
    tenant found elsewhere by then is refused, not moved from where it is now."""

    tenant_id: str
    target: str
    source: str | None = None  # the server the caller expects it on (None: wherever the catalog says)
    # The source database is kept (renamed aside, closed) this long for `tenants move --undo`; 0 drops it at once.
    keep_source_seconds: int = DEFAULT_KEEP_SOURCE_SECONDS
    lock_wait_seconds: int = 0
    jobs: int = 1  # 1: one pg_dump | pg_restore pipe; more: a directory dump and restore with that many jobs
    # SQL queries run (as the tenant's owner role, read only) in the final copy before the switch; each returns true.
    checks: list[str] = Field(default_factory=list)


class MoveTenantResult(BaseModel):
    tenant_id: str
    database_name: str
    source: str
    target: str
    freeze_seconds: float  # how long writes were refused on the source: freeze → target open
    row_counts: dict[str, int]
    sequences: int
    terminated_sessions: int
    source_kept_as: str | None = None  # the source database, renamed aside on the source server
    source_kept_until: datetime | None = None  # None with source_kept_as: dropped at once
    dump_major: int  # the pg_dump's major version (pg_restore's: the target's)
    # Why the newer pg_dump's archive was refused by the target, when the source's own pg_dump made the copy.
    newer_pg_dump_refused: str | None = None
    # The source database could not be set aside (or dropped) within half an hour of the switch (its server down):
    # it stays under its own name, closed, on the source server; the move is done all the same. Why, when so.
    source_left: str | None = None


class UndoMoveInput(BaseModel):
    tenant_id: str
    # How long the database the undo leaves behind (on the server the tenant had moved to) is kept; 0 drops it.
    keep_seconds: int = DEFAULT_KEEP_SOURCE_SECONDS
    lock_wait_seconds: int = 0


class UndoMoveResult(BaseModel):
    tenant_id: str
    database_name: str
    server: str  # where the tenant is again (the move's source)
    left_server: str  # where it had moved to
    restored_from: str  # the kept source database, the tenant's database again
    undone_move: str  # the workflow id of the move undone
    set_aside: str  # the target's database, renamed aside: writes made since the move are there
    set_aside_kept_until: datetime | None
    terminated_sessions: int
    freeze_seconds: float
    # The left database could not be set aside (or dropped) within half an hour: why, when so (as a move's).
    left_database_problem: str | None = None


class MoveAllFromServerInput(FleetOptions):
    """`tenants move --all-from SOURCE`: every tenant in service on SOURCE (draining or closed) moved, one
    MoveTenantWorkflow each, `concurrency` at a time. FleetOptions' cursor carries it across continue-as-new."""

    source: str
    target: str | None = None  # None: each tenant where placement would put it now (an open server, not the source)
    keep_source_seconds: int = DEFAULT_KEEP_SOURCE_SECONDS
    lock_wait_seconds: int = 0
    jobs: int = 1
    checks: list[str] = Field(default_factory=list)


class MoveAllFromServerResult(FleetResult):
    source: str = ""
    tenants_left: int = 0  # live tenants still on the source when the run ended (0: it is empty)
