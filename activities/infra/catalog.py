"""The control-plane catalog: tenants and their operation locks, in a PostgreSQL database of its own.

Plain async functions over psycopg, used by the catalog activities, the command line, the demo and the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from activities.infra.marks import mark_database
from activities.infra.pg import connect, conninfo_for, one_row
from tenancy.audit import BACKUP_PIN, BACKUP_UNPIN, event_action, event_backup, local_actor
from tenancy.contracts.fleet import TenantOutcome
from tenancy.contracts.tenants import Tenant, TenantRef
from tenancy.errors import InvalidInput
from tenancy.locks import HolderState, holder_namespace, is_same_holder, lease_expired, may_take_over
from tenancy.marks import Mark
from tenancy.messages.locks import LockOutcome
from tenancy.messages.provision import AdoptionPlan, NewTenant
from tenancy.naming import database_name, validate_tenant_id
from tenancy.servers import DEFAULT_SERVER
from tenancy.settings import Settings

# Catalog connections return rows as dicts, by column name.
CatalogConnection = psycopg.AsyncConnection[DictRow]


class TenantExists(Exception):
    """A live tenant already has this id."""


class PlanLimitReached(Exception):
    """The owner already has as many tenants on the plan as the plan allows."""

    def __init__(self, owner_email: str, plan: str, used: int) -> None:
        super().__init__(f"{owner_email} already has {used} tenant(s) on the {plan} plan, its limit")


# Statuses of a tenant whose database is in service.
_LIVE = ("active", "inactive", "suspended")


# Each entry upgrades the schema by one version; never edit a released entry, append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE tenants (
        id            text PRIMARY KEY CHECK (id ~ '^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$'),
        name          text NOT NULL,
        plan          text NOT NULL,
        status        text NOT NULL CHECK (status IN
                        ('provisioning','active','inactive','suspended','deprovisioned','failed')),
        owner_email   text NOT NULL,
        database_name text NOT NULL UNIQUE,
        settings      jsonb NOT NULL DEFAULT '{}'::jsonb,
        created_at    timestamptz NOT NULL DEFAULT now(),
        updated_at    timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE tenant_locks (
        tenant_id   text PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
        operation   text NOT NULL,
        workflow_id text NOT NULL,
        run_id      text NOT NULL,
        acquired_at timestamptz NOT NULL DEFAULT now()
    );
    """,
    """
    CREATE TABLE tenant_events (
        id          bigserial PRIMARY KEY,
        tenant_id   text NOT NULL,
        type        text NOT NULL,
        data        jsonb NOT NULL DEFAULT '{}'::jsonb,
        workflow_id text,
        created_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX tenant_events_by_tenant ON tenant_events (tenant_id, created_at DESC);
    """,
    """
    ALTER TABLE tenants ADD COLUMN status_reason text;
    ALTER TABLE tenants ADD COLUMN role_name text;
    CREATE INDEX tenants_by_owner ON tenants (owner_email, plan);
    """,
    """
    ALTER TABLE tenants ADD COLUMN last_maintenance jsonb;
    """,
    """
    CREATE TABLE managed_schedules (
        id          text PRIMARY KEY,
        fingerprint text NOT NULL,
        applied_at  timestamptz NOT NULL DEFAULT now()
    );
    """,
    # What can change about a backup after it is written (pins, drill outcomes, whether it is known to restore)
    # lives here; the manifest in storage is the immutable record. NULL: not recorded, the manifest says.
    # Databases a restore set aside, until they are dropped or swapped back (`tenants restore --undo`).
    # Shared holds of a tenant (drills): they do not block backups, and they block what would disturb them.
    """
    CREATE TABLE backups (
        tenant_id   text NOT NULL,
        name        text NOT NULL,
        pinned      boolean,
        drilled_at  timestamptz,
        drill_ok    boolean,
        restorable  boolean,
        updated_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, name)
    );
    CREATE TABLE kept_databases (
        name          text PRIMARY KEY,
        tenant_id     text NOT NULL,
        database_name text NOT NULL,
        workflow_id   text NOT NULL,
        backup_name   text,
        kept_until    timestamptz NOT NULL,
        created_at    timestamptz NOT NULL DEFAULT now(),
        ended_at      timestamptz,
        ended_how     text
    );
    CREATE INDEX kept_databases_by_tenant ON kept_databases (tenant_id, created_at DESC);
    CREATE TABLE tenant_shared_locks (
        tenant_id   text NOT NULL,
        workflow_id text NOT NULL,
        run_id      text NOT NULL,
        operation   text NOT NULL,
        acquired_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, workflow_id)
    );
    """,
    # 7: every tenant's outcome of a fleet run, so the run itself carries only counters and a few failures.
    """
    CREATE TABLE fleet_outcomes (
        fleet_workflow_id text NOT NULL,
        fleet_run_id      text NOT NULL,
        tenant_id         text NOT NULL,
        ok                boolean NOT NULL,
        skipped           boolean NOT NULL DEFAULT false,
        workflow_id       text NOT NULL,
        backup_name       text,
        detail            text,
        error             text,
        recorded_at       timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (fleet_workflow_id, tenant_id)
    );
    """,
    # 8: who accessed which backup and changed which tenant, when. Append-only: the application never updates or
    # deletes a row, and the table refuses it (triggers), so a mistake or a compromised caller cannot rewrite it.
    """
    CREATE TABLE audit_log (
        id          bigserial PRIMARY KEY,
        at          timestamptz NOT NULL DEFAULT now(),
        actor       text NOT NULL,
        action      text NOT NULL,
        tenant_id   text,
        backup_name text,
        workflow_id text,
        detail      jsonb NOT NULL DEFAULT '{}'::jsonb
    );
    CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, at DESC);
    CREATE INDEX audit_log_by_time ON audit_log (at DESC);
    CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
    END
    $$;
    CREATE TRIGGER audit_log_no_update_or_delete BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
    CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
    REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;
    """,
    # 9: a lock names the namespace of its holder (two deployments may share a catalog) and has a lease, renewed
    # by the holder's heartbeats; NULL in rows written before: this deployment's namespace, and a lease counted
    # from acquired_at (tenancy/locks.py).
    """
    ALTER TABLE tenant_locks ADD COLUMN namespace text;
    ALTER TABLE tenant_locks ADD COLUMN lease_until timestamptz;
    ALTER TABLE tenant_shared_locks ADD COLUMN namespace text;
    ALTER TABLE tenant_shared_locks ADD COLUMN lease_until timestamptz;
    """,
    # 10: per-tenant age keys (TENANTS_TENANT_KEYS=on): the recipient backups are encrypted to, and its identity
    # wrapped (age-encrypted) to the operator's master recipients. Erasure destroys the wrapped identity.
    """
    CREATE TABLE tenant_keys (
        tenant_id        text PRIMARY KEY,
        recipient        text NOT NULL,
        wrapped_identity bytea,
        created_at       timestamptz NOT NULL DEFAULT now(),
        destroyed_at     timestamptz,
        destroyed_by     text
    );
    """,
    # 11: several PostgreSQL servers (tenancy/servers.py). A server's admin URL is not here: workers resolve a name
    # from their own configuration. Every tenant names its server; rows written before live on `default`.
    """
    CREATE TABLE database_servers (
        name           text PRIMARY KEY CHECK (name ~ '^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$'),
        status         text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'draining', 'closed')),
        max_tenants    int CHECK (max_tenants > 0),
        max_size_mb    bigint CHECK (max_size_mb > 0),
        major_version  int,
        address        text,
        added_at       timestamptz NOT NULL DEFAULT now(),
        updated_at     timestamptz NOT NULL DEFAULT now()
    );
    INSERT INTO database_servers (name) VALUES ('default');
    ALTER TABLE tenants ADD COLUMN server text NOT NULL DEFAULT 'default' REFERENCES database_servers(name);
    CREATE INDEX tenants_by_server ON tenants (server, status);
    ALTER TABLE kept_databases ADD COLUMN server text;
    """,
]

