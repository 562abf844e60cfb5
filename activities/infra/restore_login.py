"""The roles a restore runs as (tenancy/restore_roles.py): facts about candidate owners, the owner of a tenant
without a role, and the short-lived login role of one restore attempt: created marked as this run's, with a random
password that travels only in the environment of pg_restore (PGPASSWORD) and in our own connection strings, and
dropped at the end of the attempt (a dead attempt's by the next one, or by the sweeper)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from activities.infra.credentials import new_password, scram_sha256_verifier
from activities.infra.marks import mark_role, role_mark
from activities.infra.pg import connect, connect_to_tenant_db, libpq_env, one_row
from activities.infra.schema import harden_public_schema
from tenancy.errors import RESTORE_FAILED, fail
from tenancy.log import activity_logger
from tenancy.marks import Mark, parse_mark
from tenancy.restore_roles import RoleFacts

# Attributes that give a role power beyond its own objects, and the roles that do: those with such attributes, the
# admin, the predefined pg_* ones (pg_database_owner aside: it only stands for a database's owner).
_ROLE_FACTS = """
SELECT r.rolname,
       ARRAY_REMOVE(ARRAY[
           CASE WHEN r.rolsuper THEN 'SUPERUSER' END, CASE WHEN r.rolcreaterole THEN 'CREATEROLE' END,
           CASE WHEN r.rolcreatedb THEN 'CREATEDB' END, CASE WHEN r.rolreplication THEN 'REPLICATION' END,
           CASE WHEN r.rolbypassrls THEN 'BYPASSRLS' END], NULL),
       ARRAY(SELECT p.rolname FROM pg_catalog.pg_roles p
             WHERE p.oid <> r.oid AND pg_catalog.pg_has_role(r.oid, p.oid, 'MEMBER')
               AND (p.rolsuper OR p.rolcreaterole OR p.rolcreatedb OR p.rolreplication OR p.rolbypassrls
                    OR p.rolname = current_user
                    OR (pg_catalog.starts_with(p.rolname, 'pg_') AND p.rolname <> 'pg_database_owner'))
             ORDER BY 1),
       r.rolname = current_user,
       pg_catalog.shobj_description(r.oid, 'pg_authid'),
       r.rolcanlogin,
       ARRAY(SELECT m.rolname FROM pg_catalog.pg_roles m
             WHERE m.oid <> r.oid AND NOT m.rolsuper AND pg_catalog.pg_has_role(m.oid, r.oid, 'MEMBER') ORDER BY 1)
FROM pg_catalog.pg_roles r WHERE r.rolname = %s
"""
# Whatever a role owns or holds in a database (pg_shdepend; dbid 0: shared objects, such as databases themselves).
_MENTIONED_IN = (
    "SELECT DISTINCT s.dbid FROM pg_catalog.pg_shdepend s "
    "WHERE s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass "
    "AND s.refobjid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = %s)"
)


async def role_facts(conn: psycopg.AsyncConnection, name: str) -> RoleFacts | None:
    """None: no such role."""
    row = await (await conn.execute(_ROLE_FACTS, [name])).fetchone()
    if row is None:
        return None
    return RoleFacts(
        name=row[0],
        attributes=tuple(row[1]),
        powerful_memberships=tuple(row[2]),
        is_admin=bool(row[3]),
        mark=parse_mark(row[4]),
        can_login=bool(row[5]),
        members=tuple(row[6]),
    )


async def create_owner_role(conn: psycopg.AsyncConnection, name: str, mark: Mark) -> None:
    """The NOLOGIN role a tenant's restored objects belong to, marked as the tenant's, in one transaction (a
    concurrent drill that made it first: this one takes it up on its retry)."""
    async with conn.transaction():
        await conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
        await mark_role(conn, name, mark)


@dataclass(frozen=True)
class RestoreLogin:
    name: str
    password: str
    owner: str

    def conninfo(self, admin_url: str, dbname: str) -> str:
        """The admin's server and TLS settings, this role's name and password, and `dbname`."""
        return make_conninfo(admin_url, dbname=dbname, user=self.name, password=self.password)

    def env(self, admin_url: str, dbname: str) -> dict[str, str]:
        """For pg_restore: the password in PGPASSWORD, never on a command line."""
        return libpq_env(make_conninfo(admin_url, user=self.name, password=self.password), dbname)


async def create_restore_login(admin_url: str, name: str, owner: str, database: str, mark: Mark) -> RestoreLogin:
    """A LOGIN role with no attribute but INHERIT, member of `owner` only, allowed to connect to `database`. A role
    of the name that an earlier attempt of the same run left is dropped first; one of another run, or not ours, is
    refused and left alone."""
    password = new_password()
    async with await connect(admin_url, autocommit=True) as admin:
        if await (await admin.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", [name])).fetchone():
            found = await role_mark(admin, name)
            if (
                found is None
                or found.kind != "restorer"
                or not found.is_of(mark.tenant_id)
                or not found.made_by(mark.workflow_id or "")
            ):
                raise fail(RESTORE_FAILED, f"role {name!r} exists and is not this run's: left alone")
            await drop_restore_login(admin_url, name)
        role = sql.Identifier(name)
        async with admin.transaction():
            await admin.execute(
                sql.SQL(
                    "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT "
                    "PASSWORD {}"
                ).format(role, sql.Literal(scram_sha256_verifier(password)))
            )
            await mark_role(admin, name, mark)
            await admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(owner), role))
            await admin.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), role))
    return RestoreLogin(name=name, password=password, owner=owner)


async def drop_restore_login(admin_url: str, name: str) -> None:
    """Drop a restore's login role: first whatever it owns or holds in each database that mentions it (DROP OWNED,
    never REASSIGN: nothing it made is handed to anyone), then its sessions, then the role. Safe to repeat."""
    async with await connect(admin_url, autocommit=True) as admin:
        if not await (await admin.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", [name])).fetchone():
            return
        rows = await (
            await admin.execute(
                "SELECT d.datname FROM pg_catalog.pg_database d WHERE d.oid IN (" + _MENTIONED_IN + ") "
                "AND d.datname <> current_database() AND d.datallowconn",
                [name],
            )
        ).fetchall()
        role = sql.Identifier(name)
        await admin.execute(sql.SQL("DROP OWNED BY {}").format(role))  # here, and its privileges on databases
    for (database,) in rows:
        with contextlib.suppress(psycopg.OperationalError):  # dropped meanwhile
            async with await connect_to_tenant_db(admin_url, database, autocommit=True) as conn:
                await conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
    async with await connect(admin_url, autocommit=True) as admin:
        await admin.execute(
            "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity "
            "WHERE usename = %s AND pid <> pg_catalog.pg_backend_pid()",
            [name],
        )
        await admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))


async def drop_restore_login_quietly(admin_url: str, name: str, tenant_id: str) -> None:
    """At the end of an attempt, whatever happened: shielded from a cancellation, and a failure is logged, not
    raised (the role is marked: the next attempt or the sweeper drops it)."""
    try:
        await asyncio.shield(drop_restore_login(admin_url, name))
    except Exception as exc:
        activity_logger("activities.restore", tenant_id).warning(
            "restore login role not dropped", role=name, error=str(exc).strip()
        )


async def drop_restore_login_of_run(admin_url: str, name: str, tenant_id: str, workflow_id: str) -> bool:
    """An undo's or a drill's clean-up: the login role of `name` if it is this run's (its mark says so)."""
    async with await connect(admin_url, autocommit=True) as admin:
        found = await role_mark(admin, name)
    if found is None or found.kind != "restorer" or not found.is_of(tenant_id) or not found.made_by(workflow_id):
        return False
    await drop_restore_login(admin_url, name)
    return True


