"""The SQL of maintenance, for one connection: the heaps a cleanup rule covers and the statements that delete
from one heap; the tables VACUUM and ANALYZE go through one by one; leftovers of an interrupted REINDEX
CONCURRENTLY.

Every statement is composed with literals (cutoff, TID bounds) and executed without parameters: a rule's
condition is the operator's own SQL, and a `%` in it must never be taken for a placeholder."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from activities.infra.pg import one_row
from tenancy.maintenance import CleanupRule

MISSING_TABLE = "does not exist in this database"


@dataclass(frozen=True)
class Heap:
    """One table file: a plain table, an inheritance child or a leaf partition (a ctid is unique in one only)."""

    oid: int
    schema: str
    name: str
    alias: str | None = None  # a child or partition goes by the rule's table name

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def source(self) -> sql.Composed:
        """This heap alone; a child or partition named as the rule's table, so a condition that names the table
        (`activity_log.kind = ...`) reads the same on each heap."""
        only = sql.SQL("ONLY {}").format(sql.Identifier(self.schema, self.name))
        return only if self.alias is None else sql.SQL("{} AS {}").format(only, sql.Identifier(self.alias))


@dataclass(frozen=True)
class Table:
    """A relation VACUUM or ANALYZE can take, in the order they go through them (user tables first)."""

    schema: str
    name: str
    kind: str  # pg_class.relkind: r, m or p
    system: bool

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def order(self) -> list:
        return [self.system, self.schema, self.name]

    @property
    def ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name)


async def _one(conn: psycopg.AsyncConnection, query: sql.Composed) -> tuple[Any, ...] | None:
    return await (await conn.execute(query)).fetchone()


async def _one_row(conn: psycopg.AsyncConnection, query: sql.Composed) -> tuple[Any, ...]:
    return await one_row(await conn.execute(query))


def old_rows(rule: CleanupRule, cutoff: datetime) -> sql.Composable:
    """The rows a rule deletes: older than the cutoff and matching the rule's condition."""
    where = sql.SQL("{} < {}").format(sql.Identifier(rule.timestamp_column), sql.Literal(cutoff))
    if rule.condition:
        where = sql.SQL("{} AND ({})").format(where, sql.SQL(rule.condition))  # the operator's own SQL
    return where


def explain_rule(rule: CleanupRule, cutoff: datetime) -> sql.Composed:
    """PostgreSQL's plan of what a rule reads, reading nothing: the table, column and condition are checked, the
    condition parsed. (Sent prepared, as one statement: a second one is refused.)"""
    return sql.SQL("EXPLAIN SELECT 1 FROM {} WHERE {}").format(
        sql.Identifier(*rule.qualified_table), old_rows(rule, cutoff)
    )


_HEAPS = """
WITH RECURSIVE tree(oid) AS (
    SELECT {oid}::oid
    UNION
    SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.oid
)
SELECT c.oid, n.nspname, c.relname
FROM tree JOIN pg_class c ON c.oid = tree.oid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
ORDER BY 2, 3
"""


async def rule_heaps(conn: psycopg.AsyncConnection, rule: CleanupRule, cutoff: datetime) -> list[Heap] | str:
    """The heaps holding a rule's rows (the table itself and every inheritance child or leaf partition under
    it), or why the rule does not apply in this database."""
    oid, kind = await _one(
        conn,
        sql.SQL("SELECT c.oid, c.relkind FROM pg_class c WHERE c.oid = to_regclass({})").format(
            sql.Literal(".".join(rule.qualified_table))  # plain names (CleanupRule): nothing to quote
        ),
    ) or (None, None)
    if oid is None:
        return MISSING_TABLE
    if kind not in ("r", "p"):
        return "is not a table (a view, or a foreign or other relation)"
    (has_column,) = await _one_row(
        conn,
        sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = {} AND attname = {} "
            "AND attnum > 0 AND NOT attisdropped)"
        ).format(sql.Literal(oid), sql.Literal(rule.timestamp_column)),
    )
    if not has_column:
        return f"has no column {rule.timestamp_column}"
    # The condition may name a column or a function this database does not have: planning tells, reading nothing.
    try:
        await conn.execute(explain_rule(rule, cutoff), prepare=True)
    except (
        psycopg.errors.UndefinedColumn,
        psycopg.errors.UndefinedTable,
        psycopg.errors.UndefinedFunction,
        psycopg.errors.UndefinedObject,
    ) as exc:
        return f"does not fit this database: {str(exc).strip().splitlines()[0]}"
    rows = await (await conn.execute(sql.SQL(_HEAPS).format(oid=sql.Literal(oid)))).fetchall()
    alias = rule.table.split(".")[-1]
    return [Heap(oid=o, schema=s, name=n, alias=None if o == oid else alias) for o, s, n in rows]


async def count_old(conn: psycopg.AsyncConnection, heap: Heap, where: sql.Composable) -> int:
    return (await _one_row(conn, sql.SQL("SELECT count(*) FROM {} WHERE {}").format(heap.source, where)))[0]


async def any_old(conn: psycopg.AsyncConnection, heap: Heap, where: sql.Composable) -> bool:
    query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {})").format(heap.source, where)
    return (await _one_row(conn, query))[0]


