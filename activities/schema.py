"""Tenant schema migrations: plain SQL files applied in order and recorded in each tenant database, and the
template database new tenants are copied from."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from activities.pg import connect
from tenancy.errors import INVALID_INPUT, MIGRATION_CHANGED, SCHEMA_ERROR, fail

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
        await conn.execute(path.read_text())  # type: ignore[arg-type]
    except (
        psycopg.ProgrammingError,
        psycopg.DataError,
        psycopg.IntegrityError,
        psycopg.errors.FeatureNotSupported,
    ) as exc:
        raise fail(SCHEMA_ERROR, f"{path.name}: {str(exc).strip().splitlines()[0]}") from None


async def applied_migrations(conn: psycopg.AsyncConnection) -> dict[str, str]:
    exists = await (await conn.execute("SELECT to_regclass('public.tenant_schema_migrations')")).fetchone()
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


async def ensure_template(admin_url: str, template: str, folder: Path) -> str | None:
    """Keep `template` at the newest migration; rebuild it from template0 when the files changed.
    Returns the schema version (the newest migration) it holds."""
    migrations = migration_files(folder)
    wanted = {m.version: m.checksum for m in migrations}
    async with await connect(admin_url, autocommit=True) as admin:
        await admin.execute("SELECT pg_advisory_lock(%s)", [TEMPLATE_LOCK_KEY])
        try:
            if await database_exists(admin, template):
                async with await connect(admin_url, template, autocommit=True) as conn:
                    if await applied_migrations(conn) == wanted:
                        return migrations[-1].version if migrations else None
                await admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(template)))
            await admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(template)))
            async with await connect(admin_url, template, autocommit=True) as conn:
                await apply_migrations(conn, migrations)
        finally:
            await admin.execute("SELECT pg_advisory_unlock(%s)", [TEMPLATE_LOCK_KEY])
    return migrations[-1].version if migrations else None


async def create_from_template(admin_url: str, template: str, database: str) -> bool:
    """CREATE DATABASE … TEMPLATE; False when it already exists (a retried activity)."""
    async with await connect(admin_url, autocommit=True) as admin:
        await admin.execute("SELECT pg_advisory_lock_shared(%s)", [TEMPLATE_LOCK_KEY])
        try:
            if await database_exists(admin, database):
                return False
            await admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(database), sql.Identifier(template))
            )
            return True
        finally:
            await admin.execute("SELECT pg_advisory_unlock_shared(%s)", [TEMPLATE_LOCK_KEY])
