"""Fleet benchmark: 200 small tenants backed up by BackupAllTenantsWorkflow, beside serial shell-style loops, on the
same tenants, in one run.

    .venv/bin/python bench/fleet.py --pg-bin /usr/lib/postgresql/15/bin \
        [--tenants 200] [--entries 2000] [--concurrency 4[,8...]] [--workers 1,2] [--repeat 2] [--timeline]

--pg-bin: a PostgreSQL server of the bench's own from those binaries, so the server CPU counted is this run's
alone (--database-url uses a shared one instead; without either, the embedded server). --variant NAME:VAR=VALUE
adds a fleet run on a worker started with those environment variables (e.g. a setting changed).

Methods, each run --repeat times, interleaved:
  serial pg_dump | gzip       the original cron job: `pg_dump <db> | gzip -6 > file`, one tenant after another
  serial verified loop        `pg_dump -Fc` to a file, sha256 of the file, `pg_restore --list` of it, one by one
  fleet, N worker(s), c=C     BackupAllTenantsWorkflow (defaults: zstd, verification, manifest, retention keep=1,
                              the tenant lock), C children at a time, on a task queue that N worker processes
                              (`worker.py`, as in production) poll
For each: wall time, and CPU seconds from /proc (utime+stime) of the worker process(es), of the processes they ran
(pg_dump, pg_restore: the workers' reaped children), of the Temporal dev server, and of PostgreSQL (the postmaster,
its children, and its reaped children: every backend, including other users' on a shared server). With --timeline,
the children's histories of the last fleet run of each kind say where a tenant's time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from common import ROOT, median, stack
from temporalio.api.enums.v1 import EventType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from activities.infra.catalog import Catalog
from activities.infra.pg import find_client_tools, libpq_env, server_major
from activities.infra.temporal import connect_client
from starter.demo import seed_tenant_data
from tenancy.contracts.fleet import FleetBackupInput
from workflows.backup_fleet import BackupAllTenantsWorkflow

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    # Fields after the command name (which may hold spaces): [0] is field 3 (state) of proc(5).
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_of(pid: int) -> tuple[float, float]:
    """(the process's own CPU seconds, its reaped children's), user + system."""
    f = _stat(pid)
    return (int(f[11]) + int(f[12])) / TICK, (int(f[13]) + int(f[14])) / TICK


def postgres_cpu(postmaster: int) -> float:
    """Every PostgreSQL process's CPU so far: the postmaster, its live children, and those it has reaped (ended
    backends). Differences of two readings count backends that came and went between them."""
    own, reaped = cpu_of(postmaster)
    total = own + reaped
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            f = _stat(int(entry.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(f[1]) == postmaster:
            total += (int(f[11]) + int(f[12])) / TICK
    return total


def temporal_server_pid(port: int) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"start-dev" in cmd and str(port).encode() in cmd:
            return int(entry.name)
    raise RuntimeError("the Temporal dev server's process is not found")


@dataclass
class Probe:
    """What one measurement reads from /proc before and after."""

    postmaster: int
    temporal: int
    workers: list[int]

    def read(self) -> dict[str, float]:
        mine = os.times()
        workers = [cpu_of(pid) for pid in self.workers]
        return {
            "worker": sum(w[0] for w in workers),
            "pg_dump/pg_restore (worker children)": sum(w[1] for w in workers),
            "bench process": mine.user + mine.system,
            "bench children": mine.children_user + mine.children_system,
            "temporal server": sum(cpu_of(self.temporal)),
            "postgres": postgres_cpu(self.postmaster),
        }


def md(text: str) -> str:
    return text.replace("|", "\\|")


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before[k], 2) for k in before}


def loop_gzip(tools, url: str, names: list[str], out_dir: Path) -> None:
    for name in names:  # what the original cron job did, one tenant after another
        with (out_dir / f"{name}.sql.gz").open("wb") as handle:
            dump = subprocess.Popen([str(tools.pg_dump), name], env=libpq_env(url, name), stdout=subprocess.PIPE)
            subprocess.run(["gzip", "-6"], stdin=dump.stdout, stdout=handle, check=True)
            dump.stdout.close()
            if dump.wait() != 0:
                raise RuntimeError(f"pg_dump {name} failed")


def loop_verified(tools, url: str, names: list[str], out_dir: Path) -> None:
    for name in names:  # the same checks the workflow makes, done by a script: dump, checksum, table of contents
        path = out_dir / f"{name}.dump"
        subprocess.run([str(tools.pg_dump), "-Fc", "-f", str(path), name], env=libpq_env(url, name), check=True)
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        listed = subprocess.run([str(tools.pg_restore), "--list", str(path)], capture_output=True, check=True)
        if b"TABLE DATA" not in listed.stdout:
            raise RuntimeError(f"pg_restore --list {name}: no table data")


async def wait_for_pollers(client, queue: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(namespace="default", task_queue=TaskQueue(name=queue))
        )
        if len({p.identity for p in described.pollers}) >= count:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{count} workers did not start polling {queue}")


def _seconds(event) -> float:
    return event.event_time.seconds + event.event_time.nanos / 1e9


def child_timeline(history) -> dict[str, float]:
    """Seconds of one child run by what it waited for: workflow tasks queued (server to worker) and run (in the
    worker, local activities included), each activity queued and run, and the rest."""
    events = history.events
    spans: dict[str, float] = defaultdict(float)
    scheduled: dict[int, tuple[str, float]] = {}
    for e in events:
        t = _seconds(e)
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            scheduled[e.event_id] = ("workflow task", t)
        elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            kind, at = scheduled[e.workflow_task_started_event_attributes.scheduled_event_id]
            spans["workflow task queued"] += t - at
            scheduled[e.event_id] = (kind, t)
        elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            spans["workflow task run (local activities in it)"] += (
                t - scheduled[e.workflow_task_completed_event_attributes.started_event_id][1]
            )
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[e.event_id] = (e.activity_task_scheduled_event_attributes.activity_type.name, t)
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            kind, at = scheduled[e.activity_task_started_event_attributes.scheduled_event_id]
            spans[f"{kind} queued"] += t - at
            scheduled[e.event_id] = (kind, t)
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            kind, at = scheduled[e.activity_task_completed_event_attributes.started_event_id]
            spans[f"{kind} run"] += t - at
    total = _seconds(events[-1]) - _seconds(events[0])
    spans["between (server bookkeeping)"] = total - sum(spans.values())
    spans["total"] = total
    return spans


async def timeline(client, fleet_id: str, tenant_ids: list[str]) -> dict:
    """Medians over the children of one fleet run, and how many were in flight on average."""
    parent = await client.get_workflow_handle(fleet_id).fetch_history()
    wall = _seconds(parent.events[-1]) - _seconds(parent.events[0])
    per_child = []
    for tenant_id in tenant_ids:
        history = await client.get_workflow_handle(f"backup-{tenant_id}@{fleet_id}").fetch_history()
        per_child.append(child_timeline(history))
    keys = sorted({k for c in per_child for k in c}, key=lambda k: -statistics.mean(c.get(k, 0) for c in per_child))
    return {
        "fleet_wall_s": round(wall, 2),
        "children_in_flight": round(sum(c["total"] for c in per_child) / wall, 2),
        "median_ms": {k: round(statistics.median(c.get(k, 0) for c in per_child) * 1000, 1) for k in keys},
        "mean_ms": {k: round(statistics.mean(c.get(k, 0) for c in per_child) * 1000, 1) for k in keys},
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--entries", type=int, default=2000, help="time entries per tenant")
    parser.add_argument("--concurrency", default=None, help="children at a time, comma-separated (default: setting)")
    parser.add_argument("--workers", default="1,2", help="worker processes, comma-separated")
    parser.add_argument("--compression", default=None, help="the fleet's compression (default: FleetBackupInput's)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-loops", action="store_true", help="only the fleet runs")
    parser.add_argument("--timeline", action="store_true", help="read every child's history: where the time goes")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:VAR=VALUE[,VAR=VALUE]",
        help="also a fleet run on one worker started with these environment variables (repeatable)",
    )
    parser.add_argument("--database-url", help="a shared server (other users' work counts in its CPU)")
    parser.add_argument(
        "--pg-bin", type=Path, help="without --database-url: a server of the bench's own from these binaries"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    worker_counts = [int(n) for n in args.workers.split(",")]

    async with stack(args.database_url, pg_bin=args.pg_bin) as s:
        settings = s.settings
        url = settings.effective_database_url
        concurrencies = [int(c) for c in (args.concurrency or str(settings.fleet_concurrency)).split(",")]
        client = await connect_client(settings)
        catalog = Catalog(settings)
        first = await catalog.create_tenant("t-000", "t-000")
        await seed_tenant_data(url, first.database_name, args.entries)
        with psycopg.connect(url, autocommit=True) as conn:
            major = server_major(conn.info.server_version)
            version = conn.execute("SHOW server_version").fetchone()[0]
            backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        postmaster = int(_stat(backend)[1])
        names, tenant_ids = [first.database_name], [first.id]
        for i in range(1, args.tenants):  # copies of the first: same data, made fast
            tenant = await catalog.create_tenant(f"t-{i:03d}", f"t-{i:03d}", create_database=False)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{tenant.database_name}" TEMPLATE "{first.database_name}"')
            names.append(tenant.database_name)
            tenant_ids.append(tenant.id)
        tools = find_client_tools(major)
        temporal = temporal_server_pid(int(settings.temporal_address.rsplit(":", 1)[1]))

        # Each worker count has a task queue of its own, polled by that many worker processes for the whole run
        # (idle ones only long-poll): the fleet run and its children stay on its queue.
        queues: dict[str, tuple[str, list[int]]] = {}
        for count in worker_counts:
            label = f"{count} worker{'s' if count > 1 else ''}"
            if count == 1:
                queues[label] = (settings.task_queue, [s.worker.pid])
                continue
            queue = f"{settings.task_queue}-{count}w"
            procs = [await s.extra_worker(queue, {}) for _ in range(count)]
            await wait_for_pollers(client, queue, count)
            queues[label] = (queue, [p.pid for p in procs])
        for variant in args.variant:
            name, _, assignments = variant.partition(":")
            env = dict(pair.split("=", 1) for pair in assignments.split(",") if pair)
            proc = await s.extra_worker(f"{settings.task_queue}-{name}", env)
            queues[f"1 worker, {name}"] = (f"{settings.task_queue}-{name}", [proc.pid])
        print(f"PostgreSQL {version} ({tools.pg_dump}); {args.tenants} tenants of {args.entries} time entries each")

        loop_dir = s.work / "loop"
        loop_dir.mkdir()
        fleet_input = {"keep": 1} | ({"compression": args.compression} if args.compression else {})
        walls: dict[str, list[float]] = defaultdict(list)
        cpus: dict[str, list[dict[str, float]]] = defaultdict(list)
        loads: dict[str, list[float]] = defaultdict(list)
        last_fleet: dict[str, str] = {}

        async def measure(label: str, workers: list[int], run) -> None:
            probe = Probe(postmaster, temporal, workers)
            loads[label].append(os.getloadavg()[0])
            before, started = probe.read(), time.perf_counter()
            await run()
            walls[label].append(time.perf_counter() - started)
            cpus[label].append(delta(before, probe.read()))
            print(f"  {label}: {walls[label][-1]:.1f} s, cpu {cpus[label][-1]} load {loads[label][-1]:.1f}", flush=True)

        def fleet(label: str, queue: str, concurrency: int):
            async def run() -> None:
                fleet_id = f"bench-fleet-{uuid.uuid4().hex[:6]}"
                result = await client.execute_workflow(
                    BackupAllTenantsWorkflow.run,
                    FleetBackupInput(concurrency=concurrency, **fleet_input),
                    id=fleet_id,
                    task_queue=queue,
                )
                if result.succeeded != args.tenants:
                    raise RuntimeError(result.model_dump_json()[:500])
                last_fleet[label] = fleet_id

            return run

        for round_ in range(1, args.repeat + 1):
            print(f"round {round_}", flush=True)
            if not args.no_loops:
                await measure(
                    "serial pg_dump | gzip", [], lambda: asyncio.to_thread(loop_gzip, tools, url, names, loop_dir)
                )
                await measure(
                    "serial verified loop", [], lambda: asyncio.to_thread(loop_verified, tools, url, names, loop_dir)
                )
            for workers, (queue, pids) in queues.items():
                for concurrency in concurrencies:
                    label = f"fleet, {workers}, {concurrency} at a time"
                    await measure(label, pids, fleet(label, queue, concurrency))

        timelines = {}
        if args.timeline:
            for label, fleet_id in last_fleet.items():
                timelines[label] = await timeline(client, fleet_id, tenant_ids)

        n = args.tenants
        results = {label: median(values) for label, values in walls.items()}
        gzip_s = results.get("serial pg_dump | gzip")
        verified_s = results.get("serial verified loop")
        print(f"\nPostgreSQL {version}; {n} tenants; median of {args.repeat}; 1-minute load at start of each")
        print("| method | wall (s) | per tenant | vs gzip loop | vs verified loop | load |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, wall in results.items():
            vs_gzip = f"{wall / gzip_s:.2f}x" if gzip_s else ""
            vs_verified = f"{wall / verified_s:.2f}x" if verified_s else ""
            print(
                f"| {md(label)} | {wall:.1f} | {wall / n * 1000:.0f} ms | {vs_gzip} | {vs_verified} |"
                f" {median(loads[label]):.2f} |"
            )
        print("\nCPU ms per tenant (medians):")
        keys = list(next(iter(cpus.values()))[0])
        print("| method | " + " | ".join(keys) + " | total | total / wall |")
        print("|---|" + "---:|" * (len(keys) + 2))
        cpu_medians = {}
        for label, samples in cpus.items():
            med = {k: median([c[k] for c in samples]) for k in keys}
            cpu_medians[label] = med
            total = sum(med.values())
            print(
                f"| {md(label)} | "
                + " | ".join(f"{med[k] / n * 1000:.0f}" for k in keys)
                + f" | {total / n * 1000:.0f} | {total / results[label]:.2f} cores |"
            )
        for label, t in timelines.items():
            print(f"\n{label}: children in flight on average {t['children_in_flight']} (fleet {t['fleet_wall_s']} s)")
            print("| span of a child | median ms | mean ms |\n|---|---:|---:|")
            for k, v in t["median_ms"].items():
                print(f"| {k} | {v} | {t['mean_ms'][k]} |")

        args.out.mkdir(parents=True, exist_ok=True)
        out = args.out / f"fleet-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
        out.write_text(
            json.dumps(
                {
                    "date": datetime.now(UTC).isoformat(timespec="seconds"),
                    "postgres": version,
                    "cores": os.cpu_count(),
                    "python": sys.version.split()[0],
                    "tenants": n,
                    "entries": args.entries,
                    "fleet_input": fleet_input,
                    "wall_s": walls,
                    "load_1m": loads,
                    "cpu_s": cpus,
                    "median": {
                        label: {"wall_s": round(w, 2), "cpu_s": cpu_medians[label]} for label, w in results.items()
                    },
                    "timelines": timelines,
                },
                indent=2,
            )
        )
        print(f"results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    asyncio.run(main())
