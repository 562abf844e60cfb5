"""Provisioning benchmark: ProvisionTenantWorkflow end to end beside raw `createdb -T <template>` and beside
creating from empty and migrating, for the same number of tenants, in one run.

    .venv/bin/python bench/provision.py [--count 50] [--concurrency 1,4] [--database-url URL] [--extra-tables 0]

--extra-tables N adds N more tables (with an index each) to the sample schema, to show how both ways scale with
the size of the schema.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from common import ROOT, stack

from activities.infra.pg import connect, embedded_bin_dir, libpq_env, server_major
from activities.infra.schema import apply_migrations, ensure_template, migration_files
from activities.infra.temporal import connect_client
from tenancy.contracts.provision import ProvisionTenantInput
from workflows.provision_tenant import ProvisionTenantWorkflow


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def createdb_binary(major: int) -> str:
    for folder in (Path(f"/usr/lib/postgresql/{major}/bin"), embedded_bin_dir()):
        if folder and (folder / "createdb").is_file():
            return str(folder / "createdb")
    return shutil.which("createdb") or "createdb"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--extra-tables", type=int, default=0)
    parser.add_argument("--database-url")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    async with stack(args.database_url) as s:
        settings = s.settings
        url = settings.effective_database_url
        migrations = Path(settings.migrations_dir)
        if args.extra_tables:
            migrations = s.work / "migrations"
            shutil.copytree(settings.migrations_dir, migrations)
            body = "\n".join(
                f"CREATE TABLE extra_{i} (id bigserial PRIMARY KEY, name text, created_at timestamptz DEFAULT now());"
                f"\nCREATE INDEX extra_{i}_created ON extra_{i} (created_at);"
                for i in range(args.extra_tables)
            )
            (migrations / "0004_extra.sql").write_text(body)
            print("(the worker uses the repository's migrations; --extra-tables affects the raw comparisons only)")
        client = await connect_client(settings)
        with psycopg.connect(url) as conn:
            major = server_major(conn.info.server_version)
            version = conn.execute("SHOW server_version").fetchone()[0]
        report: dict = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "postgres": version,
            "count": args.count,
            "workflow": {},
        }

        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            latencies: list[float] = []
            slots = asyncio.Semaphore(concurrency)

            async def one(i: int, slots=slots, concurrency=concurrency, latencies=latencies) -> None:
                async with slots:
                    started = time.perf_counter()
                    await client.execute_workflow(
                        ProvisionTenantWorkflow.run,
                        ProvisionTenantInput(
                            name=f"Bench {concurrency} {i}",
                            plan="business",
                            owner_email=f"owner{i % 40}-{concurrency}@example.com",
                            tenant_id=f"b{concurrency}-{i}",
                        ),
                        id=f"provision-bench-{uuid.uuid4().hex[:8]}",
                        task_queue=settings.task_queue,
                    )
                    latencies.append(time.perf_counter() - started)

            began = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(args.count)))
            wall = time.perf_counter() - began
            p50, p95 = statistics.median(latencies), percentile(latencies, 0.95)
            report["workflow"][concurrency] = {
                "p50_s": round(p50, 3),
                "p95_s": round(p95, 3),
                "wall_s": round(wall, 2),
                "tenants_per_s": round(args.count / wall, 2),
            }
            print(
                f"workflow, {concurrency} at a time: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
                f"{args.count / wall:.1f} tenants/s",
                flush=True,
            )

        # Raw: createdb -T <template> for the same count.
        template = f"{settings.database_prefix}_rawtemplate"
        await ensure_template(url, template, migrations)
        createdb = createdb_binary(major)
        names = [f"{settings.database_prefix}raw_{i}" for i in range(args.count)]
        env = libpq_env(url, "postgres")
        began = time.perf_counter()
        for name in names:
            subprocess.run([createdb, "-T", template, name], env=env, check=True)
        template_each = (time.perf_counter() - began) / args.count

        # From empty: CREATE DATABASE from template0, then every migration file.
        files = migration_files(migrations)
        began = time.perf_counter()
        for i in range(args.count):
            name = f"{settings.database_prefix}empty_{i}"
            subprocess.run([createdb, "-T", "template0", name], env=env, check=True)
            async with await connect(url, name, autocommit=True) as conn:
                await apply_migrations(conn, files)
        empty_each = (time.perf_counter() - began) / args.count

        report.update(
            {
                "extra_tables": args.extra_tables,
                "createdb_template_ms": round(template_each * 1000, 1),
                "migrate_from_empty_ms": round(empty_each * 1000, 1),
                "template_speedup": round(empty_each / template_each, 2),
            }
        )
        print(
            f"\nPostgreSQL {version}; {args.count} tenants; sample schema"
            + (f" + {args.extra_tables} extra tables" if args.extra_tables else "")
        )
        print("| way | per tenant |\n|---|---:|")
        for concurrency, row in report["workflow"].items():
            print(
                f"| workflow, {concurrency} at a time (p50 / p95) | {row['p50_s'] * 1000:.0f} / "
                f"{row['p95_s'] * 1000:.0f} ms ({row['tenants_per_s']} tenants/s) |"
            )
        print(f"| raw createdb -T template | {template_each * 1000:.0f} ms |")
        print(f"| createdb from empty + migrations | {empty_each * 1000:.0f} ms |")
        print(f"template copy is {empty_each / template_each:.1f}x faster than migrating from empty")
        args.out.mkdir(parents=True, exist_ok=True)
        suffix = f"-extra{args.extra_tables}" if args.extra_tables else ""
        out = args.out / f"provision{suffix}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
        out.write_text(json.dumps(report, indent=2))
        print(f"results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
