"""A tenant's data on the servers it left: deprovisioning or erasing a moved tenant removes the database its move
kept on the old server and its roles there (and ends the catalog's kept rows); a server that holds such a copy and
cannot be reached stops the deprovisioning, named; and `tenants servers remove` refuses a server that still holds
kept databases, or while a move is under way."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.deprovision import DeprovisionActivities
from activities.infra.catalog import Catalog
from activities.infra.pg import connect
from tenancy.contracts.erasure import EraseTenantInput, EraseTenantResult
from tenancy.contracts.move import MoveTenantInput, MoveTenantResult
from tenancy.contracts.provision import DeprovisionTenantInput, DeprovisionTenantResult
from tenancy.errors import SERVER_NOT_CONFIGURED
from tenancy.messages.provision import TenantDatabase
from tenancy.naming import database_name, previous_database_name
from tenancy.restore_roles import owner_role_names
from tenancy.search import tenant_attributes
from tenancy.settings import Settings
from tests.cli import tenants
from tests.conftest import SECOND_SERVER
from tests.test_move import provision
from worker import build_worker
from workflows.deprovision_tenant import DeprovisionTenantWorkflow
from workflows.erase_tenant import EraseTenantWorkflow
from workflows.move_tenant import MoveTenantWorkflow

pytestmark = pytest.mark.one_server  # both servers in every pass


def _databases(url: str, stem: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", [stem]).fetchall()
    return sorted(r[0] for r in rows)


def _roles(url: str, names: list[str]) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", [names]).fetchall()
    return sorted(r[0] for r in rows)


@pytest.mark.parametrize("how", ["deprovision", "erase"])
async def test_a_moved_tenant_leaves_nothing_on_either_server(
    how: str, temporal_env, multi_settings: Settings, second_pg_url: str
) -> None:
    source_url = multi_settings.effective_database_url
    catalog = Catalog(multi_settings)
    queue = f"tq-{uuid.uuid4().hex[:10]}"
    async with build_worker(temporal_env.client, multi_settings, queue):
        tenant = await provision(temporal_env, queue, multi_settings, prefix="sl")
        assert tenant.role_name
        moved: MoveTenantResult = await temporal_env.client.execute_workflow(
            MoveTenantWorkflow.run,
            MoveTenantInput(tenant_id=tenant.id, target=SECOND_SERVER),  # the source kept 24 h, the default
            id=f"move-{tenant.id}-{uuid.uuid4().hex[:6]}",
            task_queue=queue,
            search_attributes=tenant_attributes(tenant.id),
        )
        # What the move left on `default`: the set-aside database (recorded as kept there) and the tenant's roles.
        assert moved.source_kept_as and moved.source_kept_until
        assert _databases(source_url, tenant.database_name) == [moved.source_kept_as]
        kept = await catalog.kept_databases(tenant.id)
        assert [(r["name"], r["server"]) for r in kept] == [(moved.source_kept_as, "default")]
        roles = [tenant.role_name, *owner_role_names(tenant.database_name)[1:]]
        assert tenant.role_name in _roles(source_url, roles)
        assert _roles(second_pg_url, roles) == sorted(roles)

        if how == "deprovision":
            done: DeprovisionTenantResult = await temporal_env.client.execute_workflow(
                DeprovisionTenantWorkflow.run,
                DeprovisionTenantInput(tenant_id=tenant.id, final_backup=False),
                id=f"deprovision-{tenant.id}",
                task_queue=queue,
            )
            assert done.database_dropped and done.role_left is None
            leftovers = done.leftover_databases
        else:
            erased: EraseTenantResult = await temporal_env.client.execute_workflow(
                EraseTenantWorkflow.run,
                EraseTenantInput(tenant_id=tenant.id),
                id=f"erase-{tenant.id}",
                task_queue=queue,
            )
            assert erased.deprovisioned and erased.database_dropped and erased.role_left is None
            leftovers = erased.leftover_databases

    assert leftovers == [f"{moved.source_kept_as} (server default)"]
    # Nothing of the tenant's on either server: no database of its name or a copy's, no login or owner role.
    for url in (source_url, second_pg_url):
        assert _databases(url, tenant.database_name) == []
        assert _roles(url, roles) == []
    assert await catalog.kept_databases(tenant.id) == []
    row = await catalog.kept_database(moved.source_kept_as)
    assert row is not None and row["ended_how"] == "dropped by deprovisioning"
    after = await catalog.get_tenant(tenant.id)
    assert after is not None and after.status == "deprovisioned"


async def test_a_server_holding_a_kept_copy_must_be_reachable_to_deprovision(
    multi_settings: Settings, second_pg_url: str
) -> None:
    """Before anything is dropped: a server of a kept copy this worker cannot reach fails the attempt (retried), one
    it has no URL for fails the run; both name the server. The catalog alone is enough to show it."""
    catalog = Catalog(multi_settings)
    tenant_id = f"sl-{uuid.uuid4().hex[:8]}"
    await catalog.create_tenant(tenant_id, f"Tenant {tenant_id}", create_database=False)
    tenant = await catalog.get_tenant(tenant_id)
    assert tenant is not None
    aside = previous_database_name(tenant.database_name, "abc123")
    until = datetime.now(UTC) + timedelta(hours=24)
    await catalog.record_kept_database(
        aside, tenant_id, tenant.database_name, f"move-{tenant_id}", None, until, SECOND_SERVER
    )
    db = TenantDatabase(tenant_id=tenant_id, database_name=tenant.database_name, role_name=tenant.database_name)

    down = multi_settings.model_copy(update={"servers": {SECOND_SERVER: "postgresql://postgres@127.0.0.1:1/postgres"}})
    with pytest.raises(ApplicationError) as unreachable:
        await ActivityEnvironment().run(DeprovisionActivities(down).check_before_deprovisioning, db)
    assert not unreachable.value.non_retryable
    assert f"kept on server {SECOND_SERVER!r} ({aside}, until" in unreachable.value.message
    assert "cannot be reached" in unreachable.value.message

    unknown = multi_settings.model_copy(update={"servers": {}, "servers_file": Path("/nonexistent/servers.json")})
    with pytest.raises(ApplicationError) as unconfigured:
        await ActivityEnvironment().run(DeprovisionActivities(unknown).check_before_deprovisioning, db)
    assert unconfigured.value.non_retryable and unconfigured.value.type == SERVER_NOT_CONFIGURED
    assert f"kept on server {SECOND_SERVER!r}" in unconfigured.value.message
    assert "nothing was dropped" in unconfigured.value.message
    assert [r["name"] for r in await catalog.kept_databases(tenant_id)] == [aside]  # nothing ended
    await catalog.end_kept_database(aside, "test done")


@pytest.fixture
async def own(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[Settings, dict[str, str]]]:
    """A fresh catalog (only `default`) and a user's shell environment for it (tests/test_servers_cli.py's)."""
    mine = settings.model_copy(
        update={
            "catalog_database": f"{settings.database_prefix}sl{uuid.uuid4().hex[:6]}",
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


async def test_a_server_with_kept_databases_or_during_a_move_is_not_removed(own, second_pg_url: str) -> None:
    mine, env = own
    catalog = Catalog(mine)
    name = f"x{uuid.uuid4().hex[:6]}"
    assert (await tenants(env, "servers", "add", name, second_pg_url)).returncode == 0
    # A tenant that moved from `name` to `default`: the catalog as the move leaves it, its source kept on `name`.
    tenant_id = f"sl-{uuid.uuid4().hex[:8]}"
    await catalog.create_tenant(tenant_id, f"Tenant {tenant_id}", create_database=False)
    dbname = database_name(mine.database_prefix, tenant_id)
    aside = previous_database_name(dbname, "k1")
    until = datetime(2030, 1, 2, 3, 4, tzinfo=UTC)
    await catalog.record_kept_database(aside, tenant_id, dbname, f"move-{tenant_id}", None, until, name)

    refused = _one_error_line(await tenants(env, "servers", "remove", name))
    assert f"server {name!r} still holds 1 kept database(s) of tenant(s) {tenant_id}" in refused
    assert "2030-01-02 03:04 UTC" in refused and "tenants move ID --undo" in refused
    assert await catalog.server(name) is not None  # still there, and its URL too

    # Dropped (by its timer, or a deprovisioning): nothing kept there any more; a move under way still stops it.
    assert await catalog.end_kept_database(aside, "dropped")
    async with await connect(mine.effective_database_url, mine.catalog_database, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO tenant_locks (tenant_id, operation, workflow_id, run_id, namespace, lease_until) "
            "VALUES (%s, 'move', %s, 'r', 'default', now() + interval '1 hour')",
            [tenant_id, f"move-{tenant_id}"],
        )
    refused = _one_error_line(await tenants(env, "servers", "remove", name))
    assert f"a move is under way (tenant(s) {tenant_id})" in refused
    assert await catalog.server(name) is not None

    async with await connect(mine.effective_database_url, mine.catalog_database, autocommit=True) as conn:
        await conn.execute("DELETE FROM tenant_locks WHERE tenant_id = %s", [tenant_id])
    removed = await tenants(env, "servers", "remove", name)
    assert removed.returncode == 0, removed.stderr
    assert await catalog.server(name) is None


async def test_a_drop_timer_of_a_copy_already_ended_does_nothing_even_when_its_server_is_gone(
    multi_settings: Settings,
) -> None:
    """A move's kept source, dropped by deprovisioning (its row ended), and then its server removed: the pending
    24 h timer fires, finds the row ended, and succeeds without looking for a server this worker no longer knows."""
    from activities.restore import RestoreActivities
    from tenancy.messages.restore import PreviousDatabase

    catalog = Catalog(multi_settings)
    tenant_id = f"gone-{uuid.uuid4().hex[:6]}"
    db = database_name(multi_settings.database_prefix, tenant_id)
    aside = previous_database_name(db, uuid.uuid4().hex[:10])
    await catalog.record_kept_database(
        aside, tenant_id, db, "move-x", None, datetime.now(UTC) + timedelta(hours=24), server="old-server"
    )
    await catalog.end_kept_database(aside, "dropped by deprovisioning")
    dropped = await ActivityEnvironment().run(
        RestoreActivities(multi_settings).drop_previous_database,
        PreviousDatabase(tenant_id=tenant_id, database_name=db, previous_name=aside),
    )
    assert dropped is False


async def test_a_lost_server_is_removed_with_its_kept_copies_abandoned_and_the_tenant_deprovisions(
    own, temporal_env, second_pg_url: str
) -> None:
    """A server that died for good, with a move's kept source on it: it blocks the tenant's deprovisioning (its
    message names the way out) and its plain removal; `servers remove NAME --lost --yes` ends the kept row ('server
    lost'), forgets the server and its URL, audits what was abandoned; the tenant then deprovisions."""
    from activities.infra.servers import read_servers_file, write_server_url
    from starter.servers_cmd import SERVER_REMOVE

    mine, env = own
    catalog = Catalog(mine)
    name = f"x{uuid.uuid4().hex[:6]}"
    assert (await tenants(env, "servers", "add", name, second_pg_url)).returncode == 0
    write_server_url(mine.effective_servers_file, name, "postgresql://postgres@127.0.0.1:1/postgres")  # dead
    tenant_id = f"sl-{uuid.uuid4().hex[:8]}"
    tenant = await catalog.create_tenant(tenant_id, f"Tenant {tenant_id}", create_database=False)
    aside = previous_database_name(tenant.database_name, "lost1")
    until = datetime.now(UTC) + timedelta(hours=24)
    await catalog.record_kept_database(aside, tenant_id, tenant.database_name, f"move-{tenant_id}", None, until, name)

    db = TenantDatabase(tenant_id=tenant_id, database_name=tenant.database_name, role_name=tenant.database_name)
    with pytest.raises(ApplicationError) as blocked:
        await ActivityEnvironment().run(DeprovisionActivities(mine).check_before_deprovisioning, db)
    assert "cannot be reached" in blocked.value.message and "(retried)" not in blocked.value.message
    assert f"`tenants servers remove {name} --lost`" in blocked.value.message

    refused = _one_error_line(await tenants(env, "servers", "remove", name))
    assert f"server {name!r} still holds 1 kept database(s)" in refused and "--lost" in refused
    # A live tenant on it is not abandoned, even with --lost; nothing is asked, nothing changes.
    assert await catalog.switch_tenant_server(tenant_id, "default", name)
    refused = _one_error_line(await tenants(env, "servers", "remove", name, "--lost", "--yes"))
    assert f"server {name!r} still holds 1 tenant(s) not deprovisioned" in refused
    assert await catalog.switch_tenant_server(tenant_id, name, "default")
    # Not on a terminal, without --yes: refused, not removed.
    unconfirmed = _one_error_line(await tenants(env, "servers", "remove", name, "--lost"))
    assert "pass --yes" in unconfirmed
    assert await catalog.server(name) is not None
    assert [r["name"] for r in await catalog.kept_databases(tenant_id)] == [aside]

    removed = await tenants(env, "servers", "remove", name, "--lost", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert f"server {name}: removed from the catalog and from {mine.effective_servers_file}" in removed.stdout
    assert f"abandoned 1 kept database(s): {aside} (tenant {tenant_id})" in removed.stdout
    assert "may still exist on that machine if it ever comes back" in removed.stdout
    assert await catalog.server(name) is None
    assert name not in read_servers_file(mine.effective_servers_file)
    row = await catalog.kept_database(aside)
    assert row is not None and row["ended_at"] is not None and row["ended_how"] == "server lost"
    entries = [e for e in await catalog.audit_entries(action_prefix=SERVER_REMOVE) if e["detail"]["server"] == name]
    assert [e["detail"] for e in entries] == [{"server": name, "lost": True, "kept_copies_abandoned": [aside]}]

    queue = f"tq-{uuid.uuid4().hex[:10]}"
    async with build_worker(temporal_env.client, mine, queue):
        done: DeprovisionTenantResult = await temporal_env.client.execute_workflow(
            DeprovisionTenantWorkflow.run,
            DeprovisionTenantInput(tenant_id=tenant_id, final_backup=False),
            id=f"deprovision-{tenant_id}",
            task_queue=queue,
        )
    assert done.leftover_databases == []
    after = await catalog.get_tenant(tenant_id)
    assert after is not None and after.status == "deprovisioned"