# Any constant: serialises concurrent schema upgrades of the catalog.
_MIGRATION_LOCK_KEY = 7_411_902_315
# With the tenant id's hash: serialises the takers of one tenant's lock.
_LOCK_KEY = 7_411_902
# With the hash of owner and plan: the sign-ups of one owner on one plan count and record one at a time.
_PLAN_LOCK_KEY = 7_411_903
# The tenants that count against an owner's plan limit: not deprovisioned or failed ones.
_OWNER_TENANTS_SQL = (
    "SELECT count(*) AS n FROM tenants WHERE owner_email = %s AND plan = %s "
    "AND status NOT IN ('deprovisioned', 'failed')"
)
# Operations that may run while a drill holds the tenant in shared mode (and a drill while they run).
SHARED_COMPATIBLE = {"backup", "pin"}


async def _append_event(
    conn: CatalogConnection,
    tenant_id: str,
    event_type: str,
    data: dict[str, Any],
    workflow_id: str | None,
    actor: str | None = None,
) -> int:
    """Append an event; one that is a lifecycle change (tenancy.audit.event_action) gets its audit row in the same
    transaction, so a change is never recorded without it. `actor`: who asked (default: this process's user)."""
    row = await one_row(
        await conn.execute(
            "INSERT INTO tenant_events (tenant_id, type, data, workflow_id) VALUES (%s, %s, %s, %s) RETURNING id",
            [tenant_id, event_type, Jsonb(data), workflow_id],
        )
    )
    action = event_action(event_type, data)
    if action is not None:
        detail = {**data, "event_id": row["id"]}
        await _append_audit(conn, actor or local_actor(), action, tenant_id, event_backup(data), workflow_id, detail)
    return row["id"]


async def _append_audit(
    conn: CatalogConnection,
    actor: str,
    action: str,
    tenant_id: str | None,
    backup_name: str | None,
    workflow_id: str | None,
    detail: dict[str, Any] | None,
) -> int:
    row = await one_row(
        await conn.execute(
            "INSERT INTO audit_log (actor, action, tenant_id, backup_name, workflow_id, detail) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            [actor, action, tenant_id, backup_name, workflow_id, Jsonb(detail or {})],
        )
    )
    return row["id"]


async def _adoption_event(conn: CatalogConnection, tenant_id: str, workflow_id: str) -> int | None:
    row = await (
        await conn.execute(
            "SELECT id FROM tenant_events WHERE tenant_id = %s AND type = 'TenantAdopted' AND workflow_id = %s",
            [tenant_id, workflow_id],
        )
    ).fetchone()
    return row["id"] if row else None


# The worker's catalog connections, by (server URL, catalog database): opening a connection costs PostgreSQL more
# CPU (a new backend, ~10 ms) than a catalog call's queries, and a fleet run makes several calls per tenant. Only
# the event loop that opened a pool uses it; elsewhere (the command line, tests) each call opens its own connection.
_POOLS: dict[tuple[str, str], tuple[asyncio.AbstractEventLoop, AsyncConnectionPool[CatalogConnection]]] = {}
# Catalog calls are short (one transaction, a few statements): a few connections serve dozens of concurrent ones.
CATALOG_POOL_SIZE = 8


@contextlib.asynccontextmanager
async def catalog_pool(
    settings: Settings, max_size: int = CATALOG_POOL_SIZE
) -> AsyncIterator[AsyncConnectionPool[CatalogConnection]]:
    """While the block runs, catalog calls made in this event loop share up to `max_size` open connections;
    they are closed when it ends. A connection is checked before each use (a restarted server costs no call)."""
    key = (settings.effective_database_url, settings.catalog_database)
    pool: AsyncConnectionPool[CatalogConnection] = AsyncConnectionPool(
        conninfo_for(*key),
        kwargs={"row_factory": dict_row},
        min_size=1,
        max_size=max_size,
        open=False,
        check=AsyncConnectionPool.check_connection,
        name="catalog",
    )
    await pool.open()
    _POOLS[key] = (asyncio.get_running_loop(), pool)
    try:
        yield pool
    finally:
        current = _POOLS.get(key)
        if current is not None and current[1] is pool:
            del _POOLS[key]
        await pool.close()


