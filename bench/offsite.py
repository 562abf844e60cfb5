"""Off-the-box backup benchmark: the backup workflow to a local folder, to S3-compatible object storage (moto in
server mode on loopback) and with age encryption, beside raw pg_dump, on the same tenant in one run.

    .venv/bin/python bench/offsite.py [--size-mb 1024] [--repeat 2]

Each variant runs in its own worker process, so each one's peak memory (VmHWM) is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import boto3
import psycopg
import pyrage
from backup import raw_custom
from common import ROOT, atimed, make_sized_tenant, median, peak_rss_mb, stack, timed

from activities.infra.pg import find_client_tools, libpq_env, server_major
from activities.infra.temporal import connect_client
from starter.services import free_port
from tenancy.contracts.backup import BackupTenantInput
from workflows.backup_tenant import BackupTenantWorkflow


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--database-url")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    port = free_port()
    moto = subprocess.Popen(
        [
            shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server"),
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    creds = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        await asyncio.sleep(2)
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            **{k.lower(): v for k, v in creds.items() if k != "AWS_DEFAULT_REGION"},
            region_name="us-east-1",
        ).create_bucket(Bucket="bench")
        identity = pyrage.x25519.Identity.generate()
        async with stack(args.database_url) as s:
            settings = s.settings
            client = await connect_client(settings)
            variants = {
                "workflow gzip-6, local folder": (settings.task_queue, s.worker),
                "workflow gzip-6, S3 (moto)": (
                    "bench-s3",
                    await s.extra_worker(
                        "bench-s3",
                        {
                            **creds,
                            "TENANTS_STORAGE_URL": "s3://bench/tenants-bench",
                            "TENANTS_S3_ENDPOINT_URL": endpoint,
                        },
                    ),
                ),
                "workflow gzip-6, age-encrypted, local": (
                    "bench-age",
                    await s.extra_worker(
                        "bench-age", {"TENANTS_AGE_RECIPIENTS": json.dumps([str(identity.to_public())])}
                    ),
                ),
            }
            print(f"generating a {args.size_mb} MiB tenant ...", flush=True)
            dbname, db_bytes = await make_sized_tenant(settings, "big", args.size_mb)
            with psycopg.connect(settings.effective_database_url) as conn:
                major = server_major(conn.info.server_version)
            tools = find_client_tools(major)
            results: dict[str, list[float]] = {"raw pg_dump -Fc -Z6": []}
            sizes: dict[str, int] = {}
            for round_ in range(1, args.repeat + 1):
                seconds, size = timed(
                    raw_custom, tools, libpq_env(settings.effective_database_url, dbname), s.work / "raw.dump", 6
                )
                results["raw pg_dump -Fc -Z6"].append(seconds)
                sizes["raw pg_dump -Fc -Z6"] = size
                for name, (queue, _) in variants.items():
                    seconds, result = await atimed(
                        client.execute_workflow(
                            BackupTenantWorkflow.run,
                            BackupTenantInput(tenant_id="big", keep=1),
                            id=f"bench-{uuid.uuid4().hex[:6]}",
                            task_queue=queue,
                        )
                    )
                    results.setdefault(name, []).append(seconds)
                    sizes[name] = result.size_bytes
                    print(f"round {round_}: {name:<40} {seconds:6.2f} s", flush=True)
            base = median(results["workflow gzip-6, local folder"])
            report = {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "database_bytes": db_bytes,
                "repeat": args.repeat,
                "runs": results,
                "median": {
                    n: {
                        "seconds": round(median(v), 2),
                        "bytes": sizes[n],
                        "vs_local_workflow": round(median(v) / base, 3),
                    }
                    for n, v in results.items()
                },
                "worker_peak_rss_mb": {n: round(peak_rss_mb(p), 1) for n, (_, p) in variants.items()},
            }
            print(f"\ntenant {db_bytes / 2**20:.0f} MiB on disk; median of {args.repeat}")
            print("| method | wall (s) | stored (MiB) | vs workflow to a local folder | worker peak RSS |")
            print("|---|---:|---:|---:|---:|")
            for name, row in report["median"].items():
                rss = report["worker_peak_rss_mb"].get(name)
                cells = f"{row['seconds']:.2f} | {row['bytes'] / 2**20:.1f} | {row['vs_local_workflow']:.2f}x"
                print(f"| {name} | {cells} | {f'{rss:.0f} MB' if rss else ''} |")
            args.out.mkdir(parents=True, exist_ok=True)
            out = args.out / f"offsite-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
            out.write_text(json.dumps(report, indent=2))
            print(f"results: {out}")
    finally:
        moto.terminate()
        moto.wait()


if __name__ == "__main__":
    asyncio.run(main())
