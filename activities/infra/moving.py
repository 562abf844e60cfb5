"""The SQL of a move between servers (activities/move.py): the tenant's roles on the target, its copy settled and
checked, the source frozen and unfrozen, databases renamed, opened and dropped. Every function acts only on what
carries the mark it expects (activities/infra/marks.py)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from temporalio.exceptions import ApplicationError

from activities.infra.marks import database_mark, mark_role, role_mark
from activities.infra.pg import connect, connect_to_tenant_db, count_rows, one_row
from activities.infra.restore_login import RestoreLogin, create_owner_role, role_facts
from activities.infra.schema import grant_tenant_access
from tenancy.errors import MOVE_FAILED, MOVE_REFUSED, InvalidInput, fail
from tenancy.marks import Mark
from tenancy.restore_roles import RestoreOwner, choose_restore_owner, owner_role_names

Conn = psycopg.AsyncConnection[Any]


def ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


async def database_exists(conn: Conn, name: str) -> bool:
    return await (await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])).fetchone() is not None


async def database_state(conn: Conn, name: str) -> tuple[bool, int] | None:
    """(allows connections, connection limit) of a database; None when there is none of the name."""
    row = await (
        await conn.execute("SELECT datallowconn, datconnlimit FROM pg_database WHERE datname = %s", [name])
    ).fetchone()
    return (bool(row[0]), int(row[1])) if row else None


async def terminate_sessions(conn: Conn, name: str) -> tuple[int, int]:
    """End every session of database `name` but this one: (how many, how many of them were clients' — the rest are
    the server's own workers, such as autovacuum, which say nothing about the tenant's application)."""
    row = await one_row(
        await conn.execute(
            "SELECT count(pg_terminate_backend(pid)), count(*) FILTER (WHERE backend_type = 'client backend') "
            "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
    )
    return int(row[0]), int(row[1])


async def terminate(conn: Conn, name: str) -> int:
    """End every session of database `name` but this one; how many of them were clients' sessions."""
    return (await terminate_sessions(conn, name))[1]


async def freeze(conn: Conn, name: str) -> int:
    """Refuse new sessions of database `name` to every role but superusers (CONNECTION LIMIT 0: the admin's
    pg_dump still gets in; ALLOW_CONNECTIONS false would keep it out too), then end the open ones. Returns how many
    were ended. Safe to repeat."""
    await conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT 0").format(ident(name)))
    ended = 0
    for _ in range(50):  # a session that was starting as the limit changed may appear just after
        now, clients = await terminate_sessions(conn, name)
        ended += clients
        if not now:
            break
        await asyncio.sleep(0.05)
    # A backend past its connection-limit check just before the ALTER may show in pg_stat_activity only later: one
    # more pass after a pause ends it too.
    await asyncio.sleep(0.3)
    return ended + await terminate(conn, name)


async def prepared_transactions(conn: Conn, name: str) -> int:
    """Prepared transactions of database `name`: no terminate ends them, and they hold the database."""
    row = await one_row(await conn.execute("SELECT count(*) FROM pg_prepared_xacts WHERE database = %s", [name]))
    return int(row[0])


async def sessions_since(conn: Conn, name: str, since: datetime) -> int:
    """Client sessions of database `name` (this one aside) that began after `since` (autovacuum and the server's
    other workers write nothing of the tenant's)."""
    row = await one_row(
        await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend' AND backend_start > %s",
            [name, since],
        )
    )
    return int(row[0])


async def unfreeze(conn: Conn, name: str, allows_connections: bool, connection_limit: int) -> None:
    """Database `name` as it was before a freeze."""
    await conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(ident(name), connection_limit))
    await conn.execute(
        sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(ident(name), sql.SQL(str(allows_connections).lower()))
    )


