"""Restores run as the tenant, not as the admin: a backup whose contents run code while they are restored (a CHECK
constraint calling a function, evaluated as pg_restore loads the rows) gets the tenant role's rights only, so it
cannot run programs on the server or make a role a superuser; the restore fails and the tenant is unchanged.
Checks of the restored copy run as the tenant role too, read-only, one statement each. Real workflows, on both
servers."""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from temporalio.client import WorkflowFailureError
from temporalio.testing import ActivityEnvironment

from activities.sweep import SweepActivities
from starter.demo import table_fingerprint
from tenancy.checks import validate_check
from tenancy.contracts.backup import DrillInput
from tenancy.contracts.sweep import SweepInput
from tenancy.contracts.tenants import Tenant
from tenancy.errors import InvalidInput, failure_message, failure_type
from tenancy.marks import Mark, parse_mark
from tenancy.restore_roles import RestoreOwner, RoleFacts, choose_restore_owner, owner_role_name, owner_role_names
from tests.test_restore_workflow import backup, databases_like, restore
from workflows.drill import BackupDrillWorkflow

PASSWORD = "tenant-secret"


def admin(settings) -> psycopg.Connection:
    return psycopg.connect(settings.effective_database_url, autocommit=True)


def in_database(settings, dbname: str, **params: str) -> psycopg.Connection:
    info = psycopg.conninfo.make_conninfo(settings.effective_database_url, dbname=dbname, **params)
    return psycopg.connect(info, autocommit=True)


async def tenant_with_role(make_tenant, catalog, settings, entries: int = 100) -> Tenant:
    """A tenant as provisioning leaves it: a login role of its own with the privileges the app needs."""
    tenant = await make_tenant("lp", entries=entries)
    role, database = sql.Identifier(tenant.database_name), sql.Identifier(tenant.database_name)
    with admin(settings) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(PASSWORD)))
        mark = Mark(kind="role", tenant_id=tenant.id, at=datetime.now(UTC))
        conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(role, sql.Literal(mark.comment())))
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
        conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(database, role))
    with in_database(settings, tenant.database_name) as conn:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(role))
        conn.execute(sql.SQL("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {}").format(role))
    async with await catalog._connect() as conn:
        await conn.execute("UPDATE tenants SET role_name = %s WHERE id = %s", [tenant.database_name, tenant.id])
        await conn.commit()
    return tenant.model_copy(update={"role_name": tenant.database_name})


@pytest.fixture
def marker_folder() -> Iterator[Path]:
    """A folder the database server's own system user may write to (COPY ... TO PROGRAM runs as that user)."""
    folder = Path(tempfile.mkdtemp(prefix="restore-marker-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def plant_code_that_runs_at_restore(settings, tenant: Tenant, body: str) -> None:
    """A function that does `body` only outside the tenant's own database (in a restore's scratch copy), called
    by a CHECK constraint: pg_restore creates the constraint before it loads the rows, so loading runs it."""
    with in_database(settings, tenant.database_name) as conn:
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION public.evil(a int) RETURNS bool LANGUAGE plpgsql AS $f$ BEGIN "
                "IF current_database() <> {} THEN EXECUTE {}; END IF; RETURN true; END $f$"
            ).format(sql.Literal(tenant.database_name), sql.Literal(body))
        )
        conn.execute("CREATE TABLE public.t (a int CHECK (public.evil(a)))")
        conn.execute("INSERT INTO public.t VALUES (1), (2)")


def restore_leftovers(settings, tenant: Tenant) -> tuple[list[str], list[str]]:
    """Scratch copies and the short-lived roles restores log in as (both named `<database>__rs_<token>`)."""
    pattern = tenant.database_name + "\\_\\_rs\\_%"
    with admin(settings) as conn:
        roles = [r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", [pattern])]
    return databases_like(settings.effective_database_url, pattern), roles


def is_superuser(settings, role: str) -> bool:
    with admin(settings) as conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [role]).fetchone()
    return bool(row and row[0])


