"""Provisioning activities: plan limit, catalog record, database from the template, role, seed, activation,
and the compensation that undoes all of it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from psycopg import sql
from temporalio import activity

from activities.audit import calling_actor
from activities.calling_run import calling_run
from activities.heartbeat import Heartbeater
from activities.infra.catalog import Catalog, PlanLimitReached, TenantExists
from activities.infra.credentials import delete_credentials, new_password, scram_sha256_verifier, write_credentials
from activities.infra.marks import database_mark, mark_role, role_mark
from activities.infra.pg import connect, connect_to_tenant_db, one_row
from activities.infra.schema import (
    apply_migrations,
    create_from_template,
    database_exists,
    ensure_template,
    existing_database_message,
    existing_role_message,
    grant_tenant_access,
    harden_public_schema,
    migration_files,
    provisioning_copy_name,
    seed_once,
)
from activities.infra.servers import ServerUrls
from tenancy.contracts.provision import MigrationResult
from tenancy.contracts.tenants import Tenant
from tenancy.errors import INVALID_INPUT, PLAN_LIMIT_REACHED, TENANT_EXISTS, InvalidInput, fail
from tenancy.log import activity_logger
from tenancy.marks import Mark
from tenancy.messages.provision import NewTenant, ProvisioningUndo, TemplateRefresh, TenantDatabase
from tenancy.messages.tenants import TenantRequest
from tenancy.servers import DEFAULT_SERVER, ServerLoad, choose_server, validate_server_name
from tenancy.settings import PlanLimits, Settings

# How long placement waits for a server to answer before leaving it out (a server that is down takes no tenant).
PLACEMENT_CONNECT_SECONDS = 5.0


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def _made_by_this_run(mark: Mark | None, tenant_id: str, *kinds: str) -> bool:
    info = calling_run()
    return mark is not None and mark.is_of(tenant_id, *kinds) and mark.made_by(info.workflow_id, info.workflow_run_id)


async def _tenant_bytes(settings: Settings, admin_url: str) -> int:
    """What the tenant databases of this deployment (its prefix; not the catalog or the template) take on a server."""
    prefix = settings.database_prefix
    skip = [settings.catalog_database, settings.template_database]

    async def measure() -> int:
        async with await connect(admin_url, autocommit=True) as admin:
            row = await one_row(
                await admin.execute(
                    "SELECT coalesce(sum(pg_database_size(oid)), 0) FROM pg_database "
                    "WHERE left(datname, length(%s)) = %s AND datname <> ALL(%s)",
                    [prefix, prefix, skip],
                )
            )
        return int(row[0])

    return await asyncio.wait_for(measure(), PLACEMENT_CONNECT_SECONDS)


async def server_loads(settings: Settings, catalog: Catalog, log: Any, asked: str | None = None) -> list[ServerLoad]:
    """What placement weighs, server by server (also where `tenants move --all-from` without --to sends each
    tenant). An open server this worker has no URL for, or cannot reach, is left out; the one `asked` for by name
    raises its own reason instead."""
    urls = ServerUrls(settings)
    loads = []
    for row in await catalog.servers():
        name = row["name"]
        size = 0
        # One that takes no new tenant is not measured: choose_server refuses it by its status alone.
        if row["status"] == "open":
            try:
                size = await _tenant_bytes(settings, urls.url(name))
            except Exception as exc:
                if name == asked:  # asked for by name: its own reason (not configured here, unreachable) is the answer
                    raise
                reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                log.warning("server left out of placement", server=name, reason=reason)
                continue
        max_mb = row["max_size_mb"]
        loads.append(
            ServerLoad(
                name=name,
                status=row["status"],
                max_tenants=row["max_tenants"],
                max_size_bytes=max_mb * 1024 * 1024 if max_mb else None,
                tenants=row["tenants"],
                size_bytes=size,
            )
        )
    return loads


class ProvisioningActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalog = Catalog(settings)
        self.admin_url = settings.effective_database_url  # the default server's; a tenant's is resolved per call

    def _log(self, tenant_id: str):
        return activity_logger("activities.provisioning", tenant_id)

    async def _server(self, db: TenantDatabase) -> str:
        """The server holding (or getting) the tenant's database: the one the message names, else the catalog's."""
        return db.server or await self.catalog.tenant_server(db.tenant_id) or DEFAULT_SERVER

    async def _admin_url(self, db: TenantDatabase) -> str:
        return ServerUrls(self.settings).url(await self._server(db))

    async def _place(self, new: NewTenant) -> str:
        """Where the new tenant's database goes: the server asked for, if it is open with room, else the open
        server with the most free capacity (tenancy.servers.choose_server). A server this worker has no URL for,
        or cannot reach, is left out of the choice; asked for by name, it fails the provisioning instead."""
        loads = await server_loads(self.settings, self.catalog, self._log(new.tenant_id), asked=new.server)
        try:
            chosen = choose_server(loads, new.server)
        except InvalidInput as exc:
            raise fail(INVALID_INPUT, str(exc)) from None
        self._log(new.tenant_id).info(
            "server chosen", server=chosen, asked=new.server, loads={x.name: x.tenants for x in loads}
        )
        return chosen

    async def _check_names_free(self, new: NewTenant, server: str) -> None:
        """No database or role of the tenant's names on its server (validate_new_tenant looked on `default`)."""
        async with await connect(ServerUrls(self.settings).url(server)) as admin:
            if await database_exists(admin, new.database_name):
                raise fail(TENANT_EXISTS, existing_database_message(new.database_name) + f" on server {server!r}")
            if await (await admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [new.role_name])).fetchone():
                raise fail(TENANT_EXISTS, existing_role_message(new.role_name) + f" on server {server!r}")

    def _plan_limits(self, plan: str) -> PlanLimits:
        limits = self.settings.plans.get(plan)
        if limits is None:
            raise fail("InvalidInput", f"unknown plan {plan!r}; plans: {', '.join(sorted(self.settings.plans))}")
        return limits

    @activity.defn
    async def check_plan_limit(self, new: NewTenant) -> int:
        """can_provision(owner, plan): how many more tenants this owner may have on this plan. An early answer
        only: record_provisioning decides, counting and recording in one transaction."""
        limits = self._plan_limits(new.plan)
        used = await self.catalog.count_owner_tenants(new.owner_email, new.plan)
        if used >= limits.max_tenants:
            raise fail(PLAN_LIMIT_REACHED, str(PlanLimitReached(new.owner_email, new.plan, used)))
        return limits.max_tenants - used

    @activity.defn
    async def record_provisioning(self, new: NewTenant) -> Tenant:
        """Record the tenant as provisioning, on the server placement chooses, if the owner's plan has room for it,
        both in one transaction (two sign-ups at once cannot both take the last place). A retried attempt finds
        the row it recorded and keeps its server."""
        limits = self._plan_limits(new.plan)
        if new.server is not None:
            try:
                validate_server_name(new.server)
            except InvalidInput as exc:
                raise fail(INVALID_INPUT, str(exc)) from None
        known = await self.catalog.get_tenant(new.tenant_id)
        if known is not None and known.status == "provisioning" and known.owner_email == new.owner_email:
            server = known.server  # recorded by an earlier attempt: placed once, never moved by a retry
        else:
            server = await self._place(new)
            if server != DEFAULT_SERVER:
                await self._check_names_free(new, server)
        try:
            tenant, _ = await self.catalog.record_provisioning(new, limits.max_tenants, server=server)
        except TenantExists as exc:
            raise fail(TENANT_EXISTS, str(exc)) from None
        except PlanLimitReached as exc:
            raise fail(PLAN_LIMIT_REACHED, str(exc)) from None
        return tenant

    @activity.defn
    async def create_tenant_database(self, db: TenantDatabase) -> MigrationResult:
        """Copy the template (kept at the newest migration), marked as this run's, and apply anything newer.
        A retried attempt goes on with what this run made; a database of the name that it did not make is
        refused and left alone (schema.create_from_template)."""
        folder = self.settings.migrations_dir
        info = calling_run()
        admin_url = await self._admin_url(db)
        async with Heartbeater():
            # The template is per server: made (or brought up to date) on the tenant's when missing or stale there.
            await ensure_template(admin_url, self.settings.template_database, folder)
            created = await create_from_template(
                admin_url,
                self.settings.template_database,
                db.database_name,
                db.tenant_id,
                info.workflow_id,
                info.workflow_run_id,
            )
            async with await connect(admin_url, db.database_name, autocommit=True) as conn:
                applied = await apply_migrations(conn, migration_files(folder))
        migrations = migration_files(folder)
        self._log(db.tenant_id).info(
            "tenant database ready", database=db.database_name, created=created, server=db.server
        )
        return MigrationResult(
            database_name=db.database_name, applied=applied, version=migrations[-1].version if migrations else None
        )

    @activity.defn
    async def refresh_template(self, req: TemplateRefresh | None = None) -> str | None:
        """Rebuild the template database if the migration files changed; returns its schema version."""
        # None: attempts scheduled by the previous release carry no argument.
        return await ensure_template(self.admin_url, self.settings.template_database, self.settings.migrations_dir)

    @activity.defn
    async def migrate_tenant_database(self, db: TenantDatabase) -> MigrationResult:
        """Apply the migrations a tenant database lacks, in order, each in its own transaction; then take CREATE on
        schema public from every role, if a database made on PostgreSQL 14 or older still grants it."""
        migrations = migration_files(self.settings.migrations_dir)
        async with await connect(await self._admin_url(db), db.database_name, autocommit=True) as conn:
            applied = await apply_migrations(conn, migrations)
            if await harden_public_schema(conn):
                self._log(db.tenant_id).info("schema public hardened: no role may create in it")
        if applied:
            self._log(db.tenant_id).info("tenant database migrated", applied=applied)
        return MigrationResult(
            database_name=db.database_name, applied=applied, version=migrations[-1].version if migrations else None
        )

    @activity.defn
    async def create_tenant_role(self, db: TenantDatabase) -> str:
        """A login role that can connect to its own database only; returns where its credentials are kept.
        The role is created and marked in one transaction; one of the name that this run did not create is
        refused and left unchanged."""
        info = calling_run()
        password = new_password()
        verifier = sql.Literal(scram_sha256_verifier(password))
        role, database = _ident(db.role_name), _ident(db.database_name)
        mark = Mark(
            kind="role",
            tenant_id=db.tenant_id,
            workflow_id=info.workflow_id,
            run_id=info.workflow_run_id,
            at=datetime.now(UTC),
        )
        # The role is the server's: made on the one holding the tenant's database, where it logs in.
        server = await self._server(db)
        admin_url = ServerUrls(self.settings).url(server)
        async with Heartbeater(), await connect(admin_url, autocommit=True) as admin:
            if not _made_by_this_run(await database_mark(admin, db.database_name), db.tenant_id, "tenant"):
                raise fail(TENANT_EXISTS, f"database {db.database_name} is not the one this run created")
            async with admin.transaction():
                exists = await (
                    await admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [db.role_name])
                ).fetchone()
                # Only this run's own role (an attempt that failed after creating it) is taken up again.
                if exists and not _made_by_this_run(await role_mark(admin, db.role_name), db.tenant_id, "role"):
                    raise fail(TENANT_EXISTS, existing_role_message(db.role_name))
                verb = "ALTER" if exists else "CREATE"
                await admin.execute(sql.SQL(verb + " ROLE {} WITH LOGIN PASSWORD {}").format(role, verifier))
                await mark_role(admin, db.role_name, mark)
            await admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
            await admin.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(database, role))
        async with await connect_to_tenant_db(admin_url, db.database_name, autocommit=True) as conn:
            # The role uses the tables and owns nothing: it may not create in public (nor anywhere), where what it
            # put would run in the admin's sessions. A copy of the template is hardened already; this says so here.
            await harden_public_schema(conn)
            await grant_tenant_access(conn, db.role_name)
        path = await asyncio.to_thread(
            write_credentials,
            self.settings.effective_secrets_dir,
            db.tenant_id,
            db.role_name,
            password,
            db.database_name,
            admin_url,
            server,
        )
        self._log(db.tenant_id).info("tenant role ready", role=db.role_name, credentials=str(path))
        return str(path)

    @activity.defn
    async def seed_tenant_database(self, db: TenantDatabase) -> bool:
        admin_url = await self._admin_url(db)
        async with Heartbeater(), await connect(admin_url, db.database_name, autocommit=True) as conn:
            return await seed_once(conn, self.settings.migrations_dir)

    @activity.defn
    async def activate_tenant(self, req: TenantRequest) -> int | None:
        """Mark the tenant active and record TenantProvisioned; returns the event's id."""
        _, event_id = await self.catalog.change_status(
            req.tenant_id,
            "active",
            None,
            "TenantProvisioned",
            activity.info().workflow_id,
            lambda old, new: None,
            actor=await calling_actor(),
        )
        return event_id

    @activity.defn
    async def undo_provisioning(self, req: ProvisioningUndo | TenantDatabase, legacy_reason: str | None = None) -> None:
        """Compensation: remove what this run created (the database, its unfinished copy and the role carrying
        this run's mark, the credentials), and record the tenant as failed. A database or role of the name that
        is not marked so is someone else's: left as it is. That includes what another run for the same id made (two
        sign-ups at once: the one refused never takes the other's role or credentials with it); a role an earlier
        run left is the sweep's (`tenants sweep`)."""
        # Attempts scheduled by the previous release carry (db, reason); see tenancy/messages.
        undo = ProvisioningUndo.model_validate(req if legacy_reason is None else {"db": req, "reason": legacy_reason})
        db, reason = undo.db, undo.reason
        info = calling_run()
        left = []
        async with await connect(await self._admin_url(db), autocommit=True) as admin:
            for name in (db.database_name, provisioning_copy_name(db.database_name, info.workflow_run_id)):
                if _made_by_this_run(await database_mark(admin, name), db.tenant_id, "tenant", "provisioning"):
                    await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(name)))
                elif await database_exists(admin, name):
                    left.append(name)
            if _made_by_this_run(await role_mark(admin, db.role_name), db.tenant_id, "role"):
                await admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(_ident(db.role_name)))
                await asyncio.to_thread(delete_credentials, self.settings.effective_secrets_dir, db.tenant_id)
            elif await (await admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [db.role_name])).fetchone():
                left.append(db.role_name)
            else:
                await asyncio.to_thread(delete_credentials, self.settings.effective_secrets_dir, db.tenant_id)
        if left:
            self._log(db.tenant_id).warning("not created by this run: left alone", left=left)
        tenant = await self.catalog.get_tenant(db.tenant_id)
        if tenant and tenant.status == "provisioning":
            await self.catalog.change_status(
                db.tenant_id,
                "failed",
                reason[:500],
                "TenantProvisioningFailed",
                activity.info().workflow_id,
                lambda old, new: None,
                actor=await calling_actor(),
            )
        self._log(db.tenant_id).warning("provisioning undone", reason=reason)

    @activity.defn
    async def drop_tenant_database(self, db: TenantDatabase) -> bool:
        """Deprovisioning: end the sessions and drop the tenant's database, only if it carries this tenant's
        mark (one without it may be someone else's: refused, nothing dropped). False when it was already gone.
        The role and credentials go in their own step (DeprovisionActivities.drop_tenant_role)."""
        # Imported here: this function is deprovisioning's, the rest of the module provisioning's.
        from activities.deprovision import unmarked_database_message
        from activities.infra.marks import database_mark
        from tenancy.errors import NOT_MARKED

        async with await connect(await self._admin_url(db), autocommit=True) as admin:
            if not await database_exists(admin, db.database_name):
                return False
            mark = await database_mark(admin, db.database_name)
            if mark is None or not mark.is_of(db.tenant_id, "tenant"):
                raise fail(NOT_MARKED, unmarked_database_message(db) + "; nothing was dropped")
            await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(db.database_name)))
        self._log(db.tenant_id).info("tenant database dropped", database=db.database_name, server=db.server)
        return True