async def copy_login_role(source: Conn, target: Conn, role: str, mark: Mark) -> bool:
    """The tenant's login role on the target, with the source's password verifier (the application's credentials
    keep working) and connection limit. One of the name that carries this tenant's role mark (an earlier move's) is
    taken up and given the verifier; any other is refused. True when this call created it."""
    row = await (
        await source.execute("SELECT rolpassword, rolcanlogin, rolconnlimit FROM pg_authid WHERE rolname = %s", [role])
    ).fetchone()
    if row is None:
        raise fail(MOVE_REFUSED, f"the tenant's role {role!r} does not exist on the source server; nothing was changed")
    verifier, can_login, limit = row
    password = sql.SQL(" PASSWORD {}").format(sql.Literal(verifier)) if verifier else sql.SQL("")
    login = sql.SQL("LOGIN" if can_login else "NOLOGIN")
    exists = await (await target.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])).fetchone()
    async with target.transaction():
        if exists:
            found = await role_mark(target, role)
            if found is None or not found.is_of(mark.tenant_id, "role"):
                raise fail(
                    MOVE_REFUSED,
                    f"role {role!r} exists on the target server and is not this tenant's: left alone; nothing was "
                    "changed",
                )
            await target.execute(
                sql.SQL("ALTER ROLE {} WITH {} CONNECTION LIMIT {}{}").format(ident(role), login, limit, password)
            )
            return False
        await target.execute(
            sql.SQL(
                "CREATE ROLE {} WITH {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT "
                "CONNECTION LIMIT {}{}"
            ).format(ident(role), login, limit, password)
        )
        await mark_role(target, role, mark)
    return True


async def owner_on(target: Conn, tenant_id: str, database_name: str, login_role: str | None) -> RestoreOwner:
    """The NOLOGIN role the tenant's copy belongs to on the target (tenancy/restore_roles.py), refused when unsafe."""
    try:
        return choose_restore_owner(
            tenant_id,
            login_role,
            await role_facts(target, login_role) if login_role else None,
            None,
            database_name,
            {name: await role_facts(target, name) for name in owner_role_names(database_name)},
        )
    except InvalidInput as exc:
        raise fail(MOVE_REFUSED, str(exc)) from None


async def ensure_owner(target: Conn, tenant_id: str, database_name: str, login_role: str | None, mark: Mark) -> bool:
    """The owner role exists on the target (created marked when missing); True when this call created it."""
    owner = await owner_on(target, tenant_id, database_name, login_role)
    if owner.create:
        await create_owner_role(target, owner.name, mark)
    return owner.create


async def settle_copy(
    target_url: str, scratch: str, login: RestoreLogin, undo_grants: list[sql.Composed], login_role: str | None
) -> None:
    """After pg_restore: refuse a copy where something was made as the load's login role itself (an archive entry
    that left the owner role), take back the load's grants, and give the owner and the tenant's login role what a
    restore gives them (activities/restore.py _settle_restored)."""
    role = ident(login.owner)
    async with await connect_to_tenant_db(target_url, scratch, autocommit=True) as conn:
        held = await one_row(
            await conn.execute(
                "SELECT count(*) FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid "
                "WHERE d.datname = current_database() AND s.refclassid = 'pg_authid'::regclass "
                "AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s)",
                [login.name],
            )
        )
        if held[0]:
            raise fail(
                MOVE_REFUSED,
                f"the copy made {held[0]} object(s) or grant(s) as the load's login role instead of the tenant's "
                f"role {login.owner!r} (it switched roles): refused",
            )
        for undo in undo_grants:
            await conn.execute(undo)
        for grant in (
            "GRANT USAGE ON SCHEMA public TO {}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {}",
        ):
            await conn.execute(sql.SQL(grant).format(role))
        if login_role is not None:
            schemas = await (
                await conn.execute(
                    "SELECT nspname FROM pg_namespace WHERE nspname <> 'information_schema' "
                    "AND NOT starts_with(nspname, 'pg_') ORDER BY 1"
                )
            ).fetchall()
            await grant_tenant_access(conn, login_role, [name for (name,) in schemas])


SEQUENCES_SQL = (
    "SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences "
    "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
)


async def facts_of(url: str, dbname: str) -> tuple[dict[str, int], dict[str, int | None]]:
    """Row counts of every table and the last value of every sequence (None: never used), in one snapshot."""
    async with await connect_to_tenant_db(url, dbname, autocommit=False) as conn:
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        counts = await count_rows(conn)
        sequences = {name: value for name, value in await (await conn.execute(SEQUENCES_SQL)).fetchall()}
        await conn.rollback()
    return counts, sequences


