"""Provisioning activities: plan limit, catalog record, database from the template, role, seed, activation,
and the compensation that undoes all of it."""

from __future__ import annotations

from psycopg import sql
from temporalio import activity

from activities.catalog_db import Catalog, TenantExists
from activities.credentials import delete_credentials, new_password, scram_sha256_verifier, write_credentials
from activities.pg import connect
from activities.schema import (
    apply_migrations,
    create_from_template,
    database_exists,
    ensure_template,
    migration_files,
    seed_once,
)
from tenancy.errors import PLAN_LIMIT_REACHED, TENANT_EXISTS, fail
from tenancy.log import activity_logger
from tenancy.models import MigrationResult, NewTenant, Tenant, TenantDatabase
from tenancy.settings import Settings


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


class ProvisioningActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalog = Catalog(settings)
        self.admin_url = settings.effective_database_url

    def _log(self, tenant_id: str):
        return activity_logger("activities.provisioning", tenant_id)

    @activity.defn
    async def check_plan_limit(self, new: NewTenant) -> int:
        """can_provision(owner, plan): how many more tenants this owner may have on this plan."""
        limits = self.settings.plans.get(new.plan)
        if limits is None:
            raise fail("InvalidInput", f"unknown plan {new.plan!r}; plans: {', '.join(sorted(self.settings.plans))}")
        used = await self.catalog.count_owner_tenants(new.owner_email, new.plan)
        if used >= limits.max_tenants:
            raise fail(
                PLAN_LIMIT_REACHED,
                f"{new.owner_email} already has {used} tenant(s) on the {new.plan} plan, its limit",
            )
        return limits.max_tenants - used

    @activity.defn
    async def record_provisioning(self, new: NewTenant) -> Tenant:
        try:
            tenant, _ = await self.catalog.record_provisioning(new)
        except TenantExists as exc:
            raise fail(TENANT_EXISTS, str(exc)) from None
        return tenant

    @activity.defn
    async def create_tenant_database(self, db: TenantDatabase) -> MigrationResult:
        """Copy the template (kept at the newest migration) and apply anything newer; idempotent."""
        folder = self.settings.migrations_dir
        await ensure_template(self.admin_url, self.settings.template_database, folder)
        created = await create_from_template(self.admin_url, self.settings.template_database, db.database_name)
        async with await connect(self.admin_url, db.database_name, autocommit=True) as conn:
            applied = await apply_migrations(conn, migration_files(folder))
        migrations = migration_files(folder)
        self._log(db.tenant_id).info("tenant database ready", database=db.database_name, created=created)
        return MigrationResult(
            database_name=db.database_name, applied=applied, version=migrations[-1].version if migrations else None
        )

    @activity.defn
    async def refresh_template(self) -> str | None:
        """Rebuild the template database if the migration files changed; returns its schema version."""
        return await ensure_template(self.admin_url, self.settings.template_database, self.settings.migrations_dir)

    @activity.defn
    async def migrate_tenant_database(self, db: TenantDatabase) -> MigrationResult:
        """Apply the migrations a tenant database lacks, in order, each in its own transaction."""
        migrations = migration_files(self.settings.migrations_dir)
        async with await connect(self.admin_url, db.database_name, autocommit=True) as conn:
            applied = await apply_migrations(conn, migrations)
        if applied:
            self._log(db.tenant_id).info("tenant database migrated", applied=applied)
        return MigrationResult(
            database_name=db.database_name, applied=applied, version=migrations[-1].version if migrations else None
        )

    @activity.defn
    async def create_tenant_role(self, db: TenantDatabase) -> str:
        """A login role that can connect to its own database only; returns where its credentials are kept."""
        password = new_password()
        verifier = sql.Literal(scram_sha256_verifier(password))
        role, database = _ident(db.role_name), _ident(db.database_name)
        async with await connect(self.admin_url, autocommit=True) as admin:
            exists = await (await admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [db.role_name])).fetchone()
            verb = "ALTER" if exists else "CREATE"
            await admin.execute(sql.SQL(verb + " ROLE {} WITH LOGIN PASSWORD {}").format(role, verifier))
            await admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
            await admin.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(database, role))
        async with await connect(self.admin_url, db.database_name, autocommit=True) as conn:
            for statement in (
                "GRANT USAGE ON SCHEMA public TO {}",
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}",
                "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {}",
                "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {}",
                "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {}",
            ):
                await conn.execute(sql.SQL(statement).format(role))
        path = write_credentials(
            self.settings.effective_secrets_dir, db.tenant_id, db.role_name, password, db.database_name, self.admin_url
        )
        self._log(db.tenant_id).info("tenant role ready", role=db.role_name, credentials=str(path))
        return str(path)

    @activity.defn
    async def seed_tenant_database(self, db: TenantDatabase) -> bool:
        async with await connect(self.admin_url, db.database_name, autocommit=True) as conn:
            return await seed_once(conn, self.settings.migrations_dir)

    @activity.defn
    async def activate_tenant(self, tenant_id: str) -> int | None:
        """Mark the tenant active and record TenantProvisioned; returns the event's id."""
        _, event_id = await self.catalog.change_status(
            tenant_id, "active", None, "TenantProvisioned", activity.info().workflow_id, lambda old, new: None
        )
        return event_id

    @activity.defn
    async def undo_provisioning(self, db: TenantDatabase, reason: str) -> None:
        """Compensation: remove the database, role and credentials, and record the tenant as failed."""
        async with await connect(self.admin_url, autocommit=True) as admin:
            await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(db.database_name)))
            await admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(_ident(db.role_name)))
        delete_credentials(self.settings.effective_secrets_dir, db.tenant_id)
        tenant = await self.catalog.get_tenant(db.tenant_id)
        if tenant and tenant.status == "provisioning":
            await self.catalog.change_status(
                db.tenant_id,
                "failed",
                reason[:500],
                "TenantProvisioningFailed",
                activity.info().workflow_id,
                lambda old, new: None,
            )
        self._log(db.tenant_id).warning("provisioning undone", reason=reason)

    @activity.defn
    async def drop_tenant_database(self, db: TenantDatabase) -> bool:
        """Deprovisioning: end sessions, drop the database and role, delete the credentials."""
        async with await connect(self.admin_url, autocommit=True) as admin:
            existed = await database_exists(admin, db.database_name)
            await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(db.database_name)))
            await admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(_ident(db.role_name)))
        delete_credentials(self.settings.effective_secrets_dir, db.tenant_id)
        self._log(db.tenant_id).info("tenant database dropped", database=db.database_name, existed=existed)
        return existed
