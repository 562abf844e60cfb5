"""Restore benchmark: the restore workflow against raw pg_restore on the same archive, in one run.

    .venv/bin/python bench/restore.py [--size-mb 1024] [--repeat 3] [--jobs 1,2] [--database-url URL]

The tenant is generated as in bench/backup.py and backed up once by the backup workflow (gzip-6). Then, for each
job count, interleaved and --repeat times:
  raw pg_restore -j N         into a freshly created database (CREATE DATABASE included in the time)
  workflow restore -j N       RestoreTenantWorkflow: checksum + pg_restore --list of the archive, restore into a
                              scratch database, row-count verification, swap, drop of the replaced database
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from common import ROOT, atimed, make_sized_tenant, median, stack, timed

from activities.infra.pg import find_client_tools, libpq_env, server_major
from activities.infra.temporal import connect_client
from tenancy.contracts.backup import BackupTenantInput
from tenancy.contracts.restore import RestoreTenantInput
from workflows.backup_tenant import BackupTenantWorkflow
from workflows.restore_tenant import RestoreTenantWorkflow


def raw_restore(url: str, tools, archive: Path, jobs: int) -> None:
    target = f"bench_raw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{target}" TEMPLATE template0')
    try:
        subprocess.run(
            [str(tools.pg_restore), "--dbname", target, "--exit-on-error", f"--jobs={jobs}", str(archive)],
            env=libpq_env(url, target),
            check=True,
        )
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jobs", default="1,2", help="comma-separated pg_restore job counts")
    parser.add_argument("--database-url", help="a PostgreSQL server to use (default: an embedded one)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    job_counts = [int(j) for j in args.jobs.split(",")]

    async with stack(args.database_url) as s:
        settings = s.settings
        url = settings.effective_database_url
        client = await connect_client(settings)
        print(f"generating a {args.size_mb} MiB tenant and backing it up ...", flush=True)
        _, db_bytes = await make_sized_tenant(settings, "big", args.size_mb)
        taken = await client.execute_workflow(
            BackupTenantWorkflow.run,
            BackupTenantInput(tenant_id="big", keep=100),
            id=f"bench-backup-{uuid.uuid4().hex[:6]}",
            task_queue=settings.task_queue,
        )
        archive = settings.storage_root / taken.path
        with psycopg.connect(url) as conn:
            major = server_major(conn.info.server_version)
            server_version = conn.execute("SHOW server_version").fetchone()[0]
        tools = find_client_tools(major)

        results: dict[str, list[float]] = {}
        for round_ in range(1, args.repeat + 1):
            print(f"round {round_}/{args.repeat}", flush=True)
            for jobs in job_counts:
                seconds, _ = timed(raw_restore, url, tools, archive, jobs)
                results.setdefault(f"raw pg_restore -j {jobs}", []).append(seconds)
                print(f"  raw pg_restore -j {jobs}      {seconds:7.2f} s", flush=True)
                seconds, _ = await atimed(
                    client.execute_workflow(
                        RestoreTenantWorkflow.run,
                        RestoreTenantInput(tenant_id="big", backup_name=taken.backup_name, jobs=jobs),
                        id=f"bench-restore-{uuid.uuid4().hex[:6]}",
                        task_queue=settings.task_queue,
                    )
                )
                results.setdefault(f"workflow restore -j {jobs}", []).append(seconds)
                print(f"  workflow restore -j {jobs}    {seconds:7.2f} s", flush=True)

        peak = s.worker_peak_rss_mb()
        summary = {}
        print(
            f"\nPostgreSQL {server_version}, pg_restore {tools.version}; tenant {db_bytes / 2**20:.0f} MiB on disk, "
            f"archive {taken.size_bytes / 2**20:.0f} MiB; median of {args.repeat}"
        )
        print("| method | wall (s) | vs raw, same jobs |\n|---|---:|---:|")
        for jobs in job_counts:
            raw = median(results[f"raw pg_restore -j {jobs}"])
            ours = median(results[f"workflow restore -j {jobs}"])
            summary[jobs] = {
                "raw_seconds": round(raw, 2),
                "workflow_seconds": round(ours, 2),
                "ratio": round(ours / raw, 3),
            }
            print(f"| raw pg_restore -j {jobs} | {raw:.2f} | 1.00x |")
            print(f"| workflow restore -j {jobs} | {ours:.2f} | {ours / raw:.2f}x |")
        print(f"worker peak RSS {peak:.0f} MB")
        args.out.mkdir(parents=True, exist_ok=True)
        out = args.out / f"restore-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
        out.write_text(
            json.dumps(
                {
                    "date": datetime.now(UTC).isoformat(timespec="seconds"),
                    "postgres": server_version,
                    "pg_restore": tools.version,
                    "database_bytes": db_bytes,
                    "archive_bytes": taken.size_bytes,
                    "repeat": args.repeat,
                    "median": summary,
                    "runs": results,
                    "worker_peak_rss_mb": round(peak, 1),
                },
                indent=2,
            )
        )
        print(f"results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
