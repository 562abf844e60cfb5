"""A restore survives its worker being killed, and clears the tenant's cache."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from starter.demo import table_fingerprint
from tenancy.contracts.restore import RestoreTenantInput
from tests.test_restore_workflow import backup, change_everything, databases_like
from worker import build_worker
from workflows.restore_tenant import RestoreTenantWorkflow

ROOT = Path(__file__).resolve().parent.parent


def worker_process(temporal_env, settings, queue: str, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTS_")}
    env.update(
        TENANTS_DATABASE_URL=settings.effective_database_url,
        TENANTS_CATALOG_DATABASE=settings.catalog_database,
        TENANTS_DATABASE_PREFIX=settings.database_prefix,
        TENANTS_STORAGE_URL=str(settings.storage_root),
        TENANTS_TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host,
        TENANTS_TASK_QUEUE=queue,
        TENANTS_LOG_LEVEL="WARNING",
        TENANTS_SECRETS_DIR=str(settings.effective_secrets_dir),
    )
    env.update(extra or {})
    return subprocess.Popen([sys.executable, str(ROOT / "worker.py")], env=env, cwd=str(ROOT))


async def test_worker_killed_mid_restore_the_run_completes_on_a_new_worker(temporal_env, settings, make_tenant):
    queue = f"tq-kill-{uuid.uuid4().hex[:8]}"
    tenant = await make_tenant(entries=300_000)
    url = settings.effective_database_url
    async with build_worker(temporal_env.client, settings, queue):
        taken = await backup(temporal_env, queue, tenant.id)
    expected = await table_fingerprint(url, tenant.database_name)
    change_everything(url, tenant.database_name)

    first = worker_process(temporal_env, settings, queue)
    handle = await temporal_env.client.start_workflow(
        RestoreTenantWorkflow.run,
        RestoreTenantInput(tenant_id=tenant.id, jobs=1, keep_previous_seconds=0),
        id=f"restore-{tenant.id}-{uuid.uuid4().hex[:6]}",
        task_queue=queue,
    )
    try:
        for _ in range(600):
            if databases_like(url, tenant.database_name + "\\_\\_rs\\_%"):
                progress = await handle.query("progress")
                if progress["phase"] == "restoring into a scratch database":
                    break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the restore never reached its scratch database")
        first.send_signal(signal.SIGKILL)  # a real crash: no clean-up of any kind
        first.wait()
        second = worker_process(temporal_env, settings, queue)
        try:
            result = await asyncio.wait_for(handle.result(), timeout=120)
        finally:
            second.terminate()
            second.wait()
    finally:
        if first.poll() is None:
            first.kill()
    assert result.backup_name == taken.backup_name
    assert await table_fingerprint(url, tenant.database_name) == expected
    assert databases_like(url, tenant.database_name + "\\_\\_%") == []


def redis_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not redis_available(), reason="no Redis server on 127.0.0.1:6379 to clear a cache in")
async def test_restore_clears_only_the_tenants_cache_keys(temporal_env, settings, make_tenant):
    import redis

    tenant = await make_tenant(entries=50)
    other = f"other-{uuid.uuid4().hex[:6]}"
    with_cache = settings.model_copy(update={"redis_url": "redis://127.0.0.1:6379/0"})
    queue = f"tq-{uuid.uuid4().hex[:8]}"
    client = redis.Redis(host="127.0.0.1", port=6379)
    keys = [f"tenant:{tenant.id}:{i}" for i in range(1200)]
    client.mset(dict.fromkeys(keys, "x"))
    client.set(f"tenant:{other}:session", "keep me")
    try:
        async with build_worker(temporal_env.client, with_cache, queue):
            await backup(temporal_env, queue, tenant.id)
            result = await temporal_env.client.execute_workflow(
                RestoreTenantWorkflow.run,
                RestoreTenantInput(tenant_id=tenant.id),
                id=f"restore-{tenant.id}-{uuid.uuid4().hex[:6]}",
                task_queue=queue,
            )
        assert result.cache_keys_deleted == 1200
        assert client.exists(*keys) == 0
        assert client.get(f"tenant:{other}:session") == b"keep me"
    finally:
        client.delete(f"tenant:{other}:session", *keys)
        client.close()


async def test_the_worker_serves_prometheus_metrics(temporal_env, settings, make_tenant):
    import urllib.request

    from starter.services import free_port
    from tenancy.contracts.health import HealthInput
    from workflows.health_check import HealthCheckWorkflow

    tenant = await make_tenant(entries=100)
    queue = f"tq-metrics-{uuid.uuid4().hex[:8]}"
    port = free_port()
    worker = worker_process(temporal_env, settings, queue, extra={"TENANTS_METRICS_PORT": str(port)})
    try:
        taken = await backup(temporal_env, queue, tenant.id)
        await temporal_env.client.execute_workflow(
            HealthCheckWorkflow.run,
            HealthInput(send_alerts=False),
            id=f"health-{uuid.uuid4().hex[:6]}",
            task_queue=queue,
        )
        text = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        )
    finally:
        worker.terminate()
        worker.wait()
    lines = text.splitlines()
    assert any(line.startswith("tenants_backups_total{") and 'outcome="ok"' in line for line in lines)
    written = next(line for line in lines if line.startswith("tenants_backup_bytes_total"))
    assert float(written.rsplit(" ", 1)[1]) >= taken.size_bytes
    assert any(line.startswith("tenants_backup_age_seconds{") and tenant.id in line for line in lines)
    assert any(line.startswith("temporal_workflow_completed") for line in lines)  # the SDK's own
    # Every activity, through the worker's interceptor: attempts by outcome, and how long they took.
    assert any(
        line.startswith("tenants_activity_attempts_total{")
        and 'activity_type="dump_database"' in line
        and 'outcome="ok"' in line
        for line in lines
    )
    assert any(
        line.startswith("tenants_activity_duration") and 'activity_type="verify_backup"' in line for line in lines
    )