def rows_of_t(settings, tenant: Tenant) -> list[tuple]:
    with in_database(settings, tenant.database_name) as conn:
        return conn.execute("SELECT a FROM public.t ORDER BY a").fetchall()


@pytest.mark.parametrize(
    ("attack", "refusal"),
    [  # the server's words: "must be superuser …" on 15, "permission denied …" on 16 and later
        ("copy-to-program", "to COPY to or from an external program"),
        ("alter-role-superuser", "superuser roles|permission denied to alter role"),
    ],
)
async def test_a_backup_that_runs_code_while_restored_fails_and_leaves_the_tenant_unchanged(
    temporal_env, task_queue, settings, make_tenant, catalog, marker_folder, attack, refusal
):
    tenant = await tenant_with_role(make_tenant, catalog, settings)
    marker = marker_folder / "restored-as-superuser"
    body = {
        "copy-to-program": f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
        "alter-role-superuser": f'ALTER ROLE "{tenant.role_name}" SUPERUSER',
    }[attack]
    plant_code_that_runs_at_restore(settings, tenant, body)
    await backup(temporal_env, task_queue, tenant.id)  # a genuine backup of what the tenant's database holds
    url = settings.effective_database_url
    before = await table_fingerprint(url, tenant.database_name)

    with pytest.raises(WorkflowFailureError) as caught:
        await restore(temporal_env, task_queue, tenant.id, keep_previous_seconds=0)

    assert failure_type(caught.value) == "RestoreFailed"
    assert re.search(refusal, failure_message(caught.value))
    assert "restores run as the tenant's role" in failure_message(caught.value)
    assert not marker.exists()
    assert not is_superuser(settings, tenant.role_name)
    assert await table_fingerprint(url, tenant.database_name) == before
    assert rows_of_t(settings, tenant) == [(1,), (2,)]
    assert restore_leftovers(settings, tenant) == ([], [])
    assert await catalog.lock_holder(tenant.id) is None


async def test_restored_objects_belong_to_a_nologin_owner_and_the_tenant_role_reads_and_writes_them(
    temporal_env, task_queue, settings, make_tenant, catalog
):
    """The tenant's login role owns nothing of the restored copy (an owner could put a trigger on the migration
    ledger, which the admin's next migration would run): a NOLOGIN role of the tenant's does, and the login role
    gets what provisioning gives it."""
    tenant = await tenant_with_role(make_tenant, catalog, settings)
    owner = owner_role_name(tenant.database_name, tenant.role_name)
    assert owner == f"{tenant.database_name}_owner"
    url = settings.effective_database_url
    with in_database(settings, tenant.database_name) as conn:
        conn.execute("SELECT setval('projects_id_seq', 5000)")
    taken = await backup(temporal_env, task_queue, tenant.id)
    expected = await table_fingerprint(url, tenant.database_name)

    result = await restore(
        temporal_env,
        task_queue,
        tenant.id,
        keep_previous_seconds=0,
        checks=[
            f"SELECT current_user = '{owner}'",
            "SELECT NOT rolsuper FROM pg_roles WHERE rolname = session_user",
            "SELECT count(*) > 0 FROM projects",
        ],
    )

    assert result.row_counts == taken.row_counts
    assert await table_fingerprint(url, tenant.database_name) == expected
    with in_database(settings, tenant.database_name) as conn:
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c "
            "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'S', 'i')"
        ).fetchall()
        login, members, comment = conn.execute(
            "SELECT r.rolcanlogin, ARRAY(SELECT m.rolname FROM pg_roles m WHERE m.oid <> r.oid AND NOT m.rolsuper "
            "AND pg_has_role(m.oid, r.oid, 'MEMBER')), shobj_description(r.oid, 'pg_authid') "
            "FROM pg_roles r WHERE r.rolname = %s",
            [owner],
        ).fetchone()
        owned_by_tenant_role = conn.execute(
            "SELECT count(*) FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname = current_database() AND s.deptype = 'o' "
            "AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s)",
            [tenant.role_name],
        ).fetchone()[0]
    assert owners == [(owner,)]
    assert not login and members == [] and parse_mark(comment).is_of(tenant.id, "role")
    assert owned_by_tenant_role == 0
    # The app logs in as its role with its stored password and reads and writes; sequences go on from where they
    # were. It may not put a trigger on a restored table (the migration ledger included).
    with in_database(settings, tenant.database_name, user=tenant.role_name, password=PASSWORD) as conn:
        new_id = conn.execute("INSERT INTO projects (name) VALUES ('after the restore') RETURNING id").fetchone()[0]
        assert new_id == 5001
        conn.execute("UPDATE time_entries SET minutes = minutes + 1 WHERE id = 1")
        assert conn.execute("SELECT count(*) FROM projects").fetchone()[0] > 0
        conn.execute("CREATE FUNCTION pg_temp.f() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN RETURN NULL; END $f$")
        for table in ("projects", "tenant_schema_migrations"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"CREATE TRIGGER t BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION pg_temp.f()")
    assert restore_leftovers(settings, tenant) == ([], [])


