"""The worker's catalog connections are pooled (worker.run_worker): a fleet run makes several catalog calls per
tenant, and opening a connection costs the server more CPU than the call itself (docs/benchmarks.md). Each call is
still its own transaction, and a connection the server dropped costs no call."""

from __future__ import annotations

import psycopg
import pytest

from activities.infra.catalog import Catalog, catalog_pool
from tenancy.settings import Settings


async def test_catalog_calls_in_the_worker_share_its_connections(settings: Settings, catalog: Catalog, make_tenant):
    tenant = await make_tenant(entries=0)
    async with catalog_pool(settings, max_size=2) as pool:
        for _ in range(20):
            assert (await catalog.get_tenant(tenant.id)).id == tenant.id
        stats = pool.get_stats()
        assert stats.get("requests_num", 0) >= 20  # every call went through the pool...
        assert stats.get("connections_num", 0) <= 2  # ...which did not open one connection per call
    assert (await catalog.get_tenant(tenant.id)).id == tenant.id  # closed with the worker: calls connect again


async def test_a_pooled_call_that_fails_leaves_nothing_behind(settings: Settings, catalog: Catalog, make_tenant):
    tenant = await make_tenant(entries=0)
    async with catalog_pool(settings, max_size=1):
        with pytest.raises(RuntimeError):
            async with catalog._connection() as conn:
                await conn.execute("UPDATE tenants SET name = 'half-done' WHERE id = %s", [tenant.id])
                raise RuntimeError("the call fails after its first statement")
        # The same (only) connection serves the next call: the failed call's change was rolled back.
        assert (await catalog.get_tenant(tenant.id)).name == tenant.name


async def test_a_connection_the_server_dropped_is_replaced(settings: Settings, catalog: Catalog, make_tenant):
    tenant = await make_tenant(entries=0)
    async with catalog_pool(settings, max_size=1) as pool:
        async with pool.connection() as conn:
            pid = conn.info.backend_pid
        with psycopg.connect(settings.effective_database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert (await catalog.get_tenant(tenant.id)).id == tenant.id
