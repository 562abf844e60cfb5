"""Placement of new tenants on several PostgreSQL servers, and the lifecycle of a tenant on the second one: its
database and roles are made, used, switched off and dropped on its own server only."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from temporalio.client import WorkflowFailureError

from activities.infra.catalog import Catalog
from activities.infra.credentials import read_credentials
from tenancy.contracts.provision import AdoptTenantInput, DeprovisionTenantInput, ProvisionTenantInput
from tenancy.contracts.tenants import StatusChange
from tenancy.errors import failure_message, failure_type
from tenancy.marks import parse_mark
from tenancy.naming import database_name
from tenancy.settings import Settings
from tests.cli import cli_environment, tenants
from tests.conftest import SECOND_SERVER
from worker import build_worker
from workflows.adopt_tenant import AdoptTenantWorkflow
from workflows.deprovision_tenant import DeprovisionTenantWorkflow
from workflows.provision_tenant import ProvisionTenantWorkflow
from workflows.tenant_status import ChangeTenantStatusWorkflow

pytestmark = pytest.mark.one_server  # both servers in every pass


@pytest.fixture
async def placed(multi_settings: Settings) -> AsyncIterator[Settings]:
    """A catalog of this test's own that knows `default` and `pg-b` (the session's two-server catalog is shared by
    other tests, whose tenants would weigh in placement), with the URLs of multi_settings."""
    own = multi_settings.model_copy(
        update={"catalog_database": f"{multi_settings.database_prefix}pc{uuid.uuid4().hex[:6]}"}
    )
    catalog = Catalog(own)
    await catalog.migrate()
    await catalog.add_server(SECOND_SERVER)
    yield own


@pytest.fixture
async def queue(temporal_env, placed: Settings) -> AsyncIterator[str]:
    name = f"tq-{uuid.uuid4().hex[:10]}"
    async with build_worker(temporal_env.client, placed, name):
        yield name


async def provision(env, queue: str, tenant_id: str, server: str | None = None):
    req = ProvisionTenantInput(
        name=f"Tenant {tenant_id}",
        tenant_id=tenant_id,
        plan="pro",
        owner_email=f"{tenant_id}@example.com",
        server=server,
    )
    return await env.client.execute_workflow(
        ProvisionTenantWorkflow.run, req, id=f"provision-{tenant_id}-{uuid.uuid4().hex[:6]}", task_queue=queue
    )


def new_id() -> str:
    return f"pl-{uuid.uuid4().hex[:8]}"


def has_database(url: str, name: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def has_role(url: str, name: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone() is not None


def log_in(settings: Settings, tenant_id: str) -> psycopg.Connection:
    """A session as the tenant's role, where its credentials file says its database is."""
    creds = read_credentials(settings.effective_secrets_dir, tenant_id)
    info = make_conninfo(
        host=creds["host"],
        port=creds["port"],
        user=creds["role"],
        password=creds["password"],
        dbname=creds["database"],
        connect_timeout=5,
    )
    return psycopg.connect(info)


async def test_a_new_tenant_goes_to_the_emptier_open_server(temporal_env, queue, placed):
    catalog = Catalog(placed)
    first, second = new_id(), new_id()
    for tenant_id in (first, second):
        result = await provision(temporal_env, queue, tenant_id, server="default")
        assert result.server == "default"

    # `default` holds two tenants, `pg-b` none: the next one goes to pg-b.
    emptier = new_id()
    assert (await provision(temporal_env, queue, emptier)).server == SECOND_SERVER
    assert await catalog.tenant_server(emptier) == SECOND_SERVER

    # pg-b draining takes no new tenant, though it is still the emptier one.
    await catalog.update_server(SECOND_SERVER, status="draining")
    last = new_id()
    assert (await provision(temporal_env, queue, last)).server == "default"
    assert await catalog.tenant_server(last) == "default"
    assert {s["name"]: s["tenants"] for s in await catalog.servers()} == {"default": 3, SECOND_SERVER: 1}


