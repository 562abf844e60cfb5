"""Tenant roles cannot plant code, admin sessions never run what they could plant, cleanup rules are checked when
the worker starts, and plan limits hold when sign-ups come at once: on a real Temporal server and real PostgreSQL.

Why: on PostgreSQL 14 and older every role may create in schema public, so a tenant could put there a function
(public.pg_relation_size(oid) matches an oid better than the catalog's) that a superuser's maintenance would run."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.testing import ActivityEnvironment

from activities.infra.catalog import Catalog
from activities.infra.credentials import read_credentials
from activities.infra.schema import ensure_template
from activities.maintenance import MaintenanceActivities, check_cleanup_rules
from activities.provisioning import ProvisioningActivities
from tenancy.contracts.provision import ProvisionTenantInput, ProvisionTenantResult
from tenancy.errors import failure_type
from tenancy.maintenance import CleanupRule, condition_problem
from tenancy.messages.maintenance import MaintenanceTarget
from tenancy.messages.provision import ProvisioningUndo, TenantDatabase
from tenancy.settings import PlanLimits, Settings
from tests.test_maintenance import maintain
from tests.test_provisioning import connect_as, in_run
from workflows.provision_tenant import ProvisionTenantWorkflow

ROOT = Path(__file__).resolve().parent.parent
PLANTED = (
    "CREATE FUNCTION public.pg_relation_size(oid) RETURNS bigint LANGUAGE plpgsql "
    "AS $$ BEGIN RAISE EXCEPTION 'planted function ran as %', current_user; END $$"
)


def admin(settings: Settings, dbname: str | None = None) -> psycopg.Connection:
    info = psycopg.conninfo.make_conninfo(settings.effective_database_url, **({"dbname": dbname} if dbname else {}))
    return psycopg.connect(info, autocommit=True)


def unique_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def sign_up(tenant_id: str, owner: str, plan: str = "pro") -> ProvisionTenantInput:
    return ProvisionTenantInput(name=f"Tenant {tenant_id}", plan=plan, owner_email=owner, tenant_id=tenant_id)


def can_create(conn: psycopg.Connection, statement: str) -> bool:
    try:
        conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        conn.rollback()
        return False
    conn.rollback()
    return True


def password_works(settings: Settings, tenant_id: str) -> bool:
    try:
        with connect_as(settings, tenant_id) as own:
            return own.execute("SELECT count(*) FROM projects").fetchone() is not None
    except psycopg.OperationalError:
        return False


@pytest.fixture
async def dropped_at_end(catalog: Catalog):
    ids: list[str] = []
    yield ids
    for tenant_id in ids:
        await catalog.drop_tenant(tenant_id)


# Cleanup rule conditions: one expression, no way out of its parentheses.


@pytest.mark.parametrize(
    ("condition", "problem"),
    [
        ("kind = 'a'", None),
        ("note = 'it''s;' OR note LIKE '%\\%' ESCAPE '\\'", None),
        ("note = E'it\\'s) ;' AND (kind <> $$;)$$)", None),
        ('"odd;name)" = 1', None),
        ("true) OR (true", "closes a parenthesis it did not open"),
        ("true; DELETE FROM projects", "has a `;`"),
        ("kind = 'a' -- and the rest", "has a comment"),
        ("(kind = 'a'", "leaves a parenthesis open"),
        ("kind = 'a", "never closed"),
    ],
)
def test_a_condition_is_one_expression_that_cannot_widen_the_delete(condition, problem):
    found = condition_problem(condition)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_a_rule_whose_condition_is_not_one_expression_is_refused_with_the_settings():
    with pytest.raises(ValueError, match=r"cleanup rule on activity_log: its condition .* has a `;`"):
        CleanupRule(table="activity_log", timestamp_column="happened_at", condition="true; DROP TABLE projects")
    assert CleanupRule(table="activity_log", timestamp_column="happened_at", condition=" ").condition is None
    assert CleanupRule(table="activity_log", timestamp_column="happened_at").qualified_table == (
        "public",
        "activity_log",
    )


# The tenant role: uses its tables, creates nothing, reaches its own database only.


async def test_a_tenant_role_cannot_create_anything_even_from_a_template_an_older_release_left_open(
    temporal_env, worker_with, settings, catalog, dropped_at_end
):
    prefix = f"{settings.database_prefix}h3{uuid.uuid4().hex[:4]}_"
    ours = settings.model_copy(update={"database_prefix": prefix})
    template = ours.template_database
    await ensure_template(ours.effective_database_url, template, ours.migrations_dir)
    # As an earlier release on PostgreSQL 14 left it: any role could connect and create in public, and one did.
    with admin(settings) as conn:
        conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO PUBLIC").format(sql.Identifier(template)))
    with admin(settings, template) as conn:
        conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        conn.execute("CREATE FUNCTION public.planted() RETURNS int LANGUAGE sql AS 'SELECT 1'")

    tenant_id = unique_id("hard")
    dropped_at_end.append(tenant_id)
    async with worker_with(database_prefix=prefix) as queue:
        result: ProvisionTenantResult = await temporal_env.client.execute_workflow(
            ProvisionTenantWorkflow.run,
            sign_up(tenant_id, "owner@hard.example"),
            id=f"provision-{tenant_id}",
            task_queue=queue,
        )

    with connect_as(settings, tenant_id) as own:
        # Its tables are its to use...
        own.execute("INSERT INTO time_entries (project_id, started_at, minutes) VALUES (1, now(), 30)")
        own.commit()
        assert own.execute("SELECT count(*) FROM time_entries").fetchone()[0] >= 1
        # ...and nothing may be created: no function or table in public, no schema of its own.
        assert not can_create(own, "CREATE FUNCTION public.x() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        assert not can_create(own, "CREATE TABLE public.x (id int)")
        assert not can_create(own, "CREATE TABLE x (id int)")
        assert not can_create(own, "CREATE SCHEMA mine")
        # What was planted in the old template did not come with the copy: the template was rebuilt.
        assert own.execute("SELECT to_regprocedure('public.planted()')").fetchone()[0] is None
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        connect_as(settings, tenant_id, dbname=template)
    with admin(settings, template) as conn:
        assert conn.execute("SELECT has_schema_privilege('public', 'public', 'CREATE')").fetchone()[0] is False

    # A tenant database made on PostgreSQL 14 or older keeps the old grant until its next migration takes it.
    with admin(settings, result.database_name) as conn:
        conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
    with connect_as(settings, tenant_id) as own:
        assert can_create(own, "CREATE TABLE public.x (id int)")  # what the hardening is for
    db = TenantDatabase(tenant_id=tenant_id, database_name=result.database_name, role_name=result.role_name)
    await ActivityEnvironment().run(ProvisioningActivities(ours).migrate_tenant_database, db)
    with connect_as(settings, tenant_id) as own:
        assert not can_create(own, "CREATE TABLE public.x (id int)")


# Maintenance: its sessions resolve names in pg_catalog only.


async def test_maintenance_never_runs_a_function_planted_in_public(temporal_env, task_queue, settings, make_tenant):
    tenant = await make_tenant(entries=500)
    with admin(settings, tenant.database_name) as conn:
        conn.execute("UPDATE activity_log SET happened_at = now() - interval '400 days' WHERE id <= 20")
        conn.execute(PLANTED)
        # Under the default search_path the planted function is the better match, and runs with the admin's rights.
        with pytest.raises(psycopg.errors.RaiseException, match="planted function ran"):
            conn.execute("SELECT pg_relation_size(oid) FROM pg_class WHERE relname = 'activity_log'")

    # Dry run, cleanup and index rebuilds all take the size of tables and indexes.
    plan = await maintain(temporal_env, task_queue, tenant.id, tasks=["cleanup", "optimize"], days=180, dry_run=True)
    result = await maintain(temporal_env, task_queue, tenant.id, tasks=["cleanup", "optimize", "analyze"], days=180)
    assert plan.ok and plan.plan.cleanup_rows["activity_log"] == 20
    assert result.ok and result.tasks[0].detail["rows_deleted"]["activity_log"] == 20

    target = MaintenanceTarget(tenant_id=tenant.id, database_name=tenant.database_name)
    async with MaintenanceActivities(settings)._session(target) as conn:
        path = (await (await conn.execute("SHOW search_path")).fetchone())[0]
        schemas = (await (await conn.execute("SELECT current_schemas(true)")).fetchone())[0]
    assert path.replace(" ", "") == "pg_catalog,pg_temp" and "public" not in schemas


# Cleanup rules are checked by PostgreSQL when the worker starts.


def worker_environment(settings: Settings, rules: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTS_")}
    env.update(
        TENANTS_DATABASE_URL=settings.effective_database_url,
        TENANTS_CATALOG_DATABASE=settings.catalog_database,
        TENANTS_DATABASE_PREFIX=settings.database_prefix,
        TENANTS_STORAGE_URL=str(settings.storage_root),
        TENANTS_SECRETS_DIR=str(settings.effective_secrets_dir),
        TENANTS_TEMPORAL_ADDRESS="127.0.0.1:1",  # never reached: the rules are checked first
        TENANTS_CLEANUP_RULES=rules,
        TENANTS_LOG_LEVEL="WARNING",
    )
    return env


async def test_a_cleanup_rule_postgresql_cannot_parse_stops_the_worker_with_one_line(settings):
    rules = '[{"table": "activity_log", "timestamp_column": "happened_at", "condition": "kind = "}]'
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(ROOT / "worker.py")],
        env=worker_environment(settings, rules),
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("worker: ") and "cleanup rule 'activity_log'" in lines[0] and "syntax error" in lines[0]


async def test_cleanup_rules_are_planned_against_the_template_one_statement_each(settings):
    def rules(*given: CleanupRule) -> Settings:
        return settings.model_copy(update={"cleanup_rules": list(given)})

    fine = CleanupRule(table="activity_log", timestamp_column="happened_at", condition="activity_log.id > 0")
    elsewhere = CleanupRule(table="events", timestamp_column="at")  # only some adopted tenants have it
    notes = await check_cleanup_rules(rules(fine, elsewhere))
    assert list(notes) == ["events"] and "not in the template" in notes["events"]

    refused = {
        "argument of AND must be type boolean": CleanupRule(
            table="activity_log", timestamp_column="happened_at", condition="happened_at"
        ),
        "no_such_flag": CleanupRule(table="time_entries", timestamp_column="created_at", condition="no_such_flag"),
        # Past the settings' own check (built unchecked here), PostgreSQL still takes one statement only.
        "cannot insert multiple commands": CleanupRule.model_construct(
            table="projects", timestamp_column="created_at", condition="true); DELETE FROM public.projects; SELECT (1"
        ),
    }
    for said, rule in refused.items():
        with pytest.raises(ApplicationError, match=said) as caught:
            await check_cleanup_rules(rules(fine, rule))
        assert caught.value.type == "InvalidInput" and caught.value.message.startswith(f"cleanup rule '{rule.table}")


# Plan limits and sign-ups at once.


@pytest.mark.one_server  # the count and the record in one transaction under one lock: the same on every server
async def test_twenty_sign_ups_at_once_on_a_plan_of_five_leave_five_tenants(
    temporal_env, worker_with, catalog, dropped_at_end
):
    owner = f"{uuid.uuid4().hex[:8]}@busy.example"
    ids = [unique_id("rush") for _ in range(20)]
    dropped_at_end.extend(ids)
    async with worker_with(plans={"team": PlanLimits(max_tenants=5, quota_mb=100)}) as queue:
        outcomes = await asyncio.gather(
            *(
                temporal_env.client.execute_workflow(
                    ProvisionTenantWorkflow.run,
                    sign_up(tenant_id, owner, plan="team"),
                    id=f"provision-{tenant_id}",
                    task_queue=queue,
                )
                for tenant_id in ids
            ),
            return_exceptions=True,
        )
    provisioned = [o for o in outcomes if isinstance(o, ProvisionTenantResult)]
    refused = [o for o in outcomes if not isinstance(o, ProvisionTenantResult)]
    assert len(provisioned) == 5
    assert all(isinstance(o, WorkflowFailureError) and failure_type(o) == "PlanLimitReached" for o in refused)
    assert await catalog.count_owner_tenants(owner, "team") == 5
    assert {t.id for t in await catalog.list_tenants() if t.owner_email == owner} == {p.tenant_id for p in provisioned}


@pytest.mark.one_server  # which run wins is decided by the catalog's lock and the runs' marks, not the server
async def test_two_sign_ups_with_the_same_id_at_once_give_one_tenant_whose_password_works(
    temporal_env, task_queue, settings, catalog, dropped_at_end
):
    # The same workflow id (the command line's provision-<id>): the second start is refused while the first runs.
    tenant_id = unique_id("twice")
    dropped_at_end.append(tenant_id)
    first = await temporal_env.client.start_workflow(
        ProvisionTenantWorkflow.run,
        sign_up(tenant_id, "a@twice.example"),
        id=f"provision-{tenant_id}",
        task_queue=task_queue,
    )
    with pytest.raises(WorkflowAlreadyStartedError):
        await temporal_env.client.start_workflow(
            ProvisionTenantWorkflow.run,
            sign_up(tenant_id, "a@twice.example"),
            id=f"provision-{tenant_id}",
            task_queue=task_queue,
        )
    await first.result()
    assert password_works(settings, tenant_id)

    # Two workflow ids for one tenant id, at once: one tenant; the other run fails and takes nothing with it.
    tenant_id = unique_id("twice")
    dropped_at_end.append(tenant_id)
    runs = [f"provision-{tenant_id}", f"signup-{tenant_id}-{uuid.uuid4().hex[:6]}"]
    handles = [
        await temporal_env.client.start_workflow(
            ProvisionTenantWorkflow.run, sign_up(tenant_id, "b@twice.example"), id=run, task_queue=task_queue
        )
        for run in runs
    ]
    outcomes = await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
    won = [o for o in outcomes if isinstance(o, ProvisionTenantResult)]
    lost = [o for o in outcomes if not isinstance(o, ProvisionTenantResult)]
    assert len(won) == 1 and len(lost) == 1
    assert failure_type(lost[0]) in ("TenantBusy", "TenantExists")
    tenant = await catalog.get_tenant(tenant_id)
    assert tenant is not None and tenant.status == "active"
    stored = read_credentials(settings.effective_secrets_dir, tenant_id)["password"]
    assert password_works(settings, tenant_id)

    # However the runs interleave, the one that did not make the role and database never undoes them.
    loser = runs[outcomes.index(lost[0])]
    db = TenantDatabase(tenant_id=tenant_id, database_name=won[0].database_name, role_name=won[0].role_name)
    undo = ProvisioningUndo(db=db, reason="the other sign-up was refused")
    await in_run(loser, str(uuid.uuid4())).run(ProvisioningActivities(settings).undo_provisioning, undo)
    assert read_credentials(settings.effective_secrets_dir, tenant_id)["password"] == stored
    assert password_works(settings, tenant_id)
    assert (await catalog.get_tenant(tenant_id)).status == "active"