class Catalog:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.admin_url = settings.effective_database_url

    async def _connect(self) -> CatalogConnection:
        return await connect(self.admin_url, self.settings.catalog_database, row_factory=dict_row)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[CatalogConnection]:
        """A catalog connection for one call, from the worker's pool if this loop has one: committed when the block
        ends, rolled back when it raises."""
        pooled = _POOLS.get((self.admin_url, self.settings.catalog_database))
        if pooled is not None and pooled[0] is asyncio.get_running_loop():
            async with pooled[1].connection() as conn:
                yield conn
        else:
            async with await self._connect() as conn:
                yield conn

    async def migrate(self) -> int:
        """Create the catalog database and bring its schema to the newest version; idempotent."""
        async with await connect(self.admin_url, autocommit=True) as admin:
            exists = await (
                await admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.settings.catalog_database])
            ).fetchone()
            if not exists:
                # Another process may create it meanwhile.
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                    await admin.execute(
                        sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.settings.catalog_database))
                    )
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK_KEY])
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            row = await (await conn.execute("SELECT coalesce(max(version), 0) AS v FROM schema_migrations")).fetchone()
            current = row["v"] if row else 0
            for version, statement in enumerate(MIGRATIONS, start=1):
                if version > current:
                    await conn.execute(statement)
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", [version])
            return len(MIGRATIONS)

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        async with self._connection() as conn:
            row = await (await conn.execute("SELECT * FROM tenants WHERE id = %s", [tenant_id])).fetchone()
        return Tenant.model_validate(row) if row else None

    async def list_tenants(self, status: str | None = None) -> list[Tenant]:
        query = "SELECT * FROM tenants" + (" WHERE status = %s" if status else "") + " ORDER BY id"
        async with self._connection() as conn:
            rows = await (await conn.execute(query, [status] if status else [])).fetchall()
        return [Tenant.model_validate(r) for r in rows]

    async def create_tenant(
        self,
        tenant_id: str,
        name: str,
        *,
        plan: str = "free",
        owner_email: str = "owner@example.com",
        settings: dict[str, Any] | None = None,
        create_database: bool = True,
    ) -> Tenant:
        """Record an active tenant and create its empty database (until provisioning has a workflow)."""
        validate_tenant_id(tenant_id)
        dbname = database_name(self.settings.database_prefix, tenant_id)
        if create_database:
            async with await connect(self.admin_url, autocommit=True) as admin:
                await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
                await mark_database(admin, dbname, Mark(kind="tenant", tenant_id=tenant_id, at=datetime.now(UTC)))
        async with self._connection() as conn:
            row = await (
                await conn.execute(
                    "INSERT INTO tenants (id, name, plan, status, owner_email, database_name, settings) "
                    "VALUES (%s, %s, %s, 'active', %s, %s, %s) RETURNING *",
                    [tenant_id, name, plan, owner_email, dbname, Jsonb(settings or {})],
                )
            ).fetchone()
            await conn.commit()
        return Tenant.model_validate(row)

    async def tenant_page(
        self, after: str | None, limit: int, statuses: list[str], server: str | None = None
    ) -> list[TenantRef]:
        async with self._connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT id, status FROM tenants WHERE status = ANY(%s) AND (%s::text IS NULL OR id > %s) "
                    "AND (%s::text IS NULL OR server = %s) ORDER BY id LIMIT %s",
                    [statuses, after, after, server, server, limit],
                )
            ).fetchall()
        return [TenantRef(id=r["id"], status=r["status"]) for r in rows]

    async def tenants_page(self, after: str | None, limit: int, statuses: list[str]) -> list[Tenant]:
        """tenant_page, with every column of each tenant."""
        async with self._connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT * FROM tenants WHERE status = ANY(%s) AND (%s::text IS NULL OR id > %s) "
                    "ORDER BY id LIMIT %s",
                    [statuses, after, after, limit],
                )
            ).fetchall()
        return [Tenant.model_validate(r) for r in rows]

    async def count_owner_tenants(self, owner_email: str, plan: str) -> int:
        """Tenants an owner has on a plan, not counting deprovisioned or failed ones."""
        async with self._connection() as conn:
            row = await one_row(await conn.execute(_OWNER_TENANTS_SQL, [owner_email, plan]))
        return row["n"]

    async def record_provisioning(
        self, new: NewTenant, max_tenants: int | None = None, server: str | None = None
    ) -> tuple[Tenant, bool]:
        """Record the tenant as `provisioning`. Returns (tenant, created); created is False when the same request
        was already recorded (a retried activity). Another live tenant with the id raises TenantExists.

        With `max_tenants` (the plan's limit), the owner's tenants on the plan are counted and the new one recorded
        in one transaction, under a lock of that owner and plan: sign-ups at the same moment take turns, so they
        never both see room for the last tenant. One over the limit raises PlanLimitReached, recording nothing."""
        async with self._connection() as conn, conn.transaction():
            if max_tenants is not None:
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                    [_PLAN_LOCK_KEY, f"{new.owner_email}\n{new.plan}"],
                )
            row = await (
                await conn.execute("SELECT * FROM tenants WHERE id = %s FOR UPDATE", [new.tenant_id])
            ).fetchone()
            if row and row["status"] == "provisioning" and row["owner_email"] == new.owner_email:
                return Tenant.model_validate(row), False
            if row and row["status"] not in ("failed",):
                raise TenantExists(f"tenant {new.tenant_id!r} already exists ({row['status']})")
            if max_tenants is not None:
                used = (await one_row(await conn.execute(_OWNER_TENANTS_SQL, [new.owner_email, new.plan])))["n"]
                if used >= max_tenants:
                    raise PlanLimitReached(new.owner_email, new.plan, used)
            values = [
                new.name,
                new.plan,
                new.owner_email,
                new.database_name,
                new.role_name,
                Jsonb(new.settings),
                server or new.server or DEFAULT_SERVER,
            ]
            if row:  # a failed attempt may be provisioned again
                row = await (
                    await conn.execute(
                        "UPDATE tenants SET name = %s, plan = %s, owner_email = %s, database_name = %s, "
                        "role_name = %s, settings = %s, server = %s, status = 'provisioning', status_reason = NULL, "
                        "updated_at = now() WHERE id = %s RETURNING *",
                        [*values, new.tenant_id],
                    )
                ).fetchone()
            else:
                row = await (
                    await conn.execute(
                        "INSERT INTO tenants (name, plan, owner_email, database_name, role_name, settings, server, "
                        "id, status) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'provisioning') RETURNING *",
                        [*values, new.tenant_id],
                    )
                ).fetchone()
            return Tenant.model_validate(row), True

    async def change_status(
        self,
        tenant_id: str,
        new_status: str,
        reason: str | None,
        event_type: str,
        workflow_id: str | None,
        check: Callable[[str, str], None],
        data: dict[str, Any] | None = None,
        actor: str | None = None,
    ) -> tuple[str, int | None]:
        """Move the tenant to `new_status` (after `check(old, new)`) and append the event (with `data` besides
        the statuses), in one transaction. Returns (old status, event id); changing to the status it already has
        changes nothing (no event)."""
        async with self._connection() as conn, conn.transaction():
            row = await (
                await conn.execute("SELECT status FROM tenants WHERE id = %s FOR UPDATE", [tenant_id])
            ).fetchone()
            if row is None:
                raise LookupError(f"tenant {tenant_id!r} is not in the catalog")
            old = row["status"]
            if old == new_status:
                return old, None
            check(old, new_status)
            await conn.execute(
                "UPDATE tenants SET status = %s, status_reason = %s, updated_at = now() WHERE id = %s",
                [new_status, reason, tenant_id],
            )
            event = {**(data or {}), "old_status": old, "new_status": new_status, "reason": reason}
            return old, await _append_event(conn, tenant_id, event_type, event, workflow_id, actor)

    async def update_settings(
        self, tenant_id: str, merge: Callable[[dict], dict], workflow_id: str | None, actor: str | None = None
    ) -> tuple[dict, int]:
        async with self._connection() as conn, conn.transaction():
            row = await (
                await conn.execute("SELECT settings FROM tenants WHERE id = %s FOR UPDATE", [tenant_id])
            ).fetchone()
            if row is None:
                raise LookupError(f"tenant {tenant_id!r} is not in the catalog")
            merged = merge(row["settings"])
            await conn.execute(
                "UPDATE tenants SET settings = %s, updated_at = now() WHERE id = %s", [Jsonb(merged), tenant_id]
            )
            data = {"old": row["settings"], "new": merged}
            return merged, await _append_event(conn, tenant_id, "TenantSettingsChanged", data, workflow_id, actor)

    async def record_maintenance(self, tenant_id: str, summary: dict[str, Any], workflow_id: str | None) -> int:
        async with self._connection() as conn, conn.transaction():
            await conn.execute("UPDATE tenants SET last_maintenance = %s WHERE id = %s", [Jsonb(summary), tenant_id])
            return await _append_event(conn, tenant_id, "TenantMaintained", summary, workflow_id)

    async def managed_schedules(self) -> dict[str, str]:
        """Schedules this project created on the Temporal server: id → fingerprint of what was applied."""
        async with self._connection() as conn:
            rows = await (await conn.execute("SELECT id, fingerprint FROM managed_schedules")).fetchall()
        return {r["id"]: r["fingerprint"] for r in rows}

    async def set_managed_schedule(self, schedule_id: str, fingerprint: str | None) -> None:
        async with self._connection() as conn, conn.transaction():
            if fingerprint is None:
                await conn.execute("DELETE FROM managed_schedules WHERE id = %s", [schedule_id])
            else:
                await conn.execute(
                    "INSERT INTO managed_schedules (id, fingerprint) VALUES (%s, %s) ON CONFLICT (id) "
                    "DO UPDATE SET fingerprint = excluded.fingerprint, applied_at = now()",
                    [schedule_id, fingerprint],
                )

    async def drop_tenant(self, tenant_id: str) -> None:
        """Remove a tenant's database and catalog row (test and demo clean-up; deprovisioning comes later)."""
        tenant = await self.get_tenant(tenant_id)
        dbname = tenant.database_name if tenant else database_name(self.settings.database_prefix, tenant_id)
        async with await connect(self.admin_url, autocommit=True) as admin:
            await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
            if tenant and tenant.role_name:
                await admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(tenant.role_name)))
        async with self._connection() as conn:
            await conn.execute("DELETE FROM tenant_events WHERE tenant_id = %s", [tenant_id])
            await conn.execute("DELETE FROM tenants WHERE id = %s", [tenant_id])
            await conn.commit()

    async def database_exists(self, dbname: str) -> bool:
        async with await connect(self.admin_url) as admin:
            row = await (await admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname])).fetchone()
        return row is not None

    async def acquire_lock(
        self,
        tenant_id: str,
        operation: str,
        workflow_id: str,
        run_id: str,
        holder_state: Callable[[str, str, str], Awaitable[HolderState]],
        *,
        namespace: str,
        lease: timedelta,
        shared: bool = False,
    ) -> LockOutcome:
        """Take the tenant's operation lock, or say who holds it.

        The lock belongs to a workflow run, not to a worker: a crashed worker's run goes on elsewhere and still
        releases it. A holder is a workflow id in a Temporal namespace (`namespace` is the taker's, and the holder's
        of rows that name none). Another holder's lock is taken over only when `holder_state(namespace, workflow_id,
        run_id)` proves its run ended, or cannot see it and its lease has expired (tenancy/locks.py). Taking the
        lock, or taking it again, gives it a lease of `lease` from now.

        Shared holds (drills) go together with each other and with the operations in SHARED_COMPATIBLE (a backup
        may run during a drill); any other operation waits for them, and they wait for it.
        """
        async with self._connection() as conn, conn.transaction():
            # Exclusive and shared takers of one tenant decide one at a time.
            await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [_LOCK_KEY, tenant_id])
            # The catalog's clock, as leases are written with it; read once the advisory lock is ours.
            now = (await one_row(await conn.execute("SELECT clock_timestamp() AS now")))["now"]
            lease_until = now + lease

            def mine(holder: dict[str, Any]) -> bool:
                return is_same_holder(holder["namespace"], holder["workflow_id"], namespace, workflow_id)

            async def ended(holder: dict[str, Any]) -> bool:
                state = await holder_state(
                    holder_namespace(holder["namespace"], namespace), holder["workflow_id"], holder["run_id"]
                )
                return may_take_over(state, lease_expired(holder["lease_until"], holder["acquired_at"], lease, now))

            def busy(holder: dict[str, Any]) -> LockOutcome:
                held_in = holder_namespace(holder["namespace"], namespace)
                return LockOutcome(
                    acquired=False,
                    holder_workflow_id=holder["workflow_id"],
                    holder_operation=holder["operation"],
                    holder_namespace=held_in if held_in != namespace else None,
                )

            row = await (await conn.execute("SELECT * FROM tenant_locks WHERE tenant_id = %s", [tenant_id])).fetchone()
            if row is not None and not mine(row) and await ended(row):
                await conn.execute("DELETE FROM tenant_locks WHERE tenant_id = %s", [tenant_id])
                taken_over, row = row, None
            else:
                taken_over = None
            previous = (
                {"holder_workflow_id": taken_over["workflow_id"], "holder_operation": taken_over["operation"]}
                if taken_over
                else {}
            )
            if shared:
                if row is not None and row["operation"] not in SHARED_COMPATIBLE:
                    return busy(row)
                held = await (
                    await conn.execute(
                        "INSERT INTO tenant_shared_locks (tenant_id, workflow_id, run_id, operation, namespace, "
                        "lease_until) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id, workflow_id) DO UPDATE "
                        "SET run_id = excluded.run_id, namespace = excluded.namespace, "
                        "lease_until = excluded.lease_until "
                        "WHERE coalesce(tenant_shared_locks.namespace, excluded.namespace) = excluded.namespace "
                        "RETURNING workflow_id",
                        [tenant_id, workflow_id, run_id, operation, namespace, lease_until],
                    )
                ).fetchone()
                if held is None:  # the same workflow id, another deployment's: its hold, not ours
                    other = await one_row(
                        await conn.execute(
                            "SELECT * FROM tenant_shared_locks WHERE tenant_id = %s AND workflow_id = %s",
                            [tenant_id, workflow_id],
                        )
                    )
                    return busy(other)
                return LockOutcome(acquired=True, **previous)
            if row is not None:
                if not mine(row):
                    return busy(row)
                # Taken again (a retried take, a child under its parent's lock, a new run of the workflow id).
                await conn.execute(
                    "UPDATE tenant_locks SET run_id = %s, namespace = %s, lease_until = %s WHERE tenant_id = %s",
                    [run_id, namespace, lease_until, tenant_id],
                )
                return LockOutcome(acquired=True)
            if operation not in SHARED_COMPATIBLE:
                holders = await (
                    await conn.execute(
                        "SELECT * FROM tenant_shared_locks WHERE tenant_id = %s ORDER BY acquired_at", [tenant_id]
                    )
                ).fetchall()
                for holder in holders:
                    if mine(holder):
                        continue
                    if await ended(holder):
                        await conn.execute(
                            "DELETE FROM tenant_shared_locks WHERE tenant_id = %s AND workflow_id = %s",
                            [tenant_id, holder["workflow_id"]],
                        )
                        continue
                    return busy(holder)
            await conn.execute(
                "INSERT INTO tenant_locks (tenant_id, operation, workflow_id, run_id, namespace, lease_until) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                [tenant_id, operation, workflow_id, run_id, namespace, lease_until],
            )
            return LockOutcome(acquired=True, **previous)

    async def release_lock(self, tenant_id: str, workflow_id: str, *, namespace: str) -> bool:
        """The workflow's hold of the tenant, exclusive or shared, ends; a hold of the same workflow id in another
        namespace is another deployment's and stays."""
        async with self._connection() as conn, conn.transaction():
            where = "WHERE tenant_id = %s AND workflow_id = %s AND coalesce(namespace, %s) = %s"
            params = [tenant_id, workflow_id, namespace, namespace]
            cur = await conn.execute("DELETE FROM tenant_locks " + where, params)
            shared = await conn.execute("DELETE FROM tenant_shared_locks " + where, params)
            return cur.rowcount + shared.rowcount > 0

    async def renew_lock_leases(self, namespace: str, run_id: str, lease: timedelta) -> int:
        """The run's holds (exclusive and shared) get a lease of `lease` from now; how many it has. Rows from before
        locks named their namespace get this one (they were this deployment's)."""
        async with self._connection() as conn, conn.transaction():
            renewed = 0
            for table in ("tenant_locks", "tenant_shared_locks"):
                cur = await conn.execute(
                    sql.SQL(
                        "UPDATE {} SET lease_until = now() + %s, namespace = coalesce(namespace, %s) "
                        "WHERE run_id = %s AND coalesce(namespace, %s) = %s"
                    ).format(sql.Identifier(table)),
                    [lease, namespace, run_id, namespace, namespace],
                )
                renewed += cur.rowcount
            return renewed

    async def backup_facts(self, tenant_id: str) -> dict[str, dict[str, Any]]:
        """What the catalog knows of each of the tenant's backups (pins, drills, restorable), by name."""
        async with self._connection() as conn:
            rows = await (await conn.execute("SELECT * FROM backups WHERE tenant_id = %s", [tenant_id])).fetchall()
        return {r["name"]: r for r in rows}

    async def set_backup_pinned(
        self, tenant_id: str, name: str, pinned: bool, actor: str | None = None, workflow_id: str | None = None
    ) -> None:
        """One statement on one column: a pin never overwrites a drill's outcome, nor the other way round. Audited
        (backup.pin / backup.unpin) in the same transaction."""
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO backups (tenant_id, name, pinned) VALUES (%s, %s, %s) ON CONFLICT (tenant_id, name) "
                "DO UPDATE SET pinned = excluded.pinned, updated_at = now()",
                [tenant_id, name, pinned],
            )
            action = BACKUP_PIN if pinned else BACKUP_UNPIN
            await _append_audit(conn, actor or local_actor(), action, tenant_id, name, workflow_id, None)

    async def record_backup_drill(self, tenant_id: str, name: str, ok: bool) -> None:
        """A passed drill proves the backup restorable; a failed one marks it so it never counts as a good copy."""
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO backups (tenant_id, name, drilled_at, drill_ok, restorable) "
                "VALUES (%s, %s, now(), %s, CASE WHEN %s THEN true END) ON CONFLICT (tenant_id, name) "
                "DO UPDATE SET drilled_at = now(), drill_ok = excluded.drill_ok, "
                "restorable = coalesce(excluded.restorable, backups.restorable), updated_at = now()",
                [tenant_id, name, ok, ok],
            )

    async def forget_backup(self, tenant_id: str, name: str) -> None:
        """The backup was deleted: its facts go with it."""
        async with self._connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM backups WHERE tenant_id = %s AND name = %s", [tenant_id, name])

    async def forget_all_backups(self, tenant_id: str) -> int:
        """Every backup of the tenant was deleted (an erasure): their facts go, pins included."""
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute("DELETE FROM backups WHERE tenant_id = %s", [tenant_id])
            return cur.rowcount

    async def tenant_key(self, tenant_id: str) -> dict[str, Any] | None:
        """The tenant's key row (recipient, wrapped identity, destroyed_at/by), if it has one."""
        async with self._connection() as conn:
            return await (await conn.execute("SELECT * FROM tenant_keys WHERE tenant_id = %s", [tenant_id])).fetchone()

    async def add_tenant_key(self, tenant_id: str, recipient: str, wrapped_identity: bytes) -> dict[str, Any]:
        """Keep this key unless the tenant already has one (two first backups may race): the row that is kept,
        this one or the other, is returned, so every caller encrypts to the same recipient."""
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO tenant_keys (tenant_id, recipient, wrapped_identity) VALUES (%s, %s, %s) "
                "ON CONFLICT (tenant_id) DO NOTHING",
                [tenant_id, recipient, wrapped_identity],
            )
            return await one_row(await conn.execute("SELECT * FROM tenant_keys WHERE tenant_id = %s", [tenant_id]))

    async def destroy_tenant_key(self, tenant_id: str, destroyed_by: str) -> dict[str, Any] | None:
        """Destroy the tenant's wrapped identity (the recipient stays, as a record of which key it was). Idempotent:
        a key already destroyed keeps who destroyed it and when. None when the tenant never had a key."""
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                "UPDATE tenant_keys SET wrapped_identity = NULL, destroyed_at = now(), destroyed_by = %s "
                "WHERE tenant_id = %s AND destroyed_at IS NULL",
                [destroyed_by, tenant_id],
            )
            return await (await conn.execute("SELECT * FROM tenant_keys WHERE tenant_id = %s", [tenant_id])).fetchone()

    async def record_fleet_outcomes(
        self, fleet_workflow_id: str, fleet_run_id: str, outcomes: list[TenantOutcome]
    ) -> int:
        """Each tenant's outcome of a fleet run; the latest attempt of a tenant wins (a retried write is harmless)."""
        async with self._connection() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO fleet_outcomes (fleet_workflow_id, fleet_run_id, tenant_id, ok, skipped, workflow_id,"
                " backup_name, detail, error) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (fleet_workflow_id, tenant_id) DO UPDATE SET fleet_run_id = excluded.fleet_run_id,"
                " ok = excluded.ok, skipped = excluded.skipped, workflow_id = excluded.workflow_id,"
                " backup_name = excluded.backup_name, detail = excluded.detail, error = excluded.error,"
                " recorded_at = now()",
                [
                    [
                        fleet_workflow_id,
                        fleet_run_id,
                        o.tenant_id,
                        o.ok,
                        o.skipped,
                        o.workflow_id,
                        o.backup_name,
                        o.detail,
                        o.error,
                    ]
                    for o in outcomes
                ],
            )
        return len(outcomes)

    async def fleet_outcomes(self, fleet_workflow_id: str, failed_only: bool = False) -> list[TenantOutcome]:
        """A fleet run's outcomes, by tenant id."""
        query = "SELECT * FROM fleet_outcomes WHERE fleet_workflow_id = %s" + (" AND NOT ok" if failed_only else "")
        async with self._connection() as conn:
            rows = await (await conn.execute(query + " ORDER BY tenant_id", [fleet_workflow_id])).fetchall()
        return [TenantOutcome.model_validate(r) for r in rows]

    async def record_event(
        self,
        tenant_id: str,
        event_type: str,
        data: dict[str, Any],
        workflow_id: str | None = None,
        actor: str | None = None,
    ) -> int:
        """Append an event (the table is append-only: events are never updated or deleted), with its audit row
        when it is a lifecycle change."""
        async with self._connection() as conn, conn.transaction():
            return await _append_event(conn, tenant_id, event_type, data, workflow_id, actor)

    async def event(self, event_id: int) -> dict[str, Any] | None:
        async with self._connection() as conn:
            return await (await conn.execute("SELECT * FROM tenant_events WHERE id = %s", [event_id])).fetchone()

    async def events(self, tenant_id: str, limit: int = 20) -> list[dict[str, Any]]:
        async with self._connection() as conn:
            return await (
                await conn.execute(
                    "SELECT * FROM tenant_events WHERE tenant_id = %s ORDER BY id DESC LIMIT %s", [tenant_id, limit]
                )
            ).fetchall()

    async def audit(
        self,
        actor: str,
        action: str,
        tenant_id: str | None = None,
        backup_name: str | None = None,
        workflow_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        """Append a row to the audit trail (append-only: the table refuses updates and deletes). Raises when it
        cannot be written: the access it records must not go unrecorded."""
        async with self._connection() as conn, conn.transaction():
            return await _append_audit(conn, actor, action, tenant_id, backup_name, workflow_id, detail)

    async def audit_entries(
        self,
        tenant_id: str | None = None,
        since: datetime | None = None,
        action_prefix: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """The newest `limit` audit rows matching, oldest first (as a log reads)."""
        conditions = [sql.SQL("true")]
        params: dict[str, Any] = {"limit": limit}
        if tenant_id is not None:
            conditions.append(sql.SQL("tenant_id = %(tenant)s"))
            params["tenant"] = tenant_id
        if since is not None:
            conditions.append(sql.SQL("at >= %(since)s"))
            params["since"] = since
        if action_prefix:
            conditions.append(sql.SQL("left(action, length(%(prefix)s)) = %(prefix)s"))
            params["prefix"] = action_prefix
        query = sql.SQL("SELECT * FROM audit_log WHERE {} ORDER BY at DESC, id DESC LIMIT %(limit)s").format(
            sql.SQL(" AND ").join(conditions)
        )
        async with self._connection() as conn:
            rows = await (await conn.execute(query, params)).fetchall()
        return rows[::-1]

    async def record_kept_database(
        self,
        name: str,
        tenant_id: str,
        database_name: str,
        workflow_id: str,
        backup_name: str | None,
        kept_until,
        server: str | None = None,
    ) -> None:
        """A database a restore set aside on `server`, kept until `kept_until` (idempotent: a retried call changes
        nothing)."""
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO kept_databases (name, tenant_id, database_name, workflow_id, backup_name, kept_until, "
                "server) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
                [name, tenant_id, database_name, workflow_id, backup_name, kept_until, server],
            )

    async def kept_database(self, name: str) -> dict[str, Any] | None:
        """The kept_databases row of a set-aside database (ended or not), if any."""
        async with self._connection() as conn:
            return await (await conn.execute("SELECT * FROM kept_databases WHERE name = %s", [name])).fetchone()

    async def end_kept_database(self, name: str, how: str) -> bool:
        """The kept database is gone or back in service (`how` says which); False when it was already ended."""
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE kept_databases SET ended_at = now(), ended_how = %s WHERE name = %s AND ended_at IS NULL",
                [how, name],
            )
            return cur.rowcount > 0

    async def kept_databases(self, tenant_id: str) -> list[dict[str, Any]]:
        """The tenant's databases set aside by restores and not yet dropped or swapped back, newest first."""
        async with self._connection() as conn:
            return await (
                await conn.execute(
                    "SELECT * FROM kept_databases WHERE tenant_id = %s AND ended_at IS NULL ORDER BY created_at DESC",
                    [tenant_id],
                )
            ).fetchall()

    # Servers (tenancy/servers.py). The catalog knows their names, states and limits; URLs live with the workers.

    async def servers(self) -> list[dict[str, Any]]:
        """Every server with its count of live tenants, by name."""
        async with self._connection() as conn:
            return await (
                await conn.execute(
                    "SELECT s.*, (SELECT count(*) FROM tenants t WHERE t.server = s.name "
                    "AND t.status NOT IN ('deprovisioned', 'failed')) AS tenants "
                    "FROM database_servers s ORDER BY s.name"
                )
            ).fetchall()

    async def server(self, name: str) -> dict[str, Any] | None:
        async with self._connection() as conn:
            return await (await conn.execute("SELECT * FROM database_servers WHERE name = %s", [name])).fetchone()

    async def add_server(
        self,
        name: str,
        *,
        max_tenants: int | None = None,
        max_size_mb: int | None = None,
        major_version: int | None = None,
        address: str | None = None,
    ) -> bool:
        """Record a server (open); False when one of that name is already recorded (left as it is)."""
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO database_servers (name, max_tenants, max_size_mb, major_version, address) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
                [name, max_tenants, max_size_mb, major_version, address],
            )
            return cur.rowcount > 0

    async def update_server(self, name: str, **fields: Any) -> bool:
        """Set some of status, max_tenants, max_size_mb, major_version, address; False when no such server."""
        allowed = {"status", "max_tenants", "max_size_mb", "major_version", "address"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"not a server field: {', '.join(sorted(unknown))}")
        if not fields:
            return await self.server(name) is not None
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(key), sql.Placeholder()) for key in fields
        )
        query = sql.SQL("UPDATE database_servers SET {}, updated_at = now() WHERE name = %s").format(assignments)
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(query, [*fields.values(), name])
            return cur.rowcount > 0

    async def remove_server(self, name: str, *, just_added: bool = False) -> int:
        """Forget a server that holds no tenant of any status but deprovisioned; returns the tenants that stop it
        (0: removed). Refused (InvalidInput) while databases kept there (a move's source, for --keep-source) are
        still recorded, or a move is under way: their drop timer, or `--undo`, needs the server's URL. `just_added`:
        the undo of an add that failed, which nothing can be on yet (a move elsewhere does not stop it)."""
        held, _ = await self._remove_server(name, just_added=just_added, lost=False)
        return held

    async def remove_lost_server(self, name: str) -> tuple[int, list[str]]:
        """Forget a server that is gone for good: as remove_server, but the databases kept there do not stop it,
        their rows are ended ('server lost') in the same transaction, for nothing can drop them any more (and a
        deprovisioning or erasure of their tenants must not wait for them). (tenants that stop it, kept databases
        abandoned); nothing changed when the first is not 0."""
        return await self._remove_server(name, just_added=False, lost=True)

    async def kept_on_server(self, name: str) -> list[dict[str, Any]]:
        """The databases kept on a server (not yet dropped or swapped back), soonest to expire first."""
        async with self._connection() as conn:
            return await (
                await conn.execute(
                    "SELECT * FROM kept_databases WHERE coalesce(server, 'default') = %s AND ended_at IS NULL "
                    "ORDER BY kept_until NULLS LAST, name",
                    [name],
                )
            ).fetchall()

    async def _remove_server(self, name: str, *, just_added: bool, lost: bool) -> tuple[int, list[str]]:
        async with self._connection() as conn, conn.transaction():
            held = (
                await one_row(
                    await conn.execute(
                        "SELECT count(*) AS n FROM tenants WHERE server = %s AND status <> 'deprovisioned'", [name]
                    )
                )
            )["n"]
            if held:
                return held, []
            kept = await (
                await conn.execute(
                    "SELECT name, tenant_id, kept_until FROM kept_databases "
                    "WHERE coalesce(server, 'default') = %s AND ended_at IS NULL ORDER BY kept_until NULLS LAST, name "
                    "FOR UPDATE",
                    [name],
                )
            ).fetchall()
            if kept and not lost:
                tenants = sorted({row["tenant_id"] for row in kept})
                until = [row["kept_until"] for row in kept if row["kept_until"] is not None]
                when = f", kept until {max(until):%Y-%m-%d %H:%M} UTC at the latest" if until else ""
                raise InvalidInput(
                    f"server {name!r} still holds {len(kept)} kept database(s) of tenant(s) {', '.join(tenants[:5])}"
                    f"{' ...' if len(tenants) > 5 else ''}{when}: undo the move (`tenants move ID --undo`), wait "
                    "until they are dropped, or deprovision the tenant; for a server gone for good, "
                    f"`tenants servers remove {name} --lost`; nothing was removed"
                )
            moving = await (
                await conn.execute(
                    "SELECT tenant_id FROM tenant_locks WHERE operation IN ('move', 'move-undo') "
                    "AND (lease_until IS NULL OR lease_until > clock_timestamp()) ORDER BY tenant_id"
                )
            ).fetchall()
            if moving and not just_added:
                # The lock does not say which servers a move touches: any move under way may be to or from this one.
                raise InvalidInput(
                    f"a move is under way (tenant(s) {', '.join(row['tenant_id'] for row in moving[:5])}): it may "
                    f"copy to, or keep a database on, server {name!r}; wait for it to end; nothing was removed"
                )
            abandoned = [row["name"] for row in kept]
            if abandoned:
                # Nothing can drop them now: their rows end here, so the tenants' deprovisioning no longer waits.
                await conn.execute(
                    "UPDATE kept_databases SET ended_at = now(), ended_how = 'server lost' "
                    "WHERE name = ANY(%s) AND ended_at IS NULL",
                    [abandoned],
                )
            await conn.execute("UPDATE tenants SET server = 'default' WHERE server = %s", [name])
            await conn.execute("DELETE FROM database_servers WHERE name = %s AND name <> 'default'", [name])
            return 0, abandoned

    async def tenant_server(self, tenant_id: str) -> str | None:
        """The server of a tenant's database (None: no such tenant)."""
        async with self._connection() as conn:
            row = await (await conn.execute("SELECT server FROM tenants WHERE id = %s", [tenant_id])).fetchone()
        return row["server"] if row else None

    async def switch_tenant_server(self, tenant_id: str, source: str, target: str) -> bool:
        """Point the tenant at `target` if it is on `source`; True when it is on `target` afterwards (a retried
        switch finds it done). False: it is on neither, and nothing changed."""
        async with self._connection() as conn, conn.transaction():
            row = await (
                await conn.execute("SELECT server FROM tenants WHERE id = %s FOR UPDATE", [tenant_id])
            ).fetchone()
            if row is None:
                return False
            if row["server"] == target:
                return True
            if row["server"] != source:
                return False
            await conn.execute("UPDATE tenants SET server = %s, updated_at = now() WHERE id = %s", [target, tenant_id])
            return True

    async def lock_holder(self, tenant_id: str) -> dict[str, Any] | None:
        async with self._connection() as conn:
            return await (await conn.execute("SELECT * FROM tenant_locks WHERE tenant_id = %s", [tenant_id])).fetchone()

    async def tenant_with_database(self, dbname: str) -> Tenant | None:
        """The tenant (of any status) recorded with this database, if any."""
        async with self._connection() as conn:
            row = await (await conn.execute("SELECT * FROM tenants WHERE database_name = %s", [dbname])).fetchone()
        return Tenant.model_validate(row) if row else None

    async def tenant_with_role(self, role: str) -> Tenant | None:
        """A tenant not deprovisioned or failed that is recorded with this role, if any."""
        async with self._connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT * FROM tenants WHERE role_name = %s AND status NOT IN ('deprovisioned', 'failed') "
                    "ORDER BY id LIMIT 1",
                    [role],
                )
            ).fetchone()
        return Tenant.model_validate(row) if row else None

    async def record_adoption(self, plan: AdoptionPlan, marker: str) -> None:
        """Record a tenant being adopted as `provisioning` (with `marker` as its status reason, so a retried call
        knows its own row), which lets its lock be taken. A tenant already recorded with the database (mark only)
        is left as it is. TenantExists when the id or the database is another tenant's."""
        async with self._connection() as conn, conn.transaction():
            row = await (
                await conn.execute("SELECT * FROM tenants WHERE id = %s FOR UPDATE", [plan.tenant_id])
            ).fetchone()
            holder = await (
                await conn.execute(
                    "SELECT id, status FROM tenants WHERE database_name = %s AND id <> %s",
                    [plan.database_name, plan.tenant_id],
                )
            ).fetchone()
            if holder:
                raise TenantExists(
                    f"database {plan.database_name} is recorded for tenant {holder['id']!r} ({holder['status']})"
                )
            if plan.mark_only:
                if row is None or row["database_name"] != plan.database_name or row["status"] not in _LIVE:
                    raise TenantExists(f"tenant {plan.tenant_id!r} changed while it was being adopted; try again")
                return
            if row and row["status"] == "provisioning" and row["status_reason"] == marker:
                return
            if row and row["status"] not in ("failed", "deprovisioned"):
                raise TenantExists(f"tenant {plan.tenant_id!r} already exists ({row['status']})")
            values = [plan.name, plan.plan, plan.owner_email, plan.database_name, plan.role_name, marker]
            if row:  # a failed or deprovisioned tenant comes back with the adopted database
                await conn.execute(
                    "UPDATE tenants SET name = %s, plan = %s, owner_email = %s, database_name = %s, role_name = %s, "
                    "status_reason = %s, status = 'provisioning', updated_at = now() WHERE id = %s",
                    [*values, plan.tenant_id],
                )
            else:
                await conn.execute(
                    "INSERT INTO tenants (name, plan, owner_email, database_name, role_name, status_reason, id, "
                    "status) VALUES (%s, %s, %s, %s, %s, %s, %s, 'provisioning')",
                    [*values, plan.tenant_id],
                )

    async def record_adopted(self, plan: AdoptionPlan, marker: str, workflow_id: str, actor: str | None = None) -> int:
        """The adopted tenant is active (a mark-only adoption keeps its status), with one TenantAdopted event per
        run: a retried call returns the event it recorded."""
        async with self._connection() as conn, conn.transaction():
            row = await (
                await conn.execute(
                    "SELECT status, status_reason FROM tenants WHERE id = %s FOR UPDATE", [plan.tenant_id]
                )
            ).fetchone()
            if row is None:
                raise LookupError(f"tenant {plan.tenant_id!r} is not in the catalog")
            done = await _adoption_event(conn, plan.tenant_id, workflow_id)
            if done is not None:
                return done
            if row["status"] == "provisioning" and row["status_reason"] == marker:
                await conn.execute(
                    "UPDATE tenants SET status = 'active', status_reason = NULL, updated_at = now() WHERE id = %s",
                    [plan.tenant_id],
                )
            elif plan.role_name:  # mark only: a tenant recorded without a role gets the one named
                await conn.execute(
                    "UPDATE tenants SET role_name = coalesce(role_name, %s), updated_at = now() WHERE id = %s",
                    [plan.role_name, plan.tenant_id],
                )
            data = {
                "database": plan.database_name,
                "role": plan.role_name,
                "mark_only": plan.mark_only,
                "plan": plan.plan,
                "owner_email": plan.owner_email,
            }
            return await _append_event(conn, plan.tenant_id, "TenantAdopted", data, workflow_id, actor)

    async def adoption_event(self, tenant_id: str, workflow_id: str) -> int | None:
        """The TenantAdopted event this run recorded: its adoption finished."""
        async with self._connection() as conn:
            return await _adoption_event(conn, tenant_id, workflow_id)

    async def fail_adoption(
        self, tenant_id: str, marker: str, reason: str, workflow_id: str, actor: str | None = None
    ) -> bool:
        """An adoption that did not finish: the row it recorded (and only that one) becomes failed."""
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE tenants SET status = 'failed', status_reason = %s, updated_at = now() "
                "WHERE id = %s AND status = 'provisioning' AND status_reason = %s",
                [reason[:500], tenant_id, marker],
            )
            if cur.rowcount:
                data = {"old_status": "provisioning", "new_status": "failed", "reason": reason[:500]}
                await _append_event(conn, tenant_id, "TenantAdoptionFailed", data, workflow_id, actor)
            return cur.rowcount > 0
