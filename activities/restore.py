"""Restore activities: check the backup, restore it into a scratch database, check that, swap it in.

The tenant's database is not touched until the restored copy has passed every check; the swap itself is two
renames in one transaction, so the tenant's name always points at a whole database, old or new.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import subprocess
import threading
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.audit import audit, calling_actor
from activities.calling_run import CallingRun, calling_run
from activities.heartbeat import Heartbeater
from activities.infra.archive import Progress, hash_stream, list_archive, unpack
from activities.infra.backup_facts import describe_backups, restore_candidate
from activities.infra.catalog import Catalog
from activities.infra.manifest_signing import authentic_manifest
from activities.infra.marks import database_mark, mark_database
from activities.infra.pg import connect, connect_to_tenant_db, count_rows, find_client_tools, one_row, server_major
from activities.infra.restore_login import (
    RestoreLogin,
    create_owner_role,
    create_restore_login,
    drop_restore_login_of_run,
    drop_restore_login_quietly,
    let_owner_create,
    restorer_mark,
    role_facts,
    run_checks_as_owner,
)
from activities.infra.schema import grant_tenant_access
from activities.infra.servers import ServerUrls, tenant_admin_url
from activities.infra.storage import FILE_MODE, open_storage
from activities.infra.subprocesses import kill_group, tail
from activities.infra.tenant_keys import identities_for
from tenancy.audit import backup_read_action
from tenancy.contracts.backup import BackupManifest, DrillResult
from tenancy.contracts.restore import KeptDatabase
from tenancy.contracts.tenants import TenantEvent
from tenancy.errors import (
    BACKUP_NOT_FOUND,
    BACKUP_REJECTED,
    CLIENT_TOOLS_MISSING,
    INVALID_INPUT,
    NOTHING_TO_UNDO,
    RESTORE_FAILED,
    RESTORE_VERIFICATION_FAILED,
    InvalidInput,
    fail,
)
from tenancy.log import activity_logger
from tenancy.marks import Mark
from tenancy.messages.backup import BackupSelection
from tenancy.messages.progress import HeartbeatDetails
from tenancy.messages.restore import (
    KeptDatabaseEnd,
    PreviousDatabase,
    RestoredCheckRequest,
    ScratchDatabase,
    ScratchRestoreRequest,
    SwapRequest,
    SwapResult,
)
from tenancy.messages.tenants import TenantRequest
from tenancy.naming import is_previous_database_name, parse_backup_name, partial_name
from tenancy.restore_roles import RestoreOwner, choose_restore_owner, owner_role_names, restore_login_name
from tenancy.selection import choose_backup
from tenancy.servers import DEFAULT_SERVER
from tenancy.settings import Settings

# pg_restore --verbose says this once per table whose data it has loaded (one job, or several).
_TABLE_DONE = re.compile(r"processing data for table|finished item \d+ TABLE DATA")
# What the server says when the backup asks for more than the tenant's role may do: no retry will change that.
_NOT_ALLOWED = re.compile(
    r"permission denied|must be superuser|must be owner|must have privileges|must be member|must be able to set role",
    re.IGNORECASE,
)


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


async def _exists(conn: psycopg.AsyncConnection, dbname: str) -> bool:
    row = await (await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname])).fetchone()
    return row is not None


async def _terminate(conn: psycopg.AsyncConnection, dbname: str) -> int:
    row = await one_row(
        await conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [dbname],
        )
    )
    return row[0]


async def _copy_database_acl(conn: psycopg.AsyncConnection, source: str, target: str) -> None:
    """Database-level grants are not in a pg_dump archive: carry the tenant database's over to the copy."""
    row = await (await conn.execute("SELECT datacl IS NULL FROM pg_database WHERE datname = %s", [source])).fetchone()
    if row is None:
        return
    if row[0]:  # default privileges, which the copy lost when it was closed during its restore
        await conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO PUBLIC").format(_ident(target)))
        return
    grants = await (
        await conn.execute(
            "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, a.privilege_type "
            "FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s",
            [source],
        )
    ).fetchall()
    await conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(_ident(target)))
    for grantee, privilege in grants:
        who = sql.SQL("PUBLIC") if grantee is None else _ident(grantee)
        await conn.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}").format(sql.SQL(privilege), _ident(target), who))


async def _grant_to_tenant_role_only(
    conn: psycopg.AsyncConnection, target: str, role: str | None, grant_connect: bool
) -> None:
    """The tenant's database is missing, so there are no grants to copy: the restored database lets in the
    tenant's role (when it exists and may connect), never PUBLIC."""
    await conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(_ident(target)))
    if role and grant_connect:
        exists = await (await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])).fetchone()
        if exists:
            await conn.execute(
                sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(_ident(target), _ident(role))
            )


class RestoreActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.storage = open_storage(settings)
        self.catalog = Catalog(settings)

    def _log(self, tenant_id: str):
        return activity_logger("activities.restore", tenant_id)

    async def _admin_url(self, tenant_id: str, server: str | None) -> str:
        """The admin URL of the server a request acts on: the one it names (a move's or an import's target), else
        the tenant's server in the catalog (`default` for a tenant it does not know). Resolved per call: a tenant
        may have moved since the worker started."""
        return await tenant_admin_url(self.settings, tenant_id, server)

    @activity.defn
    async def select_backup(self, selection: BackupSelection) -> BackupManifest:
        """Which backup, and is it good: this tenant's own, verified, signed by a key of the keyring (when
        TENANTS_BACKUP_SIGNING_KEY_FILE is set), its bytes equal to what its manifest recorded, readable by the
        pg_restore that matches the tenant's server."""
        tenant_id = selection.tenant_id
        if selection.backup_name is not None:
            try:
                parse_backup_name(tenant_id, selection.backup_name)
            except InvalidInput as exc:
                raise fail(INVALID_INPUT, str(exc)) from None
            name = selection.backup_name
        else:
            entries = [restore_candidate(b) for b in await describe_backups(self.storage, self.catalog, tenant_id)]
            try:
                name = choose_backup(entries, selection.at).name
            except InvalidInput as exc:
                raise fail(BACKUP_NOT_FOUND, f"tenant {tenant_id!r} has {exc}") from None
        if not await asyncio.to_thread(self.storage.exists, tenant_id, name):
            raise fail(BACKUP_NOT_FOUND, f"backup {name!r} of tenant {tenant_id!r} does not exist")
        await audit(self.catalog, backup_read_action(activity.info().workflow_type), tenant_id, name)
        # With a signing key set, a manifest no key of it signed is refused here, before anything else is read.
        manifest = await asyncio.to_thread(authentic_manifest, self.storage, tenant_id, name)
        if manifest is None or not manifest.verified:
            raise fail(BACKUP_REJECTED, f"backup {name!r} has no verified manifest: it was never verified")
        if manifest.tenant_id != tenant_id or manifest.backup_name != name:
            raise fail(BACKUP_REJECTED, f"the manifest of {name!r} describes another backup ({manifest.backup_name})")

        progress = Progress()
        async with Heartbeater(lambda: HeartbeatDetails(bytes_read=progress.bytes)):

            def read_back() -> tuple[int, str]:
                with self.storage.open_for_read(tenant_id, name) as reader:
                    return self.storage.size(tenant_id, name), hash_stream(reader, progress)

            size, digest = await asyncio.to_thread(read_back)
            if size != manifest.size_bytes or digest != manifest.sha256:
                raise fail(
                    BACKUP_REJECTED,
                    f"backup {name!r} does not match its manifest (size {size} vs {manifest.size_bytes}, "
                    f"sha256 {digest[:12]}… vs {manifest.sha256[:12]}…): it is corrupted or truncated",
                )
            async with await connect(await self._admin_url(tenant_id, selection.server)) as conn:
                major = server_major(conn.info.server_version)
            made_by = int(manifest.tool_version.split(".")[0])
            if made_by > major:
                raise fail(
                    CLIENT_TOOLS_MISSING,
                    f"backup {name!r} was made by pg_dump {manifest.tool_version}; the tenant's server is "
                    f"PostgreSQL {major}, whose pg_restore cannot read archives of a newer pg_dump",
                )
            tools = await asyncio.to_thread(find_client_tools, major, self.settings.pg_bin_dir)
            # An encrypted backup needs the identity: a missing or wrong key fails here, before anything changes.
            identities = await identities_for(self.catalog, self.settings.age_identity_file, manifest)

            def feed(stdin) -> None:
                with self.storage.open_for_read(tenant_id, name) as reader:
                    unpack(reader, stdin, manifest.stream_compression, identities, Progress())

            code, err, _ = await asyncio.to_thread(list_archive, tools.pg_restore, feed)
        if code != 0:
            raise fail(BACKUP_REJECTED, f"pg_restore {tools.version} cannot read backup {name!r}: {tail(err)}")
        self._log(tenant_id).info("backup selected", backup=name, taken_at=manifest.started_at.isoformat())
        return manifest

    @activity.defn
    async def restore_to_scratch(self, req: ScratchRestoreRequest) -> int:
        """pg_restore the backup into a fresh scratch database, marked as this run's; returns how many tables got
        their data. pg_restore runs as a short-lived login role of the attempt's, member of the tenant's NOLOGIN
        owner role only, and everything it creates belongs to that role (tenancy/restore_roles.py): never as the
        admin, nor as the tenant's login role, which gets privileges on the tables and owns nothing. A retried
        attempt removes what an earlier attempt of this run left (its scratch database, login role, work file) and
        starts over; a database or role of those names that is not this run's is never touched."""
        log = self._log(req.tenant_id)
        progress = Progress()
        done = {"tables": 0}
        # Heartbeats from the start: dropping a dead attempt's copy and CREATE DATABASE can take a while.
        async with Heartbeater(lambda: HeartbeatDetails(tables_restored=done["tables"], bytes_unpacked=progress.bytes)):
            return await self._restore_to_scratch(req, log, progress, done)

    async def _restore_to_scratch(self, req: ScratchRestoreRequest, log, progress: Progress, done: dict) -> int:
        info = calling_run()
        work = await asyncio.to_thread(self._work_file, req.scratch_name)
        await asyncio.to_thread(work.unlink, missing_ok=True)  # a dead attempt's plaintext goes first
        admin_url = await self._admin_url(req.tenant_id, req.server)
        async with await connect(admin_url, autocommit=True) as conn:
            major = server_major(conn.info.server_version)
            if await _exists(conn, req.scratch_name):
                mark = await database_mark(conn, req.scratch_name)
                if mark is None or not (mark.is_of(req.tenant_id, "scratch") and mark.made_by(info.workflow_id)):
                    raise fail(
                        RESTORE_FAILED, f"database {req.scratch_name!r} exists and is not this run's: left alone"
                    )
                await conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(_ident(req.scratch_name)))
            # Who the restored objects belong to, decided (and refused) before anything is created.
            tenant = await self.catalog.get_tenant(req.tenant_id)
            recorded = req.role_name if req.role_name is not None else (tenant.role_name if tenant else None)
            restore_owner = await self._restore_owner(conn, req.tenant_id, req.database_name, recorded, info)
            owner = await (
                await conn.execute(
                    "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", [req.database_name]
                )
            ).fetchone()
            live_owner = owner[0] if owner else None
            # The admin's until it is restored (the live database's owner could grant itself CONNECT on it).
            await conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(_ident(req.scratch_name)))
            await mark_database(
                conn,
                req.scratch_name,
                Mark(
                    kind="scratch",
                    tenant_id=req.tenant_id,
                    workflow_id=info.workflow_id,
                    run_id=info.workflow_run_id,
                    at=datetime.now(UTC),
                ),
            )
            # While pg_restore runs, only its login role may connect (granted it by create_restore_login): the
            # tenant's grants are given once the copy is settled (_open_to_tenant).
            await conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(_ident(req.scratch_name)))
        tools = await asyncio.to_thread(find_client_tools, major, self.settings.pg_bin_dir)
        manifest = await asyncio.to_thread(authentic_manifest, self.storage, req.tenant_id, req.backup_name)
        if manifest is None:
            raise fail(BACKUP_REJECTED, f"backup {req.backup_name!r} has no manifest: it was never verified")
        if (manifest.tenant_id, manifest.backup_name) != (req.tenant_id, req.backup_name) or (
            req.sha256 is not None and manifest.sha256 != req.sha256
        ):
            # Another (even genuinely signed) backup put in its place after select_backup checked it.
            raise fail(
                BACKUP_REJECTED,
                f"backup {req.backup_name!r} changed in storage after it was checked: its manifest now describes "
                f"{manifest.backup_name!r} of tenant {manifest.tenant_id!r}, sha256 {manifest.sha256[:12]}…",
            )
        encrypted = manifest.encrypted
        # zstd by pg_dump 16+ is inside the archive, which pg_restore reads as stored; a zstd stream is unpacked.
        stream = manifest.stream_compression
        login: RestoreLogin | None = None
        try:
            # pg_restore --jobs needs a seekable, plain archive, and it must be the very bytes the (signed) manifest
            # describes: select_backup checked the stored object, but storage may change after that. So every
            # restore reads the stored bytes once, hashing them, into a local work file (decrypted and unpacked when
            # need be; 0600 in a 0700 folder, removed at the end, or by the next attempt), and pg_restore reads
            # only that file, after its hash matched.
            identities = (
                await identities_for(self.catalog, self.settings.age_identity_file, manifest) if encrypted else None
            )
            stored = hashlib.sha256()

            def materialize() -> None:
                fd = os.open(work, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
                with (
                    open(fd, "wb") as handle,
                    self.storage.open_for_read(req.tenant_id, req.backup_name) as reader,
                ):
                    unpack(reader, handle, stream, identities, progress, digest=stored)

            def changed() -> ApplicationError | None:
                if stored.hexdigest() == manifest.sha256:
                    return None
                return fail(
                    BACKUP_REJECTED,
                    f"backup {req.backup_name!r} changed in storage after it was checked (sha256 "
                    f"{stored.hexdigest()[:12]}… vs {manifest.sha256[:12]}… in its manifest): not restored",
                )

            try:
                await asyncio.to_thread(materialize)
            except Exception:
                # Changed bytes often fail to decrypt or decompress; every stored byte was hashed all the same.
                if (refused := changed()) is not None:
                    raise refused from None
                raise
            if (refused := changed()) is not None:
                raise refused
            archive = work
            # pg_restore runs as a login role of this attempt's that can do no more than the owner role.
            login = await create_restore_login(
                admin_url,
                restore_login_name(req.scratch_name),
                restore_owner.name,
                req.scratch_name,
                restorer_mark(req.tenant_id, info.workflow_id, info.workflow_run_id),
            )
            undo_grants = await let_owner_create(admin_url, req.scratch_name, restore_owner.name)
            await self._pg_restore(admin_url, tools.pg_restore, archive, req, login, done, log)
            await self._settle_restored(admin_url, req, login, undo_grants, restore_owner.login_role)
            await self._open_to_tenant(admin_url, req, live_owner)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._drop(req.scratch_name, admin_url)
            raise
        finally:
            await asyncio.to_thread(work.unlink, missing_ok=True)
            if login is not None:  # after the scratch copy on failure: nothing of the role is left in it
                await drop_restore_login_quietly(admin_url, login.name, req.tenant_id)
        log.info(
            "restored into scratch database",
            scratch=req.scratch_name,
            tables=done["tables"],
            owner=restore_owner.name,
            login_role=restore_owner.login_role,
        )
        return done["tables"]

    def _work_file(self, scratch_name: str) -> Path:
        """Where a restore unpacks an archive for pg_restore: a 0700 folder of the worker's state."""
        folder = self.settings.state_dir.resolve() / "work"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
        return folder / partial_name(f"{scratch_name}.dump")

    async def _restore_owner(
        self,
        admin: psycopg.AsyncConnection,
        tenant_id: str,
        database_name: str,
        recorded: str | None,
        info: CallingRun | None,
    ) -> RestoreOwner:
        """The NOLOGIN role the tenant's restored objects belong to, and its login role (tenancy/restore_roles.py);
        the owner role is created here when missing, marked as the tenant's (`info`: the run that creates it; None:
        only look)."""
        row = await (
            await admin.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", [database_name])
        ).fetchone()
        try:
            choice = choose_restore_owner(
                tenant_id,
                recorded,
                await role_facts(admin, recorded) if recorded else None,
                await role_facts(admin, row[0]) if row else None,
                database_name,
                {name: await role_facts(admin, name) for name in owner_role_names(database_name)},
            )
        except InvalidInput as exc:
            raise fail(RESTORE_FAILED, str(exc)) from None
        if choice.create:
            if info is None:
                raise fail(RESTORE_FAILED, f"tenant {tenant_id!r} has no role its restored copy could belong to")
            mark = Mark(
                kind="role",
                tenant_id=tenant_id,
                workflow_id=info.workflow_id,
                run_id=info.workflow_run_id,
                at=datetime.now(UTC),
            )
            await create_owner_role(admin, choice.name, mark)
            self._log(tenant_id).info("role created for the tenant's restored objects", role=choice.name)
        return choice

    async def _settle_restored(
        self,
        admin_url: str,
        req: ScratchRestoreRequest,
        login: RestoreLogin,
        undo_grants: list[sql.Composed],
        tenant_login_role: str | None,
    ) -> None:
        """After pg_restore: refuse a copy where anything was made as the login role itself (an archive entry that
        left the owner role: `RESET ROLE`), take back the restore's own grants, give the owner role schema usage and
        privileges on what the admin creates later (migrations), and the tenant's login role, when there is one,
        what provisioning gives it (`--no-acl` restored no grant) in every restored schema: it owns nothing."""
        role = _ident(login.owner)
        async with await connect_to_tenant_db(admin_url, req.scratch_name, autocommit=True) as conn:
            held = await one_row(
                await conn.execute(
                    "SELECT count(*) FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid "
                    "WHERE d.datname = current_database() AND s.refclassid = 'pg_authid'::regclass "
                    "AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s)",
                    [login.name],
                )
            )
            if held[0]:
                raise fail(
                    RESTORE_FAILED,
                    f"backup {req.backup_name!r} made {held[0]} object(s) or grant(s) as the restore's login role "
                    f"instead of the tenant's role {login.owner!r} (it switched roles): refused",
                )
            for undo in undo_grants:
                await conn.execute(undo)
            for grant in (
                "GRANT USAGE ON SCHEMA public TO {}",
                "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {}",
                "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {}",
            ):
                await conn.execute(sql.SQL(grant).format(role))
            if tenant_login_role is not None:
                schemas = await (
                    await conn.execute(
                        "SELECT nspname FROM pg_namespace WHERE nspname <> 'information_schema' "
                        "AND NOT starts_with(nspname, 'pg_') ORDER BY 1"
                    )
                ).fetchall()
                await grant_tenant_access(conn, tenant_login_role, [name for (name,) in schemas])

    async def _open_to_tenant(self, admin_url: str, req: ScratchRestoreRequest, live_owner: str | None) -> None:
        """Once the copy is settled: the live database's owner and database-level grants (not in a pg_dump archive),
        or, without a live database, a CONNECT grant to the tenant's role only."""
        async with await connect(admin_url, autocommit=True) as conn:
            if live_owner is not None:
                await conn.execute(
                    sql.SQL("ALTER DATABASE {} OWNER TO {}").format(_ident(req.scratch_name), _ident(live_owner))
                )
                await _copy_database_acl(conn, req.database_name, req.scratch_name)
            else:
                await _grant_to_tenant_role_only(conn, req.scratch_name, req.role_name, req.grant_connect)

    async def _pg_restore(
        self,
        admin_url: str,
        pg_restore: Path,
        archive: Path,
        req: ScratchRestoreRequest,
        login: RestoreLogin,
        done: dict,
        log,
    ) -> None:
        # --role: what it creates belongs to the owner; --no-owner: no ALTER ... OWNER TO the roles of the dump;
        # --no-acl: no GRANTs of the dump (they name the admin; what the owner needs is given after).
        args = [str(pg_restore), "--dbname", req.scratch_name, "--exit-on-error", "--verbose", "--no-password"]
        args += ["--no-owner", "--no-acl", f"--role={login.owner}", f"--jobs={req.jobs}", str(archive)]
        proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=login.env(admin_url, req.scratch_name),
            start_new_session=True,
        )
        last_lines: deque[str] = deque(maxlen=20)

        def read_stderr() -> None:
            assert proc.stderr is not None
            for raw in proc.stderr:
                line = raw.decode(errors="replace").rstrip()
                last_lines.append(line)
                if _TABLE_DONE.search(line):
                    done["tables"] += 1

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        try:
            code = await asyncio.to_thread(proc.wait)
        except BaseException:
            kill_group(proc)
            log.warning("pg_restore stopped before completion", tables=done["tables"])
            raise
        finally:
            await asyncio.to_thread(reader.join, 10)
        if code != 0:
            errors = [line for line in last_lines if "error" in line.lower()] or list(last_lines)
            # The server's own words first: with --jobs, the other jobs' "worker died" lines come after them.
            reasons = [line for line in errors if "ERROR:" in line] or errors
            message = f"pg_restore exited with {code}: {tail(chr(10).join(reasons))}"
            if any(_NOT_ALLOWED.search(line) for line in errors):
                raise fail(RESTORE_FAILED, f"{message} (restores run as the tenant's role {login.owner!r})")
            raise ApplicationError(message, type=RESTORE_FAILED)

    async def _drop(self, dbname: str, admin_url: str | None = None) -> None:
        """DROP DATABASE IF EXISTS on the server behind `admin_url` (None: the default server)."""
        async with await connect(admin_url or self.settings.effective_database_url, autocommit=True) as conn:
            await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(dbname)))

    @activity.defn
    async def verify_restored(self, req: RestoredCheckRequest) -> dict[str, int]:
        """Every table of the manifest is there with the row count recorded at dump time (counted by the admin, whose
        session resolves names in the system catalog only), and every configured check returns true: each one
        statement (the extended query protocol refuses two), run as the tenant's role in a READ ONLY transaction
        with a statement timeout (TENANTS_CHECK_TIMEOUT_SECONDS)."""
        admin_url = await self._admin_url(req.tenant_id, req.server)
        async with Heartbeater():
            async with await connect_to_tenant_db(admin_url, req.scratch_name, autocommit=True) as conn:
                counts = await count_rows(conn)
            missing = sorted(set(req.row_counts) - set(counts))
            if missing:
                raise fail(RESTORE_VERIFICATION_FAILED, f"restored database lacks table(s) {', '.join(missing[:5])}")
            wrong = [
                f"{t}: {counts[t]} rows, {n} at backup time"
                for t, n in sorted(req.row_counts.items())
                if counts[t] != n
            ]
            if wrong:
                raise fail(RESTORE_VERIFICATION_FAILED, f"row counts differ from the backup's: {'; '.join(wrong[:5])}")
            if req.checks:
                await self._run_checks(admin_url, req)
        self._log(req.tenant_id).info("restored database verified", tables=len(counts), checks=len(req.checks))
        return counts

    async def _run_checks(self, admin_url: str, req: RestoredCheckRequest) -> None:
        info = calling_run()
        tenant = await self.catalog.get_tenant(req.tenant_id)
        if tenant is None:
            raise fail(RESTORE_VERIFICATION_FAILED, f"tenant {req.tenant_id!r} is not in the catalog")
        # The role restore_to_scratch was given: a reinstatement (of a deprovisioned tenant) restores with the role
        # it creates, named like the database when none is recorded (workflows/reinstate_tenant.py).
        recorded = tenant.role_name or (tenant.database_name if tenant.status == "deprovisioned" else None)
        async with await connect(admin_url, autocommit=True) as admin:
            # Checks run as the owner role of the restored objects (SET ROLE below), never as the admin.
            owner = (await self._restore_owner(admin, tenant.id, tenant.database_name, recorded, None)).name
        login = await create_restore_login(
            admin_url,
            restore_login_name(req.scratch_name),
            owner,
            req.scratch_name,
            restorer_mark(req.tenant_id, info.workflow_id, info.workflow_run_id),
        )
        timeout_ms = self.settings.check_timeout_seconds * 1000
        try:
            await run_checks_as_owner(
                login, admin_url, req.scratch_name, owner, req.checks, timeout_ms, RESTORE_VERIFICATION_FAILED
            )
        finally:
            await drop_restore_login_quietly(admin_url, login.name, req.tenant_id)

    @activity.defn
    async def swap_in_restored(self, req: SwapRequest) -> SwapResult:
        """Block new connections to the tenant's database, end the open ones, then in one transaction rename it
        aside (marked `previous`, kept until `keep_until`) and the incoming database (`scratch_name`: a restored
        copy, or a kept previous database when a restore is undone) into its place, marked as the tenant's.
        Safe to retry: a swap already made is recognised."""
        log = self._log(req.tenant_id)
        info = calling_run()
        now = datetime.now(UTC)
        tenant_mark = Mark(
            kind="tenant", tenant_id=req.tenant_id, workflow_id=info.workflow_id, run_id=info.workflow_run_id, at=now
        )
        set_aside = tenant_mark.model_copy(update={"kind": "previous", "keep_until": req.keep_until})
        live_name, incoming_name, previous_name = (
            _ident(req.database_name),
            _ident(req.scratch_name),
            _ident(req.previous_name),
        )
        admin_url = await self._admin_url(req.tenant_id, req.server)
        async with await connect(admin_url, autocommit=True) as conn, Heartbeater():
            live, incoming, previous = (
                await _exists(conn, req.database_name),
                await _exists(conn, req.scratch_name),
                await _exists(conn, req.previous_name),
            )
            if not incoming:
                if live and previous:
                    return SwapResult(terminated_sessions=0)  # an earlier attempt committed the swap
                if live and (mark := await database_mark(conn, req.database_name)) and mark.made_by(info.workflow_id):
                    # An earlier attempt took the name of a missing database: nothing was set aside.
                    return SwapResult(terminated_sessions=0, set_aside=False)
                raise fail(RESTORE_FAILED, f"database {req.scratch_name!r} to swap in is gone; nothing was changed")
            terminated = await _terminate(conn, req.scratch_name)
            if not live:
                # The tenant had lost its database: the incoming one simply takes its name.
                async with conn.transaction():
                    await conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(incoming_name, live_name))
                    await mark_database(conn, req.database_name, tenant_mark)
                    await conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(live_name))
                return SwapResult(terminated_sessions=0, set_aside=False)
            await conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(live_name))
            try:
                for _ in range(100):
                    terminated += await _terminate(conn, req.database_name)
                    try:
                        async with conn.transaction():
                            await conn.execute(
                                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(live_name, previous_name)
                            )
                            await conn.execute(
                                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(incoming_name, live_name)
                            )
                            await mark_database(conn, req.previous_name, set_aside)
                            await mark_database(conn, req.database_name, tenant_mark)
                            # A kept previous database coming back was closed to connections when set aside.
                            await conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(live_name))
                        break
                    except psycopg.errors.ObjectInUse:
                        await asyncio.sleep(0.1)  # a session was still closing
                else:
                    raise ApplicationError(f"sessions of {req.database_name!r} would not end", type=RESTORE_FAILED)
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(live_name))
                raise
        log.info("database swapped in", incoming=req.scratch_name, previous=req.previous_name, terminated=terminated)
        return SwapResult(terminated_sessions=terminated)

    @activity.defn
    async def undo_unfinished_restore(self, req: SwapRequest) -> str:
        """After a restore failed or was cancelled (and its activities have stopped): the tenant's database as it
        was. A swap that committed is recognised by the marks and swapped back; this run's scratch database is
        dropped; the tenant's database accepts connections. Returns what state the tenant was left in."""
        info = calling_run()
        state = "unchanged"
        admin_url = await self._admin_url(req.tenant_id, req.server)
        async with await connect(admin_url, autocommit=True) as conn:
            live, incoming, previous = (
                await _exists(conn, req.database_name),
                await _exists(conn, req.scratch_name),
                await _exists(conn, req.previous_name),
            )
            set_aside = await database_mark(conn, req.previous_name) if previous else None
            if (
                live
                and not incoming
                and set_aside is not None
                and set_aside.is_of(req.tenant_id, "previous")
                and set_aside.made_by(info.workflow_id)
            ):
                await self._swap_back(conn, req, info)
                incoming, state = True, "unchanged (the swap had committed and was reversed)"
            if incoming:
                mark = await database_mark(conn, req.scratch_name)
                if mark is not None and mark.is_of(req.tenant_id, "scratch") and mark.made_by(info.workflow_id):
                    await conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(_ident(req.scratch_name)))
            if await _exists(conn, req.database_name):
                await conn.execute(
                    sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(_ident(req.database_name))
                )
        # The login role of an attempt that died before it could drop it.
        await drop_restore_login_of_run(
            admin_url, restore_login_name(req.scratch_name), req.tenant_id, info.workflow_id
        )
        self._log(req.tenant_id).warning("unfinished restore undone", tenant_database=state)
        return state

    async def _swap_back(self, conn: psycopg.AsyncConnection, req: SwapRequest, info: CallingRun) -> None:
        """Reverse a committed swap: the restored copy back to its scratch name, the set-aside database back."""
        now = datetime.now(UTC)
        scratch = Mark(
            kind="scratch", tenant_id=req.tenant_id, workflow_id=info.workflow_id, run_id=info.workflow_run_id, at=now
        )
        await conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(_ident(req.database_name)))
        try:
            await self._rename_back(conn, req, scratch)
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.execute(
                    sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(_ident(req.database_name))
                )
            raise

    async def _rename_back(self, conn: psycopg.AsyncConnection, req: SwapRequest, scratch: Mark) -> None:
        for _ in range(100):
            await _terminate(conn, req.database_name)
            try:
                async with conn.transaction():
                    await conn.execute(
                        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                            _ident(req.database_name), _ident(req.scratch_name)
                        )
                    )
                    await conn.execute(
                        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                            _ident(req.previous_name), _ident(req.database_name)
                        )
                    )
                    await mark_database(conn, req.scratch_name, scratch)
                    await mark_database(conn, req.database_name, scratch.model_copy(update={"kind": "tenant"}))
                return
            except psycopg.errors.ObjectInUse:
                await asyncio.sleep(0.1)
        raise ApplicationError(f"sessions of {req.database_name!r} would not end", type=RESTORE_FAILED)

    @activity.defn
    async def drop_previous_database(self, req: PreviousDatabase) -> bool:
        """Drop a database a restore set aside; refuses any name that is not such a database, and leaves alone
        one that does not carry this tenant's `previous` mark (it was swapped back, or is not ours)."""
        if not is_previous_database_name(req.database_name, req.previous_name):
            raise fail(INVALID_INPUT, f"{req.previous_name!r} is not a database a restore set aside")
        log = self._log(req.tenant_id)
        server = req.server
        kept = await self.catalog.kept_database(req.previous_name)
        if kept is not None and kept["tenant_id"] == req.tenant_id:
            if kept["ended_at"] is not None:
                # Already gone or back in service (dropped by deprovisioning, swapped back by an undo): nothing to
                # drop, and its server may no longer be configured here.
                log.info("previous database already ended", database=req.previous_name, how=kept["ended_how"])
                return False
            if server is None:
                # Where it was set aside, as recorded: the tenant may have moved to another server since.
                server = kept["server"] or DEFAULT_SERVER  # rows written before servers live on `default`
        async with await connect(await self._admin_url(req.tenant_id, server), autocommit=True) as conn:
            existed = await _exists(conn, req.previous_name)
            if existed:
                mark = await database_mark(conn, req.previous_name)
                if mark is None or not mark.is_of(req.tenant_id, "previous"):
                    log.warning("not dropped: not set aside by a restore of this tenant", database=req.previous_name)
                    return False
                await conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(_ident(req.previous_name)))
        await self.catalog.end_kept_database(req.previous_name, "dropped")
        log.info("previous database dropped", database=req.previous_name, existed=existed)
        return existed

    @activity.defn
    async def drop_scratch_database(self, req: ScratchDatabase) -> None:
        """Drop a scratch copy (a drill's, when it is done): only one that carries this run's scratch mark."""
        if req.scratch_name == req.database_name or "__rs_" not in req.scratch_name:
            raise fail(INVALID_INPUT, f"{req.scratch_name!r} is not a scratch database")
        admin_url = await self._admin_url(req.tenant_id, req.server)
        async with await connect(admin_url, autocommit=True) as conn:
            mark = await database_mark(conn, req.scratch_name)
            if mark is not None and mark.is_of(req.tenant_id, "scratch") and mark.made_by(calling_run().workflow_id):
                await conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(_ident(req.scratch_name)))
        await drop_restore_login_of_run(
            admin_url, restore_login_name(req.scratch_name), req.tenant_id, calling_run().workflow_id
        )

    @activity.defn
    async def record_kept_database(self, kept: KeptDatabase) -> None:
        """A database a restore set aside: in the catalog, with the server it is on, until it is dropped or swapped
        back. Without a server named, it is on the tenant's server (where the swap that set it aside was made)."""
        server = kept.server or await self.catalog.tenant_server(kept.tenant_id) or DEFAULT_SERVER
        await self.catalog.record_kept_database(
            kept.name,
            kept.tenant_id,
            kept.database_name,
            kept.workflow_id,
            kept.backup_name,
            kept.kept_until,
            server=server,
        )

    @activity.defn
    async def end_kept_database(self, req: KeptDatabaseEnd | str, legacy_how: str | None = None) -> bool:
        # Attempts scheduled by the previous release carry (name, how); see tenancy/messages.
        end = KeptDatabaseEnd.model_validate(req if legacy_how is None else {"name": req, "how": legacy_how})
        return await self.catalog.end_kept_database(end.name, end.how)

    @activity.defn
    async def find_kept_database(self, req: TenantRequest) -> KeptDatabase:
        """The newest database a restore of this tenant set aside that still exists and carries its mark."""
        tenant_id = req.tenant_id
        # Only one on the tenant's server can be swapped back in: one kept on a server the tenant has since left
        # is not its database's past any more (the swap is two renames on one server).
        here = await self.catalog.tenant_server(tenant_id) or DEFAULT_SERVER
        elsewhere: list[str] = []
        async with await connect(ServerUrls(self.settings).url(here), autocommit=True) as conn:
            for row in await self.catalog.kept_databases(tenant_id):
                row = {**row, "server": row["server"] or DEFAULT_SERVER}  # rows written before servers: `default`
                if row["server"] != here:
                    elsewhere.append(f"{row['name']} on {row['server']}")
                    continue
                mark = await database_mark(conn, row["name"]) if await _exists(conn, row["name"]) else None
                if mark is not None and mark.is_of(tenant_id, "previous"):
                    return KeptDatabase.model_validate(row)
        beside = f"; kept on other servers than its own ({here}): {', '.join(elsewhere)}" if elsewhere else ""
        raise fail(
            NOTHING_TO_UNDO,
            f"tenant {tenant_id!r} has no database kept from a restore to go back to "
            f"(a restore keeps the replaced database for TENANTS_RESTORE_KEEP_PREVIOUS){beside}",
        )

    @activity.defn
    async def record_drill(self, result: DrillResult) -> None:
        """A drill's outcome goes into the catalog (the backup's facts, and an event); the manifest is never
        rewritten, so nothing a drill records can undo a pin set meanwhile."""
        if result.backup_name:
            await self.catalog.record_backup_drill(result.tenant_id, result.backup_name, result.ok)
        await self.catalog.record_event(
            result.tenant_id, "BackupDrilled", result.model_dump(mode="json"), activity.info().workflow_id
        )
        log = self._log(result.tenant_id)
        (log.info if result.ok else log.warning)(
            "restore drill", backup=result.backup_name, ok=result.ok, error=result.error
        )

    @activity.defn
    async def clear_tenant_cache(self, req: TenantRequest) -> int | None:
        """Delete the tenant's cache keys (Redis, `cache_key_prefix`); None when no cache is configured."""
        if not self.settings.redis_url:
            return None
        tenant_id = req.tenant_id
        import redis.asyncio as redis

        prefix = self.settings.cache_key_prefix.format(tenant_id=tenant_id)
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
        deleted = 0
        client = redis.from_url(self.settings.redis_url)
        try:
            batch: list[bytes] = []
            async for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += await client.unlink(*batch)
                    batch.clear()
            if batch:
                deleted += await client.unlink(*batch)
        finally:
            await client.aclose()
        self._log(tenant_id).info("tenant cache cleared", keys_deleted=deleted, prefix=prefix)
        return deleted

    @activity.defn
    async def record_event(self, event: TenantEvent) -> int:
        info = activity.info()
        self._log(event.tenant_id).info("event recorded", event_type=event.type, **event.data)
        return await self.catalog.record_event(
            event.tenant_id, event.type, event.data, info.workflow_id, await calling_actor()
        )
