"""What every benchmark needs: real servers, a worker in its own process (so its memory can be read), a tenant
of a given size, and a timer. Everything runs on this machine, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from activities.infra.catalog import Catalog  # noqa: E402
from activities.infra.pg import connect, one_row  # noqa: E402
from activities.infra.schema import apply_migrations, migration_files  # noqa: E402
from activities.infra.temporal import connect_client  # noqa: E402
from starter.services import EmbeddedPostgres, TemporalDevServer, free_port  # noqa: E402
from tenancy.settings import Settings  # noqa: E402


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    work: Path
    worker: subprocess.Popen[bytes] | None = None
    cleanup: list = field(default_factory=list)

    def worker_peak_rss_mb(self) -> float:
        """VmHWM: the worker process's peak resident memory since it started."""
        assert self.worker is not None
        for line in Path(f"/proc/{self.worker.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")

    async def extra_worker(self, queue: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Another worker process on its own task queue with some settings changed (S3, encryption...)."""
        worker_env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTS_")} | self.env | env
        worker_env["TENANTS_TASK_QUEUE"] = queue
        proc = subprocess.Popen([sys.executable, str(ROOT / "worker.py")], env=worker_env, cwd=str(self.work))

        def stop() -> None:
            proc.terminate()
            proc.wait(timeout=30)

        self.cleanup.append(stop)
        await _wait_for_poller(self.settings.model_copy(update={"task_queue": queue}))
        return proc

    def worker_rss_mb(self) -> float:
        assert self.worker is not None
        for line in Path(f"/proc/{self.worker.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")


@contextlib.asynccontextmanager
async def stack(
    database_url: str | None,
    keep_files: bool = False,
    extra_env: dict[str, str] | None = None,
    pg_bin: Path | None = None,
) -> AsyncIterator[Stack]:
    """Without a database URL, a PostgreSQL server of the bench's own: the embedded one, or the one whose binaries
    are in `pg_bin` (e.g. the machine's /usr/lib/postgresql/15/bin, alone on its data so its CPU is ours)."""
    work = Path(tempfile.mkdtemp(prefix="tl-bench-"))
    cleanup = []
    if not database_url:
        pg = EmbeddedPostgres(work / "pgdata", free_port())
        if pg_bin is not None:
            pg.bin = pg_bin
        pg.start()
        cleanup.append(pg.stop)
        database_url = pg.url
    temporal = TemporalDevServer(None, free_port(), None, log_file=work / "temporal.log")
    temporal.start()
    cleanup.append(temporal.stop)
    unique = f"tlb{uuid.uuid4().hex[:6]}"
    env = {
        "TENANTS_DATABASE_URL": database_url,
        "TENANTS_CATALOG_DATABASE": f"{unique}_catalog",
        "TENANTS_DATABASE_PREFIX": f"{unique}_",
        "TENANTS_STORAGE_URL": str(work / "backups"),
        "TENANTS_TEMPORAL_ADDRESS": temporal.address,
        "TENANTS_TASK_QUEUE": f"bench-{unique}",
        "TENANTS_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    fields: dict[str, object] = {k.removeprefix("TENANTS_").lower(): v for k, v in env.items()}
    if "servers" in fields:
        fields["servers"] = json.loads(env["TENANTS_SERVERS"])  # JSON in the environment, a dict for Settings(...)
    settings = Settings(_env_file=None, **fields)  # type: ignore[arg-type]
    await Catalog(settings).migrate()
    worker_env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTS_")} | env
    worker = subprocess.Popen([sys.executable, str(ROOT / "worker.py")], env=worker_env, cwd=str(work))
    result = Stack(settings=settings, env=env, work=work, worker=worker, cleanup=cleanup)
    try:
        await _wait_for_poller(settings)
        yield result
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        async with await connect(database_url, autocommit=True) as conn:
            rows = await (
                await conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [unique + "%"])
            ).fetchall()
            for (name,) in rows:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for stop in reversed(cleanup):
            stop()
        if not keep_files:
            subprocess.run(["rm", "-rf", str(work)], check=False)


async def _wait_for_poller(settings: Settings, timeout: float = 60) -> None:
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    client = await connect_client(settings)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(namespace="default", task_queue=TaskQueue(name=settings.task_queue))
        )
        if queue.pollers:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the worker did not start polling")


async def make_sized_tenant(settings: Settings, tenant_id: str, size_mb: int) -> tuple[str, int]:
    """A tenant whose database holds about `size_mb` MiB of sample rows; returns (database, bytes)."""
    tenant = await Catalog(settings).create_tenant(tenant_id, f"Bench {tenant_id}")
    async with await connect(settings.effective_database_url, tenant.database_name, autocommit=True) as conn:
        await apply_migrations(conn, migration_files(settings.migrations_dir))
    size = await fill_database(settings.effective_database_url, tenant.database_name, size_mb)
    return tenant.database_name, size


async def fill_database(url: str, database_name: str, size_mb: int) -> int:
    """Sample rows into a tenant database (its schema migrated) until it holds about `size_mb` MiB; its bytes."""
    target = size_mb * 1024 * 1024
    batch = 250_000
    async with await connect(url, database_name, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO projects (id, name) SELECT g, 'project ' || g FROM generate_series(1, 500) g "
            "ON CONFLICT DO NOTHING"
        )
        start = 1
        while True:
            size = (await one_row(await conn.execute("SELECT pg_database_size(current_database())")))[0]
            if size >= target:
                break
            # Notes mix repeated words and hex digests: compressible, but not trivially so.
            await conn.execute(
                "INSERT INTO time_entries (id, project_id, started_at, minutes, note) "
                "SELECT g, 1 + g %% 500, timestamptz '2024-01-01' + g * interval '37 seconds', g %% 480, "
                "'worked on ' || (array['api','billing','reports','ui','search'])[1 + g %% 5] || ' ' || "
                "md5(g::text) || ' ' || md5((g * 7)::text) || ' ' || repeat('x', (g %% 64)::int) "
                "FROM generate_series(%s::bigint, %s::bigint) g",
                [start, start + batch - 1],
            )
            await conn.execute(
                "INSERT INTO activity_log (message, happened_at) SELECT 'entry ' || g || ' tracked by user ' || "
                "(g %% 97), timestamptz '2024-01-01' + g * interval '37 seconds' "
                "FROM generate_series(%s::bigint, %s::bigint, 5) g",
                [start, start + batch - 1],
            )
            start += batch
        await conn.execute("VACUUM ANALYZE")
    return size


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - started, out


async def atimed(coro) -> tuple[float, object]:
    started = time.perf_counter()
    out = await coro
    return time.perf_counter() - started, out


def peak_rss_mb(proc: subprocess.Popen[bytes]) -> float:
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def median(values: list[float]) -> float:
    return statistics.median(values)
