"""Move benchmark: `tenants move` of a big tenant from the machine's PostgreSQL 15 to a PostgreSQL 18 the bench
starts itself, beside a raw `pg_dump -Fc | pg_restore` between the same two servers, in one run.

    .venv/bin/python bench/move.py [--size-mb 1024] [--repeat 3] [--database-url URL] [--raw default,z0]

The source is the server of --database-url (default: the machine's PostgreSQL 15 on 127.0.0.1:5432), server
`default`; the target an embedded PostgreSQL 18 registered as server `pg18`. The tenant is provisioned
(ProvisionTenantWorkflow: its login and owner roles, its migrated schema) on the source, then filled with sample rows
as in bench/backup.py. Then --repeat rounds, interleaved:

  raw pipe        pg_dump -Fc (the source's own pg_dump, see below) | pg_restore --no-owner --no-acl of the target,
                  into a database created on the target (CREATE DATABASE included in the time); `default`: pg_dump's
                  default compression, `z0`: --compress=0 as the move's own pipe
  move            MoveTenantWorkflow to pg18 (keep the source 24 h): total wall, the write freeze it reports
                  (sessions refused on the source → the tenant's database open on the target), and the split of its
                  activities from the run's history
  undo            UndoMoveWorkflow (keep 0: the copy left on pg18 dropped at once): the tenant is back on the
                  source for the next round

pg_dump 18 of a database of this machine's PostgreSQL 15.20 (Debian) writes an attribute option (pg_attver) that a
PostgreSQL 18 server refuses; the bench tries it once and records the error. The raw pipe that works between these
two servers is pg_dump 15 | pg_restore 18, which is what the move falls back to as well.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from common import ROOT, fill_database, median, stack

from activities.infra.catalog import Catalog
from activities.infra.pg import find_client_tools, libpq_env
from activities.infra.temporal import connect_client
from starter.services import EmbeddedPostgres, free_port
from tenancy.contracts.move import MOVE_ID_PREFIX, MoveTenantInput, UndoMoveInput
from tenancy.contracts.provision import ProvisionTenantInput
from workflows.move_tenant import MoveTenantWorkflow, UndoMoveWorkflow
from workflows.provision_tenant import ProvisionTenantWorkflow

SOURCE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET = "pg18"
TENANT = "bigmove"


def load() -> str:
    """The 1, 5 and 15 minute load averages, as `uptime` shows them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def raw_pipe(dump_tools, restore_tools, source_url: str, source_db: str, target_url: str, compress: bool) -> float:
    """pg_dump -Fc | pg_restore into a new database on the target; seconds, CREATE DATABASE included."""
    target = f"bench_raw_{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    with psycopg.connect(target_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{target}" TEMPLATE template0')
    try:
        dump_args = [str(dump_tools.pg_dump), "--format=custom", "--no-password"]
        if not compress:
            dump_args.append("--compress=0")
        dump = subprocess.Popen(dump_args, env=libpq_env(source_url, source_db), stdout=subprocess.PIPE)
        assert dump.stdout is not None
        restore = subprocess.run(
            [
                str(restore_tools.pg_restore),
                "--dbname",
                target,
                "--exit-on-error",
                "--no-owner",
                "--no-acl",
                "--no-password",
            ],
            env=libpq_env(target_url, target),
            stdin=dump.stdout,
            capture_output=True,
            check=False,
        )
        dump.stdout.close()
        if dump.wait() != 0 or restore.returncode != 0:
            raise RuntimeError(f"raw pipe failed: {restore.stderr.decode(errors='replace')[-500:]}")
        return time.perf_counter() - started
    finally:
        with psycopg.connect(target_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')


def newer_pg_dump_refused(dump_tools, restore_tools, source_url: str, source_db: str, target_url: str) -> str:
    """pg_dump 18 | pg_restore 18 once, schema only (it fails in the schema): the target's first error line."""
    target = f"bench_raw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(target_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{target}" TEMPLATE template0')
    try:
        dump = subprocess.Popen(
            [str(dump_tools.pg_dump), "--format=custom", "--schema-only", "--no-password"],
            env=libpq_env(source_url, source_db),
            stdout=subprocess.PIPE,
        )
        assert dump.stdout is not None
        restore = subprocess.run(
            [str(restore_tools.pg_restore), "--dbname", target, "--exit-on-error", "--no-owner", "--no-acl"],
            env=libpq_env(target_url, target),
            stdin=dump.stdout,
            capture_output=True,
            check=False,
        )
        dump.stdout.close()
        dump.wait()
        if restore.returncode == 0:
            return "accepted"
        lines = restore.stderr.decode(errors="replace").splitlines()
        return next((line for line in lines if "ERROR" in line), lines[-1] if lines else "failed").strip()
    finally:
        with psycopg.connect(target_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')


async def activity_split(client, workflow_id: str) -> list[tuple[str, float]]:
    """(activity type, seconds from scheduled to closed) of every activity of a run, in order."""
    scheduled: dict[int, tuple[str, datetime]] = {}
    split: list[tuple[str, float]] = []
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        when = event.event_time.ToDatetime()
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled[event.event_id] = (event.activity_task_scheduled_event_attributes.activity_type.name, when)
        for field in (
            "activity_task_completed_event_attributes",
            "activity_task_failed_event_attributes",
            "activity_task_timed_out_event_attributes",
            "activity_task_canceled_event_attributes",
        ):
            if event.HasField(field):
                name, at = scheduled[getattr(event, field).scheduled_event_id]
                split.append((name, (when - at).total_seconds()))
    return split


def phases(split: list[tuple[str, float]]) -> dict[str, float]:
    """The move's activities grouped: before the freeze (rehearsal), and each step inside it."""
    out = {"rehearsal": 0.0, "freeze_activity": 0.0, "final_copy": 0.0, "verification": 0.0, "switch": 0.0}
    frozen = False
    for name, seconds in split:
        if name == "freeze_database":
            frozen = True
            out["freeze_activity"] += seconds
        elif not frozen and name in ("copy_to_target", "verify_copy", "drop_copy"):
            out["rehearsal"] += seconds
        elif frozen and name == "copy_to_target":
            out["final_copy"] += seconds
        elif frozen and name == "verify_copy":
            out["verification"] += seconds
        elif frozen and name == "switch_to_target":
            out["switch"] += seconds
    return {k: round(v, 2) for k, v in out.items()}


async def drop_roles(url: str, prefix: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        rows = await (
            await conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", [prefix + "%"])
        ).fetchall()
        dropped = []
        for (name,) in rows:
            await conn.execute(f'DROP ROLE IF EXISTS "{name}"')
            dropped.append(name)
    return dropped


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", default=SOURCE_URL, help="the source server (server `default`)")
    parser.add_argument("--raw", default="default,z0", help="raw pipes: default (pg_dump -Fc), z0 (--compress=0)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    raw_kinds = [kind for kind in args.raw.split(",") if kind]

    pg_dir = Path(tempfile.mkdtemp(prefix="tl-bench-pg18-"))
    pg18 = EmbeddedPostgres(pg_dir / "pgdata", free_port())
    pg18.start()
    prefix = ""
    try:
        async with stack(args.database_url, extra_env={"TENANTS_SERVERS": json.dumps({TARGET: pg18.url})}) as s:
            settings = s.settings
            prefix = settings.database_prefix
            source_url = settings.effective_database_url
            await Catalog(settings).add_server(TARGET, major_version=18)
            client = await connect_client(settings)
            print(f"provisioning {TENANT!r} on the source and filling it to {args.size_mb} MiB ...", flush=True)
            made = await client.execute_workflow(
                ProvisionTenantWorkflow.run,
                ProvisionTenantInput(
                    name="Bench move",
                    plan="business",
                    owner_email="owner@example.com",
                    tenant_id=TENANT,
                    server="default",
                ),
                id=f"provision-bench-{uuid.uuid4().hex[:8]}",
                task_queue=settings.task_queue,
            )
            database = made.database_name
            filled_at = time.perf_counter()
            db_bytes = await fill_database(source_url, database, args.size_mb)
            print(f"  {db_bytes / 2**20:.0f} MiB in {time.perf_counter() - filled_at:.0f} s", flush=True)
            with psycopg.connect(source_url) as conn:
                source_version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            with psycopg.connect(pg18.url) as conn:
                target_version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            tools15, tools18 = find_client_tools(15), find_client_tools(18)
            refused = newer_pg_dump_refused(tools18, tools18, source_url, database, pg18.url)
            print(f"pg_dump {tools18.version} | pg_restore {tools18.version}: {refused}", flush=True)

            runs: list[dict] = []
            for round_ in range(1, args.repeat + 1):
                print(f"round {round_}/{args.repeat}", flush=True)
                for kind in raw_kinds:
                    before = load()
                    seconds = await asyncio.to_thread(
                        raw_pipe, tools15, tools18, source_url, database, pg18.url, kind == "default"
                    )
                    runs.append({"round": round_, "what": f"raw-{kind}", "seconds": round(seconds, 2), "load": before})
                    print(f"  raw pipe ({kind})   {seconds:7.2f} s   load {before}", flush=True)
                before = load()
                move_id = f"{MOVE_ID_PREFIX}bench-{uuid.uuid4().hex[:8]}"
                started = time.perf_counter()
                moved = await client.execute_workflow(
                    MoveTenantWorkflow.run,
                    MoveTenantInput(tenant_id=TENANT, target=TARGET, keep_source_seconds=86_400),
                    id=move_id,
                    task_queue=settings.task_queue,
                    execution_timeout=timedelta(hours=1),
                )
                wall = time.perf_counter() - started
                split = await activity_split(client, move_id)
                runs.append(
                    {
                        "round": round_,
                        "what": "move",
                        "seconds": round(wall, 2),
                        "freeze_seconds": moved.freeze_seconds,
                        "dump_major": moved.dump_major,
                        "newer_pg_dump_refused": moved.newer_pg_dump_refused,
                        "rows": sum(moved.row_counts.values()),
                        "phases": phases(split),
                        "activities": [[name, round(sec, 2)] for name, sec in split],
                        "load": before,
                    }
                )
                print(
                    f"  move               {wall:7.2f} s   freeze {moved.freeze_seconds:.2f} s   "
                    f"{phases(split)}   load {before}",
                    flush=True,
                )
                before = load()
                started = time.perf_counter()
                undone = await client.execute_workflow(
                    UndoMoveWorkflow.run,
                    UndoMoveInput(tenant_id=TENANT, keep_seconds=0),
                    id=f"{MOVE_ID_PREFIX}undo-bench-{uuid.uuid4().hex[:8]}",
                    task_queue=settings.task_queue,
                )
                wall = time.perf_counter() - started
                runs.append(
                    {
                        "round": round_,
                        "what": "undo",
                        "seconds": round(wall, 2),
                        "freeze_seconds": undone.freeze_seconds,
                        "load": before,
                    }
                )
                print(f"  undo               {wall:7.2f} s   freeze {undone.freeze_seconds:.2f} s", flush=True)

            def med(what: str, key: str = "seconds") -> float:
                return median([run[key] for run in runs if run["what"] == what])

            summary = {f"raw-{kind}": round(med(f"raw-{kind}"), 2) for kind in raw_kinds}
            summary |= {
                "move_total": round(med("move"), 2),
                "move_freeze": round(med("move", "freeze_seconds"), 2),
                "undo_total": round(med("undo"), 2),
                "undo_freeze": round(med("undo", "freeze_seconds"), 2),
            }
            moves = [run for run in runs if run["what"] == "move"]
            split_median = {k: round(median([run["phases"][k] for run in moves]), 2) for k in moves[0]["phases"]}
            fastest_raw = min(summary[f"raw-{kind}"] for kind in raw_kinds)
            ratio = summary["move_freeze"] / fastest_raw
            # The machine is shared: each round's freeze against that round's raw pipes (run just before it).
            paired = {
                kind: round(
                    median(
                        [
                            move["freeze_seconds"]
                            / next(
                                r["seconds"] for r in runs if r["round"] == move["round"] and r["what"] == f"raw-{kind}"
                            )
                            for move in moves
                        ]
                    ),
                    3,
                )
                for kind in raw_kinds
            }
            print(
                f"\nPostgreSQL {source_version} → {target_version}; tenant {db_bytes / 2**20:.0f} MiB on disk; "
                f"pg_dump {tools15.version} | pg_restore {tools18.version}; median of {args.repeat}"
            )
            print("| what | wall (s) | vs fastest raw pipe |\n|---|---:|---:|")
            for kind in raw_kinds:
                raw = summary[f"raw-{kind}"]
                print(f"| raw pipe ({kind}) | {raw:.2f} | {raw / fastest_raw:.2f}x |")
            print(f"| move: write freeze | {summary['move_freeze']:.2f} | {ratio:.2f}x |")
            print(f"| move: total | {summary['move_total']:.2f} | {summary['move_total'] / fastest_raw:.2f}x |")
            print(f"| undo: total (freeze {summary['undo_freeze']:.2f}) | {summary['undo_total']:.2f} | |")
            print(f"freeze split (median): {split_median}")
            print(f"freeze / raw pipe of the same round (median): {paired}")
            print(f"goal freeze <= 1.2x raw pipe: {'met' if ratio <= 1.2 else 'NOT met'} ({ratio:.2f}x)")
            args.out.mkdir(parents=True, exist_ok=True)
            out = args.out / f"move-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
            out.write_text(
                json.dumps(
                    {
                        "date": datetime.now(UTC).isoformat(timespec="seconds"),
                        "source": source_version,
                        "target": target_version,
                        "pg_dump": tools15.version,
                        "pg_restore": tools18.version,
                        "newer_pg_dump_18": refused,
                        "database_bytes": db_bytes,
                        "repeat": args.repeat,
                        "median": summary,
                        "median_phases": split_median,
                        "freeze_vs_fastest_raw": round(ratio, 3),
                        "freeze_vs_raw_same_round": paired,
                        "runs": runs,
                        "worker_peak_rss_mb": round(s.worker_peak_rss_mb(), 1),
                    },
                    indent=2,
                )
            )
            print(f"results: {out}")
    finally:
        pg18.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
        if prefix:
            dropped = await drop_roles(args.database_url, prefix)
            print(f"dropped {len(dropped)} role(s) of the bench on the source")


if __name__ == "__main__":
    asyncio.run(main())
