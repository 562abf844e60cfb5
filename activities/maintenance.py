"""Maintenance activities: cleanup of old rows in short batches (heap by heap, whatever the table's shape),
VACUUM and ANALYZE table by table, index rebuilds (after dropping what an interrupted one left), dry-run planning.
Every statement runs under a statement timeout and a lock timeout, so a busy table is reported (or, for cleanup,
retried later) instead of waited on forever. The SQL itself is in activities/infra/maintenance_sql.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import Heartbeater, recorded_details
from activities.infra.catalog import Catalog
from activities.infra.maintenance_sql import (
    Heap,
    Leftover,
    Table,
    analyze_only,
    any_old,
    count_old,
    delete_blocks,
    delete_some,
    drop_leftover,
    explain_rule,
    heap_blocks,
    old_rows,
    reindex_leftovers,
    rule_heaps,
    vacuum_one,
    vacuum_tables,
)
from activities.infra.pg import connect, connect_to_tenant_db, one_row
from activities.infra.schema import ensure_template, template_session
from activities.infra.servers import ServerUrls, tenant_admin_url
from activities.infra.storage import open_storage
from tenancy.contracts.maintenance import (
    AnalyzeResult,
    CleanupResult,
    IndexBloat,
    MaintenancePlan,
    OptimizeResult,
    VacuumResult,
)
from tenancy.errors import INVALID_INPUT, fail
from tenancy.log import activity_logger
from tenancy.maintenance import CleanupRule, bloat_ratio, rule_keys
from tenancy.messages.maintenance import CleanupRequest, MaintenanceRecord, MaintenanceTarget, VacuumRequest
from tenancy.messages.progress import HeartbeatDetails
from tenancy.messages.provision import TemplateRefresh
from tenancy.servers import DEFAULT_SERVER
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


class MaintenanceActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalog = Catalog(settings)

    def _log(self, tenant_id: str):
        return activity_logger("activities.maintenance", tenant_id)

    def _timeouts(self) -> sql.Composed:
        return sql.SQL("SET statement_timeout = {}; SET lock_timeout = {}").format(
            sql.Literal(f"{self.settings.maintenance_statement_timeout_s}s"),
            sql.Literal(f"{self.settings.maintenance_lock_timeout_ms}ms"),
        )

    @asynccontextmanager
    async def _session(self, target: MaintenanceTarget) -> AsyncIterator[psycopg.AsyncConnection]:
        """An admin session in the tenant's database, on the tenant's own server (asked of the catalog at each
        attempt: a move changes it), that resolves names in pg_catalog only (what the tenant's role may have put in
        its database is never run by mistake), under the maintenance timeouts."""
        admin_url = await tenant_admin_url(self.settings, target.tenant_id)
        conn = await connect_to_tenant_db(admin_url, target.database_name, autocommit=True)
        try:
            await conn.execute(self._timeouts())
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
        async with await connect(await tenant_admin_url(self.settings, target.tenant_id)) as conn:
            row = await one_row(await conn.execute("SELECT pg_database_size(%s)", [target.database_name]))
        return row[0]

    def _timeout(self, exc: psycopg.Error) -> str:
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return f"lock timeout after {self.settings.maintenance_lock_timeout_ms} ms"
        return f"statement timeout after {self.settings.maintenance_statement_timeout_s} s"

    async def _rules(
        self, conn: psycopg.AsyncConnection, cutoff: datetime
    ) -> tuple[list[tuple[str, CleanupRule, list[Heap]]], dict[str, str]]:
        """Each rule with the heaps it covers in this database; the rules that do not apply here, and why."""
        rules = self.settings.cleanup_rules
        found, skipped = [], {}
        for key, rule in zip(rule_keys(rules), rules, strict=True):
            heaps = await rule_heaps(conn, rule, cutoff)
            if isinstance(heaps, str):
                skipped[key] = heaps
            else:
                found.append((key, rule, heaps))
        return found, skipped

    async def _cleanup_counts(
        self, conn: psycopg.AsyncConnection, cutoff: datetime
    ) -> tuple[dict[str, int], dict[str, str]]:
        """Rows each rule would delete, heap by heap as the cleanup deletes them; and the rules skipped here."""
        found, skipped = await self._rules(conn, cutoff)
        counts = {}
        for key, rule, heaps in found:
            where = old_rows(rule, cutoff)
            counts[key] = sum([await count_old(conn, heap, where) for heap in heaps])
        return counts, skipped

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
        """Dry run: rows each cleanup rule would delete (counted as the cleanup counts them), the rules that do
        not apply to this tenant, indexes optimize would rebuild or drop as leftovers, dead tuples vacuum would
        reclaim. Reads only."""
        async with self._session(req) as conn, Heartbeater():
            await conn.execute("SET default_transaction_read_only = on")
            counts, skipped = await self._cleanup_counts(conn, req.cutoff)
            rebuild = self._to_rebuild(await self._index_bloat(conn))
            leftovers = [leftover.index for leftover in await reindex_leftovers(conn)]
            cursor = await conn.execute("SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables")
            dead = (await one_row(cursor))[0]
        return MaintenancePlan(
            cleanup_rows=counts,
            indexes_to_rebuild=rebuild,
            dead_tuples=int(dead),
            skipped=skipped,
            leftover_indexes=leftovers,
        )

    @activity.defn
    async def count_old_rows(self, req: CleanupRequest) -> dict[str, int]:
        """Rows each cleanup rule would delete, counted before the cleanup starts (rules that do not apply to this
        tenant are left out; the cleanup says why). Counting a large table takes a while: heartbeats meanwhile."""
        async with self._session(req) as conn, Heartbeater():
            return (await self._cleanup_counts(conn, req.cutoff))[0]

    @activity.defn
    async def cleanup_old_rows(self, req: CleanupRequest) -> CleanupResult:
        """Delete rows older than the run's cutoff, `cleanup_batch_size` at a time, each batch its own short
        transaction, one heap at a time (a plain table, each inheritance child, each leaf partition: a ctid names a
        row in one file only). A retried attempt goes on where the last one got to: the cutoff is the run's and
        every DELETE re-checks it with the rule's condition, so nothing newer is touched. Rows deleted = the run's
        planned count (taken before the first attempt, in the history) minus what is left at the end."""
        log = self._log(req.tenant_id)
        previous = recorded_details()
        # Resumable progress: per rule, the next block of each of its heaps.
        next_block = {k: dict(v) for k, v in (previous.next_block or {}).items()}
        batches = previous.batches or 0
        longest = previous.longest_batch_ms or 0.0
        batch = self.settings.cleanup_batch_size

        async def timed(query: sql.Composed) -> int:
            nonlocal longest, batches
            started = time.perf_counter()
            cursor = await conn.execute(query)  # no parameters: a `%` in a condition is just a `%`
            longest = max(longest, (time.perf_counter() - started) * 1000)
            batches += 1
            return cursor.rowcount

        async with (
            self._session(req) as conn,
            Heartbeater(lambda: HeartbeatDetails(batches=batches, next_block=next_block, longest_batch_ms=longest)),
        ):
            if req.planned:
                planned = dict(req.planned)
                found, skipped = await self._rules(conn, req.cutoff)
            else:
                planned, skipped = await self._cleanup_counts(conn, req.cutoff)
                found, _ = await self._rules(conn, req.cutoff)
            for key, rule, heaps in found:
                if key not in planned:  # appeared after the count: its deletions could not be told apart
                    skipped[key] = "appeared after the rows were counted; left for the next run"
                    continue
                where = old_rows(rule, req.cutoff)
                done = next_block.setdefault(key, {})
                for heap in heaps:
                    # Walk the heap in block ranges (a TID range scan: as cheap as the sequential scan of one big
                    # DELETE) sized to hold about `cleanup_batch_size` rows, each range its own short transaction.
                    pages, per_block = await heap_blocks(conn, heap)
                    step = max(1, int(batch / per_block))
                    block = int(done.get(heap.key, 0))
                    while block < pages:
                        await timed(delete_blocks(heap, where, block, block + step))
                        block += step
                        done[heap.key] = block
                    # Rows that were not in those blocks (moved or added while we ran): looked for with a plain
                    # read first, so the usual case takes no lock at all.
                    while await any_old(conn, heap, where):
                        if not await timed(delete_some(heap, where, batch)):
                            break  # nothing it may delete (a trigger or a policy says no): left, and counted so
            remaining, _ = await self._cleanup_counts(conn, req.cutoff)
        removed = await asyncio.to_thread(
            lambda: open_storage(self.settings).remove_stale_partials(
                req.tenant_id, timedelta(hours=self.settings.stale_partial_hours)
            )
        )
        deleted = {key: planned[key] - remaining[key] for key in planned if key in remaining}
        log.info("old rows deleted", rows=deleted, skipped=skipped, batches=batches, stale_files=removed)
        return CleanupResult(
            rows_deleted=deleted,
            batches=batches,
            longest_batch_ms=round(longest, 1),
            stale_files_removed=removed,
            skipped=skipped,
        )

    async def _dead_tuples(self, conn: psycopg.AsyncConnection) -> int:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await one_row(await conn.execute("SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables"))
        return int(row[0])

    async def _table_by_table(
        self,
        conn: psycopg.AsyncConnection,
        tables: list[Table],
        statement: Callable[[Table], sql.Composed],
        state: dict[str, Any],
    ) -> None:
        """One statement per table, each under its own statement and lock timeouts. A timeout is noted for its
        table and the next table goes on; `state` (heartbeat details) says how far we got, so a retried attempt
        skips the tables done."""
        after = state.get("after")
        for table in tables:
            if after is not None and table.order <= after:
                continue
            try:
                await conn.execute(statement(table))
                state["tables"] += 1
            except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
                state["timed_out"][table.key] = self._timeout(exc)
            except psycopg.errors.UndefinedTable:
                pass  # dropped since it was listed
            state["after"] = table.order

    def _table_state(self) -> dict[str, Any]:
        previous = recorded_details()
        return {
            "after": previous.after,
            "tables": previous.tables or 0,
            "timed_out": dict(previous.timed_out or {}),
            "dead_before": previous.dead_before,
        }

    @activity.defn
    async def vacuum_database(self, req: VacuumRequest) -> VacuumResult:
        """VACUUM (ANALYZE) table by table (VACUUM FULL only when asked: it locks each table while it rewrites
        it); a table that times out is reported and the others still run."""
        state = self._table_state()
        async with self._session(req) as conn, Heartbeater(lambda: HeartbeatDetails(**state)):
            if state["dead_before"] is None:
                state["dead_before"] = await self._dead_tuples(conn)
            version = conn.info.server_version
            await self._table_by_table(
                conn, await vacuum_tables(conn), lambda t: vacuum_one(version, t, req.full), state
            )
            after = await self._dead_tuples(conn)
        self._log(req.tenant_id).info(
            "vacuumed",
            full=req.full,
            dead_before=state["dead_before"],
            dead_after=after,
            tables=state["tables"],
            timed_out=state["timed_out"],
        )
        return VacuumResult(
            dead_tuples_before=state["dead_before"],
            dead_tuples_after=after,
            tables=state["tables"],
            timed_out=state["timed_out"],
        )

    async def _drop_leftovers(
        self, conn: psycopg.AsyncConnection, leftovers: list[Leftover], kept: dict[str, str]
    ) -> list[str]:
        """DROP INDEX CONCURRENTLY each leftover; one that cannot be dropped now is noted in `kept` and stays for
        the next run (which finds it again)."""
        dropped = []
        for leftover in leftovers:
            try:
                await conn.execute(drop_leftover(leftover))
                dropped.append(leftover.index)
            except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
                kept[leftover.index] = f"leftover of an interrupted rebuild, not dropped yet: {self._timeout(exc)}"
        return dropped

    @activity.defn
    async def optimize_indexes(self, target: MaintenanceTarget) -> OptimizeResult:
        """Drop what an interrupted REINDEX CONCURRENTLY left behind, then REINDEX CONCURRENTLY every btree whose
        estimated bloat is over the threshold, then ANALYZE the tables rebuilt. An index that times out is
        reported (with the others of its table, not tried behind the same lock) and the rest go on."""
        timed_out: dict[str, str] = {}
        async with self._session(target) as conn, Heartbeater():
            # Invalid copies are never read but may be written on every change of their table: gone first.
            dropped = await self._drop_leftovers(conn, await reindex_leftovers(conn), timed_out)
            candidates = self._to_rebuild(await self._index_bloat(conn))
            rebuilt: list[IndexBloat] = []
            busy: set[str] = set()
            for index in candidates:
                if index.table in busy:
                    timed_out[index.index] = "not tried: a rebuild on the same table had just timed out"
                    continue
                existing = {leftover.oid for leftover in await reindex_leftovers(conn)}
                try:
                    await conn.execute(sql.SQL("REINDEX INDEX CONCURRENTLY {}").format(sql.SQL(index.index)))
                    rebuilt.append(index)
                except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
                    timed_out[index.index] = self._timeout(exc)
                    busy.add(index.table)
                    # The copy it was building stays behind, invalid: dropped now, waiting for the transactions in
                    # its way up to the statement timeout rather than the short lock timeout.
                    ours = [
                        leftover
                        for leftover in await reindex_leftovers(conn)
                        if leftover.table == index.table and leftover.oid not in existing
                    ]
                    await conn.execute("SET lock_timeout = 0")
                    try:
                        dropped += await self._drop_leftovers(conn, ours, timed_out)
                    finally:
                        await conn.execute(
                            sql.SQL("SET lock_timeout = {}").format(
                                sql.Literal(f"{self.settings.maintenance_lock_timeout_ms}ms")
                            )
                        )
            after_sizes = {i.index: i.bytes for i in await self._index_bloat(conn)}
            touched = {i.table for i in rebuilt}
            state: dict[str, Any] = {"after": None, "tables": 0, "timed_out": timed_out}
            version = conn.info.server_version
            tables = [t for t in await vacuum_tables(conn) if t.key in touched]
            await self._table_by_table(conn, tables, lambda t: analyze_only(version, t), state)
        before = sum(i.bytes for i in rebuilt)
        after = sum(after_sizes.get(i.index, 0) for i in rebuilt)
        self._log(target.tenant_id).info(
            "indexes rebuilt",
            indexes=[i.index for i in rebuilt],
            before=before,
            after=after,
            leftovers_dropped=dropped,
            timed_out=timed_out,
        )
        return OptimizeResult(
            rebuilt=rebuilt, bytes_before=before, bytes_after=after, leftovers_dropped=dropped, timed_out=timed_out
        )

    @activity.defn
    async def analyze_database(self, target: MaintenanceTarget) -> AnalyzeResult | None:
        """ANALYZE table by table; a table that times out is reported and the others still run. (None only in
        histories recorded before it reported anything.)"""
        state = self._table_state()
        async with self._session(target) as conn, Heartbeater(lambda: HeartbeatDetails(**state)):
            version = conn.info.server_version
            await self._table_by_table(conn, await vacuum_tables(conn), lambda t: analyze_only(version, t), state)
        self._log(target.tenant_id).info("analyzed", tables=state["tables"], timed_out=state["timed_out"])
        return AnalyzeResult(tables=state["tables"], timed_out=state["timed_out"])

    @activity.defn
    async def refresh_server_templates(self, req: TemplateRefresh) -> dict[str, str | None]:
        """Rebuild the template database on every server the catalog knows and this worker has a URL for, where
        the migration files changed; returns each one's schema version. A server it cannot reach is logged and
        left out (its tenants' migrations fail on their own; provisioning there brings its template up to date
        first), so one server down does not hold up the migration of all the others."""
        log = activity_logger("activities.maintenance")
        urls = ServerUrls(self.settings)
        names = [row["name"] for row in await self.catalog.servers()]
        try:
            configured = urls.configured()
        except ValueError as exc:  # a malformed servers file: the default server only
            log.warning("servers file not read", error=str(exc))
            configured = {DEFAULT_SERVER: self.settings.effective_database_url}
        reachable = [name for name in names if name in configured]
        for name in sorted(set(names) - set(reachable)):
            log.warning("template not refreshed: this worker has no URL for the server", server=name)

        async def refresh(name: str) -> str | None:
            return await ensure_template(
                configured[name], self.settings.template_database, self.settings.migrations_dir
            )

        versions: dict[str, str | None] = {}
        async with Heartbeater():
            # The default first and on its own: its failure fails the activity, as before servers.
            versions[DEFAULT_SERVER] = await refresh(DEFAULT_SERVER)
            others = [name for name in reachable if name != DEFAULT_SERVER]
            results = await asyncio.gather(*(refresh(name) for name in others), return_exceptions=True)
        for name, result in zip(others, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                log.warning("template not refreshed: server not reached", server=name, error=str(result)[:200])
            else:
                versions[name] = result
        log.info("templates refreshed", versions=versions)
        return versions

    @activity.defn
    async def record_maintenance(
        self, req: MaintenanceRecord | str, legacy_summary: dict[str, Any] | None = None
    ) -> int:
        # Attempts scheduled by the previous release carry (tenant_id, summary); see tenancy/messages.
        record = MaintenanceRecord.model_validate(
            req if legacy_summary is None else {"tenant_id": req, "summary": legacy_summary}
        )
        return await self.catalog.record_maintenance(record.tenant_id, record.summary, activity.info().workflow_id)


async def check_cleanup_rules(settings: Settings) -> dict[str, str]:
    """At the worker's start: PostgreSQL plans each cleanup rule against the template database (the tenant schema
    as provisioned), sent prepared, which takes one statement only. A rule it refuses (a syntax error, a second
    statement, a column the table lacks, a condition that is not true/false) stops the worker with one line
    naming the rule. A rule whose table the template lacks (one only some adopted tenants have) passes, with a
    note (returned, by rule): each tenant's maintenance checks it again and skips it where it does not fit.

    Rules come from these settings only: no workflow input carries SQL."""
    rules = settings.cleanup_rules
    if not rules:
        return {}
    admin_url, template = settings.effective_database_url, settings.template_database
    await ensure_template(admin_url, template, settings.migrations_dir)
    notes = {}
    cutoff = datetime.now(UTC)
    async with template_session(admin_url, template) as conn:
        await conn.execute("SET default_transaction_read_only = on")
        await conn.execute("SET statement_timeout = '30s'")
        for key, rule in zip(rule_keys(rules), rules, strict=True):
            try:
                await conn.execute(explain_rule(rule, cutoff), prepare=True)
            except psycopg.errors.UndefinedTable:
                notes[key] = f"table {rule.table} is not in the template database: checked in each tenant's"
            except (psycopg.OperationalError, psycopg.errors.QueryCanceled):
                raise  # the server is busy or gone (the template locked by a migration): not the rule's fault
            except psycopg.Error as exc:
                said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise fail(INVALID_INPUT, f"cleanup rule {key!r} (TENANTS_CLEANUP_RULES) is refused: {said}") from None
    return notes