def restorer_mark(tenant_id: str, workflow_id: str, run_id: str) -> Mark:
    return Mark(kind="restorer", tenant_id=tenant_id, workflow_id=workflow_id, run_id=run_id, at=datetime.now(UTC))


async def let_owner_create(admin_url: str, scratch: str, owner: str) -> list[sql.Composed]:
    """For the load only (a restore's, a move's): the owner role may create schemas (CREATE on the database) and
    objects in `public` (which PostgreSQL 15+ lets only the database's owner create in). Returns the REVOKEs that
    undo what was granted here."""
    undo: list[sql.Composed] = []
    role, database = sql.Identifier(owner), sql.Identifier(scratch)
    async with await connect_to_tenant_db(admin_url, scratch, autocommit=True) as conn:
        await harden_public_schema(conn)  # no other role may create in public (PostgreSQL 14 and older let any)
        on_database, on_public = await one_row(
            await conn.execute(
                "SELECT has_database_privilege(%s, current_database(), 'CREATE'), "
                "(SELECT has_schema_privilege(%s, n.oid, 'CREATE') FROM pg_namespace n WHERE n.nspname = 'public')",
                [owner, owner],
            )
        )
        if not on_database:
            await conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(database, role))
            undo.append(sql.SQL("REVOKE CREATE ON DATABASE {} FROM {}").format(database, role))
        if on_public is False:
            await conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(role))
            undo.append(sql.SQL("REVOKE CREATE ON SCHEMA public FROM {}").format(role))
    return undo


async def run_checks_as_owner(
    login: RestoreLogin,
    admin_url: str,
    dbname: str,
    owner: str,
    checks: list[str],
    timeout_ms: int,
    error_type: str,
) -> None:
    """Each check (SQL that must return true) on `dbname` as the owner role (SET ROLE from the attempt's login,
    never the admin), in a READ ONLY transaction with a statement timeout; the first that fails or is not true
    raises `error_type` naming it."""
    async with await psycopg.AsyncConnection.connect(login.conninfo(admin_url, dbname), autocommit=True) as conn:
        await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
        for check in checks:
            try:
                async with conn.transaction():
                    await conn.execute("SET TRANSACTION READ ONLY")
                    await conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(timeout_ms))
                    # prepare=True: the extended protocol, which refuses a string of two statements.
                    row = await (await conn.execute(check, prepare=True)).fetchone()
            except psycopg.Error as exc:
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise fail(error_type, f"check {check!r} failed: {message}") from None
            if not row or row[0] is not True:
                raise fail(error_type, f"check {check!r} did not return true")
