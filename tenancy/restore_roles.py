"""Who a restore runs as. Pure: the facts about roles are gathered by activities/infra/restore_login.py.

pg_restore executes whatever SQL a backup's table of contents holds, and `--role` is no barrier (an archive entry may
`RESET ROLE`): only the session user's own rights bound it. So a restore logs in as a short-lived role of its own
(NOSUPERUSER, no other attribute, member of one role only), and everything it creates belongs to that one role: the
restore's *owner*, a NOLOGIN role of the tenant's, with no attribute, that no other role is a member of.

The owner is never the role the tenant's application logs in with: an owner may put triggers on its tables (the
migration ledger among them), which the admin's next migration would run with its rights. The tenant's *login role*
gets what provisioning gives it instead (activities/infra/schema.py grant_tenant_access): it uses the tables and owns
nothing. The login role is, in order:
1. the tenant's recorded role (provisioned tenants, adopted ones adopted with `--role`);
2. else the owner of its database, when that is an ordinary role (an adopted database an app role owns);
3. else none (a tenant adopted without a role whose database the admin owns).
The owner is named like the tenant's database, or `<database>_owner` when the login role has that name (as
provisioned tenants' do); it is created marked as the tenant's, and deprovisioning drops it with the tenant. One of
that name not marked as this tenant's, able to log in, with powers, or that the login role is a member of, is refused.
A login role with any power beyond its own objects (superuser, CREATEROLE, CREATEDB, REPLICATION, BYPASSRLS,
membership in such a role or a predefined pg_* role, or the admin itself) is refused too: the restore is never run.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    can_login: bool = False
    members: tuple[str, ...] = ()  # the roles (superusers aside) that are members of it, directly or not


@dataclass(frozen=True)
class RestoreOwner:
    name: str  # the NOLOGIN role the restored objects belong to
    create: bool = False  # to create first, marked as the tenant's
    login_role: str | None = None  # the tenant's login role: given provisioning's privileges on the restored copy
    why: str = field(default="", compare=False)


_OWNER_SUFFIX = "_owner"
_MAX_NAME_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1


def owner_role_names(database_name: str) -> tuple[str, str]:
    """The names a tenant's owner role may have: its database's, and `<database>_owner` (within 63 bytes)."""
    room = _MAX_NAME_BYTES - len(_OWNER_SUFFIX)
    stem = database_name.encode()[:room].decode(errors="ignore")
    return database_name, stem + _OWNER_SUFFIX


def owner_role_name(database_name: str, login_role: str | None) -> str:
    """The owner role of a tenant's restored objects: never its login role."""
    named_like_database, suffixed = owner_role_names(database_name)
    return suffixed if login_role == named_like_database else named_like_database


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
    database_name: str,
    owners: Mapping[str, RoleFacts | None],
) -> RestoreOwner:
    """The role that owns a tenant's restored objects, and its login role (see the module's doc). `recorded`: the
    facts of the recorded role (None: it does not exist); `database_owner`: of the tenant database's owner (None: no
    database); `owners`: of the roles named owner_role_names(database_name) (None: no such role). InvalidInput:
    refused, with why."""
    unchanged = "; nothing was changed"
    login: str | None = None
    if recorded_name:
        if recorded is None:
            raise InvalidInput(f"tenant {tenant_id!r}'s role {recorded_name!r} does not exist{unchanged}")
        if reason := unsafe_reason(recorded):
            raise InvalidInput(
                f"tenant {tenant_id!r}'s role {recorded_name!r} {reason}: a restore runs with the rights of the role "
                f"that owns what it creates, so the backup's contents would have them too; refused{unchanged}"
            )
        login = recorded_name
    elif database_owner is not None and unsafe_reason(database_owner) is None:
        login = database_owner.name
    name = owner_role_name(database_name, login)
    owner = owners.get(name)
    if owner is None:
        return RestoreOwner(name, create=True, login_role=login, why="a NOLOGIN role of the tenant's, created for it")
    if owner.mark is None or not owner.mark.is_of(tenant_id, "role"):
        raise InvalidInput(
            f"role {name!r}, which would own tenant {tenant_id!r}'s restored objects, exists without its mark: "
            f"drop it{unchanged}"
        )
    if reason := unsafe_reason(owner) or ("can log in" if owner.can_login else None):
        raise InvalidInput(f"role {name!r} of tenant {tenant_id!r} {reason}: refused{unchanged}")
    if login is not None and login in owner.members:
        raise InvalidInput(
            f"tenant {tenant_id!r}'s login role {login!r} is a member of role {name!r}, which owns its restored "
            f"objects: refused{unchanged}"
        )
    return RestoreOwner(name, login_role=login, why="the tenant's owner role")


def restore_login_name(scratch_name: str) -> str:
    """The login role of a restore's (or drill's) attempts: named like its scratch database, so it lies within
    the deployment's prefix (the sweeper's) and the next attempt of the same run finds what a dead one left."""
    return scratch_name