async def test_a_tenant_asked_on_pg_b_lives_logs_in_and_is_dropped_there(temporal_env, queue, placed, second_pg_url):
    tenant_id = new_id()
    env = cli_environment(temporal_env, placed, queue)
    done = await tenants(
        env, "provision", f"Tenant {tenant_id}", "--id", tenant_id, "--plan", "pro",
        "--owner", f"{tenant_id}@example.com", "--server", SECOND_SERVER,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"on server {SECOND_SERVER}" in done.stdout

    tenant = await Catalog(placed).get_tenant(tenant_id)
    assert tenant is not None and tenant.status == "active" and tenant.server == SECOND_SERVER
    default_url = placed.effective_database_url
    assert has_database(second_pg_url, tenant.database_name) and has_role(second_pg_url, tenant.role_name)
    assert not has_database(default_url, tenant.database_name) and not has_role(default_url, tenant.role_name)

    # Its credentials name pg-b, and it logs in there, to its migrated database.
    creds = read_credentials(placed.effective_secrets_dir, tenant_id)
    assert creds["server"] == SECOND_SERVER
    assert int(creds["port"]) == int(conninfo_to_dict(second_pg_url)["port"])
    with log_in(placed, tenant_id) as conn:
        assert conn.execute("SELECT count(*) FROM tenant_schema_migrations").fetchone() is not None

    # Deactivated: its role is kept out of its database on pg-b.
    await temporal_env.client.execute_workflow(
        ChangeTenantStatusWorkflow.run,
        StatusChange(tenant_id=tenant_id, status="inactive", reason="test"),
        id=f"status-{tenant_id}",
        task_queue=queue,
    )
    with pytest.raises(psycopg.OperationalError):
        log_in(placed, tenant_id).close()

    # Deprovisioned: its database and role go from pg-b.
    result = await temporal_env.client.execute_workflow(
        DeprovisionTenantWorkflow.run,
        DeprovisionTenantInput(tenant_id=tenant_id, final_backup=False),
        id=f"deprovision-{tenant_id}",
        task_queue=queue,
    )
    assert result.database_dropped and result.role_left is None
    assert not has_database(second_pg_url, tenant.database_name) and not has_role(second_pg_url, tenant.role_name)


@pytest.mark.parametrize("server", ["nope", "draining"])
async def test_a_server_that_takes_no_tenant_is_refused_in_one_line(temporal_env, queue, placed, second_pg_url, server):
    if server == "draining":
        await Catalog(placed).update_server(SECOND_SERVER, status="draining")
        server = SECOND_SERVER
    tenant_id = new_id()
    env = cli_environment(temporal_env, placed, queue)
    done = await tenants(
        env, "provision", f"Tenant {tenant_id}", "--id", tenant_id, "--plan", "pro",
        "--owner", f"{tenant_id}@example.com", "--server", server,
    )  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and server in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert await Catalog(placed).get_tenant(tenant_id) is None
    dbname = database_name(placed.database_prefix, tenant_id)
    for url in (placed.effective_database_url, second_pg_url):
        assert not has_database(url, dbname) and not has_role(url, dbname)
    if server == "nope":  # adoption names a server of the catalog too
        done = await tenants(env, "adopt", tenant_id, "--database", dbname, "--server", server)
        assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1 and "'nope'" in done.stderr
        assert await Catalog(placed).get_tenant(tenant_id) is None


async def test_the_workflow_refuses_a_server_it_cannot_use_before_creating_anything(
    temporal_env, queue, placed, second_pg_url
):
    """Past the command line (another client, or a server changed meanwhile): typed, not retried, nothing made."""
    catalog = Catalog(placed)
    await catalog.add_server("pg-c")  # in the catalog, but this worker has no URL for it
    for server, error_type, words in (
        ("nope", "InvalidInput", "no server named 'nope'"),
        ("pg-c", "ServerNotConfigured", "no URL for server 'pg-c'"),
        ("Bad_Name", "InvalidInput", "invalid server name"),
    ):
        tenant_id = new_id()
        with pytest.raises(WorkflowFailureError) as failed:
            await provision(temporal_env, queue, tenant_id, server=server)
        assert failure_type(failed.value) == error_type
        assert words in failure_message(failed.value)
        assert await catalog.get_tenant(tenant_id) is None
        dbname = database_name(placed.database_prefix, tenant_id)
        for url in (placed.effective_database_url, second_pg_url):
            assert not has_database(url, dbname) and not has_role(url, dbname)


async def test_adopt_server_names_where_the_existing_database_is(temporal_env, queue, placed, second_pg_url):
    tenant_id = new_id()
    dbname = f"{placed.database_prefix}legacy_{tenant_id.replace('-', '_')}"
    with psycopg.connect(second_pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    result = await temporal_env.client.execute_workflow(
        AdoptTenantWorkflow.run,
        AdoptTenantInput(tenant_id=tenant_id, database_name=dbname, server=SECOND_SERVER),
        id=f"adopt-{tenant_id}",
        task_queue=queue,
    )
    assert not result.mark_only
    tenant = await Catalog(placed).get_tenant(tenant_id)
    assert tenant is not None and tenant.status == "active" and tenant.server == SECOND_SERVER
    with psycopg.connect(second_pg_url) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [dbname]
        ).fetchone()
    assert row is not None
    mark = parse_mark(row[0])
    assert mark is not None and mark.is_of(tenant_id, "tenant")

    # A database on pg-b adopted without --server is looked for on `default`, where it is not: refused.
    other = new_id()
    elsewhere = f"{dbname}_b"
    with psycopg.connect(second_pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(elsewhere)))
    with pytest.raises(WorkflowFailureError) as failed:
        await temporal_env.client.execute_workflow(
            AdoptTenantWorkflow.run,
            AdoptTenantInput(tenant_id=other, database_name=elsewhere),
            id=f"adopt-{other}",
            task_queue=queue,
        )
    assert f"database {elsewhere} does not exist" in failure_message(failed.value)
    assert await Catalog(placed).get_tenant(other) is None
