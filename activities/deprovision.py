"""Deprovisioning and reinstatement: the checks made before anything is dropped, the tenant's leftover copies,
its role (privileges first, then the role), and the way back from `deprovisioned`.

Only databases and roles that carry this tenant's mark (tenancy/marks.py) are dropped: one of the expected name
without it may be someone else's.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.audit import calling_actor
from activities.calling_run import calling_run
from activities.infra.catalog import Catalog
from activities.infra.credentials import delete_credentials
from activities.infra.marks import database_mark, mark_role, marked_databases, role_mark
from activities.infra.pg import connect, connect_to_tenant_db
from activities.infra.schema import database_exists
from activities.infra.servers import ServerUrls, tenant_admin_url
from tenancy.errors import INVALID_INPUT, NOT_MARKED, ROLE_IN_USE, SERVER_NOT_CONFIGURED, InvalidInput, fail
from tenancy.lifecycle import check_reinstatement
from tenancy.log import activity_logger
from tenancy.marks import Mark
from tenancy.messages.provision import (
    DeprovisionCheck,
    FinalBackup,
    Reinstatement,
    ReinstatementUndo,
    RoleRemoval,
    TenantDatabase,
)
from tenancy.naming import is_copy_name
from tenancy.restore_roles import owner_role_names
from tenancy.servers import DEFAULT_SERVER
from tenancy.settings import Settings

FINAL_BACKUP_EVENT = "TenantFinalBackup"
# Copies of a tenant's database that deprovisioning drops along with it.
LEFTOVER_KINDS = ("scratch", "previous", "provisioning")
# Events that start a new life of the tenant: a final backup recorded before one of them is not this life's.
_NEW_LIFE_EVENTS = {"TenantProvisioned", "TenantReinstated"}
# How long reaching a server that holds a kept copy may take before the attempt fails (and is retried).
_REACH_SECONDS = 10
# A retryable failure: the server may be back for the next attempt.
SERVER_UNREACHABLE = "ServerUnreachable"


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def unmarked_database_message(db: TenantDatabase) -> str:
    return (
        f"database {db.database_name!r} carries no tenant-lifecycle mark of tenant {db.tenant_id!r}; "
        "run `tenants adopt` to confirm it is the tenant's"
    )


def unmarked_role_message(db: TenantDatabase) -> str:
    return (
        f"role {db.role_name!r} exists and carries no tenant-lifecycle mark of tenant {db.tenant_id!r} "
        "(made before marks existed, or someone else's); adopt it with `tenants adopt --role` or drop it"
    )


def _kept_on(db: TenantDatabase, server: str, rows: list[dict[str, Any]]) -> str:
    """What a tenant keeps on another server, said for a failure: `tenant 'x' has its database kept on server 'pg-a'
    (x__old_abc, until 2026-11-30 12:00 UTC)`."""
    names = ", ".join(row["name"] for row in rows)
    until = [row["kept_until"] for row in rows if row.get("kept_until")]
    when = f", until {max(until):%Y-%m-%d %H:%M %Z}" if until else ""
    return f"tenant {db.tenant_id!r} has its database kept on server {server!r} ({names}{when})"


def _is_tenant_database(mark: Mark | None, tenant_id: str) -> bool:
    return mark is not None and mark.is_of(tenant_id, "tenant")


async def _role_exists(conn: psycopg.AsyncConnection, role: str) -> bool:
    return await (await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])).fetchone() is not None


async def _disown(conn: psycopg.AsyncConnection, role: str) -> None:
    """In the connection's database: what the role owns goes to the admin user, and its privileges (default
    privileges included, and those on shared objects such as databases) are revoked."""
    await conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(_ident(role)))
    await conn.execute(sql.SQL("DROP OWNED BY {}").format(_ident(role)))


async def databases_mentioning(conn: psycopg.AsyncConnection, role: str) -> list[tuple[str, bool, Mark | None]]:
    """Databases where the role owns something or holds a privilege (pg_shdepend), with whether they accept
    connections and their mark."""
    rows = await (
        await conn.execute(
            "SELECT DISTINCT d.datname, d.datallowconn FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE s.refclassid = 'pg_authid'::regclass "
            "AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s) ORDER BY 1",
            [role],
        )
    ).fetchall()
    return [(name, allowed, await database_mark(conn, name)) for name, allowed in rows]


def is_leftover(db: TenantDatabase, name: str, mark: Mark | None) -> bool:
    """A copy of the tenant's database that deprovisioning drops: named as one and marked as this tenant's.
    The name matters too: another deployment on the same server may have a tenant of the same id."""
    return mark is not None and mark.is_of(db.tenant_id, *LEFTOVER_KINDS) and is_copy_name(db.database_name, name)


async def remove_role(admin_url: str, role: str, also: list[str]) -> list[str]:
    """Remove the role's privileges and objects in every database that mentions it (pg_shdepend) and in `also`,
    end its sessions, then drop it. Returns the databases cleaned. Safe to repeat."""
    async with await connect(admin_url, autocommit=True) as admin:
        if not await _role_exists(admin, role):
            return []
        rows = await (
            await admin.execute(
                "SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid "
                "WHERE s.refclassid = 'pg_authid'::regclass "
                "AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s)",
                [role],
            )
        ).fetchall()
        databases = {r[0] for r in rows} | {name for name in also if await database_exists(admin, name)}
        # Grants on databases themselves (shared objects) are revoked from any database: the admin's own.
        await _disown(admin, role)
        here = admin.info.dbname
    for name in sorted(databases - {here}):
        async with await connect_to_tenant_db(admin_url, name, autocommit=True) as conn:
            await _disown(conn, role)
    async with await connect(admin_url, autocommit=True) as admin:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()",
            [role],
        )
        try:
            await admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(_ident(role)))
        except psycopg.errors.DependentObjectsStillExist as exc:
            # A database that takes no connections still mentions it: retried, with what PostgreSQL says.
            detail = (exc.diag.message_detail or "").replace("\n", "; ")
            raise ApplicationError(f"role {role!r} cannot be dropped yet: {detail or exc}") from None
    return sorted(databases)


class DeprovisionActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalog = Catalog(settings)

    def _log(self, tenant_id: str):
        return activity_logger("activities.deprovision", tenant_id)

    async def _admin_url(self, db: TenantDatabase) -> str:
        """The admin URL of the server holding the tenant's database (and its roles): the one the message names,
        else the catalog's."""
        return await tenant_admin_url(self.settings, db.tenant_id, db.server)

    async def _kept_elsewhere(self, db: TenantDatabase) -> dict[str, list[dict[str, Any]]]:
        """The tenant's open kept_databases rows on servers other than its database's, by server: what a move left
        on its source (the set-aside database, and the tenant's roles there), which deprovisioning removes too."""
        current = db.server or await self.catalog.tenant_server(db.tenant_id) or DEFAULT_SERVER
        found: dict[str, list[dict[str, Any]]] = {}
        for row in await self.catalog.kept_databases(db.tenant_id):
            server = row.get("server") or DEFAULT_SERVER  # rows written before servers are `default`'s
            if server != current:
                found.setdefault(server, []).append(row)
        return found

    async def _reach_kept(self, db: TenantDatabase, server: str, rows: list[dict[str, Any]]) -> str:
        """The admin URL of a server holding a kept copy of the tenant's, once a connection to it succeeded. Its
        copy must not be left behind by a deprovisioning that says it is done: a server this worker has no URL for
        fails the run (retrying here cannot help; configuring it can), one it cannot reach fails the attempt
        (retried: it may be back soon), each naming the server."""
        what = _kept_on(db, server, rows)
        # A server that never comes back would block this forever: the way out, for the operator who knows it.
        lost = f"if server {server!r} is gone for good, `tenants servers remove {server} --lost` abandons its copy"
        try:
            url = ServerUrls(self.settings).url(server)
        except ApplicationError as exc:
            raise fail(SERVER_NOT_CONFIGURED, f"{what}: {exc.message}; nothing was dropped there; {lost}") from None
        try:
            async with await asyncio.wait_for(connect(url, autocommit=True), _REACH_SECONDS) as conn:
                await conn.execute("SELECT 1")
        except (psycopg.OperationalError, TimeoutError) as exc:
            said = str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer in time"
            # Said the same while retried and once the retries are spent (the CLI shows the last attempt's).
            raise ApplicationError(
                f"{what}, which cannot be reached: {said}; nothing was dropped there, and the tenant cannot be "
                f"deprovisioned until it is reached; {lost}",
                type=SERVER_UNREACHABLE,
            ) from None
        return url

    @activity.defn
    async def check_before_deprovisioning(self, db: TenantDatabase) -> DeprovisionCheck:
        """Refuse a tenant database that is not marked as this tenant's before anything is dropped or backed up.
        When the database is already gone (an earlier attempt dropped it), the final backup that attempt
        recorded, if any. Every server holding a kept copy of the tenant's (a move's source) must be reachable too:
        its copy goes with the tenant."""
        for server, rows in sorted((await self._kept_elsewhere(db)).items()):
            await self._reach_kept(db, server, rows)
        async with await connect(await self._admin_url(db), autocommit=True) as admin:
            exists = await database_exists(admin, db.database_name)
            if exists and not _is_tenant_database(await database_mark(admin, db.database_name), db.tenant_id):
                raise fail(NOT_MARKED, unmarked_database_message(db) + "; nothing was dropped")
            # A database that takes no connections and is not one the deprovisioning drops would keep the role
            # from being dropped (its grants cannot be removed there): refuse now, before anything is dropped.
            closed = [
                name
                for name, allowed, mark in await databases_mentioning(admin, db.role_name)
                if not allowed and name != db.database_name and not is_leftover(db, name, mark)
            ]
            if closed:
                raise fail(
                    ROLE_IN_USE,
                    f"role {db.role_name!r} holds privileges in {', '.join(closed)}, which accept(s) no connections "
                    "and is not the tenant's: they cannot be revoked there, so the role could not be dropped. Drop "
                    "that database, or allow connections to it, and deprovision again; nothing was dropped",
                )
        earlier = None if exists else await self._earlier_final_backup(db.tenant_id)
        return DeprovisionCheck(database_exists=exists, earlier_final_backup=earlier)

    async def _earlier_final_backup(self, tenant_id: str) -> str | None:
        for event in await self.catalog.events(tenant_id, limit=200):  # newest first
            if event["type"] == FINAL_BACKUP_EVENT:
                return event["data"].get("backup")
            if event["type"] in _NEW_LIFE_EVENTS:
                break
        return None

    @activity.defn
    async def record_final_backup(self, req: FinalBackup | str, legacy_backup_name: str | None = None) -> int:
        """The final backup's name, recorded as soon as it is taken: a re-run after a crash reports it."""
        # Attempts scheduled by the previous release carry (tenant_id, backup_name); see tenancy/messages.
        final = FinalBackup.model_validate(
            req if legacy_backup_name is None else {"tenant_id": req, "backup_name": legacy_backup_name}
        )
        data = {"backup": final.backup_name}
        return await self.catalog.record_event(final.tenant_id, FINAL_BACKUP_EVENT, data, activity.info().workflow_id)

    @activity.defn
    async def drop_leftover_databases(self, db: TenantDatabase) -> list[str]:
        """Drop the copies of the tenant's database that carry its mark: restores' scratch copies, databases
        kept by `--keep-previous` (their catalog entry is ended), unfinished provisioning copies. On each other
        server a kept copy is recorded on (a move's source, kept for --keep-source), the same copies, and then the
        tenant's marked roles there (its retired login role, its owner role); those are named `NAME (server S)`."""
        dropped = []
        async with await connect(await self._admin_url(db), autocommit=True) as admin:
            for name, mark in sorted((await marked_databases(admin)).items()):
                if not is_leftover(db, name, mark):
                    continue
                if mark.kind == "previous":
                    # Ended first: a retry after the drop finds no database, and nothing left open.
                    await self.catalog.end_kept_database(name, "dropped by deprovisioning")
                await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(name)))
                dropped.append(name)
        for server, rows in sorted((await self._kept_elsewhere(db)).items()):
            dropped += await self._clear_kept_server(db, server, rows)
        if dropped:
            self._log(db.tenant_id).info("leftover databases dropped", databases=dropped)
        return dropped

    async def _clear_kept_server(self, db: TenantDatabase, server: str, rows: list[dict[str, Any]]) -> list[str]:
        """On a server the tenant left with copies kept there: its marked copies dropped, then its marked roles, then
        the kept rows ended. Rows are ended last, so a retry after a failure in between still finds this server."""
        log = self._log(db.tenant_id)
        admin_url = await self._reach_kept(db, server, rows)
        dropped: list[str] = []
        async with await connect(admin_url, autocommit=True) as admin:
            for name, mark in sorted((await marked_databases(admin)).items()):
                if is_leftover(db, name, mark):
                    await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(name)))
                    dropped.append(f"{name} (server {server})")
            still_there = [row["name"] for row in rows if await database_exists(admin, row["name"])]
        # The role holds privileges in no database of the tenant's here any more: nothing else of its is on this
        # server, so its roles go (only ones marked as this tenant's; others are left and logged).
        removal = await self._remove_tenant_roles(db, admin_url, [], server)
        for row in rows:
            if row["name"] in still_there:
                # Not marked as this tenant's copy: not ours to drop; the row stays open and says where it is.
                log.warning("kept database left: not marked as the tenant's", database=row["name"], server=server)
                continue
            await self.catalog.end_kept_database(row["name"], "dropped by deprovisioning")
        log.info(
            "tenant's copies on another server removed",
            server=server,
            databases=dropped,
            role_dropped=removal.dropped,
            role_left=removal.left_reason,
        )
        return dropped

    @activity.defn
    async def drop_tenant_role(self, db: TenantDatabase) -> RoleRemoval:
        """Drop the tenant's role, if it is marked as this tenant's, after removing its privileges everywhere;
        delete the credentials file. A role without that mark (made before marks existed, or someone else's)
        is left in place and reported."""
        removal = await self._remove_tenant_roles(db, await self._admin_url(db), [db.database_name], None)
        await asyncio.to_thread(delete_credentials, self.settings.effective_secrets_dir, db.tenant_id)
        return removal

    async def _remove_tenant_roles(
        self, db: TenantDatabase, admin_url: str, also: list[str], server: str | None
    ) -> RoleRemoval:
        """The tenant's login role and owner roles on the server at `admin_url`, when marked as its and not shared
        (see drop_tenant_role); `server` names another server than the tenant's, for the logs."""
        log = self._log(db.tenant_id).bind(server=server) if server else self._log(db.tenant_id)
        async with await connect(admin_url, autocommit=True) as admin:
            exists = await _role_exists(admin, db.role_name)
            mark = await role_mark(admin, db.role_name) if exists else None
            # A database another tenant's (or the catalog) where the role holds something: the role is shared,
            # and removing its privileges there would break that tenant.
            shared_with = [
                name
                for name, _, other in (await databases_mentioning(admin, db.role_name) if exists else [])
                if name == self.settings.catalog_database
                or (other is not None and other.kind == "tenant" and other.tenant_id != db.tenant_id)
            ]
        reason = None
        if exists and not (mark and mark.is_of(db.tenant_id, "role")):
            reason = f"role {db.role_name!r} carries no tenant-lifecycle mark of tenant {db.tenant_id!r}: left in place"
        elif shared_with:
            reason = f"role {db.role_name!r} also holds privileges in {', '.join(shared_with)}: left in place"
        if reason:
            if server:
                reason += f" on server {server!r}"
            log.warning("tenant role left", role=db.role_name, reason=reason)
            return RoleRemoval(role_name=db.role_name, dropped=False, left_reason=reason)
        cleaned = await remove_role(admin_url, db.role_name, also) if exists else []
        log.info("tenant role dropped", role=db.role_name, existed=exists, cleaned_in=cleaned)
        await self._drop_owner_roles(db, admin_url, also)
        return RoleRemoval(role_name=db.role_name, dropped=exists, cleaned_in=cleaned)

    async def _drop_owner_roles(self, db: TenantDatabase, admin_url: str, also: list[str]) -> None:
        """The NOLOGIN roles restores made to own the tenant's objects (tenancy/restore_roles.py): each one of the
        names they have that is marked as this tenant's; one without the mark is left."""
        for name in owner_role_names(db.database_name):
            if name == db.role_name:
                continue
            async with await connect(admin_url, autocommit=True) as admin:
                if not await _role_exists(admin, name):
                    continue
                mark = await role_mark(admin, name)
            if mark is None or not mark.is_of(db.tenant_id, "role"):
                self._log(db.tenant_id).warning("role not marked as the tenant's: left in place", role=name)
                continue
            await remove_role(admin_url, name, also)
            self._log(db.tenant_id).info("tenant owner role dropped", role=name)

    @activity.defn
    async def check_before_reinstatement(self, db: TenantDatabase) -> None:
        """Nothing of the tenant's names may be in the way, checked before the backup is read: a database of
        its name (reinstating would replace it), or a role of its name not marked as this tenant's."""
        async with await connect(await self._admin_url(db), autocommit=True) as admin:
            if await database_exists(admin, db.database_name):
                if _is_tenant_database(await database_mark(admin, db.database_name), db.tenant_id):
                    raise fail(
                        INVALID_INPUT,
                        f"tenant {db.tenant_id!r} is deprovisioned but its database {db.database_name!r} exists; "
                        "reinstating would replace it: look at it and drop it first; nothing was changed",
                    )
                raise fail(NOT_MARKED, unmarked_database_message(db) + "; nothing was changed")
            exists = await _role_exists(admin, db.role_name)
            mark = await role_mark(admin, db.role_name) if exists else None
        if exists and not (mark and mark.is_of(db.tenant_id, "role")):
            raise fail(NOT_MARKED, unmarked_role_message(db) + "; nothing was changed")

    @activity.defn
    async def create_reinstated_role(self, db: TenantDatabase) -> bool:
        """The tenant's role, marked as this run's, before its database is restored (the backup's GRANTs name
        it). It cannot log in yet: ProvisioningActivities.create_tenant_role gives it its login, password and
        credentials once the database is in place. A role of the tenant's that is already there is taken up
        (marked as this run's). Returns whether this run created the role."""
        info = calling_run()
        mark = Mark(
            kind="role",
            tenant_id=db.tenant_id,
            workflow_id=info.workflow_id,
            run_id=info.workflow_run_id,
            at=datetime.now(UTC),
        )
        async with await connect(await self._admin_url(db), autocommit=True) as admin, admin.transaction():
            exists = await _role_exists(admin, db.role_name)
            current = await role_mark(admin, db.role_name) if exists else None
            if exists and not (current and current.is_of(db.tenant_id, "role")):
                raise fail(NOT_MARKED, unmarked_role_message(db))
            if current is not None:
                created = current.made_by(info.workflow_id, info.workflow_run_id)  # a retried attempt's own
                if not created:
                    await mark_role(admin, db.role_name, mark)
                return created
            await admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(_ident(db.role_name)))
            await mark_role(admin, db.role_name, mark)
        self._log(db.tenant_id).info("tenant role created for reinstatement", role=db.role_name)
        return True

    @activity.defn
    async def activate_reinstated_tenant(self, reinstatement: Reinstatement) -> int | None:
        """deprovisioned → active, with a TenantReinstated event naming the backup; returns the event's id
        (None when a retried attempt finds it done)."""
        try:
            _, event_id = await self.catalog.change_status(
                reinstatement.tenant_id,
                "active",
                None,
                "TenantReinstated",
                activity.info().workflow_id,
                check_reinstatement,
                data={
                    "backup": reinstatement.backup_name,
                    "backup_taken_at": reinstatement.backup_taken_at.isoformat(),
                },
                actor=await calling_actor(),
            )
        except InvalidInput as exc:
            raise fail(INVALID_INPUT, str(exc)) from None
        self._log(reinstatement.tenant_id).info("tenant reinstated", backup=reinstatement.backup_name)
        return event_id

    @activity.defn
    async def undo_reinstatement(self, undo: ReinstatementUndo) -> list[str]:
        """After a reinstatement failed or was cancelled (its unfinished restore already undone): drop the
        database this run put in place, if it got that far, and the role if this run created it. Nothing is
        undone once the tenant is active again. Returns what was dropped."""
        db, info = undo.db, calling_run()
        tenant = await self.catalog.get_tenant(db.tenant_id)
        if tenant is None or tenant.status != "deprovisioned":
            return []
        undone = []
        admin_url = await self._admin_url(db)
        async with await connect(admin_url, autocommit=True) as admin:
            mark = await database_mark(admin, db.database_name)
            # Only this run's restored copy: the swap marked it as the tenant's, with this run's id.
            if mark and mark.is_of(db.tenant_id, "tenant") and mark.made_by(info.workflow_id, info.workflow_run_id):
                await admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(_ident(db.database_name)))
                undone.append(db.database_name)
            role = await role_mark(admin, db.role_name) if undo.drop_role else None
        if role and role.is_of(db.tenant_id, "role") and role.made_by(info.workflow_id, info.workflow_run_id):
            await remove_role(admin_url, db.role_name, [])
            await asyncio.to_thread(delete_credentials, self.settings.effective_secrets_dir, db.tenant_id)
            undone.append(db.role_name)
        self._log(db.tenant_id).warning("unfinished reinstatement undone", dropped=undone)
        return undone
