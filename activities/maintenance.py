"""Maintenance activities: cleanup of old rows in short batches, VACUUM, index rebuilds, ANALYZE, dry-run
planning. Every statement runs under a statement timeout and a lock timeout, so a busy table is reported and
retried later instead of waited on forever."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import psycopg
from psycopg import sql
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.catalog_db import Catalog
from activities.heartbeat import Heartbeater
from activities.pg import connect
from activities.storage import open_storage
from tenancy.errors import INVALID_INPUT, fail
from tenancy.log import activity_logger
from tenancy.maintenance import CleanupRule, bloat_ratio
from tenancy.models import (
    CleanupRequest,
    CleanupResult,
    IndexBloat,
    MaintenancePlan,
    MaintenanceTarget,
    OptimizeResult,
    VacuumRequest,
    VacuumResult,
)
from tenancy.settings import Settings

LOCK_TIMEOUT = "MaintenanceLockTimeout"

_INDEXES_SQL = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(ic.relname) AS index,
       n.nspname || '.' || c.relname AS "table",
       pg_relation_size(i.indexrelid) AS bytes,
       greatest(c.reltuples, 0) AS live_tuples,
       coalesce((SELECT sum(s.avg_width) FROM pg_attribute a
                 JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = a.attname
                 WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)), 8) AS key_width
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_am am ON am.oid = ic.relam
WHERE am.amname = 'btree' AND i.indisvalid AND i.indexprs IS NULL
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
ORDER BY 1
"""


def _table(rule: CleanupRule) -> sql.Composable:
    return sql.SQL(".").join(sql.Identifier(p) for p in rule.table.split("."))


def _where(rule: CleanupRule) -> sql.Composable:
    where = sql.SQL("{} < %(cutoff)s").format(sql.Identifier(rule.timestamp_column))
    if rule.condition:
        where = sql.SQL("{} AND ({})").format(where, sql.SQL(rule.condition))  # the operator's own SQL
    return where


class MaintenanceActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.admin_url = settings.effective_database_url
        self.catalog = Catalog(settings)

    def _log(self, tenant_id: str):
        return activity_logger("activities.maintenance", tenant_id)

    @asynccontextmanager
    async def _session(self, dbname: str) -> AsyncIterator[psycopg.AsyncConnection]:
        conn = await connect(self.admin_url, dbname, autocommit=True)
        try:
            await conn.execute(
                sql.SQL("SET statement_timeout = {}; SET lock_timeout = {}").format(
                    sql.Literal(f"{self.settings.maintenance_statement_timeout_s}s"),
                    sql.Literal(f"{self.settings.maintenance_lock_timeout_ms}ms"),
                )
            )
            yield conn
        except psycopg.errors.LockNotAvailable as exc:
            # Retryable: the activity's retry policy comes back later instead of queueing behind the lock.
            raise ApplicationError(
                f"lock timeout after {self.settings.maintenance_lock_timeout_ms} ms: "
                f"{str(exc).strip().splitlines()[0]}",
                type=LOCK_TIMEOUT,
            ) from None
        except psycopg.errors.QueryCanceled as exc:
            raise ApplicationError(
                f"statement timeout after {self.settings.maintenance_statement_timeout_s} s: {exc}", type="Timeout"
            ) from None
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn, psycopg.errors.SyntaxError) as exc:
            raise fail(INVALID_INPUT, f"cleanup rule does not fit this database: {str(exc).strip()}") from None
        finally:
            await conn.close()

    @activity.defn
    async def database_size(self, target: MaintenanceTarget) -> int:
        async with await connect(self.admin_url) as conn:
            row = await (await conn.execute("SELECT pg_database_size(%s)", [target.database_name])).fetchone()
        return row[0]

    async def _cleanup_counts(self, conn: psycopg.AsyncConnection, cutoff: datetime) -> dict[str, int]:
        counts = {}
        for rule in self.settings.cleanup_rules:
            query = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(_table(rule), _where(rule))
            counts[rule.table] = (await (await conn.execute(query, {"cutoff": cutoff})).fetchone())[0]
        return counts

    async def _index_bloat(self, conn: psycopg.AsyncConnection) -> list[IndexBloat]:
        rows = await (await conn.execute(_INDEXES_SQL)).fetchall()
        return [
            IndexBloat(index=index, table=table, bytes=size, bloat=round(bloat_ratio(size, live, width), 3))
            for index, table, size, live, width in rows
        ]

    def _to_rebuild(self, indexes: list[IndexBloat]) -> list[IndexBloat]:
        return [
            i
            for i in indexes
            if i.bloat >= self.settings.reindex_bloat_threshold and i.bytes >= self.settings.reindex_min_bytes
        ]

    @activity.defn
    async def plan_maintenance(self, req: CleanupRequest) -> MaintenancePlan:
        """Dry run: rows each cleanup rule would delete, indexes optimize would rebuild, dead tuples vacuum would
        reclaim. Reads only."""
        async with self._session(req.database_name) as conn:
            await conn.execute("SET default_transaction_read_only = on")
            counts = await self._cleanup_counts(conn, req.cutoff)
            rebuild = self._to_rebuild(await self._index_bloat(conn))
            dead = (
                await (await conn.execute("SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables")).fetchone()
            )[0]
        return MaintenancePlan(cleanup_rows=counts, indexes_to_rebuild=rebuild, dead_tuples=int(dead))

    @activity.defn
    async def count_old_rows(self, req: CleanupRequest) -> dict[str, int]:
        """Rows each cleanup rule would delete, counted before the cleanup starts."""
        async with self._session(req.database_name) as conn:
            return await self._cleanup_counts(conn, req.cutoff)

    @activity.defn
    async def cleanup_old_rows(self, req: CleanupRequest) -> CleanupResult:
        """Delete rows older than the run's cutoff, `cleanup_batch_size` at a time, each batch its own short
        transaction. A retried attempt simply goes on: the cutoff is the run's, so nothing newer is touched and a
        deleted row cannot be deleted again. Rows deleted = the run's planned count (taken before the first attempt,
        in the history) minus what is left at the end."""
        log = self._log(req.tenant_id)
        details = activity.info().heartbeat_details
        previous = details[0] if details and isinstance(details[0], dict) else {}
        # Resumable progress: the next heap block of each table; a retried attempt starts there.
        progress = {"batches": previous.get("batches", 0), "next_block": dict(previous.get("next_block", {}))}
        longest = float(previous.get("longest_batch_ms", 0.0))

        async def timed(query: sql.Composable, params: dict) -> psycopg.AsyncCursor:
            nonlocal longest
            started = time.perf_counter()
            cursor = await conn.execute(query, params)
            longest = max(longest, (time.perf_counter() - started) * 1000)
            progress["batches"] += 1
            return cursor

        async with (
            self._session(req.database_name) as conn,
            Heartbeater(lambda: {**progress, "longest_batch_ms": longest}),
        ):
            planned = req.planned or await self._cleanup_counts(conn, req.cutoff)
            for rule in self.settings.cleanup_rules:
                params = {"cutoff": req.cutoff}
                # Walk the heap in block ranges (a TID range scan: as cheap as the sequential scan of one big
                # DELETE) sized to hold about `cleanup_batch_size` rows, each range its own short transaction.
                pages, tuples = await (
                    await conn.execute(
                        sql.SQL(
                            "SELECT pg_relation_size({t}) / current_setting('block_size')::int, "
                            "greatest(reltuples, 0) FROM pg_class WHERE oid = {t}::regclass"
                        ).format(t=sql.Literal(rule.table))
                    )
                ).fetchone()
                per_block = max(1.0, tuples / pages) if pages else 1.0
                step = max(1, int(self.settings.cleanup_batch_size / per_block))
                by_blocks = sql.SQL(
                    "DELETE FROM {table} WHERE ctid >= %(lo)s::tid AND ctid < %(hi)s::tid AND {where}"
                ).format(table=_table(rule), where=_where(rule))
                block = int(progress["next_block"].get(rule.table, 0))
                while block < pages:
                    await timed(by_blocks, {**params, "lo": f"({block},0)", "hi": f"({block + step},0)"})
                    block += step
                    progress["next_block"][rule.table] = block
                # Rows that were not in those blocks (moved or added while we ran): looked for with a plain read
                # first, so the usual case takes no lock at all.
                leftover = sql.SQL(
                    "DELETE FROM {table} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {table} WHERE {where} LIMIT %(n)s))"
                ).format(table=_table(rule), where=_where(rule))
                exists = sql.SQL("SELECT EXISTS (SELECT 1 FROM {table} WHERE {where})").format(
                    table=_table(rule), where=_where(rule)
                )
                while (await (await conn.execute(exists, params)).fetchone())[0]:
                    await timed(leftover, {**params, "n": self.settings.cleanup_batch_size})
            remaining = await self._cleanup_counts(conn, req.cutoff)
        removed = open_storage(self.settings).remove_stale_partials(
            req.tenant_id, timedelta(hours=self.settings.stale_partial_hours)
        )
        deleted = {t: planned.get(t, 0) - remaining.get(t, 0) for t in planned}
        log.info("old rows deleted", rows=deleted, batches=progress["batches"], stale_files=removed)
        return CleanupResult(
            rows_deleted=deleted,
            batches=progress["batches"],
            longest_batch_ms=round(longest, 1),
            stale_files_removed=removed,
        )

    async def _dead_tuples(self, conn: psycopg.AsyncConnection) -> int:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await (await conn.execute("SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables")).fetchone()
        return int(row[0])

    @activity.defn
    async def vacuum_database(self, req: VacuumRequest) -> VacuumResult:
        """Plain VACUUM (ANALYZE); VACUUM FULL only when asked (it locks each table while it rewrites it)."""
        async with self._session(req.database_name) as conn, Heartbeater():
            before = await self._dead_tuples(conn)
            await conn.execute("VACUUM (FULL, ANALYZE)" if req.full else "VACUUM (ANALYZE)")
            after = await self._dead_tuples(conn)
        self._log(req.tenant_id).info("vacuumed", full=req.full, dead_before=before, dead_after=after)
        return VacuumResult(dead_tuples_before=before, dead_tuples_after=after)

    @activity.defn
    async def optimize_indexes(self, target: MaintenanceTarget) -> OptimizeResult:
        """REINDEX CONCURRENTLY every btree whose estimated bloat is over the threshold, then ANALYZE."""
        async with self._session(target.database_name) as conn, Heartbeater():
            candidates = self._to_rebuild(await self._index_bloat(conn))
            before = sum(i.bytes for i in candidates)
            for index in candidates:
                await conn.execute(sql.SQL("REINDEX INDEX CONCURRENTLY {}").format(sql.SQL(index.index)))
            after_sizes = {i.index: i.bytes for i in await self._index_bloat(conn)}
            await conn.execute("ANALYZE")
        after = sum(after_sizes.get(i.index, 0) for i in candidates)
        self._log(target.tenant_id).info(
            "indexes rebuilt", indexes=[i.index for i in candidates], before=before, after=after
        )
        return OptimizeResult(rebuilt=candidates, bytes_before=before, bytes_after=after)

    @activity.defn
    async def analyze_database(self, target: MaintenanceTarget) -> None:
        async with self._session(target.database_name) as conn, Heartbeater():
            await conn.execute("ANALYZE")

    @activity.defn
    async def record_maintenance(self, tenant_id: str, summary: dict) -> int:
        return await self.catalog.record_maintenance(tenant_id, summary, activity.info().workflow_id)