@pytest.mark.parametrize(
    ("check", "error_type", "said"),
    [
        ("SELECT true; COMMIT", "InvalidInput", "one statement"),
        ("SELECT pg_read_file('PG_VERSION') IS NOT NULL", "RestoreVerificationFailed", "permission denied"),
        ("SELECT nextval('projects_id_seq') > 0", "RestoreVerificationFailed", "read-only transaction"),
    ],
    ids=["two-statements", "superuser-only", "writes"],
)
async def test_a_check_that_is_not_one_read_only_statement_of_the_tenant_fails_the_restore(
    temporal_env, task_queue, settings, make_tenant, catalog, check, error_type, said
):
    tenant = await tenant_with_role(make_tenant, catalog, settings, entries=50)
    url = settings.effective_database_url
    await backup(temporal_env, task_queue, tenant.id)
    with in_database(settings, tenant.database_name) as conn:
        conn.execute("DELETE FROM activity_log")  # a change the failed restore must not undo
    before = await table_fingerprint(url, tenant.database_name)

    with pytest.raises(WorkflowFailureError) as caught:
        await restore(temporal_env, task_queue, tenant.id, checks=[check])

    assert failure_type(caught.value) == error_type
    assert said in failure_message(caught.value) and check in failure_message(caught.value)
    assert await table_fingerprint(url, tenant.database_name) == before
    assert restore_leftovers(settings, tenant) == ([], [])


async def test_drill_checks_are_single_statements_by_protocol_and_time_limited(
    temporal_env, worker_with, settings, make_tenant, catalog
):
    """The drill's checks reach the server unvalidated: one statement each is what the protocol allows."""
    tenant = await tenant_with_role(make_tenant, catalog, settings, entries=50)
    async with worker_with(check_timeout_seconds=1) as queue:
        taken = await backup(temporal_env, queue, tenant.id)

        async def drill(*checks: str):
            return await temporal_env.client.execute_workflow(
                BackupDrillWorkflow.run,
                DrillInput(tenant_id=tenant.id, backup_name=taken.backup_name, checks=list(checks)),
                id=f"drill-{tenant.id}-{uuid.uuid4().hex[:6]}",
                task_queue=queue,
            )

        escaped = await drill("COMMIT; SELECT true")
        slow = await drill("SELECT pg_sleep(5) IS NOT NULL")
        passed = await drill(f"SELECT current_user = '{owner_role_name(tenant.database_name, tenant.role_name)}'")

    assert not escaped.ok and "cannot insert multiple commands" in (escaped.error or "")
    assert not slow.ok and "statement timeout" in (slow.error or "")
    assert passed.ok, passed.error
    assert restore_leftovers(settings, tenant) == ([], [])


