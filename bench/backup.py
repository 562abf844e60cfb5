"""Backup benchmark: the backup workflow against raw pg_dump on the same tenant, in one run.

    .venv/bin/python bench/backup.py [--size-mb 1024] [--repeat 3] [--database-url URL]

Methods, each run --repeat times, interleaved:
  raw pg_dump -Fc -Z6         pg_dump custom format, gzip level 6, to a file
  raw pg_dump piped to gzip -9  the original system: plain SQL piped through gzip -9
  workflow gzip-6             BackupTenantWorkflow (dump + row counts + verify + manifest + retention)
  workflow zstd-3             BackupTenantWorkflow with zstd level 3
Reports median wall time, archive size, ratio to raw pg_dump -Z6, and the worker process's peak memory (VmHWM)
after a small tenant and after the big one (memory must not grow with the tenant's size).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from common import ROOT, atimed, make_sized_tenant, median, stack, timed

from activities.infra.pg import find_client_tools, libpq_env, server_major
from activities.infra.temporal import connect_client
from tenancy.contracts.backup import BackupTenantInput
from workflows.backup_tenant import BackupTenantWorkflow


def raw_custom(tools, env, out: Path, level: int) -> int:
    subprocess.run(
        [str(tools.pg_dump), "--format=custom", f"--compress={level}", "--file", str(out)], env=env, check=True
    )
    return out.stat().st_size


def raw_plain_gzip9(tools, env, out: Path) -> int:
    with out.open("wb") as handle:
        dump = subprocess.Popen([str(tools.pg_dump)], env=env, stdout=subprocess.PIPE)
        gzip = subprocess.run(["gzip", "-9"], stdin=dump.stdout, stdout=handle, check=True)
        dump.stdout.close()
        if dump.wait() != 0 or gzip.returncode != 0:
            raise RuntimeError("pg_dump | gzip -9 failed")
    return out.stat().st_size


async def workflow_backup(client, settings, tenant_id: str, compression: str, level: int):
    return await client.execute_workflow(
        BackupTenantWorkflow.run,
        BackupTenantInput(tenant_id=tenant_id, keep=100, compression=compression, compression_level=level),
        id=f"bench-backup-{tenant_id}-{uuid.uuid4().hex[:6]}",
        task_queue=settings.task_queue,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024, help="size of the big tenant's database")
    parser.add_argument("--small-mb", type=int, default=64, help="size of the small tenant (memory comparison)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", help="a PostgreSQL server to use (default: an embedded one)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    async with stack(args.database_url) as s:
        settings = s.settings
        client = await connect_client(settings)
        print(f"generating tenants: small {args.small_mb} MiB, big {args.size_mb} MiB ...", flush=True)
        _, small_bytes = await make_sized_tenant(settings, "small", args.small_mb)
        big_db, big_bytes = await make_sized_tenant(settings, "big", args.size_mb)
        idle_rss = s.worker_rss_mb()

        # Memory on the small tenant first: VmHWM only grows, so this is the peak before the big one.
        for compression, level in (("gzip", 6), ("zstd", 3)):
            await workflow_backup(client, settings, "small", compression, level)
        peak_small = s.worker_peak_rss_mb()

        import psycopg

        with psycopg.connect(settings.effective_database_url) as conn:
            major = server_major(conn.info.server_version)
            server_version = conn.execute("SHOW server_version").fetchone()[0]
        tools = find_client_tools(major)
        env = libpq_env(settings.effective_database_url, big_db)
        scratch = s.work / "raw"
        scratch.mkdir()
        results: dict[str, dict[str, list[float]]] = {}

        def record(name: str, seconds: float, size: int) -> None:
            entry = results.setdefault(name, {"seconds": [], "bytes": []})
            entry["seconds"].append(seconds)
            entry["bytes"].append(size)
            print(f"  {name:<26} {seconds:7.2f} s  {size / 2**20:8.1f} MiB", flush=True)

        for round_ in range(1, args.repeat + 1):
            print(f"round {round_}/{args.repeat}", flush=True)
            seconds, size = timed(raw_custom, tools, env, scratch / "raw6.dump", 6)
            record("raw pg_dump -Fc -Z6", seconds, size)
            seconds, result = await atimed(workflow_backup(client, settings, "big", "gzip", 6))
            record("workflow gzip-6", seconds, result.size_bytes)
            seconds, result = await atimed(workflow_backup(client, settings, "big", "zstd", 3))
            record("workflow zstd-3", seconds, result.size_bytes)
            seconds, size = timed(raw_plain_gzip9, tools, env, scratch / "raw9.sql.gz")
            record("raw pg_dump piped to gzip -9", seconds, size)
            for path in scratch.iterdir():
                path.unlink()
            for path in (settings.storage_root / "tenants" / "big").iterdir():
                path.unlink()  # keep the disk use of the run flat

        peak_big = s.worker_peak_rss_mb()
        base = median(results["raw pg_dump -Fc -Z6"]["seconds"])
        rows = []
        for name, entry in results.items():
            wall = median(entry["seconds"])
            rows.append((name, wall, median(entry["bytes"]), wall / base))
        report = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "postgres": server_version,
            "pg_dump": tools.version,
            "database_bytes": {"small": small_bytes, "big": big_bytes},
            "repeat": args.repeat,
            "median": {
                name: {"seconds": round(w, 2), "bytes": int(b), "vs_raw_Z6": round(r, 3)} for name, w, b, r in rows
            },
            "runs": results,
            "worker_rss_mb": {
                "idle": round(idle_rss, 1),
                "peak_after_small": round(peak_small, 1),
                "peak_after_big": round(peak_big, 1),
            },
        }
        args.out.mkdir(parents=True, exist_ok=True)
        out = args.out / f"backup-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
        out.write_text(json.dumps(report, indent=2))

        print(
            f"\nPostgreSQL {server_version}, pg_dump {tools.version}; big tenant {big_bytes / 2**20:.0f} MiB on disk, "
            f"small {small_bytes / 2**20:.0f} MiB; median of {args.repeat}"
        )
        print("| method | wall (s) | archive (MiB) | vs raw -Z6 |\n|---|---:|---:|---:|")
        for name, wall, size, ratio in rows:
            print(f"| {name} | {wall:.2f} | {size / 2**20:.1f} | {ratio:.2f}x |")
        print(
            f"worker RSS: idle {idle_rss:.0f} MB, peak after small tenant {peak_small:.0f} MB, "
            f"peak after big tenant {peak_big:.0f} MB"
        )
        print(f"results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
