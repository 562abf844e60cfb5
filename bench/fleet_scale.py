"""Fleet at scale: PruneAllTenantsWorkflow over 10,000 catalog tenants, with bounded history, payloads and memory.

The tenants are catalog rows only (status active, a database that does not exist): each one's child is a prune
dry run that finds no backups, so what is measured is the fleet engine itself — the sliding window of children,
the outcomes written to the catalog in batches, continue-as-new — and not pg_dump.

    .venv/bin/python bench/fleet_scale.py --concurrency 16 --database-url postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/fleet_scale.py --tenants 500 --concurrency 8     # a quick look

Reports the wall time, the fleet's runs (continue-as-new count, by walking the chain of runs), the longest history
of any run, the largest payload in any event of any run (and of a sample of children), the worker's peak memory,
and checks that fleet_outcomes holds one row per tenant and that the result's counts add up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil
from common import ROOT, stack
from google.protobuf.message import Message
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from activities.infra.pg import connect
from activities.infra.temporal import connect_client
from tenancy.contracts.fleet import PruneInput
from tenancy.naming import database_name
from workflows.retention import PruneAllTenantsWorkflow

PAYLOAD_LIMIT = 256 * 1024
RSS_LIMIT_MB = 300


@dataclass
class RunFacts:
    run_id: str | None
    events: int
    children: int
    markers: int
    timers: int
    largest_event_payload: int  # every payload of one event together (what one blob of the history carries)
    largest_event_type: str
    largest_single_payload: int


def payload_sizes(message: Message) -> list[int]:
    """The size of every temporal.api.common.v1.Payload anywhere inside `message` (inputs, results, marker details,
    continue-as-new input, failures' details, headers, memo, search attributes)."""
    sizes: list[int] = []
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if field.is_repeated:
            items = value.values() if field.message_type.GetOptions().map_entry else value
        else:
            items = [value]
        for item in items:
            if not isinstance(item, Message):
                continue
            if item.DESCRIPTOR.full_name == "temporal.api.common.v1.Payload":
                sizes.append(item.ByteSize())
            else:
                sizes.extend(payload_sizes(item))
    return sizes


async def run_facts(client: Client, workflow_id: str, run_id: str | None) -> tuple[RunFacts, str | None]:
    """One run's history, measured; and the run it continued as, if any."""
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    largest, largest_type, single = 0, "", 0
    kinds: Counter[int] = Counter()
    for event in history.events:
        kinds[event.event_type] += 1
        sizes = payload_sizes(event)
        if sizes and sum(sizes) > largest:
            largest, largest_type = sum(sizes), EventType.Name(event.event_type)
        single = max([single, *sizes])
    last = history.events[-1]
    following = (
        last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
        if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
        else None
    )
    facts = RunFacts(
        run_id=run_id,
        events=len(history.events),
        children=kinds[EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED],
        markers=kinds[EventType.EVENT_TYPE_MARKER_RECORDED],
        timers=kinds[EventType.EVENT_TYPE_TIMER_STARTED],
        largest_event_payload=largest,
        largest_event_type=largest_type,
        largest_single_payload=single,
    )
    return facts, following


async def insert_tenants(url: str, catalog_db: str, prefix: str, count: int) -> None:
    """`count` active tenants straight into the catalog's table: rows only, their databases never created."""
    async with await connect(url, catalog_db, autocommit=False) as conn:
        async with conn.cursor().copy(
            "COPY tenants (id, name, plan, status, owner_email, database_name) FROM STDIN"
        ) as copy:
            for i in range(count):
                tenant_id = f"t-{i:05d}"
                await copy.write_row(
                    [
                        tenant_id,
                        f"Scale {tenant_id}",
                        "free",
                        "active",
                        "owner@example.com",
                        database_name(prefix, tenant_id),
                    ]
                )
        await conn.commit()


def cpu_seconds(processes: dict[str, psutil.Process]) -> dict[str, float]:
    """CPU time used so far by each process, and by the whole machine (every core, every process)."""
    used = {name: sum(proc.cpu_times()[:2]) for name, proc in processes.items()}
    machine = psutil.cpu_times()
    return used | {"machine": machine.user + machine.nice + machine.system + machine.irq + machine.softirq}


async def catalog_activity(url: str, catalog_db: str) -> dict[str, float]:
    """What PostgreSQL counts for the catalog database: connections opened, and seconds spent running statements."""
    async with await connect(url, autocommit=True) as conn:
        sessions, active_ms, commits = await (
            await conn.execute(
                "SELECT sessions, active_time, xact_commit FROM pg_stat_database WHERE datname = %s", [catalog_db]
            )
        ).fetchone()
    return {"sessions": sessions, "active_s": active_ms / 1000, "commits": commits}


async def sample_rss(pid: int, samples: list[float], stop: asyncio.Event) -> None:
    status = Path(f"/proc/{pid}/status")
    while not stop.is_set():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                samples.append(int(line.split()[1]) / 1024)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def show_progress(handle, started: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 30)
            return
        except TimeoutError:
            pass
        try:
            progress = await handle.query(PruneAllTenantsWorkflow.progress)
        except Exception as exc:  # a query may land during continue-as-new: only this line of progress is lost
            progress = f"(no answer: {type(exc).__name__})"
        print(f"  {time.perf_counter() - started:6.0f} s  {progress}", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=PruneInput.model_fields["concurrency"].default)
    parser.add_argument("--children-sampled", type=int, default=20, help="children whose histories are measured")
    parser.add_argument("--database-url")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    load_before = os.getloadavg()
    async with stack(args.database_url) as s:
        settings = s.settings
        url = settings.effective_database_url
        await insert_tenants(url, settings.catalog_database, settings.database_prefix, args.tenants)
        async with await connect(url, autocommit=True) as conn:
            version = (await (await conn.execute("SHOW server_version")).fetchone())[0]
        client = await connect_client(settings)
        rss_idle = s.worker_rss_mb()
        print(f"{args.tenants} catalog tenants (no databases); concurrency {args.concurrency}", flush=True)

        workflow_id = f"bench-fleet-scale-{uuid.uuid4().hex[:6]}"
        rss: list[float] = []
        stop = asyncio.Event()
        me = psutil.Process()
        processes = {"worker": psutil.Process(s.worker.pid), "bench": me}
        processes["temporal"] = next(p for p in me.children() if p.name().startswith("temporal"))
        cpu_before = cpu_seconds(processes)
        pg_before = await catalog_activity(url, settings.catalog_database)
        started = time.perf_counter()
        handle = await client.start_workflow(
            PruneAllTenantsWorkflow.run,
            PruneInput(dry_run=True, concurrency=args.concurrency),
            id=workflow_id,
            task_queue=settings.task_queue,
        )
        watchers = [
            asyncio.create_task(sample_rss(s.worker.pid, rss, stop)),
            asyncio.create_task(show_progress(handle, started, stop)),
        ]
        result = await handle.result()
        wall = time.perf_counter() - started
        cpu = {k: v - cpu_before[k] for k, v in cpu_seconds(processes).items()}
        cpu["others (PostgreSQL, other users)"] = cpu["machine"] - cpu["worker"] - cpu["temporal"] - cpu["bench"]
        stop.set()
        await asyncio.gather(*watchers)
        await asyncio.sleep(1)  # PostgreSQL publishes a backend's statistics within a second
        pg = {k: v - pg_before[k] for k, v in (await catalog_activity(url, settings.catalog_database)).items()}
        load_after = os.getloadavg()
        peak_rss = s.worker_peak_rss_mb()
        print(f"fleet done in {wall:.1f} s: {result.model_dump(exclude={'outcomes'})}", flush=True)

        runs: list[RunFacts] = []
        run_id: str | None = handle.first_execution_run_id
        while run_id:
            facts, run_id = await run_facts(client, workflow_id, run_id)
            runs.append(facts)
        step = max(1, args.tenants // args.children_sampled)
        children = [
            (await run_facts(client, f"prune-t-{i:05d}@{workflow_id}", None))[0] for i in range(0, args.tenants, step)
        ]

        async with await connect(url, settings.catalog_database, autocommit=True) as conn:
            rows, ok, skipped, run_ids = await (
                await conn.execute(
                    "SELECT count(*), count(*) FILTER (WHERE ok AND NOT skipped), count(*) FILTER (WHERE skipped),"
                    " count(DISTINCT fleet_run_id) FROM fleet_outcomes WHERE fleet_workflow_id = %s",
                    [workflow_id],
                )
            ).fetchone()

    checks = {
        "completed": True,
        "counts add up": result.total == args.tenants == result.succeeded + result.failed + result.skipped,
        "every tenant succeeded": result.succeeded == args.tenants,
        "fleet_outcomes: one row per tenant": rows == args.tenants and ok == result.succeeded,
        "fleet_outcomes written by every run": run_ids == len(runs),
        "largest payload < 256 KB": max(r.largest_event_payload for r in runs + children) < PAYLOAD_LIMIT,
        "worker peak RSS < 300 MB": peak_rss < RSS_LIMIT_MB,
        "history bounded (every run <= history_limit)": max(r.events for r in runs)
        <= PruneInput.model_fields["history_limit"].default,
    }
    largest = max(runs, key=lambda r: r.largest_event_payload)
    largest_child = max(children, key=lambda r: r.largest_event_payload)
    print(f"\nPostgreSQL {version}; {args.tenants} tenants; concurrency {args.concurrency}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min), {os.cpu_count()} cores")
    print("| figure | value |\n|---|---:|")
    print(f"| wall time | {wall:.1f} s ({args.tenants / wall:.1f} tenants/s) |")
    print(f"| runs (continue-as-new count) | {len(runs)} ({len(runs) - 1}) |")
    print(f"| events per run, max / min | {max(r.events for r in runs)} / {min(r.events for r in runs)} |")
    print(f"| children per run, max | {max(r.children for r in runs)} |")
    print(
        f"| largest payload, fleet (one event, all its payloads) | {largest.largest_event_payload:,} B "
        f"({largest.largest_event_type}) |"
    )
    print(f"| largest single payload, fleet | {max(r.largest_single_payload for r in runs):,} B |")
    print(
        f"| largest payload, {len(children)} children sampled | {largest_child.largest_event_payload:,} B "
        f"({largest_child.largest_event_type}) |"
    )
    print(f"| worker RSS idle / peak (VmHWM) / max sampled | {rss_idle:.0f} / {peak_rss:.0f} / {max(rss):.0f} MB |")
    print(f"| fleet_outcomes rows (ok, skipped) | {rows} ({ok}, {skipped}) |")
    print(
        f"CPU seconds during the run ({os.cpu_count()} cores x {wall:.0f} s = {os.cpu_count() * wall:.0f}): "
        + ", ".join(f"{name} {seconds:.0f}" for name, seconds in cpu.items())
    )
    print(
        f"catalog database: {pg['sessions']:.0f} connections opened, {pg['commits']:.0f} commits, "
        f"{pg['active_s']:.1f} s running statements"
    )
    for name, passed in checks.items():
        print(f"{'ok  ' if passed else 'FAIL'} {name}")

    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"fleet-scale-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "postgres": version,
                "tenants": args.tenants,
                "concurrency": args.concurrency,
                "load_average_before": load_before,
                "load_average_after": load_after,
                "cpu_seconds": {k: round(v, 1) for k, v in cpu.items()},
                "catalog_database": {k: round(v, 1) for k, v in pg.items()},
                "wall_s": round(wall, 1),
                "result": result.model_dump(exclude={"outcomes"}),
                "runs": [asdict(r) for r in runs],
                "children_sampled": [asdict(r) for r in children],
                "worker_rss_mb": {
                    "idle": round(rss_idle),
                    "peak_vmhwm": round(peak_rss),
                    "max_sampled": round(max(rss)),
                },
                "fleet_outcomes": {"rows": rows, "ok": ok, "skipped": skipped, "runs": run_ids},
                "checks": checks,
            },
            indent=2,
        )
    )
    print(f"results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    if not all(checks.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    asyncio.run(main())
