"""Who a restore runs as. Pure: the facts about roles are gathered by activities/infra/restore_login.py.

pg_restore executes whatever SQL a backup's table of contents holds, and `--role` is no barrier (an archive entry may
`RESET ROLE`): only the session user's own rights bound it. So a restore logs in as a short-lived role of its own
(NOSUPERUSER, no other attribute, member of one role only), and everything it creates belongs to that one role: the
restore's *owner*, a role of the tenant's that holds no more rights than the tenant should.

Which role owns a tenant's restored objects, in order:
1. its recorded role (provisioned tenants, adopted ones adopted with `--role`);
2. else the owner of its database, when that is an ordinary role (an adopted database an app role owns);
3. else a role of the name tenants' roles have (the database's), NOLOGIN, created for this and marked as the
   tenant's (a tenant adopted without a role whose database the admin owns). Deprovisioning drops it with the
   tenant, as it drops a recorded role.
A role with any power beyond its own objects (superuser, CREATEROLE, CREATEDB, REPLICATION, BYPASSRLS, membership in
such a role or a predefined pg_* role, or the admin itself) is never an owner: the restore is refused, never run as
the admin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tenancy.errors import InvalidInput
from tenancy.marks import Mark


@dataclass(frozen=True)
class RoleFacts:
    """What a restore needs to know of a role on the tenant's server."""

    name: str
    attributes: tuple[str, ...] = ()  # the powerful ones it has: SUPERUSER, CREATEROLE, CREATEDB, ...
    powerful_memberships: tuple[str, ...] = ()  # roles it is a member of that hold such powers, or pg_* ones
    is_admin: bool = False  # the role the workers connect as
    mark: Mark | None = None


@dataclass(frozen=True)
class RestoreOwner:
    name: str
    create: bool = False  # a NOLOGIN role of the tenant's to create first (case 3 above)
    why: str = field(default="", compare=False)


def unsafe_reason(role: RoleFacts) -> str | None:
    """Why `role` may not own what a restore creates (its rights would be the backup's), or None."""
    if role.is_admin:
        return "is the admin role the workers connect as"
    if role.attributes:
        return "has " + ", ".join(role.attributes)
    if role.powerful_memberships:
        return "is a member of " + ", ".join(role.powerful_memberships[:3])
    return None


def choose_restore_owner(
    tenant_id: str,
    recorded_name: str | None,
    recorded: RoleFacts | None,
    database_owner: RoleFacts | None,
    conventional_name: str,
    conventional: RoleFacts | None,
) -> RestoreOwner:
    """The role that owns a tenant's restored objects (see the module's doc). `recorded`: the facts of the
    recorded role (None: it does not exist); `database_owner`: of the tenant database's owner (None: no database);
    `conventional`: of the role named like the database (None: none). InvalidInput: refused, with why."""
    unchanged = "; nothing was changed"
    if recorded_name:
        if recorded is None:
            raise InvalidInput(f"tenant {tenant_id!r}'s role {recorded_name!r} does not exist{unchanged}")
        if reason := unsafe_reason(recorded):
            raise InvalidInput(
                f"tenant {tenant_id!r}'s role {recorded_name!r} {reason}: a restore runs with the rights of the role "
                f"that owns what it creates, so the backup's contents would have them too; refused{unchanged}"
            )
        return RestoreOwner(recorded_name, why="the tenant's role")
    if database_owner is not None and unsafe_reason(database_owner) is None:
        return RestoreOwner(database_owner.name, why="the owner of the tenant's database")
    if conventional is None:
        return RestoreOwner(conventional_name, create=True, why="a role of the tenant's, created for its objects")
    if conventional.mark is None or not conventional.mark.is_of(tenant_id, "role"):
        raise InvalidInput(
            f"tenant {tenant_id!r} has no role of its own, and role {conventional_name!r} exists without its mark: "
            f"adopt it with `tenants adopt --role` or drop it{unchanged}"
        )
    if reason := unsafe_reason(conventional):
        raise InvalidInput(f"role {conventional_name!r} of tenant {tenant_id!r} {reason}: refused{unchanged}")
    return RestoreOwner(conventional_name, why="the tenant's role")


def restore_login_name(scratch_name: str) -> str:
    """The login role of a restore's (or drill's) attempts: named like its scratch database, so it lies within
    the deployment's prefix (the sweeper's) and the next attempt of the same run finds what a dead one left."""
    return scratch_name
