"""The sweeper looks at every server: a dead run's marked leftovers on the second server are removed there, what
carries no mark is left alone, and a server that cannot be reached is reported without failing the sweep."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from activities.infra.catalog import Catalog
from activities.infra.marks import mark_database, mark_role
from activities.infra.pg import connect
from tenancy.contracts.sweep import SweepInput
from tenancy.marks import Mark
from tenancy.settings import Settings
from tests.conftest import SECOND_SERVER
from worker import build_worker
from workflows.sweep import SweepWorkflow

pytestmark = pytest.mark.one_server  # both servers in every pass

UNREACHABLE = "gone-x"


def _names(url: str, query: str, prefix: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute(query, [prefix])}


def databases(url: str, prefix: str) -> set[str]:
    return _names(url, "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", prefix)


def roles(url: str, prefix: str) -> set[str]:
    return _names(url, "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", prefix)


async def test_leftovers_on_the_second_server_are_swept_there_and_an_unreachable_server_is_reported(
    temporal_env, multi_settings: Settings, second_pg_url: str
) -> None:
    # A prefix and a catalog of this test's own (inside the session's prefix, which the session drops): the sweep
    # sees only what this test planted, and the catalog knows a third server nobody can reach.
    prefix = f"{multi_settings.database_prefix}sw{uuid.uuid4().hex[:4]}_"
    mine = multi_settings.model_copy(
        update={
            "database_prefix": prefix,
            "catalog_database": f"{multi_settings.database_prefix}swc{uuid.uuid4().hex[:6]}",
            "servers": {**multi_settings.servers, UNREACHABLE: "postgresql://someone:pw-x@127.0.0.1:1/postgres"},
        }
    )
    catalog = Catalog(mine)
    await catalog.migrate()
    await catalog.add_server(SECOND_SERVER)
    await catalog.add_server(UNREACHABLE)

    old = datetime.now(UTC) - timedelta(days=2)
    scratch, unmarked, role = f"{prefix}t1__rs_dead", f"{prefix}t2__rs_nomark", f"{prefix}gone_role"
    async with await connect(second_pg_url, autocommit=True) as admin:
        for name in (scratch, unmarked):
            await admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        # Made by a run Temporal never heard of, two days ago: gone past the stale threshold.
        await mark_database(
            admin, scratch, Mark(kind="scratch", tenant_id="t1", workflow_id=f"restore-{uuid.uuid4().hex}", at=old)
        )
        await admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        await mark_role(admin, role, Mark(kind="role", tenant_id="t-not-in-catalog", at=old))
    on_default = f"{prefix}t3__rs_dead"
    async with await connect(mine.effective_database_url, autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(on_default)))
        await mark_database(
            admin, on_default, Mark(kind="scratch", tenant_id="t3", workflow_id=f"restore-{uuid.uuid4().hex}", at=old)
        )

    queue = f"tq-{uuid.uuid4().hex[:10]}"
    async with build_worker(temporal_env.client, mine, queue):
        report = await temporal_env.client.execute_workflow(
            SweepWorkflow.run, SweepInput(stale_hours=1), id=f"sweep-srv-{uuid.uuid4().hex[:6]}", task_queue=queue
        )

    by_name = {(i.server, i.name): i for i in report.items}
    assert by_name[(SECOND_SERVER, scratch)].removed and by_name[(SECOND_SERVER, role)].removed
    assert by_name[("default", on_default)].removed
    assert not by_name[(SECOND_SERVER, unmarked)].removable
    assert databases(second_pg_url, prefix) == {unmarked}
    assert roles(second_pg_url, prefix) == set()
    assert databases(mine.effective_database_url, prefix) == set()
    gone = by_name[(UNREACHABLE, UNREACHABLE)]
    assert gone.kind == "server" and gone.error and not gone.removable
    assert "pw-x" not in gone.reason + (gone.error or "")
    assert report.failed == 1  # that server only: the sweep itself went through
