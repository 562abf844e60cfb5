"""Adoption: an existing database (and role) registered as a tenant, for users who arrive with tenants already
running, or a tenant from before marks whose database is marked at last. Nothing of the database or role is
changed but its mark (COMMENT ON DATABASE/ROLE); an adoption that does not finish puts the comments back."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
from psycopg import sql
from temporalio import activity

from activities.audit import calling_actor
from activities.calling_run import calling_run
from activities.deprovision import databases_mentioning
from activities.heartbeat import Heartbeater
from activities.infra.catalog import Catalog, TenantExists
from activities.infra.marks import mark_database, mark_role
from activities.infra.pg import connect
from activities.infra.servers import ServerUrls
from tenancy.contracts.provision import AdoptTenantInput
from tenancy.contracts.tenants import Tenant
from tenancy.errors import INVALID_INPUT, TENANT_EXISTS, InvalidInput, fail
from tenancy.log import activity_logger
from tenancy.marks import Mark, parse_mark
from tenancy.messages.provision import AdoptionPlan, AdoptionUndo
from tenancy.naming import (
    MAX_IDENTIFIER_BYTES,
    reserved_database,
    validate_display_name,
    validate_email,
    validate_tenant_id,
)
from tenancy.servers import DEFAULT_SERVER, validate_server_name
from tenancy.settings import Settings

# Statuses of a tenant whose database is in service: adopting it again only writes the marks.
LIVE = ("active", "inactive", "suspended")
MAX_LOCK_WAIT_SECONDS = 86_400

_KIND_WORDS = {
    "tenant": "database",
    "scratch": "scratch copy (a restore's or a drill's)",
    "previous": "previous database (set aside by a restore)",
    "provisioning": "unfinished provisioning copy",
    "role": "role",
}


def _pg_name(name: str | None, what: str) -> str:
    if not name or len(name.encode()) > MAX_IDENTIFIER_BYTES or "\x00" in name:
        raise InvalidInput(f"invalid {what} name {name!r}: 1 to {MAX_IDENTIFIER_BYTES} bytes")
    return name


def _marker() -> str:
    """The status reason of the row an adoption records: lets its own retried steps, and only them, find it."""
    info = activity.info()
    return f"being adopted by {info.workflow_id} ({info.workflow_run_id})"


def _foreign_mark(mark: Mark | None, tenant_id: str, kind: str) -> str | None:
    """Why a mark forbids adopting the object as `tenant_id`'s `kind`, or None."""
    if mark is None or mark.is_of(tenant_id, kind):
        return None
    if mark.tenant_id == tenant_id:
        return f"is marked as tenant {tenant_id!r}'s {_KIND_WORDS[mark.kind]}, not its {_KIND_WORDS[kind]}"
    return f"is marked as tenant {mark.tenant_id!r}'s {_KIND_WORDS[mark.kind]}"


async def _database_facts(conn: psycopg.AsyncConnection, name: str) -> tuple[bool, bool, str | None] | None:
    """(is a template, takes connections, comment) of a database, or None when there is none of that name."""
    row = await (
        await conn.execute(
            "SELECT datistemplate, datallowconn, shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE datname = %s",
            [name],
        )
    ).fetchone()
    return (row[0], row[1], row[2]) if row else None


async def _role_facts(conn: psycopg.AsyncConnection, name: str) -> tuple[bool, bool, str | None] | None:
    """(has powers a tenant's role must not have, is the admin connection's own role, comment), or None."""
    row = await (
        await conn.execute(
            "SELECT rolsuper OR rolreplication OR rolbypassrls OR rolcreaterole, rolname = current_user, "
            "shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s",
            [name],
        )
    ).fetchone()
    return (row[0], row[1], row[2]) if row else None


class AdoptionActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalog = Catalog(settings)

    def _admin_url(self, server: str | None) -> str:
        """The admin URL of the server holding the adopted database (None: `default`)."""
        return ServerUrls(self.settings).url(server)

    async def _server(self, req: AdoptTenantInput, known: Tenant | None, mark_only: bool) -> str:
        """Where the database is: `--server` (a server of the catalog), else where a recorded tenant's is (only
        marked), else `default`. Marking a recorded tenant's database on another server than its own is refused."""
        if req.server is None:
            return known.server if mark_only and known else DEFAULT_SERVER
        try:
            validate_server_name(req.server)
        except InvalidInput as exc:
            raise fail(INVALID_INPUT, str(exc)) from None
        if await self.catalog.server(req.server) is None:
            raise fail(
                INVALID_INPUT, f"no server named {req.server!r}; add it with `tenants servers add {req.server} URL`"
            )
        if mark_only and known and known.server != req.server:
            raise fail(
                INVALID_INPUT,
                f"tenant {known.id!r} is recorded on server {known.server!r}, not {req.server!r}; nothing was changed",
            )
        return req.server

    def _validate(self, req: AdoptTenantInput) -> tuple[str, str, str, str, str, str | None]:
        try:
            tenant_id = validate_tenant_id(req.tenant_id)
            name = validate_display_name(req.name or tenant_id)
            if req.plan not in self.settings.plans:
                raise InvalidInput(f"unknown plan {req.plan!r}; plans: {', '.join(sorted(self.settings.plans))}")
            owner = validate_email(req.owner_email)
            database = _pg_name(req.database_name, "database")
            role = _pg_name(req.role_name, "role") if req.role_name is not None else None
            if not 0 <= req.lock_wait_seconds <= MAX_LOCK_WAIT_SECONDS:
                raise InvalidInput(f"lock wait must be 0 to {MAX_LOCK_WAIT_SECONDS} seconds")
            clash = reserved_database(database, self.settings.catalog_database, self.settings.template_database)
            if clash:
                raise InvalidInput(f"database {database} is {clash}: it cannot be a tenant's")
        except InvalidInput as exc:
            raise fail(INVALID_INPUT, str(exc)) from None
        return tenant_id, name, req.plan, owner, database, role

    async def _check_database(self, conn: psycopg.AsyncConnection, tenant_id: str, database: str) -> str | None:
        """The database's comment, once it is known to be one that can become the tenant's."""
        facts = await _database_facts(conn, database)
        if facts is None:
            raise fail(INVALID_INPUT, f"database {database} does not exist")
        is_template, allows_connections, comment = facts
        if is_template or not allows_connections:
            raise fail(INVALID_INPUT, f"database {database} is a template or takes no connections: not a tenant's")
        why = _foreign_mark(parse_mark(comment), tenant_id, "tenant")
        if why:
            raise fail(INVALID_INPUT, f"database {database} {why}; it cannot be adopted as {tenant_id!r}")
        return comment

    async def _check_role(self, conn: psycopg.AsyncConnection, tenant_id: str, role: str, database: str) -> str | None:
        """The role's comment, once it is known to be one that can become the tenant's: not an administrator,
        not marked as someone else's, and holding nothing in any database but this one (deprovisioning removes
        the role's privileges wherever it has them: a role shared with other databases is not one tenant's)."""
        facts = await _role_facts(conn, role)
        if facts is None:
            raise fail(INVALID_INPUT, f"role {role} does not exist")
        powerful, is_admin, comment = facts
        if powerful or is_admin:
            raise fail(
                INVALID_INPUT, f"role {role} is an administrator (or the one this project connects as): not a tenant's"
            )
        why = _foreign_mark(parse_mark(comment), tenant_id, "role")
        if why:
            raise fail(INVALID_INPUT, f"role {role} {why}; it cannot be adopted as {tenant_id!r}'s")
        elsewhere = [name for name, _, _ in await databases_mentioning(conn, role) if name != database]
        if elsewhere:
            raise fail(
                INVALID_INPUT,
                f"role {role} also owns objects or holds privileges in {', '.join(elsewhere)}: a role shared with "
                f"other databases cannot be adopted as {tenant_id!r}'s",
            )
        return comment

    @activity.defn
    async def check_adoption(self, req: AdoptTenantInput) -> AdoptionPlan:
        """Everything that can make an adoption wrong, refused before anything is recorded or marked: the id is
        free (or the tenant is recorded with this very database), the database exists and is no one else's
        (not the catalog, the template or a system database, not another tenant's in the catalog or by its
        mark), and so is the role, when one is named."""
        tenant_id, name, plan, owner, database, role = self._validate(req)
        known = await self.catalog.get_tenant(tenant_id)
        holder = await self.catalog.tenant_with_database(database)
        if holder is not None and holder.id != tenant_id:
            raise fail(
                INVALID_INPUT,
                f"database {database} is tenant {holder.id!r}'s ({holder.status}); "
                f"it cannot be adopted as {tenant_id!r}",
            )
        mark_only = known is not None and known.status in LIVE and known.database_name == database
        if known is not None and not mark_only and known.status not in ("failed", "deprovisioned"):
            raise fail(
                TENANT_EXISTS,
                f"tenant {tenant_id!r} already exists ({known.status}) with database {known.database_name}",
            )
        server = await self._server(req, known, mark_only)
        role = await self._role_to_mark(tenant_id, role, known if mark_only else None, server)
        async with await connect(self._admin_url(server), autocommit=True) as conn:
            database_comment = await self._check_database(conn, tenant_id, database)
            role_comment = await self._check_role(conn, tenant_id, role, database) if role else None
        return AdoptionPlan(
            tenant_id=tenant_id,
            name=known.name if mark_only and known else name,
            plan=known.plan if mark_only and known else plan,
            owner_email=known.owner_email if mark_only and known else owner,
            database_name=database,
            role_name=role,
            mark_only=mark_only,
            database_comment=database_comment,
            role_comment=role_comment,
            server=server,
        )

    async def _role_to_mark(self, tenant_id: str, named: str | None, known: Tenant | None, server: str) -> str | None:
        """The role named, or (marking a tenant from before marks) the role it is recorded with, if it exists."""
        recorded = known.role_name if known else None
        if named and recorded and named != recorded:
            raise fail(INVALID_INPUT, f"tenant {tenant_id!r} is recorded with role {recorded}, not {named}")
        if named:
            other = await self.catalog.tenant_with_role(named)
            if other is not None and other.id != tenant_id:
                raise fail(
                    INVALID_INPUT, f"role {named} is tenant {other.id!r}'s; it cannot be adopted as {tenant_id!r}'s"
                )
            return named
        if recorded:
            async with await connect(self._admin_url(server)) as conn:
                if await _role_facts(conn, recorded) is not None:
                    return recorded
        return None

    @activity.defn
    async def record_adoption(self, plan: AdoptionPlan) -> None:
        """Record the tenant (as provisioning, until its database is marked) so that its lock can be taken."""
        try:
            await self.catalog.record_adoption(plan, _marker())
        except TenantExists as exc:
            raise fail(TENANT_EXISTS, str(exc)) from None
        if plan.server is not None and not plan.mark_only:
            # The row records the server the database is on (a tenant coming back may have been elsewhere).
            current = await self.catalog.tenant_server(plan.tenant_id)
            if current is not None and current != plan.server:
                await self.catalog.switch_tenant_server(plan.tenant_id, current, plan.server)

    @activity.defn
    async def adopt_database(self, plan: AdoptionPlan) -> int:
        """Under the tenant's lock: check again, mark the database (and the role) as the tenant's, then record
        the tenant as active with a TenantAdopted event; returns the event's id."""
        info = calling_run()

        def mark(kind: str) -> Mark:
            return Mark(
                kind=kind,
                tenant_id=plan.tenant_id,
                workflow_id=info.workflow_id,
                run_id=info.workflow_run_id,
                at=datetime.now(UTC),
            )

        async with Heartbeater(), await connect(self._admin_url(plan.server), autocommit=True) as conn:
            await self._check_database(conn, plan.tenant_id, plan.database_name)
            if plan.role_name:
                await self._check_role(conn, plan.tenant_id, plan.role_name, plan.database_name)
            await mark_database(conn, plan.database_name, mark("tenant"))
            if plan.role_name:
                await mark_role(conn, plan.role_name, mark("role"))
            try:
                event_id = await self.catalog.record_adopted(plan, _marker(), info.workflow_id, await calling_actor())
            except LookupError as exc:
                raise fail(INVALID_INPUT, str(exc)) from None
        activity_logger("activities.adoption", plan.tenant_id).info(
            "tenant adopted", database=plan.database_name, role=plan.role_name, mark_only=plan.mark_only
        )
        return event_id

    @activity.defn
    async def undo_adoption(self, req: AdoptionUndo | AdoptionPlan, legacy_reason: str | None = None) -> None:
        """Compensation: the comments this run's marks replaced are put back, and the row it recorded becomes
        failed. Nothing else was changed. An adoption that finished (its event is recorded) is not undone."""
        # Attempts scheduled by the previous release carry (plan, reason); see tenancy/messages.
        undo = AdoptionUndo.model_validate(req if legacy_reason is None else {"plan": req, "reason": legacy_reason})
        plan, reason = undo.plan, undo.reason
        info = calling_run()
        if await self.catalog.adoption_event(plan.tenant_id, info.workflow_id) is not None:
            return
        async with await connect(self._admin_url(plan.server), autocommit=True) as conn:
            facts = await _database_facts(conn, plan.database_name)
            mark = parse_mark(facts[2]) if facts else None
            if mark and mark.made_by(info.workflow_id, info.workflow_run_id):
                await conn.execute(
                    sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                        sql.Identifier(plan.database_name), sql.Literal(plan.database_comment)
                    )
                )
            role = await _role_facts(conn, plan.role_name) if plan.role_name else None
            mark = parse_mark(role[2]) if role else None
            if plan.role_name and mark and mark.made_by(info.workflow_id, info.workflow_run_id):
                await conn.execute(
                    sql.SQL("COMMENT ON ROLE {} IS {}").format(
                        sql.Identifier(plan.role_name), sql.Literal(plan.role_comment)
                    )
                )
        await self.catalog.fail_adoption(plan.tenant_id, _marker(), reason, info.workflow_id, await calling_actor())
        activity_logger("activities.adoption", plan.tenant_id).warning("adoption undone", reason=reason)