async def test_the_sweeper_removes_a_restore_role_a_dead_run_left(temporal_env, settings):
    url = settings.effective_database_url
    token = uuid.uuid4().hex[:8]
    role, database = f"{settings.database_prefix}lp-{token}__rs_dead", f"{settings.database_prefix}lp-{token}_other"
    mark = Mark(
        kind="restorer",
        tenant_id=f"lp-{token}",
        workflow_id=f"restore-lost-{token}",  # a run Temporal does not know, marked long ago
        at=datetime.now(UTC) - timedelta(days=3),
    )
    with admin(settings) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(role), sql.Literal(mark.comment())))
        # What a dead attempt leaves: a privilege on a database, which DROP ROLE alone would refuse over.
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), sql.Identifier(role))
        )
    try:
        sweeper = SweepActivities(settings, temporal_env.client)
        env = ActivityEnvironment()
        report = await env.run(sweeper.find_orphans, SweepInput(stale_hours=1))
        found = {(i.kind, i.name): i for i in report.items if token in i.name}
        assert found[("role", role)].removable, found
        done = await env.run(sweeper.remove_orphans, report)
        removed = {(i.kind, i.name): i for i in done.items if token in i.name}
        assert removed[("role", role)].removed, removed[("role", role)]
        with admin(settings) as conn:
            assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone() is None
            assert databases_like(url, database) == [database]  # not ours: left alone
    finally:
        with admin(settings) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(database)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


async def test_a_tenant_without_a_role_gets_one_for_its_restored_objects_and_an_unsafe_role_is_refused(
    temporal_env, task_queue, settings, make_tenant, catalog
):
    """Without a recorded role (and a database the admin owns): a NOLOGIN role named like its database, marked as
    the tenant's, owns the restored copy. A recorded role with powers is never restored as: refused, unchanged."""
    tenant = await make_tenant("lp", entries=50)
    url = settings.effective_database_url
    await backup(temporal_env, task_queue, tenant.id)
    expected = await table_fingerprint(url, tenant.database_name)

    await restore(temporal_env, task_queue, tenant.id, keep_previous_seconds=0, checks=["SELECT true"])

    assert await table_fingerprint(url, tenant.database_name) == expected
    with in_database(settings, tenant.database_name) as conn:
        owner = conn.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'").fetchall()
        login, comment = conn.execute(
            "SELECT rolcanlogin, shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s",
            [tenant.database_name],
        ).fetchone()
    assert owner == [(tenant.database_name,)] and not login
    assert parse_mark(comment).is_of(tenant.id, "role")

    powerful = f"{tenant.database_name}_admin"
    with admin(settings) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE").format(sql.Identifier(powerful)))
    try:
        async with await catalog._connect() as conn:
            await conn.execute("UPDATE tenants SET role_name = %s WHERE id = %s", [powerful, tenant.id])
            await conn.commit()
        with pytest.raises(WorkflowFailureError) as caught:
            await restore(temporal_env, task_queue, tenant.id)
        assert failure_type(caught.value) == "RestoreFailed"
        assert f"role {powerful!r} has CREATEROLE" in failure_message(caught.value)
        assert await table_fingerprint(url, tenant.database_name) == expected
        assert restore_leftovers(settings, tenant) == ([], [])
    finally:
        async with await catalog._connect() as conn:
            await conn.execute("UPDATE tenants SET role_name = NULL WHERE id = %s", [tenant.id])
            await conn.commit()
        with admin(settings) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(powerful)))


@pytest.mark.parametrize(
    "check",
    [
        "SELECT true",
        "SELECT true;",
        "SELECT true; -- trailing comment",
        "SELECT 'a;b' = 'a;b'",
        'SELECT 1 AS "x;y"',
        "SELECT $$;$$ = ';'",
        "SELECT $tag$ ; COMMIT $tag$ <> ''",
        "SELECT E'\\';' <> ''",
        "SELECT true /* ; COMMIT */",
    ],
)
def test_one_statement_checks_pass_validation(check):
    validate_check(check)


