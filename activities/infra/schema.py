"""Tenant schema migrations: plain SQL files applied in order and recorded in each tenant database, and the
template database new tenants are copied from."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from activities.infra.marks import database_mark, mark_database
from activities.infra.pg import connect, connect_to_tenant_db, one_row
from tenancy.errors import INVALID_INPUT, MIGRATION_CHANGED, SCHEMA_ERROR, TENANT_EXISTS, fail
from tenancy.marks import Mark
from tenancy.naming import provisioning_database_name

MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
SEED_FILE = "seed.sql"
SEED_VERSION = "seed"
TEMPLATE_LOCK_KEY = 7_411_902_316  # exclusive while the template is checked or rebuilt, shared while copied

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS tenant_schema_migrations (
    version    text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path
    checksum: str


def migration_files(folder: Path) -> list[Migration]:
    if not folder.is_dir():
        raise fail(INVALID_INPUT, f"migrations folder {folder} does not exist")
    found = []
    for path in sorted(folder.iterdir()):
        match = MIGRATION_FILE.match(path.name)
        if match:
            found.append(Migration(path.stem, path, hashlib.sha256(path.read_bytes()).hexdigest()))
    return found


async def _run_sql_file(conn: psycopg.AsyncConnection, path: Path) -> None:
    """A SQL file that fails (syntax, constraint, missing object) fails the same way every time: not retried."""
    try:
        await conn.execute(path.read_text())
    except (
        psycopg.ProgrammingError,
        psycopg.DataError,
        psycopg.IntegrityError,
        psycopg.errors.FeatureNotSupported,
    ) as exc:
        raise fail(SCHEMA_ERROR, f"{path.name}: {str(exc).strip().splitlines()[0]}") from None


async def _has_ledger(conn: psycopg.AsyncConnection) -> bool:
    row = await one_row(await conn.execute("SELECT to_regclass('public.tenant_schema_migrations')"))
    return row[0] is not None


async def applied_migrations(conn: psycopg.AsyncConnection) -> dict[str, str]:
    exists = await one_row(await conn.execute("SELECT to_regclass('public.tenant_schema_migrations')"))
    if exists[0] is None:
        return {}
    rows = await (await conn.execute("SELECT version, checksum FROM tenant_schema_migrations")).fetchall()
    return {r[0]: r[1] for r in rows}


async def apply_migrations(conn: psycopg.AsyncConnection, migrations: list[Migration]) -> list[str]:
    """Apply what is missing, each file in its own transaction; refuse when an applied file has changed."""
    await conn.execute(_CREATE_LEDGER)
    done = await applied_migrations(conn)
    changed = [m.version for m in migrations if m.version in done and done[m.version] != m.checksum]
    if changed:
        raise fail(MIGRATION_CHANGED, f"migration(s) {', '.join(changed)} changed after being applied: add a new one")
    applied = []
    for migration in migrations:
        if migration.version in done:
            continue
        async with conn.transaction():
            await _run_sql_file(conn, migration.path)
            await conn.execute(
                "INSERT INTO tenant_schema_migrations (version, checksum) VALUES (%s, %s)",
                [migration.version, migration.checksum],
            )
        applied.append(migration.version)
    return applied


async def seed_once(conn: psycopg.AsyncConnection, folder: Path) -> bool:
    seed = folder / SEED_FILE
    if not seed.is_file():
        return False
    async with conn.transaction():
        inserted = await conn.execute(
            "INSERT INTO tenant_schema_migrations (version, checksum) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [SEED_VERSION, hashlib.sha256(seed.read_bytes()).hexdigest()],
        )
        if inserted.rowcount:
            await _run_sql_file(conn, seed)
    return bool(inserted.rowcount)


async def database_exists(conn: psycopg.AsyncConnection, name: str) -> bool:
    return await (await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])).fetchone() is not None


_PUBLIC_MAY_CREATE = """
SELECT n.oid IS NOT NULL AND pg_catalog.has_schema_privilege('public', n.oid, 'CREATE')
FROM (SELECT pg_catalog.to_regnamespace('public') AS oid) n
"""
_PUBLIC_MAY_CONNECT = """
SELECT pg_catalog.has_database_privilege('public', pg_catalog.current_database(), 'CONNECT')
    OR pg_catalog.has_database_privilege('public', pg_catalog.current_database(), 'TEMPORARY')
