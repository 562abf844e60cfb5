"""Session-scoped real servers (Temporal dev server, PostgreSQL) and per-test workers on fresh task queues.

PostgreSQL: TENANTS_TEST_DATABASE_URL when set (the machine's server), else an embedded server started here.
Every database and role the suite creates carries a unique prefix and is dropped at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.infra.catalog import Catalog
from starter.demo import seed_tenant_data
from starter.services import EmbeddedPostgres, free_port, temporal_binary
from tenancy.contracts.tenants import Tenant
from tenancy.log import configure_logging
from tenancy.search import TENANT_ID
from tenancy.settings import Settings
from tests.cli import cli_environment
from worker import build_worker

configure_logging("WARNING")


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        search_attributes=[TENANT_ID],
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def embedded_server() -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL of the session's own (its password file beside its data folder). Its folder is not
    under pytest's: another pytest session starting resets that one to 0700, and the server (as root, run by a
    system user of its own) would lose its data folder mid-run."""
    folder = Path(tempfile.mkdtemp(prefix="tl-test-pg-"))
    server = EmbeddedPostgres(folder / "data", free_port(), durable=False)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_url(request: pytest.FixtureRequest) -> str:
    return os.environ.get("TENANTS_TEST_DATABASE_URL") or request.getfixturevalue("embedded_server").url


@pytest.fixture(scope="session")
async def settings(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Settings]:
    unique = f"tlt{uuid.uuid4().hex[:8]}"
    settings = Settings(
        _env_file=None,
        database_url=pg_url,
        catalog_database=f"{unique}_catalog",
        database_prefix=f"{unique}_",
        storage_url=str(tmp_path_factory.mktemp("backups")),
        state_dir=tmp_path_factory.mktemp("state"),
        secrets_dir=tmp_path_factory.mktemp("secrets"),
    )
    await Catalog(settings).migrate()
    yield settings
    # Leave the server as we found it: drop every database this session created.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [unique + "%"])]
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        roles = [r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", [unique + "%"])]
        for role in roles:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _drop_prefixed(url: str, prefix: str) -> None:
    """Drop every database and role whose name starts with this session's prefix on one server."""
    with psycopg.connect(url, autocommit=True) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [prefix + "%"])]
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        roles = [r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", [prefix + "%"])]
        for role in roles:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture(scope="session")
def second_pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A second PostgreSQL server for multi-server tests: the embedded 18 beside the machine's server, or a second
    embedded one when the session already runs on an embedded server."""
    if os.environ.get("TENANTS_TEST_DATABASE_URL"):
        yield request.getfixturevalue("embedded_server").url
        return
    folder = Path(tempfile.mkdtemp(prefix="tl-test-pg-"))
    server = EmbeddedPostgres(folder / "data", free_port(), durable=False)
    try:
        server.start()
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


SECOND_SERVER = "pg-b"


@pytest.fixture(scope="session")
async def multi_settings(settings: Settings, second_pg_url: str) -> AsyncIterator[Settings]:
    """Settings of a catalog of its own that knows two servers: `default` (the session's) and `pg-b` (the second
    one). Tenants the tests make here are placed, moved and exported between the two."""
    from activities.infra.servers import server_major_version

    unique = settings.database_prefix.rstrip("_")
    multi = settings.model_copy(
        update={"catalog_database": f"{unique}_mcatalog", "servers": {SECOND_SERVER: second_pg_url}}
    )
    catalog = Catalog(multi)
    await catalog.migrate()
    await catalog.update_server("default", major_version=await server_major_version(settings.effective_database_url))
    await catalog.add_server(SECOND_SERVER, major_version=await server_major_version(second_pg_url))
    yield multi
    _drop_prefixed(second_pg_url, settings.database_prefix)


@pytest.fixture
async def task_queue(temporal_env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[str]:
    """A worker with every workflow and activity, on a task queue of this test's own."""
    queue = f"tq-{uuid.uuid4().hex[:10]}"
    async with build_worker(temporal_env.client, settings, queue):
        yield queue


@pytest.fixture
def worker_with(temporal_env: WorkflowEnvironment, settings: Settings):
    """A worker on a fresh task queue whose settings differ from the session's in the given ways."""

    @contextlib.asynccontextmanager
    async def start(**changes: object) -> AsyncIterator[str]:
        queue = f"tq-{uuid.uuid4().hex[:10]}"
        async with build_worker(temporal_env.client, settings.model_copy(update=changes), queue):
            yield queue

    return start


@pytest.fixture(scope="session")
def s3_endpoint() -> AsyncIterator[str]:
    """A real S3-compatible server on loopback: moto in server mode."""
    import shutil
    import socket
    import subprocess
    import sys
    import time

    port = free_port()
    binary = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    proc = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(name, value)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            break
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


@pytest.fixture
def catalog(settings: Settings) -> Catalog:
    return Catalog(settings)


TenantFactory = Callable[..., Awaitable[Tenant]]


@pytest.fixture
async def make_tenant(catalog: Catalog, settings: Settings) -> AsyncIterator[TenantFactory]:
    created: list[str] = []

    async def make(prefix: str = "t", entries: int = 500, **kwargs: object) -> Tenant:
        tenant_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
        tenant = await catalog.create_tenant(tenant_id, f"Tenant {tenant_id}", **kwargs)  # type: ignore[arg-type]
        created.append(tenant_id)
        if entries:
            await seed_tenant_data(settings.effective_database_url, tenant.database_name, entries)
        return tenant

    yield make
    for tenant_id in created:
        await catalog.drop_tenant(tenant_id)


@pytest.fixture
def backups_of(settings: Settings) -> Callable[[str], list[Path]]:
    def files(tenant_id: str) -> list[Path]:
        folder = settings.storage_root / "tenants" / tenant_id
        return sorted(folder.iterdir()) if folder.is_dir() else []

    return files


@pytest.fixture
def cli_env(temporal_env: WorkflowEnvironment, settings: Settings, task_queue: str) -> dict[str, str]:
    """The environment of a user's shell for `tests.cli.tenants`: the session's servers, a worker on its queue."""
    return cli_environment(temporal_env, settings, task_queue)


# `make test` runs the suite once per PostgreSQL server. Tests that never reach PostgreSQL (pure logic, workflow
# logic on stand-in activities) prove nothing new on a second server: that pass runs only the ones that do.
ONLY_POSTGRES_TESTS = "TENANTS_TEST_ONLY_POSTGRES"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(ONLY_POSTGRES_TESTS) != "1":
        return

    def second_server_changes(item: pytest.Item) -> bool:
        return "pg_url" in getattr(item, "fixturenames", ()) and item.get_closest_marker("one_server") is None

    keep = [item for item in items if second_server_changes(item)]
    dropped = [item for item in items if not second_server_changes(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
