"""Fleet benchmark: 200 small tenants backed up by BackupAllTenantsWorkflow, beside the original approach — a
serial shell loop of `pg_dump | gzip` per tenant — on the same tenants, in one run.

    .venv/bin/python bench/fleet.py [--tenants 200] [--entries 2000] [--concurrency 4] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from common import ROOT, median, stack

from activities.infra.catalog import Catalog
from activities.infra.pg import find_client_tools, libpq_env, server_major
from activities.infra.temporal import connect_client
from starter.demo import seed_tenant_data
from tenancy.contracts.fleet import FleetBackupInput
from workflows.backup_fleet import BackupAllTenantsWorkflow


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--entries", type=int, default=2000, help="time entries per tenant")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--database-url")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    async with stack(args.database_url) as s:
        settings = s.settings
        url = settings.effective_database_url
        client = await connect_client(settings)
        catalog = Catalog(settings)
        first = await catalog.create_tenant("t-000", "t-000")
        await seed_tenant_data(url, first.database_name, args.entries)
        with psycopg.connect(url, autocommit=True) as conn:
            major = server_major(conn.info.server_version)
            version = conn.execute("SHOW server_version").fetchone()[0]
        names = [first.database_name]
        for i in range(1, args.tenants):  # copies of the first: same data, made fast
            tenant = await catalog.create_tenant(f"t-{i:03d}", f"t-{i:03d}", create_database=False)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{tenant.database_name}" TEMPLATE "{first.database_name}"')
            names.append(tenant.database_name)
        tools = find_client_tools(major)
        print(f"{args.tenants} tenants of {args.entries} time entries each", flush=True)

        loop_s, fleet_s = [], []
        out_dir = s.work / "loop"
        out_dir.mkdir()
        for round_ in range(1, args.repeat + 1):
            started = time.perf_counter()
            for name in names:  # what the original cron job did, one tenant after another
                with (out_dir / f"{name}.sql.gz").open("wb") as handle:
                    dump = subprocess.Popen(
                        [str(tools.pg_dump), name], env=libpq_env(url, name), stdout=subprocess.PIPE
                    )
                    subprocess.run(["gzip", "-6"], stdin=dump.stdout, stdout=handle, check=True)
                    dump.stdout.close()
                    if dump.wait() != 0:
                        raise RuntimeError(f"pg_dump {name} failed")
            loop_s.append(time.perf_counter() - started)

            started = time.perf_counter()
            result = await client.execute_workflow(
                BackupAllTenantsWorkflow.run,
                FleetBackupInput(keep=1, concurrency=args.concurrency),
                id=f"bench-fleet-{uuid.uuid4().hex[:6]}",
                task_queue=settings.task_queue,
            )
            fleet_s.append(time.perf_counter() - started)
            assert result.succeeded == args.tenants, result.model_dump_json()[:500]
            print(
                f"round {round_}: serial pg_dump | gzip loop {loop_s[-1]:.1f} s; fleet workflow {fleet_s[-1]:.1f} s",
                flush=True,
            )

        loop, fleet = median(loop_s), median(fleet_s)
        print(
            f"\nPostgreSQL {version}; {args.tenants} tenants; concurrency {args.concurrency}; median of {args.repeat}"
        )
        print("| method | wall (s) | per tenant |\n|---|---:|---:|")
        print(f"| serial `pg_dump \\| gzip` loop | {loop:.1f} | {loop / args.tenants * 1000:.0f} ms |")
        print(f"| fleet workflow | {fleet:.1f} ({fleet / loop:.2f}x) | {fleet / args.tenants * 1000:.0f} ms |")
        args.out.mkdir(parents=True, exist_ok=True)
        out = args.out / f"fleet-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
        out.write_text(
            json.dumps(
                {
                    "date": datetime.now(UTC).isoformat(timespec="seconds"),
                    "postgres": version,
                    "tenants": args.tenants,
                    "entries": args.entries,
                    "concurrency": args.concurrency,
                    "loop_s": loop_s,
                    "fleet_s": fleet_s,
                    "median": {"loop_s": round(loop, 2), "fleet_s": round(fleet, 2), "ratio": round(fleet / loop, 3)},
                },
                indent=2,
            )
        )
        print(f"results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    asyncio.run(main())