async def drop_marked_database(conn: Conn, name: str, tenant_id: str, workflow_id: str, *kinds: str) -> bool:
    """Drop database `name` if it carries this tenant's mark of one of `kinds`, made by `workflow_id`."""
    if not await database_exists(conn, name):
        return False
    mark = await database_mark(conn, name)
    if mark is None or not mark.is_of(tenant_id, *kinds) or not mark.made_by(workflow_id):
        return False
    await conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident(name)))
    return True


async def drop_role_of_run(url: str, name: str, tenant_id: str, workflow_id: str) -> bool:
    """Drop role `name` on the server of `url` if this run created it (its mark says so). Whatever it still holds
    there is dropped with it (privileges on databases; its copies are gone first)."""
    async with await connect(url, autocommit=True) as admin:
        found = await role_mark(admin, name)
        if found is None or found.kind != "role" or not found.is_of(tenant_id) or not found.made_by(workflow_id):
            return False
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()",
            [name],
        )
        await admin.execute(sql.SQL("DROP OWNED BY {}").format(ident(name)))
        await admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident(name)))
    return True


async def database_acl(conn: Conn, name: str) -> tuple[str, list[tuple[str | None, str]] | None]:
    """The owner of database `name`, and its grants as (grantee or None for PUBLIC, privilege); None: the default
    privileges (no ACL was ever set)."""
    row = await one_row(
        await conn.execute("SELECT pg_get_userbyid(datdba), datacl IS NULL FROM pg_database WHERE datname = %s", [name])
    )
    if row[1]:
        return row[0], None
    grants = await (
        await conn.execute(
            "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, a.privilege_type "
            "FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s",
            [name],
        )
    ).fetchall()
    return row[0], [(grantee, privilege) for grantee, privilege in grants]


async def open_like(source: Conn, source_name: str, target: Conn, target_name: str, connection_limit: int) -> None:
    """Database `target_name` on the target server let in as `source_name` is on the source: its grants (not in a
    dump), its owner when that is not the source's admin, and `connection_limit`. The grants of a role the target
    does not have, or of the source's admin, are not carried."""
    owner, grants = await database_acl(source, source_name)
    source_admin = (await one_row(await source.execute("SELECT current_user")))[0]
    database = ident(target_name)

    async def role_on_target(name: str) -> bool:
        return (
            await (await target.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name])).fetchone()
        ) is not None

    if owner != source_admin and await role_on_target(owner):
        await target.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(database, ident(owner)))
    await target.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
    if grants is None:
        await target.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO PUBLIC").format(database))
    else:
        for grantee, privilege in grants:
            if grantee in (owner, source_admin) or (grantee is not None and not await role_on_target(grantee)):
                continue
            who = sql.SQL("PUBLIC") if grantee is None else ident(grantee)
            await target.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}").format(sql.SQL(privilege), database, who))
    await target.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(database, connection_limit))
    await target.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(database))


async def rename(conn: Conn, old: str, new: str) -> None:
    """Rename a database, ending its sessions first (a rename waits for none: it fails while any is open)."""
    for _ in range(100):
        await terminate(conn, old)
        try:
            await conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(old), ident(new)))
            return
        except psycopg.errors.ObjectInUse:
            await asyncio.sleep(0.1)
    raise ApplicationError(f"sessions of {old!r} would not end", type=MOVE_FAILED)


async def close(conn: Conn, name: str) -> None:
    """Nobody connects to database `name` any more (a set-aside copy)."""
    await conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(ident(name)))
    await terminate(conn, name)


async def retire_login(conn: Conn, role: str, tenant_id: str) -> bool:
    """The tenant's login role may not log in on this server any more (its database left it): NOLOGIN, its sessions
    ended. Only a role that carries this tenant's role mark; True when done."""
    found = await role_mark(conn, role)
    if found is None or not found.is_of(tenant_id, "role"):
        return False
    await conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(ident(role)))
    await conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()",
        [role],
    )
    return True
