"""PostgreSQL servers that hold tenant databases: their names, states, and where a new tenant goes (pure).

A server is known to the catalog by name (`database_servers`); its admin URL is not: workers and the command line
resolve a name to a URL from their own configuration (activities/infra/servers.py), so no password ever travels in
a workflow input or history. The server of the plain `TENANTS_DATABASE_URL` set-up is named `default`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from tenancy.errors import InvalidInput

DEFAULT_SERVER = "default"

# open: takes new tenants; draining: keeps its tenants, takes no new ones (`tenants move --all-from` empties it);
# closed: takes nothing, not even a move's target.
ServerStatus = Literal["open", "draining", "closed"]
SERVER_STATUSES: tuple[ServerStatus, ...] = ("open", "draining", "closed")

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")


def validate_server_name(name: str) -> str:
    """A server name: lowercase letters, digits and inner hyphens, 1-40 characters (as a tenant id)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid server name {name!r}: use 1-40 lowercase letters, digits and inner hyphens (e.g. pg-b)"
        )
    return name


class ServerLoad(BaseModel):
    """What placement weighs: a server's state, limits and what it holds now."""

    name: str
    status: ServerStatus = "open"
    max_tenants: int | None = Field(default=None, ge=1)
    max_size_bytes: int | None = Field(default=None, ge=1)
    tenants: int = Field(default=0, ge=0)
    size_bytes: int = Field(default=0, ge=0)

    @property
    def full(self) -> bool:
        return (self.max_tenants is not None and self.tenants >= self.max_tenants) or (
            self.max_size_bytes is not None and self.size_bytes >= self.max_size_bytes
        )

    @property
    def free_share(self) -> float:
        """The smaller free share of its two capacities (1.0 for a capacity with no limit)."""
        shares = [1.0]
        if self.max_tenants is not None:
            shares.append(1 - self.tenants / self.max_tenants)
        if self.max_size_bytes is not None:
            shares.append(1 - self.size_bytes / self.max_size_bytes)
        return max(0.0, min(shares))


def relative_free_share(load: ServerLoad, reference_tenants: int | None, reference_bytes: int | None) -> float:
    """A server's free share for placement: a capacity it sets no limit on is measured against the reference (the
    largest such limit among the candidates), so a server without limits is not "emptier" than a limited one
    merely for lacking a limit — 50 tenants on an unlimited server weigh as 50 of the other's 2,000. A capacity no
    candidate limits is left out."""
    shares = [1.0]
    max_tenants = load.max_tenants or reference_tenants
    if max_tenants:
        shares.append(1 - load.tenants / max_tenants)
    max_bytes = load.max_size_bytes or reference_bytes
    if max_bytes:
        shares.append(1 - load.size_bytes / max_bytes)
    return max(0.0, min(shares))


def choose_server(loads: list[ServerLoad], requested: str | None = None) -> str:
    """Where a new tenant goes: `requested` when it is open with room, else the open server with the largest free
    share (relative_free_share), then the fewest tenants, then the least data, then by name (so the choice is
    deterministic).

    Raises InvalidInput naming the reason when nothing can take it."""
    by_name = {load.name: load for load in loads}
    if requested is not None:
        load = by_name.get(requested)
        if load is None:
            known = ", ".join(sorted(by_name)) or "none"
            raise InvalidInput(f"no server named {requested!r} (servers: {known}); add it with `tenants servers add`")
        if load.status != "open":
            raise InvalidInput(f"server {requested!r} is {load.status}: it takes no new tenants")
        if load.full:
            raise InvalidInput(f"server {requested!r} is full ({load.tenants} tenants, {load.size_bytes} bytes)")
        return requested
    candidates = [load for load in loads if load.status == "open" and not load.full]
    if not candidates:
        raise InvalidInput("no open server has room for a new tenant: add one (`tenants servers add`) or raise a limit")
    reference_tenants = max((load.max_tenants for load in candidates if load.max_tenants), default=None)
    reference_bytes = max((load.max_size_bytes for load in candidates if load.max_size_bytes), default=None)

    def rank(load: ServerLoad) -> tuple[float, int, int, str]:
        free = relative_free_share(load, reference_tenants, reference_bytes)
        return (-free, load.tenants, load.size_bytes, load.name)

    return min(candidates, key=rank).name


def move_target_problem(source_major: int, target_major: int) -> str | None:
    """Why a tenant cannot move between servers of these major versions, or None. An archive of a newer pg_dump does
    not restore into an older server, and an older pg_dump cannot read a newer one: moves go up or across."""
    if target_major < source_major:
        return (
            f"the target runs PostgreSQL {target_major}, older than the source's {source_major}: "
            "a tenant moves only to the same or a newer major version"
        )
    return None


def move_dump_major(source_major: int, target_major: int) -> int:
    """The major version of the pg_dump and pg_restore a move uses: the newer of the two servers' (pg_dump reads
    older servers; its archive restores into its own major)."""
    return max(source_major, target_major)