"""


async def harden_public_schema(conn: psycopg.AsyncConnection) -> bool:
    """Take CREATE on schema public from PUBLIC (every role) in the connection's database, where PostgreSQL 14 and
    older grant it: a tenant role could otherwise put functions or operators there that an admin session (a
    migration, a maintenance, a restore) would run. Tenant roles keep USAGE and what they are granted on the
    tables; they own nothing. True when it had to be taken."""
    granted = bool((await one_row(await conn.execute(_PUBLIC_MAY_CREATE)))[0])
    if granted:
        await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    return granted


# What a tenant's login role holds in its database (provisioning, and a restore's copy): it uses the tables and
# owns nothing. Functions keep PostgreSQL's default, EXECUTE for every role.
_TENANT_ACCESS = (
    "GRANT USAGE ON SCHEMA {schema} TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}",
    "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {role}",
)


async def grant_tenant_access(conn: psycopg.AsyncConnection, role: str, schemas: Iterable[str] = ("public",)) -> None:
    """Give a tenant's login role its privileges in the connection's database, in each of `schemas` (default
    privileges: on what the admin, the connection's user, creates there later, such as migrations)."""
    for schema in schemas:
        for statement in _TENANT_ACCESS:
            await conn.execute(sql.SQL(statement).format(schema=sql.Identifier(schema), role=sql.Identifier(role)))


async def _template_is_hardened(conn: psycopg.AsyncConnection) -> bool:
    """No role but the admin may connect to the template (what is planted in it would be in every copy), and
    none may create in its schema public."""
    may_connect = (await one_row(await conn.execute(_PUBLIC_MAY_CONNECT)))[0]
    may_create = (await one_row(await conn.execute(_PUBLIC_MAY_CREATE)))[0]
    return not may_connect and not may_create


async def ensure_template(admin_url: str, template: str, folder: Path) -> str | None:
    """Keep `template` at the newest migration; rebuild it from template0 when the files changed, or when it is
    not hardened (one an earlier release built, which any role could connect to and, on PostgreSQL 14 and older,
    create in: whatever may have been put in it is not copied into another tenant).
    Returns the schema version (the newest migration) it holds."""
    migrations = migration_files(folder)
    wanted = {m.version: m.checksum for m in migrations}
    async with await connect(admin_url, autocommit=True) as admin:
        await admin.execute("SELECT pg_advisory_lock(%s)", [TEMPLATE_LOCK_KEY])
        try:
            if await database_exists(admin, template):
                async with await connect(admin_url, template, autocommit=True) as conn:
                    if await applied_migrations(conn) == wanted and await _template_is_hardened(conn):
                        return migrations[-1].version if migrations else None
                    ours = await _has_ledger(conn)
                if not ours:  # a database of the template's name that this project did not build: left alone
                    raise fail(
                        TENANT_EXISTS,
                        f"database {template} exists and is not this project's template (it has no "
                        "tenant_schema_migrations table); rename it or change TENANTS_DATABASE_PREFIX",
                    )
                await admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(template)))
            await admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(template)))
            await admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(template)))
            async with await connect(admin_url, template, autocommit=True) as conn:
                await apply_migrations(conn, migrations)
                await harden_public_schema(conn)  # after them: what the template holds is always hardened
        finally:
            await admin.execute("SELECT pg_advisory_unlock(%s)", [TEMPLATE_LOCK_KEY])
    return migrations[-1].version if migrations else None


