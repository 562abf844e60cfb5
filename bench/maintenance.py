"""Maintenance benchmark: cleanup of old rows through the workflow (short batches) beside one raw
`DELETE … WHERE created_at < …`, on identical copies of the same tenant, in one run.

    .venv/bin/python bench/maintenance.py [--rows 1000000] [--batch 5000] [--repeat 3] [--database-url URL]

Reports total time and the longest time any single lock was held: for the workflow the longest batch
transaction, for the raw DELETE the whole statement (its row locks are held until it commits).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from common import ROOT, median, stack

from activities.infra.catalog import Catalog
from activities.infra.pg import connect
from activities.infra.schema import apply_migrations, migration_files
from activities.infra.temporal import connect_client
from tenancy.contracts.maintenance import MaintainTenantInput
from workflows.maintain_tenant import MaintainTenantWorkflow


async def make_copy(settings, source_db: str, tenant_id: str) -> str:
    tenant = await Catalog(settings).create_tenant(tenant_id, tenant_id, create_database=False)
    async with await connect(settings.effective_database_url, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{tenant.database_name}" TEMPLATE "{source_db}"')
    return tenant.database_name


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="old rows to delete")
    parser.add_argument("--keep-rows", type=int, default=200_000, help="newer rows that must stay")
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    async with stack(args.database_url, extra_env={"TENANTS_CLEANUP_BATCH_SIZE": str(args.batch)}) as s:
        settings = s.settings
        url = settings.effective_database_url
        client = await connect_client(settings)
        source = f"{settings.database_prefix}source"
        async with await connect(url, autocommit=True) as conn:
            await conn.execute(f'CREATE DATABASE "{source}"')
        async with await connect(url, source, autocommit=True) as conn:
            await apply_migrations(conn, migration_files(settings.migrations_dir))
            await conn.execute(
                "INSERT INTO activity_log (happened_at, actor, message) SELECT now() - interval '400 days' "
                "- g * interval '1 second', 'user ' || (g %% 50), 'entry ' || g || ' changed' "
                "FROM generate_series(1, %s) g",
                [args.rows],
            )
            await conn.execute(
                "INSERT INTO activity_log (happened_at, actor, message) SELECT now() - g * interval '1 second', "
                "'user ' || (g %% 50), 'entry ' || g || ' changed' FROM generate_series(1, %s) g",
                [args.keep_rows],
            )
            await conn.execute("VACUUM ANALYZE activity_log")
        print(f"{args.rows} old and {args.keep_rows} recent activity_log rows generated", flush=True)

        raw_seconds, flow_seconds, flow_longest = [], [], []
        for round_ in range(1, args.repeat + 1):
            raw_db = await make_copy(settings, source, f"raw-{round_}")
            flow_id = f"flow-{round_}"
            await make_copy(settings, source, flow_id)

            with psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname=raw_db), autocommit=True) as conn:
                started = time.perf_counter()
                deleted = conn.execute(
                    "DELETE FROM activity_log WHERE happened_at < now() - interval '180 days'"
                ).rowcount
                raw_seconds.append(time.perf_counter() - started)
            assert deleted == args.rows, deleted

            started = time.perf_counter()
            result = await client.execute_workflow(
                MaintainTenantWorkflow.run,
                MaintainTenantInput(tenant_id=flow_id, tasks=["cleanup"], days=180),
                id=f"bench-maintenance-{uuid.uuid4().hex[:6]}",
                task_queue=settings.task_queue,
            )
            flow_seconds.append(time.perf_counter() - started)
            detail = result.tasks[0].detail
            assert detail["rows_deleted"]["activity_log"] == args.rows, detail
            flow_longest.append(detail["longest_batch_ms"] / 1000)
            print(
                f"round {round_}: raw DELETE {raw_seconds[-1]:.2f} s; workflow {flow_seconds[-1]:.2f} s in "
                f"{detail['batches']} batches, longest {detail['longest_batch_ms']:.0f} ms",
                flush=True,
            )
            async with await connect(url, autocommit=True) as conn:
                for name in (raw_db, f"{settings.database_prefix}{flow_id}"):
                    await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

        raw, flow, longest = median(raw_seconds), median(flow_seconds), median(flow_longest)
        print(f"\n{args.rows} old rows, batches of {args.batch}; median of {args.repeat}")
        print("| method | total (s) | longest lock held (s) |\n|---|---:|---:|")
        print(f"| raw single DELETE | {raw:.2f} | {raw:.2f} |")
        print(f"| workflow cleanup | {flow:.2f} ({flow / raw:.2f}x) | {longest:.3f} ({raw / longest:.0f}x shorter) |")
        args.out.mkdir(parents=True, exist_ok=True)
        out = args.out / f"maintenance-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
        out.write_text(
            json.dumps(
                {
                    "date": datetime.now(UTC).isoformat(timespec="seconds"),
                    "rows": args.rows,
                    "batch": args.batch,
                    "repeat": args.repeat,
                    "raw_delete_s": raw_seconds,
                    "workflow_s": flow_seconds,
                    "workflow_longest_batch_s": flow_longest,
                    "median": {
                        "raw_s": round(raw, 2),
                        "workflow_s": round(flow, 2),
                        "ratio": round(flow / raw, 3),
                        "longest_lock_s": round(longest, 4),
                        "lock_shorter_by": round(raw / longest, 1),
                    },
                },
                indent=2,
            )
        )
        print(f"results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