@pytest.mark.parametrize(
    "check",
    ["SELECT true; COMMIT", "COMMIT; SELECT true", "SELECT ';'; SELECT true", "SELECT $$x$$; DROP TABLE t", " ", ";"],
)
def test_plainly_not_one_statement_is_refused_early(check):
    with pytest.raises(InvalidInput):
        validate_check(check)


def test_who_owns_restored_objects():
    ordinary = RoleFacts(name="app")
    marked = RoleFacts(name="db_t1", mark=Mark(kind="role", tenant_id="t1"))
    marked_suffixed = RoleFacts(name="db_t1_owner", mark=Mark(kind="role", tenant_id="t1"))
    superuser = RoleFacts(name="postgres", attributes=("SUPERUSER",), is_admin=True)
    grouped = RoleFacts(name="grouped", powerful_memberships=("pg_read_server_files",))
    none: dict[str, RoleFacts | None] = {}

    # The owner is a NOLOGIN role named like the database, `_owner` added when the login role has that name.
    assert choose_restore_owner("t1", "app", ordinary, superuser, "db_t1", none) == RestoreOwner(
        "db_t1", create=True, login_role="app"
    )
    assert choose_restore_owner("t1", "db_t1", marked, superuser, "db_t1", {"db_t1": marked}) == RestoreOwner(
        "db_t1_owner", create=True, login_role="db_t1"
    )
    found = {"db_t1": marked, "db_t1_owner": marked_suffixed}
    assert choose_restore_owner("t1", "db_t1", marked, superuser, "db_t1", found) == RestoreOwner(
        "db_t1_owner", login_role="db_t1"
    )
    # An adopted app's database: its owner is the login role.
    assert choose_restore_owner("t1", None, None, ordinary, "db_t1", none) == RestoreOwner(
        "db_t1", create=True, login_role="app"
    )
    assert choose_restore_owner("t1", None, None, superuser, "db_t1", none) == RestoreOwner("db_t1", create=True)
    assert choose_restore_owner("t1", None, None, superuser, "db_t1", {"db_t1": marked}) == RestoreOwner("db_t1")
    assert choose_restore_owner("t1", None, None, grouped, "db_t1", {"db_t1": marked}) == RestoreOwner("db_t1")
    for recorded, facts, said in [
        ("gone", None, "does not exist"),
        ("postgres", superuser, "is the admin role"),
        ("grouped", grouped, "is a member of pg_read_server_files"),
    ]:
        with pytest.raises(InvalidInput, match=said):
            choose_restore_owner("t1", recorded, facts, ordinary, "db_t1", {"db_t1": marked})
    refused = [
        (RoleFacts(name="db_t1"), "exists without its mark"),
        (RoleFacts(name="db_t1", mark=Mark(kind="role", tenant_id="t2")), "exists without its mark"),
        (RoleFacts(name="db_t1", mark=Mark(kind="role", tenant_id="t1"), can_login=True), "can log in"),
        (RoleFacts(name="db_t1", mark=Mark(kind="role", tenant_id="t1"), attributes=("CREATEDB",)), "has CREATEDB"),
        (RoleFacts(name="db_t1", mark=Mark(kind="role", tenant_id="t1"), members=("app",)), "is a member of"),
    ]
    for facts, said in refused:
        with pytest.raises(InvalidInput, match=said):
            choose_restore_owner("t1", "app", ordinary, superuser, "db_t1", {"db_t1": facts})


def test_owner_role_names_fit_in_63_bytes():
    long = "é" * 31 + "x"  # 63 bytes
    named_like_database, suffixed = owner_role_names(long)
    assert named_like_database == long
    assert len(suffixed.encode()) <= 63 and suffixed.endswith("_owner") and suffixed != long
    assert owner_role_name(long, long) == suffixed and owner_role_name(long, "app") == long
