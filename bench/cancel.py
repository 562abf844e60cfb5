"""Cancellation and progress benchmark: how soon a cancel stops a running dump, against stopping raw pg_dump on the
same tenant, and how often the progress the command line shows moves — in one run.

    .venv/bin/python bench/cancel.py [--size-mb 300] [--repeat 3] [--cancel-after 2] [--database-url URL]

Methods, each run --repeat times:
  raw pg_dump -Fc -Z6 + SIGTERM   pg_dump to a file, SIGTERM after --cancel-after seconds: time until it exits
  workflow cancel                  BackupTenantWorkflow, cancelled (WorkflowHandle.cancel) --cancel-after seconds into
                                   its dump: time from the cancel request until the run is CANCELED, and whether any
                                   backup or partial file was left
  progress                         while the workflow dumps, the bytes the command line would show (the pending
                                   activity's heartbeat details, read by describe every 0.1 s): the longest time
                                   they stood still
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from common import ROOT, make_sized_tenant, median, stack
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

from activities.infra.pg import find_client_tools, libpq_env, server_major
from activities.infra.temporal import connect_client
from tenancy.contracts.backup import BackupTenantInput
from tenancy.messages.progress import HeartbeatDetails
from workflows.backup_tenant import BackupTenantWorkflow


def raw_cancel(tools, env, out: Path, after: float) -> float:
    proc = subprocess.Popen([str(tools.pg_dump), "--format=custom", "--compress=6", "--file", str(out)], env=env)
    time.sleep(after)
    if proc.poll() is not None:
        raise SystemExit("raw pg_dump finished before the cancel: use a larger --size-mb")
    started = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    out.unlink(missing_ok=True)
    return time.perf_counter() - started


async def bytes_shown(client, handle) -> int | None:
    description = await handle.describe()
    for pending in description.raw_description.pending_activities:
        if pending.heartbeat_details.payloads:
            values = await client.data_converter.decode(pending.heartbeat_details.payloads)
            details = HeartbeatDetails.from_heartbeat(values)
            if details.bytes_written is not None:
                return details.bytes_written
    return None


async def workflow_cancel(client, settings, tenant_id: str, after: float) -> dict:
    handle = await client.start_workflow(
        BackupTenantWorkflow.run,
        BackupTenantInput(tenant_id=tenant_id),
        id=f"bench-cancel-{uuid.uuid4().hex[:8]}",
        task_queue=settings.task_queue,
    )
    first_seen = None
    last_value, last_change, longest_still = None, None, 0.0
    while True:
        shown = await bytes_shown(client, handle)
        now = time.perf_counter()
        if shown is not None:
            first_seen = first_seen or now
            if shown != last_value:
                if last_change is not None:
                    longest_still = max(longest_still, now - last_change)
                last_value, last_change = shown, now
            if now - first_seen >= after:
                break
        await asyncio.sleep(0.1)
    requested = time.perf_counter()
    await handle.cancel()
    try:
        await handle.result()
        raise SystemExit("the backup completed despite the cancel: use a larger --size-mb")
    except WorkflowFailureError:
        pass
    latency = time.perf_counter() - requested
    status = (await handle.describe()).status
    folder = settings.storage_root / "tenants" / tenant_id
    left = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    return {
        "cancel_to_canceled_s": round(latency, 3),
        "status": status.name if status else None,
        "canceled": status == WorkflowExecutionStatus.CANCELED,
        "files_left": left,
        "bytes_when_cancelled": last_value,
        "longest_progress_still_s": round(longest_still, 3),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cancel-after", type=float, default=2.0)
    parser.add_argument("--database-url", default=os.environ.get("TENANTS_BENCH_DATABASE_URL"))
    args = parser.parse_args()

    async with stack(args.database_url) as env:
        settings = env.settings
        client = await connect_client(settings)
        tenant_id = f"cancel-{uuid.uuid4().hex[:6]}"
        database, size = await make_sized_tenant(settings, tenant_id, args.size_mb)
        import psycopg

        with psycopg.connect(settings.effective_database_url) as conn:
            tools = find_client_tools(server_major(conn.info.server_version), settings.pg_bin_dir)
        pg_env = libpq_env(settings.effective_database_url, database)
        raw, runs = [], []
        for _ in range(args.repeat):
            raw.append(await asyncio.to_thread(raw_cancel, tools, pg_env, env.work / "raw.dump", args.cancel_after))
            runs.append(await workflow_cancel(client, settings, tenant_id, args.cancel_after))
        result = {
            "benchmark": "cancel",
            "at": datetime.now(UTC).isoformat(),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()},
            "server": tools.version,
            "tenant_bytes": size,
            "cancel_after_s": args.cancel_after,
            "raw_sigterm_to_exit_s": raw,
            "raw_median_s": round(median(raw), 3),
            "workflow_runs": runs,
            "workflow_median_s": round(median([r["cancel_to_canceled_s"] for r in runs]), 3),
            "all_canceled_with_nothing_left": all(r["canceled"] and not r["files_left"] for r in runs),
            "longest_progress_still_s": max(r["longest_progress_still_s"] for r in runs),
        }
        out = ROOT / "bench" / "results" / f"cancel-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
        out.write_text(json.dumps(result, indent=2))
        print(json.dumps({k: v for k, v in result.items() if k != "workflow_runs"}, indent=2))
        print(f"written to {out}")


if __name__ == "__main__":
    asyncio.run(main())