@asynccontextmanager
async def template_session(admin_url: str, template: str) -> AsyncIterator[psycopg.AsyncConnection]:
    """A session in the template database (names resolved in pg_catalog only), holding the template's lock
    exclusively: a copy of the template fails while any session is connected to it."""
    async with await connect(admin_url, autocommit=True) as admin:
        await admin.execute("SELECT pg_advisory_lock(%s)", [TEMPLATE_LOCK_KEY])
        try:
            async with await connect_to_tenant_db(admin_url, template, autocommit=True) as conn:
                yield conn
        finally:
            await admin.execute("SELECT pg_advisory_unlock(%s)", [TEMPLATE_LOCK_KEY])


def existing_database_message(name: str) -> str:
    return f"database {name} already exists; adopt it with `tenants adopt`, or choose another id"


def existing_role_message(name: str) -> str:
    return f"role {name} already exists; adopt it with `tenants adopt --role`, or choose another id"


def _run_token(run_id: str) -> str:
    return run_id.replace("-", "")[:10].lower()


def provisioning_copy_name(database: str, run_id: str) -> str:
    """The name a run's copy of the template has until it is renamed to the tenant's."""
    return provisioning_database_name(database, _run_token(run_id))


def _made_by(mark: Mark | None, tenant_id: str, workflow_id: str, run_id: str, *kinds: str) -> bool:
    return mark is not None and mark.is_of(tenant_id, *kinds) and mark.made_by(workflow_id, run_id)


async def _to_the_end(work: Awaitable[None]) -> None:
    """Run `work` to its end even when the activity is cancelled meanwhile, then let the cancellation through:
    what it creates is marked before anyone (the undo) looks for it."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def _copy_template(admin: psycopg.AsyncConnection, template: str, copy: str, mark: Mark) -> None:
    await admin.execute("SELECT pg_advisory_lock_shared(%s)", [TEMPLATE_LOCK_KEY])
    try:
        await admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(copy), sql.Identifier(template))
        )
    finally:
        await admin.execute("SELECT pg_advisory_unlock_shared(%s)", [TEMPLATE_LOCK_KEY])
    await mark_database(admin, copy, mark)
    # A new database lets every role connect: only the tenant's own role will (create_tenant_role grants it).
    await admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(copy)))


async def create_from_template(
    admin_url: str, template: str, database: str, tenant_id: str, workflow_id: str, run_id: str
) -> bool:
    """Copy the template to `database` for this run. The copy is made as `<database>__pv_<token>` marked
    "provisioning", then renamed and marked "tenant": the tenant's name only ever appears on a marked database.

    True when this call made it; False when an earlier attempt of the same run did (its mark says so). A
    database of that name that this run did not make is refused (TenantExists) and left exactly as it is."""

    def mark(kind: str) -> Mark:
        return Mark(kind=kind, tenant_id=tenant_id, workflow_id=workflow_id, run_id=run_id, at=datetime.now(UTC))

    copy = provisioning_copy_name(database, run_id)
    async with await connect(admin_url, autocommit=True) as admin:
        if await database_exists(admin, database):
            found = await database_mark(admin, database)
            if found is None or not _made_by(found, tenant_id, workflow_id, run_id, "tenant", "provisioning"):
                raise fail(TENANT_EXISTS, existing_database_message(database))
            if found.kind != "tenant":  # an attempt that stopped between the rename and the re-mark
                await mark_database(admin, database, mark("tenant"))
            return False
        if await database_exists(admin, copy):
            # An attempt of this run that stopped half way: its copy is redone from the start.
            if not _made_by(await database_mark(admin, copy), tenant_id, workflow_id, run_id, "provisioning"):
                raise fail(TENANT_EXISTS, f"database {copy} exists and is not this run's copy; nothing was changed")
            await admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(copy)))
        await _to_the_end(_copy_template(admin, template, copy, mark("provisioning")))
        try:
            await admin.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(copy), sql.Identifier(database))
            )
        except psycopg.errors.DuplicateDatabase:
            # Someone made a database of the tenant's name meanwhile: ours goes, theirs stays.
            await admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(copy)))
            raise fail(TENANT_EXISTS, existing_database_message(database)) from None
        await mark_database(admin, database, mark("tenant"))
    return True
