"""Reading and writing marks (tenancy/marks.py) on databases and roles: COMMENT ON DATABASE / ROLE."""

from __future__ import annotations

import psycopg
from psycopg import sql

from tenancy.marks import Mark, parse_mark


async def database_mark(conn: psycopg.AsyncConnection, dbname: str) -> Mark | None:
    row = await (
        await conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [dbname])
    ).fetchone()
    return parse_mark(row[0]) if row else None


async def role_mark(conn: psycopg.AsyncConnection, role: str) -> Mark | None:
    row = await (
        await conn.execute("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s", [role])
    ).fetchone()
    return parse_mark(row[0]) if row else None


async def mark_database(conn: psycopg.AsyncConnection, dbname: str, mark: Mark) -> None:
    await conn.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(dbname), sql.Literal(mark.comment()))
    )


async def mark_role(conn: psycopg.AsyncConnection, role: str, mark: Mark) -> None:
    await conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(role), sql.Literal(mark.comment())))


async def marked_databases(conn: psycopg.AsyncConnection) -> dict[str, Mark]:
    """Every database on the server that carries a mark of ours, by name."""
    rows = await (
        await conn.execute("SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database")
    ).fetchall()
    return {name: mark for name, comment in rows if (mark := parse_mark(comment)) is not None}
