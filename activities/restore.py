"""Restore activities: check the backup, restore it into a scratch database, check that, swap it in.

The tenant's database is not touched until the restored copy has passed every check; the swap itself is two
renames in one transaction, so the tenant's name always points at a whole database, old or new.
"""

from __future__ import annotations

import asyncio
import contextlib
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

from activities.calling_run import CallingRun, calling_run
from activities.heartbeat import Heartbeater
from activities.infra.archive import Progress, hash_stream, list_archive, load_identities, unpack
from activities.infra.backup_facts import describe_backups, restore_candidate
from activities.infra.catalog import Catalog
from activities.infra.marks import database_mark, mark_database
from activities.infra.pg import connect, count_rows, find_client_tools, libpq_env, one_row, server_major
from activities.infra.storage import FILE_MODE, open_storage
from activities.infra.subprocesses import kill_group, tail
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
from tenancy.selection import choose_backup
from tenancy.settings import Settings

# pg_restore --verbose says this once per table whose data it has loaded (one job, or several).
_TABLE_DONE = re.compile(r"processing data for table|finished item \d+ TABLE DATA")


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
    if row is None or row[0]:
        return  # no such database, or default privileges
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
        self.admin_url = settings.effective_database_url

    def _log(self, tenant_id: str):
        return activity_logger("activities.restore", tenant_id)

    @activity.defn
    async def select_backup(self, selection: BackupSelection) -> BackupManifest:
        """Which backup, and is it good: this tenant's own, verified, its bytes equal to what its manifest
        recorded, readable by the pg_restore that matches the tenant's server."""
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
        manifest = await asyncio.to_thread(self.storage.read_manifest, tenant_id, name)
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
            async with await connect(self.admin_url) as conn:
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
            identities = load_identities(self.settings.age_identity_file, name) if manifest.encrypted else None

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
        their data. A retried attempt removes what an earlier attempt of this run left (its scratch database, its
        work file) and starts over; a database of the scratch name that is not this run's is never touched."""
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
        async with await connect(self.admin_url, autocommit=True) as conn:
            major = server_major(conn.info.server_version)
            if await _exists(conn, req.scratch_name):
                mark = await database_mark(conn, req.scratch_name)
                if mark is None or not (mark.is_of(req.tenant_id, "scratch") and mark.made_by(info.workflow_id)):
                    raise fail(
                        RESTORE_FAILED, f"database {req.scratch_name!r} exists and is not this run's: left alone"
                    )
                await conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(_ident(req.scratch_name)))
            owner = await (
                await conn.execute(
                    "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", [req.database_name]
                )
            ).fetchone()
            create = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(_ident(req.scratch_name))
            if owner:
                create += sql.SQL(" OWNER {}").format(_ident(owner[0]))
            await conn.execute(create)
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
            if owner:
                await _copy_database_acl(conn, req.database_name, req.scratch_name)
            else:
                await _grant_to_tenant_role_only(conn, req.scratch_name, req.role_name, req.grant_connect)
        tools = await asyncio.to_thread(find_client_tools, major, self.settings.pg_bin_dir)
        manifest, archive = await asyncio.to_thread(
            lambda: (
                self.storage.read_manifest(req.tenant_id, req.backup_name),
                self.storage.local_path(req.tenant_id, req.backup_name),
            )
        )
        encrypted = bool(manifest and manifest.encrypted)
        # zstd by pg_dump 16+ is inside the archive, which pg_restore reads as stored; a zstd stream is unpacked.
        stream = manifest.stream_compression if manifest else ("zstd" if req.compression == "zstd" else "none")
        try:
            if archive is None or encrypted or stream == "zstd":
                # pg_restore --jobs needs a seekable, plain archive: fetch, decrypt and unpack it to a local
                # work file first (0600 in a 0700 folder, removed at the end, or by the next attempt).
                identities = load_identities(self.settings.age_identity_file, req.backup_name) if encrypted else None

                def materialize() -> None:
                    fd = os.open(work, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
                    with (
                        open(fd, "wb") as handle,
                        self.storage.open_for_read(req.tenant_id, req.backup_name) as reader,
                    ):
                        unpack(reader, handle, stream, identities, progress)

                await asyncio.to_thread(materialize)
                archive = work
            await self._pg_restore(tools.pg_restore, archive, req, done, log)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._drop(req.scratch_name)
            raise
        finally:
            await asyncio.to_thread(work.unlink, missing_ok=True)
        log.info("restored into scratch database", scratch=req.scratch_name, tables=done["tables"])
        return done["tables"]

    def _work_file(self, scratch_name: str) -> Path:
        """Where a restore unpacks an archive for pg_restore: a 0700 folder of the worker's state."""
        folder = self.settings.state_dir.resolve() / "work"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
        return folder / partial_name(f"{scratch_name}.dump")

    async def _pg_restore(self, pg_restore: Path, archive: Path, req: ScratchRestoreRequest, done: dict, log) -> None:
        args = [str(pg_restore), "--dbname", req.scratch_name, "--exit-on-error", "--verbose", "--no-password"]
        args += [f"--jobs={req.jobs}", str(archive)]
        proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=libpq_env(self.admin_url, req.scratch_name),
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
            raise ApplicationError(f"pg_restore exited with {code}: {tail(chr(10).join(errors))}", type=RESTORE_FAILED)

    async def _drop(self, dbname: str) -> None:
        async with await connect(self.admin_url, autocommit=True) as conn:
            await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(dbname)))

    @activity.defn
    async def verify_restored(self, req: RestoredCheckRequest) -> dict[str, int]:
        """Every table of the manifest is there with the row count recorded at dump time, and every configured
        check returns true (run read-only)."""
        async with await connect(self.admin_url, req.scratch_name, autocommit=True) as conn, Heartbeater():
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
            for check in req.checks:
                try:
                    async with conn.transaction():
                        await conn.execute("SET TRANSACTION READ ONLY")
                        row = await (await conn.execute(check)).fetchone()
                except psycopg.Error as exc:
                    raise fail(RESTORE_VERIFICATION_FAILED, f"check {check!r} failed: {str(exc).strip()}") from None
                if not row or row[0] is not True:
                    raise fail(RESTORE_VERIFICATION_FAILED, f"check {check!r} did not return true")
        self._log(req.tenant_id).info("restored database verified", tables=len(counts), checks=len(req.checks))
        return counts

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
        async with await connect(self.admin_url, autocommit=True) as conn, Heartbeater():
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
        async with await connect(self.admin_url, autocommit=True) as conn:
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
        async with await connect(self.admin_url, autocommit=True) as conn:
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
        async with await connect(self.admin_url, autocommit=True) as conn:
            mark = await database_mark(conn, req.scratch_name)
            if mark is not None and mark.is_of(req.tenant_id, "scratch") and mark.made_by(calling_run().workflow_id):
                await conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(_ident(req.scratch_name)))

    @activity.defn
    async def record_kept_database(self, kept: KeptDatabase) -> None:
        """A database a restore set aside: in the catalog until it is dropped or swapped back."""
        await self.catalog.record_kept_database(
            kept.name, kept.tenant_id, kept.database_name, kept.workflow_id, kept.backup_name, kept.kept_until
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
        async with await connect(self.admin_url, autocommit=True) as conn:
            for row in await self.catalog.kept_databases(tenant_id):
                mark = await database_mark(conn, row["name"]) if await _exists(conn, row["name"]) else None
                if mark is not None and mark.is_of(tenant_id, "previous"):
                    return KeptDatabase.model_validate(row)
        raise fail(
            NOTHING_TO_UNDO,
            f"tenant {tenant_id!r} has no database kept from a restore to go back to "
            "(a restore keeps the replaced database for TENANTS_RESTORE_KEEP_PREVIOUS)",
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
        return await self.catalog.record_event(event.tenant_id, event.type, event.data, info.workflow_id)