async def heap_blocks(conn: psycopg.AsyncConnection, heap: Heap) -> tuple[int, float]:
    """Blocks in the heap's file now, and the estimated rows per block (100 when it was never analyzed)."""
    row = await _one(
        conn,
        sql.SQL(
            "SELECT pg_relation_size(oid) / current_setting('block_size')::int, reltuples FROM pg_class WHERE oid = {}"
        ).format(sql.Literal(heap.oid)),
    )
    if row is None:
        return 0, 1.0  # dropped since listed
    pages, tuples = int(row[0]), float(row[1])
    return pages, (max(1.0, tuples / pages) if pages and tuples > 0 else 100.0)


def delete_blocks(heap: Heap, where: sql.Composable, lo: int, hi: int) -> sql.Composed:
    """Old rows in blocks [lo, hi) of this heap alone: a TID range scan, re-checking the cutoff and condition."""
    return sql.SQL("DELETE FROM {} WHERE ctid >= {}::tid AND ctid < {}::tid AND {}").format(
        heap.source, sql.Literal(f"({lo},0)"), sql.Literal(f"({hi},0)"), where
    )


def delete_some(heap: Heap, where: sql.Composable, limit: int) -> sql.Composed:
    """Up to `limit` old rows of this heap alone, wherever they are; the condition is checked again on the rows
    the DELETE reaches (a ctid names a row in this one file only, and only at the time it was read)."""
    return sql.SQL(
        "DELETE FROM {heap} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {heap} WHERE {where} LIMIT {n})) AND {where}"
    ).format(heap=heap.source, where=where, n=sql.Literal(limit))


_TABLES = """
SELECT n.nspname, c.relname, c.relkind, n.nspname IN ('pg_catalog', 'information_schema')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm', 'p') AND c.relpersistence <> 't'
"""


async def vacuum_tables(conn: psycopg.AsyncConnection) -> list[Table]:
    """Every relation a database-wide VACUUM or ANALYZE goes through, user tables first, in a stable order."""
    rows = await (await conn.execute(_TABLES)).fetchall()
    return sorted((Table(schema=s, name=n, kind=k, system=y) for s, n, k, y in rows), key=lambda t: t.order)


def analyze_only(server_version: int, table: Table) -> sql.Composed:
    """ANALYZE of one relation; a partitioned table's own statistics only, where the server can (its partitions
    are tables of their own in the list)."""
    only = sql.SQL("ONLY ") if table.kind == "p" and server_version >= 180000 else sql.SQL("")
    return sql.SQL("ANALYZE {}{}").format(only, table.ident)


def vacuum_one(server_version: int, table: Table, full: bool) -> sql.Composed:
    if table.kind == "p":  # no storage of its own: its partitions are vacuumed one by one
        return analyze_only(server_version, table)
    options = sql.SQL("FULL, ANALYZE" if full else "ANALYZE")
    return sql.SQL("VACUUM ({}) {}").format(options, table.ident)


# An invalid index left by an interrupted REINDEX CONCURRENTLY: named <index>_ccnew/_ccold (a number appended
# when that name was taken), with a valid twin of the same definition on the same table (the index it copies,
# or the copy that replaced it), and no index build running on that table now. Anything else invalid (someone's
# CREATE INDEX CONCURRENTLY, failed or running) is not ours to drop.
_LEFTOVERS = """
SELECT i.indexrelid, quote_ident(n.nspname) || '.' || quote_ident(ic.relname), tn.nspname || '.' || c.relname
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace tn ON tn.oid = c.relnamespace
WHERE NOT i.indisvalid
  AND ic.relname ~ '_cc(new|old)[0-9]*$'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
  AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.relid = i.indrelid)
  AND EXISTS (
    SELECT 1 FROM pg_index t JOIN pg_class tc ON tc.oid = t.indexrelid
    WHERE t.indrelid = i.indrelid AND t.indexrelid <> i.indexrelid AND t.indisvalid
      AND tc.relam = ic.relam AND t.indisunique = i.indisunique
      AND t.indkey::text = i.indkey::text AND t.indclass::text = i.indclass::text
      AND t.indcollation::text = i.indcollation::text AND t.indoption::text = i.indoption::text
      AND pg_get_expr(t.indexprs, t.indrelid) IS NOT DISTINCT FROM pg_get_expr(i.indexprs, i.indrelid)
      AND pg_get_expr(t.indpred, t.indrelid) IS NOT DISTINCT FROM pg_get_expr(i.indpred, i.indrelid))
ORDER BY 2
"""


@dataclass(frozen=True)
class Leftover:
    oid: int
    index: str  # quoted schema.name, as IndexBloat.index
    table: str  # schema.name, as IndexBloat.table


async def reindex_leftovers(conn: psycopg.AsyncConnection) -> list[Leftover]:
    rows = await (await conn.execute(_LEFTOVERS)).fetchall()
    return [Leftover(oid=o, index=name, table=t) for o, name, t in rows]


def drop_leftover(leftover: Leftover) -> sql.Composed:
    return sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.SQL(leftover.index))
