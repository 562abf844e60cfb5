"""Maintenance on every table shape, on real PostgreSQL through real runs: cleanup of a partitioned table, an
inheritance tree, tables without a primary key and conditions with `%` or quotes in them, rules that do not fit a
tenant; leftovers of an interrupted REINDEX CONCURRENTLY dropped (and nothing else); VACUUM and ANALYZE table by
table, a locked table reported while the others are done, a retried attempt skipping the tables done."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from tenancy.errors import InvalidInput
from tenancy.maintenance import MAX_DAYS, CleanupRule, rule_keys, validate_days
from tests.blocking import table_locked, wait_until
from tests.test_maintenance import db, maintain

DAY = timedelta(days=1)


def rows(settings, dbname, query):
    with db(settings, dbname) as conn:
        return Counter(conn.execute(query).fetchall())


@contextlib.contextmanager
def writing(settings, dbname: str, table: str = "time_entries") -> Iterator[psycopg.Connection]:
    """An open transaction that has written to `table` (it holds ROW EXCLUSIVE): what a concurrent index build
    waits for before it can finish."""
    conn = psycopg.connect(psycopg.conninfo.make_conninfo(settings.effective_database_url, dbname=dbname))
    try:
        conn.execute(sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(sql.Identifier(table)))
        yield conn
    finally:
        conn.rollback()
        conn.close()


def invalid_indexes(settings, dbname):
    with db(settings, dbname) as conn:
        return {
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE NOT i.indisvalid"
            )
        }


async def test_a_partitioned_table_loses_its_old_rows_and_its_recent_partitions_not_one_row(
    temporal_env, worker_with, settings, make_tenant
):
    tenant = await make_tenant(entries=0)
    now = datetime.now(UTC)
    with db(settings, tenant.database_name) as conn:
        # The first partition holds old rows and some newer than the cutoff; the recent one (itself partitioned)
        # holds rows at the same ctids as the old ones: a ctid names a row in one partition only.
        conn.execute("CREATE TABLE events (id int, at timestamptz NOT NULL, kind text) PARTITION BY RANGE (at)")
        bound = sql.Literal(now - 100 * DAY)
        conn.execute(
            sql.SQL("CREATE TABLE events_old PARTITION OF events FOR VALUES FROM ('2000-01-01') TO ({})").format(bound)
        )
        conn.execute(
            sql.SQL(
                "CREATE TABLE events_recent PARTITION OF events FOR VALUES FROM ({}) TO ('2200-01-01') "
                "PARTITION BY LIST (kind)"
            ).format(bound)
        )
        conn.execute("CREATE TABLE events_recent_a PARTITION OF events_recent FOR VALUES IN ('a')")
        conn.execute("CREATE TABLE events_recent_other PARTITION OF events_recent DEFAULT")
        conn.execute(
            "INSERT INTO events SELECT g, %s - g * interval '1 minute', 'a' FROM generate_series(1, 1500) g",
            [now - 400 * DAY],
        )
        conn.execute("INSERT INTO events SELECT g, %s, 'b' FROM generate_series(1501, 1800) g", [now - 150 * DAY])
        conn.execute("INSERT INTO events SELECT g, %s, 'a' FROM generate_series(1, 1500) g", [now - DAY])
        conn.execute("INSERT INTO events SELECT g, %s, 'b' FROM generate_series(1, 1500) g", [now - 2 * DAY])
        conn.execute("ANALYZE events")
    recent_before = rows(settings, tenant.database_name, "SELECT * FROM events_recent")
    kept_old = rows(settings, tenant.database_name, "SELECT * FROM events_old WHERE id > 1500")

    async with worker_with(
        cleanup_rules=[CleanupRule(table="events", timestamp_column="at")], cleanup_batch_size=200
    ) as q:
        plan = await maintain(temporal_env, q, tenant.id, tasks=["cleanup"], days=180, dry_run=True)
        result = await maintain(temporal_env, q, tenant.id, tasks=["cleanup"], days=180)

    assert plan.plan.cleanup_rows == {"events": 1500}
    assert result.ok and result.tasks[0].detail["rows_deleted"] == {"events": 1500}
    assert result.tasks[0].detail["batches"] > 1
    assert rows(settings, tenant.database_name, "SELECT * FROM events_old") == kept_old  # 150 days old: kept
    assert rows(settings, tenant.database_name, "SELECT * FROM events_recent") == recent_before
    assert sum(recent_before.values()) == 3000


async def test_an_inheritance_parent_and_child_each_lose_their_old_rows_only(
    temporal_env, worker_with, settings, make_tenant
):
    tenant = await make_tenant(entries=0)
    now = datetime.now(UTC)
    with db(settings, tenant.database_name) as conn:
        conn.execute("CREATE TABLE notes (id int, at timestamptz, body text)")
        conn.execute("CREATE TABLE notes_archived (archived_by text) INHERITS (notes)")
        # Parent: old rows first, recent after. Child: recent first (at the parent's old ctids), old after, and
        # bigger than the parent, so its last blocks are past the parent's.
        conn.execute("INSERT INTO notes SELECT g, %s, 'p' FROM generate_series(1, 800) g", [now - 300 * DAY])
        conn.execute("INSERT INTO notes SELECT g, %s, 'p' FROM generate_series(801, 1200) g", [now - 10 * DAY])
        conn.execute("INSERT INTO notes_archived SELECT g, %s, 'c', 'x' FROM generate_series(1, 1000) g", [now])
        conn.execute(
            "INSERT INTO notes_archived SELECT g, %s, 'c', 'x' FROM generate_series(1001, 4000) g", [now - 500 * DAY]
        )
        # Old, but the rule's condition (naming the table) keeps them, in the parent and in the child.
        conn.execute("UPDATE notes SET body = 'keep' WHERE id % 100 = 0 AND at < now() - interval '180 days'")
        conn.execute("ANALYZE notes")
        conn.execute("ANALYZE notes_archived")
    kept = "SELECT * FROM ONLY {} WHERE at > now() - interval '180 days' OR body = 'keep'"
    parent_kept = rows(settings, tenant.database_name, kept.format("notes"))
    child_kept = rows(settings, tenant.database_name, kept.format("notes_archived"))
    rule = CleanupRule(table="notes", timestamp_column="at", condition="notes.body <> 'keep'")

    async with worker_with(cleanup_rules=[rule], cleanup_batch_size=300) as q:
        plan = await maintain(temporal_env, q, tenant.id, tasks=["cleanup"], days=180, dry_run=True)
        result = await maintain(temporal_env, q, tenant.id, tasks=["cleanup"], days=180)

    assert plan.plan.cleanup_rows == {"notes": 3762}
    assert result.tasks[0].detail["rows_deleted"] == {"notes": 3762}
    assert rows(settings, tenant.database_name, "SELECT * FROM ONLY notes") == parent_kept
    assert rows(settings, tenant.database_name, "SELECT * FROM ONLY notes_archived") == child_kept
    assert (sum(parent_kept.values()), sum(child_kept.values())) == (408, 1030)


async def test_tables_without_a_key_and_conditions_with_percent_signs_and_quotes(
    temporal_env, worker_with, settings, make_tenant
):
    tenant = await make_tenant(entries=0)
    now = datetime.now(UTC)
    with db(settings, tenant.database_name) as conn:
        conn.execute("CREATE TABLE logs (at timestamptz, kind text)")  # no key: duplicates are real rows
        conn.execute("CREATE TABLE remarks (at timestamptz, note text)")
        for kind in ["x1", "x1", "xyz", "ax", "y%", "X1"]:
            conn.execute("INSERT INTO logs SELECT %s, %s FROM generate_series(1, 50)", [now - 400 * DAY, kind])
            conn.execute("INSERT INTO logs SELECT %s, %s FROM generate_series(1, 50)", [now - DAY, kind])
        for note in ["it's", "its", "100%", "it''s"]:
            conn.execute("INSERT INTO remarks SELECT %s, %s FROM generate_series(1, 30)", [now - 400 * DAY, note])
            conn.execute("INSERT INTO remarks SELECT %s, %s FROM generate_series(1, 30)", [now - DAY, note])
    logs_before = rows(settings, tenant.database_name, "SELECT * FROM logs")
    remarks_before = rows(settings, tenant.database_name, "SELECT * FROM remarks")
    cutoff = now - 180 * DAY
    rules = [
        CleanupRule(table="logs", timestamp_column="at", condition="kind LIKE 'x%'"),
        CleanupRule(table="remarks", timestamp_column="at", condition="note = 'it''s' OR note LIKE '%\\%' ESCAPE '\\'"),
    ]

    async with worker_with(cleanup_rules=rules, cleanup_batch_size=40) as q:
        plan = await maintain(temporal_env, q, tenant.id, tasks=["cleanup"], days=180, dry_run=True)
        result = await maintain(temporal_env, q, tenant.id, tasks=["cleanup"], days=180)

    logs_gone = Counter({r: n for r, n in logs_before.items() if r[0] < cutoff and r[1].startswith("x")})
    remarks_gone = Counter({r: n for r, n in remarks_before.items() if r[0] < cutoff and r[1] in ("it's", "100%")})
    expected = {"logs": sum(logs_gone.values()), "remarks": sum(remarks_gone.values())}
    assert expected == {"logs": 150, "remarks": 60}
    assert plan.plan.cleanup_rows == expected
    assert result.ok and result.tasks[0].detail["rows_deleted"] == expected
    assert rows(settings, tenant.database_name, "SELECT * FROM logs") == logs_before - logs_gone
    assert rows(settings, tenant.database_name, "SELECT * FROM remarks") == remarks_before - remarks_gone


async def test_rules_that_do_not_fit_a_tenant_are_reported_for_it_and_the_others_still_run(
    temporal_env, worker_with, settings, make_tenant
):
    tenant = await make_tenant(entries=500)
    with db(settings, tenant.database_name) as conn:
        conn.execute("UPDATE activity_log SET happened_at = now() - interval '400 days' WHERE id <= 20")
        total = conn.execute("SELECT count(*) FROM activity_log").fetchone()[0]
    rules = [
        CleanupRule(table="no_such_table", timestamp_column="created_at"),
        CleanupRule(table="projects", timestamp_column="no_such_column"),
        CleanupRule(table="time_entries", timestamp_column="created_at", condition="no_such_flag"),
        CleanupRule(table="activity_log", timestamp_column="happened_at"),
    ]
    async with worker_with(cleanup_rules=rules) as q:
        plan = await maintain(temporal_env, q, tenant.id, tasks=["cleanup"], days=180, dry_run=True)
        result = await maintain(temporal_env, q, tenant.id, tasks=["cleanup", "analyze"], days=180)

    assert result.ok and [t.ok for t in result.tasks] == [True, True]
    detail = result.tasks[0].detail
    assert detail["rows_deleted"] == {"activity_log": 20}
    assert detail["skipped"]["no_such_table"] == "does not exist in this database"
    assert detail["skipped"]["projects"] == "has no column no_such_column"
    assert "no_such_flag" in detail["skipped"]["time_entries"]
    assert plan.plan.skipped == detail["skipped"] and plan.plan.cleanup_rows == {"activity_log": 20}
    with db(settings, tenant.database_name) as conn:
        assert conn.execute("SELECT count(*) FROM activity_log").fetchone()[0] == total - 20


async def test_optimize_drops_leftovers_of_an_interrupted_reindex_and_no_other_invalid_index(
    temporal_env, worker_with, settings, make_tenant
):
    tenant = await make_tenant(entries=2000)
    with db(settings, tenant.database_name) as conn:
        # A REINDEX CONCURRENTLY interrupted for real: it waits for a writer's transaction and its lock timeout
        # ends it, leaving its invalid copy time_entries_pkey_ccnew.
        with writing(settings, tenant.database_name):
            conn.execute("SET lock_timeout = '200ms'")
            with pytest.raises(Exception, match="lock timeout"):
                conn.execute("REINDEX INDEX CONCURRENTLY time_entries_pkey")
        # Invalid indexes that are not leftovers: failed CREATE INDEX CONCURRENTLY (one even named like a leftover,
        # but a copy of no valid index).
        for name, expr in [("time_entries_parity", "(id % 2)"), ("time_entries_odd_ccnew", "(id % 3)")]:
            with pytest.raises(Exception, match="could not create unique index"):
                conn.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {name} ON time_entries ({expr})")
    assert invalid_indexes(settings, tenant.database_name) == {
        "time_entries_pkey_ccnew",
        "time_entries_parity",
        "time_entries_odd_ccnew",
    }

    async with worker_with() as q:
        plan = await maintain(temporal_env, q, tenant.id, tasks=["optimize"], dry_run=True)
        result = await maintain(temporal_env, q, tenant.id, tasks=["optimize"])

    assert plan.plan.leftover_indexes == ["public.time_entries_pkey_ccnew"]
    assert result.ok and result.tasks[0].detail["leftovers_dropped"] == ["public.time_entries_pkey_ccnew"]
    assert invalid_indexes(settings, tenant.database_name) == {"time_entries_parity", "time_entries_odd_ccnew"}
    with db(settings, tenant.database_name) as conn:  # the index it was a copy of is still there, and valid
        assert conn.execute("SELECT count(*) FROM time_entries WHERE id = 7").fetchone()[0] == 1
        assert conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'time_entries_pkey'::regclass"
        ).fetchone() == (True,)


async def test_a_rebuild_that_times_out_drops_its_own_copy_at_once(temporal_env, worker_with, settings, make_tenant):
    tenant = await make_tenant(entries=5000)
    with db(settings, tenant.database_name) as conn:
        conn.execute("DELETE FROM time_entries WHERE id % 10 <> 0")
        conn.execute("VACUUM ANALYZE time_entries")
    async with worker_with(reindex_min_bytes=0, maintenance_lock_timeout_ms=300) as q:
        # A writer's open transaction: the rebuild waits for it and times out; dropping the copy it left waits
        # for it too (up to the statement timeout), until the writer is done.
        with writing(settings, tenant.database_name):
            run = asyncio.create_task(maintain(temporal_env, q, tenant.id, tasks=["optimize"]))

            def dropping() -> bool:
                with db(settings, tenant.database_name) as conn:
                    return (
                        conn.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'DROP INDEX CONCURRENTLY%' "
                            "AND wait_event_type = 'Lock'"
                        ).fetchone()[0]
                        > 0
                    )

            await wait_until(dropping, 30, "the copy being dropped")
            copies = {name for name in invalid_indexes(settings, tenant.database_name) if name.endswith("_ccnew")}
            assert len(copies) == 1
        result = await asyncio.wait_for(run, 60)

    detail = result.tasks[0].detail
    timed_out = [index for index, why in detail["timed_out"].items() if why == "lock timeout after 300 ms"]
    assert result.ok and len(timed_out) == 1 and timed_out[0].startswith("public.time_entries_")
    assert detail["leftovers_dropped"] == [f"public.{copies.pop()}"] == [f"{timed_out[0]}_ccnew"]
    # The other bloated indexes of that table were not tried behind the same writer.
    rebuilt = {i["index"] for i in detail["rebuilt"]}
    assert not any(index.startswith("public.time_entries_") for index in rebuilt)
    assert invalid_indexes(settings, tenant.database_name) == set()


def last_vacuums(settings, dbname):
    with db(settings, dbname) as conn:
        return {
            name: (vacuumed, analyzed, count)
            for name, vacuumed, analyzed, count in conn.execute(
                "SELECT relname, last_vacuum IS NOT NULL, last_analyze IS NOT NULL, vacuum_count "
                "FROM pg_stat_user_tables"
            )
        }


async def test_vacuum_and_analyze_go_table_by_table_and_report_the_locked_one(
    temporal_env, worker_with, settings, make_tenant
):
    tenant = await make_tenant(entries=3000)
    with db(settings, tenant.database_name) as conn:
        conn.execute("DELETE FROM time_entries WHERE id % 2 = 0")
    async with worker_with(maintenance_lock_timeout_ms=300) as q:
        with table_locked(settings.effective_database_url, tenant.database_name, "activity_log"):
            result = await asyncio.wait_for(maintain(temporal_env, q, tenant.id, tasks=["vacuum", "analyze"]), 60)
    assert result.ok
    vacuum, analyze = result.tasks[0].detail, result.tasks[1].detail
    assert vacuum["timed_out"] == {"public.activity_log": "lock timeout after 300 ms"}
    assert analyze["timed_out"] == {"public.activity_log": "lock timeout after 300 ms"}
    assert vacuum["tables"] >= 2 and analyze["tables"] >= 2
    stats = last_vacuums(settings, tenant.database_name)
    assert stats["activity_log"][:2] == (False, False)
    assert stats["time_entries"][:2] == (True, True) and stats["projects"][:2] == (True, True)


async def test_a_retried_vacuum_skips_the_tables_already_done(temporal_env, worker_with, settings, make_tenant):
    tenant = await make_tenant(entries=1000)
    before = last_vacuums(settings, tenant.database_name)
    async with worker_with(maintenance_lock_timeout_ms=60_000) as q:
        # The first attempt does the tables before time_entries, then waits on it (locked) and loses its connection
        # there; the retry finds where it got to.
        with table_locked(settings.effective_database_url, tenant.database_name, "time_entries"):
            run = asyncio.create_task(maintain(temporal_env, q, tenant.id, tasks=["vacuum"]))

            def waiting() -> bool:
                with db(settings, tenant.database_name) as conn:
                    return (
                        conn.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'VACUUM%time_entries%'"
                        ).fetchone()[0]
                        > 0
                    )

            await wait_until(waiting, 30, "the vacuum of time_entries waiting")
            await asyncio.sleep(2.5)  # a heartbeat with the progress goes out
            with db(settings, tenant.database_name) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'VACUUM%time_entries%'"
                )
        result = await asyncio.wait_for(run, 60)
    assert result.ok and result.tasks[0].detail["timed_out"] == {}
    stats = last_vacuums(settings, tenant.database_name)
    vacuums = {name: count - before[name][2] for name, (_, _, count) in stats.items()}
    assert {"activity_log", "projects", "time_entries"} <= set(vacuums)
    assert set(vacuums.values()) == {1}  # each table once, over the two attempts


@pytest.mark.parametrize("days", [MAX_DAYS + 1, 10**9, 10**30])
def test_days_are_bounded_above_with_a_clear_message(days):
    assert validate_days(MAX_DAYS) == MAX_DAYS
    with pytest.raises(InvalidInput, match=f"--days must be a whole number from 1 to {MAX_DAYS}"):
        validate_days(days)


def test_rules_on_the_same_table_are_counted_apart():
    rules = [
        CleanupRule(table="logs", timestamp_column="at", condition="kind = 'a'"),
        CleanupRule(table="logs", timestamp_column="at", condition="kind = 'a'"),
        CleanupRule(table="logs", timestamp_column="at"),
        CleanupRule(table="other", timestamp_column="at"),
    ]
    assert rule_keys(rules) == [
        "logs [at < cutoff and kind = 'a']",
        "logs [at < cutoff and kind = 'a'] #2",
        "logs [at < cutoff]",
        "other",
    ]
