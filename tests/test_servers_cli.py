"""`tenants servers` as a user runs it (a real process), on a catalog of the test's own: add a second server (its URL
kept 0600, never shown), list what each server holds, drain and reopen it, change its limits, refuse to remove it
while it holds tenants; maintenance and health of a tenant on the second server act on that server; migrating
every tenant brings the template up to date on every server."""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from activities.infra.catalog import Catalog
from activities.infra.marks import mark_database
from activities.infra.pg import connect
from activities.infra.servers import server_major_version
from starter.demo import seed_tenant_data
from tenancy.contracts.fleet import FleetInput
from tenancy.contracts.health import HealthInput
from tenancy.contracts.maintenance import MaintainTenantInput
from tenancy.contracts.tenants import Tenant
from tenancy.marks import Mark
from tenancy.naming import database_name
from tenancy.search import tenant_attributes
from tenancy.settings import Settings, redact_url
from tests.cli import tenants
from tests.conftest import SECOND_SERVER
from worker import build_worker
from workflows.health_check import HealthCheckWorkflow
from workflows.maintain_tenant import MaintainTenantWorkflow
from workflows.migrate import MigrateAllTenantsWorkflow

pytestmark = pytest.mark.one_server  # both servers in every pass


def _size(url: str, dbname: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_database_size(%s)", [dbname]).fetchone()
    assert row is not None
    return int(row[0])


async def _tenant_on(settings: Settings, server: str, url: str, entries: int) -> Tenant:
    """A tenant of `settings`' catalog whose database (marked, with sample data) is on `server` at `url`."""
    catalog = Catalog(settings)
    tenant_id = f"sc-{uuid.uuid4().hex[:8]}"
    dbname = database_name(settings.database_prefix, tenant_id)
    async with await connect(url, autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        await mark_database(admin, dbname, Mark(kind="tenant", tenant_id=tenant_id, at=datetime.now(UTC)))
    await catalog.create_tenant(tenant_id, f"Tenant {tenant_id}", create_database=False)
    if server != "default":
        assert await catalog.switch_tenant_server(tenant_id, "default", server)
    await seed_tenant_data(url, dbname, entries)
    tenant = await catalog.get_tenant(tenant_id)
    assert tenant is not None and tenant.server == server
    return tenant


@pytest.fixture
async def own(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[Settings, dict[str, str]]]:
    """Settings of a fresh catalog (only `default` in it) and its servers file, and the environment of a user's
    shell for them. No Temporal: the servers commands do not start runs."""
    mine = settings.model_copy(
        update={
            "catalog_database": f"{settings.database_prefix}sc{uuid.uuid4().hex[:6]}",
            "servers_file": tmp_path / "secrets" / "servers.json",
            "servers": {},
        }
    )
    await Catalog(mine).migrate()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTS_")}
    env.update(
        TENANTS_DATABASE_URL=mine.effective_database_url,
        TENANTS_CATALOG_DATABASE=mine.catalog_database,
        TENANTS_DATABASE_PREFIX=mine.database_prefix,
        TENANTS_SECRETS_DIR=str(tmp_path / "secrets"),
        TENANTS_SERVERS_FILE=str(mine.servers_file),
        TENANTS_STATE_DIR=str(tmp_path / "state"),
        TENANTS_STORAGE_URL=f"file://{tmp_path / 'backups'}",
    )
    yield mine, env


def _one_error_line(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


async def test_a_server_is_added_listed_drained_limited_and_removed_only_once_empty(own, second_pg_url: str) -> None:
    mine, env = own
    catalog = Catalog(mine)
    name = f"x{uuid.uuid4().hex[:6]}"
    password = urlparse(second_pg_url).password

    added = await tenants(env, "servers", "add", name, second_pg_url, "--max-tenants", "3", "--max-size-gb", "2")
    assert added.returncode == 0, added.stderr
    if password:
        assert password not in added.stdout + added.stderr
    servers_file = Path(env["TENANTS_SERVERS_FILE"])
    assert json.loads(servers_file.read_text()) == {name: second_pg_url}
    assert stat.S_IMODE(servers_file.stat().st_mode) == 0o600
    row = await catalog.server(name)
    assert row is not None and row["status"] == "open"
    assert row["major_version"] == await server_major_version(second_pg_url)
    assert row["address"] == redact_url(second_pg_url) and (not password or password not in row["address"])
    assert (row["max_tenants"], row["max_size_mb"]) == (3, 2048)

    on_default = await _tenant_on(mine, "default", mine.effective_database_url, entries=200)
    on_new = [await _tenant_on(mine, name, second_pg_url, entries=e) for e in (200, 3000)]

    listed = await tenants(env, "servers", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {"default", name}
    new_size = sum(_size(second_pg_url, t.database_name) for t in on_new)
    assert rows[name]["tenants"] == 2 and rows[name]["size_bytes"] == new_size
    assert rows[name]["free_tenants"] == 1 and rows[name]["free_bytes"] == 2048 * 2**20 - new_size
    assert rows[name]["reachable"] is True and rows[name]["major_version"] == row["major_version"]
    assert rows["default"]["tenants"] == 1
    assert rows["default"]["size_bytes"] == _size(mine.effective_database_url, on_default.database_name)
    if password:
        assert password not in listed.stdout

    table = await tenants(env, "servers", "list")
    assert table.returncode == 0 and name in table.stdout and "1 of 3 tenants" in table.stdout

    shown = await tenants(env, "show", on_new[1].id)
    assert shown.returncode == 0, shown.stderr
    assert f"server     {name}" in shown.stdout
    assert "none" not in next(line for line in shown.stdout.splitlines() if line.startswith("database"))

    assert (await tenants(env, "servers", "drain", name)).returncode == 0
    assert (await catalog.server(name))["status"] == "draining"  # type: ignore[index]
    assert (await tenants(env, "servers", "open", name)).returncode == 0
    assert (await catalog.server(name))["status"] == "open"  # type: ignore[index]
    assert (await tenants(env, "servers", "set", name, "--max-tenants", "5")).returncode == 0
    assert (await catalog.server(name))["max_tenants"] == 5  # type: ignore[index]

    refused = _one_error_line(await tenants(env, "servers", "remove", name))
    assert "holds 2 tenant" in refused
    assert await catalog.server(name) is not None and name in json.loads(servers_file.read_text())

    async with await connect(second_pg_url, autocommit=True) as admin:
        for tenant in on_new:
            await admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(tenant.database_name)))
    async with await connect(mine.effective_database_url, mine.catalog_database, autocommit=True) as conn:
        await conn.execute("UPDATE tenants SET status = 'deprovisioned' WHERE server = %s", [name])
    removed = await tenants(env, "servers", "remove", name)
    assert removed.returncode == 0, removed.stderr
    assert await catalog.server(name) is None
    assert name not in json.loads(servers_file.read_text())


async def test_bad_input_is_one_line_and_records_nothing(own) -> None:
    mine, env = own
    catalog = Catalog(mine)
    name = f"x{uuid.uuid4().hex[:6]}"
    assert "no server named 'nosuch'" in _one_error_line(await tenants(env, "servers", "drain", "nosuch"))
    assert "no server named 'nosuch'" in _one_error_line(await tenants(env, "servers", "remove", "nosuch"))
    assert "invalid server name" in _one_error_line(await tenants(env, "servers", "add", "Bad_Name", "postgresql://x"))
    assert "cannot be removed" in _one_error_line(await tenants(env, "servers", "remove", "default"))
    assert "TENANTS_DATABASE_URL" in _one_error_line(
        await tenants(env, "servers", "add", "default", mine.effective_database_url)
    )
    assert "at least 1" in _one_error_line(await tenants(env, "servers", "set", "default", "--max-tenants", "0"))
    # Nothing listens on port 1: refused, with the password kept out of the message.
    unreachable = "postgresql://someone:s3cret-pw@127.0.0.1:1/postgres"
    said = _one_error_line(await tenants(env, "servers", "add", name, unreachable))
    assert "cannot connect" in said and "s3cret-pw" not in said
    # The default server again, under another name: it would be counted and swept twice.
    assert "already" in _one_error_line(await tenants(env, "servers", "add", name, mine.effective_database_url))
    assert await catalog.server(name) is None
    assert not Path(env["TENANTS_SERVERS_FILE"]).exists()
    assert [s["name"] for s in await catalog.servers()] == ["default"]


async def test_maintenance_and_health_of_a_tenant_on_the_second_server_act_on_that_server(
    temporal_env, multi_settings: Settings, second_pg_url: str
) -> None:
    tenant = await _tenant_on(multi_settings, SECOND_SERVER, second_pg_url, entries=2000)
    with psycopg.connect(make_conninfo(second_pg_url, dbname=tenant.database_name), autocommit=True) as conn:
        conn.execute("UPDATE activity_log SET happened_at = now() - interval '400 days' WHERE id <= 50")
        conn.execute("UPDATE time_entries SET created_at = now() - interval '400 days' WHERE id <= 700")
    queue = f"tq-{uuid.uuid4().hex[:10]}"
    async with build_worker(temporal_env.client, multi_settings, queue):
        result = await temporal_env.client.execute_workflow(
            MaintainTenantWorkflow.run,
            MaintainTenantInput(tenant_id=tenant.id, tasks=["cleanup", "vacuum"], days=180),
            id=f"sc-maint-{tenant.id}",
            task_queue=queue,
            search_attributes=tenant_attributes(tenant.id),
        )
        report = await temporal_env.client.execute_workflow(
            HealthCheckWorkflow.run,
            HealthInput(send_alerts=False),
            id=f"sc-health-{uuid.uuid4().hex[:6]}",
            task_queue=queue,
        )
    assert result.ok, result
    assert result.tasks[0].detail["rows_deleted"] == {"activity_log": 50, "time_entries": 700}
    with psycopg.connect(make_conninfo(second_pg_url, dbname=tenant.database_name)) as conn:
        left = conn.execute("SELECT count(*) FROM time_entries WHERE created_at < now() - interval '180 days'")
        assert left.fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM time_entries").fetchone() == (1300,)
    assert result.size_before > 0 and result.size_after > 0
    row = next(r for r in report.tenants if r.tenant_id == tenant.id)
    assert row.server == SECOND_SERVER
    # The size is the database's on pg-b (no database of that name exists on the default server).
    assert row.database_bytes is not None
    assert abs(row.database_bytes - _size(second_pg_url, tenant.database_name)) < 2**20
    assert not any(a.kind == "server_unreachable" for a in report.alerts)


async def test_migrating_every_tenant_refreshes_the_template_on_every_server_one_down_or_not(
    temporal_env, multi_settings: Settings, second_pg_url: str
) -> None:
    # A prefix (so a template name) and a catalog of this test's own, which knows a server nobody can reach.
    prefix = f"{multi_settings.database_prefix}mt{uuid.uuid4().hex[:4]}_"
    mine = multi_settings.model_copy(
        update={
            "database_prefix": prefix,
            "catalog_database": f"{multi_settings.database_prefix}mtc{uuid.uuid4().hex[:6]}",
            "servers": {**multi_settings.servers, "gone-x": "postgresql://someone:pw@127.0.0.1:1/postgres"},
        }
    )
    catalog = Catalog(mine)
    await catalog.migrate()
    await catalog.add_server(SECOND_SERVER)
    await catalog.add_server("gone-x")
    await catalog.add_server("no-url-here")
    template = mine.template_database
    queue = f"tq-{uuid.uuid4().hex[:10]}"
    async with build_worker(temporal_env.client, mine, queue):
        result = await temporal_env.client.execute_workflow(
            MigrateAllTenantsWorkflow.run, FleetInput(), id=f"sc-migrate-{uuid.uuid4().hex[:6]}", task_queue=queue
        )
    assert result.failed == 0
    for url in (mine.effective_database_url, second_pg_url):
        with psycopg.connect(make_conninfo(url, dbname=template)) as conn:
            applied = conn.execute("SELECT count(*) FROM tenant_schema_migrations").fetchone()
        assert applied is not None and applied[0] >= 1
