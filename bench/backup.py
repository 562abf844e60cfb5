"""Backup benchmark: the backup workflow against raw pg_dump on the same tenant, in one run.

    .venv/bin/python bench/backup.py [--size-mb 512] [--repeat 3] [--database-url URL] [--also-zstd 1]

Methods, each run --repeat times, interleaved:
  raw pg_dump -Fc -Z0           pg_dump custom format, uncompressed, to a file: the read limit, the base
  workflow default              BackupTenantWorkflow with the default compression (TENANTS_COMPRESSION and level):
                                dump + row counts + verify (sha256 read back, pg_restore --list) + manifest + retention
  raw pg_dump -Fc -Z6           pg_dump custom format, gzip level 6, to a file
  workflow gzip-6               BackupTenantWorkflow with gzip level 6 (the default before zstd)
  workflow zstd-N               with each --also-zstd level
  raw pg_dump piped to gzip -9  the original system: plain SQL piped through gzip -9 (--no-gzip9 skips it)
Reports median wall time, archive size, ratio to raw pg_dump -Z0, the load average at each measurement (the machine
may be shared), where each workflow run's time went (dump, verify, everything else: from its history), and the worker
process's peak memory (VmHWM) after a small tenant and after the big one (memory must not grow with the tenant's
size).
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

from activities.infra.pg import find_client_tools, libpq_env, pg_dump_writes_zstd, server_major
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


async def workflow_backup(client, settings, tenant_id: str, compression: str, level: int, workflow_id: str = ""):
    return await client.execute_workflow(
        BackupTenantWorkflow.run,
        BackupTenantInput(tenant_id=tenant_id, keep=100, compression=compression, compression_level=level),
        id=workflow_id or f"bench-backup-{tenant_id}-{uuid.uuid4().hex[:6]}",
        task_queue=settings.task_queue,
    )


async def phases(client, workflow_id: str) -> dict[str, float]:
    """Where a run's time went, from its history: the dump and verify activities (scheduled to completed), and
    everything else (lock, names, retention, the workflow's own tasks)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    scheduled: dict[int, tuple[str, datetime]] = {}
    spent = {"dump_database": 0.0, "verify_backup": 0.0}
    for event in history.events:
        at = event.event_time.ToDatetime()
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled[event.event_id] = (event.activity_task_scheduled_event_attributes.activity_type.name, at)
        elif event.HasField("activity_task_completed_event_attributes"):
            name, began = scheduled[event.activity_task_completed_event_attributes.scheduled_event_id]
            if name in spent:
                spent[name] += (at - began).total_seconds()
    total = (history.events[-1].event_time.ToDatetime() - history.events[0].event_time.ToDatetime()).total_seconds()
    return {"dump": spent["dump_database"], "verify": spent["verify_backup"], "rest": total - sum(spent.values())}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=512, help="size of the big tenant's database")
    parser.add_argument("--small-mb", type=int, default=64, help="size of the small tenant (memory comparison)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", help="a PostgreSQL server to use (default: an embedded one)")
    parser.add_argument("--also-zstd", type=int, nargs="*", default=[], help="more zstd levels to run the workflow at")
    parser.add_argument("--no-gzip9", action="store_true", help="skip raw pg_dump | gzip -9 (the slowest method)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    async with stack(args.database_url) as s:
        settings = s.settings
        default = (settings.compression, settings.effective_compression_level)
        default_name = f"workflow default ({default[0]}-{default[1]})"
        client = await connect_client(settings)
        print(f"generating tenants: small {args.small_mb} MiB, big {args.size_mb} MiB ...", flush=True)
        _, small_bytes = await make_sized_tenant(settings, "small", args.small_mb)
        big_db, big_bytes = await make_sized_tenant(settings, "big", args.size_mb)
        idle_rss = s.worker_rss_mb()

        # Memory on the small tenant first: VmHWM only grows, so this is the peak before the big one.
        for compression, level in (("gzip", 6), default):
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

        def record(name: str, seconds: float, size: int, load: float) -> None:
            entry = results.setdefault(name, {"seconds": [], "bytes": [], "load": []})
            entry["seconds"].append(seconds)
            entry["bytes"].append(size)
            entry["load"].append(load)
            print(f"  {name:<32} {seconds:7.2f} s  {size / 2**20:8.1f} MiB  load {load:.2f}", flush=True)

        async def workflow(name: str, compression: str, level: int) -> None:
            load = os.getloadavg()[0]
            workflow_id = f"bench-backup-big-{uuid.uuid4().hex[:6]}"
            seconds, result = await atimed(workflow_backup(client, settings, "big", compression, level, workflow_id))
            record(name, seconds, result.size_bytes, load)
            spent = await phases(client, workflow_id)
            for phase, value in spent.items():
                results[name].setdefault(phase, []).append(round(value, 3))
            print(f"  {'':<32} dump {spent['dump']:.2f} s, verify {spent['verify']:.2f} s, rest {spent['rest']:.2f} s")

        def raw(name: str, fn, *fn_args) -> None:
            load = os.getloadavg()[0]
            seconds, size = timed(fn, *fn_args)
            record(name, seconds, size, load)

        for round_ in range(1, args.repeat + 1):
            print(f"round {round_}/{args.repeat}", flush=True)
            raw("raw pg_dump -Fc -Z0", raw_custom, tools, env, scratch / "raw0.dump", 0)
            await workflow(default_name, *default)
            raw("raw pg_dump -Fc -Z6", raw_custom, tools, env, scratch / "raw6.dump", 6)
            if default != ("gzip", 6):
                await workflow("workflow gzip-6", "gzip", 6)
            for level in args.also_zstd:
                if ("zstd", level) != default:
                    await workflow(f"workflow zstd-{level}", "zstd", level)
            if not args.no_gzip9:
                raw("raw pg_dump piped to gzip -9", raw_plain_gzip9, tools, env, scratch / "raw9.sql.gz")
            for path in scratch.iterdir():
                path.unlink()
            for path in (settings.storage_root / "tenants" / "big").iterdir():
                path.unlink()  # keep the disk use of the run flat

        peak_big = s.worker_peak_rss_mb()
        base = median(results["raw pg_dump -Fc -Z0"]["seconds"])
        rows = []
        for name, entry in results.items():
            wall = median(entry["seconds"])
            rows.append((name, wall, median(entry["bytes"]), wall / base))
        report = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "postgres": server_version,
            "pg_dump": tools.version,
            "pg_dump_writes_zstd": pg_dump_writes_zstd(tools.pg_dump),
            "database_bytes": {"small": small_bytes, "big": big_bytes},
            "repeat": args.repeat,
            "median": {
                name: {"seconds": round(w, 2), "bytes": int(b), "vs_raw_Z0": round(r, 3)} for name, w, b, r in rows
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

        zstd_where = "pg_dump's own" if report["pg_dump_writes_zstd"] else "a stream around pg_dump -Z0"
        print(
            f"\nPostgreSQL {server_version}, pg_dump {tools.version} (zstd: {zstd_where}); big tenant "
            f"{big_bytes / 2**20:.0f} MiB on disk, small {small_bytes / 2**20:.0f} MiB; median of {args.repeat}"
        )
        print("| method | wall (s) | archive (MiB) | vs raw -Z0 | load (1 min) |\n|---|---:|---:|---:|---|")
        for name, wall, size, ratio in rows:
            loads = ", ".join(f"{x:.1f}" for x in results[name]["load"])
            print(f"| {name} | {wall:.2f} | {size / 2**20:.1f} | {ratio:.2f}x | {loads} |")
        for name, entry in results.items():
            if "dump" in entry:
                print(
                    f"{name}: median dump {median(entry['dump']):.2f} s, verify {median(entry['verify']):.2f} s, "
                    f"everything else {median(entry['rest']):.2f} s"
                )
        print(
            f"worker RSS: idle {idle_rss:.0f} MB, peak after small tenant {peak_small:.0f} MB, "
            f"peak after big tenant {peak_big:.0f} MB"
        )
        print(f"results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
