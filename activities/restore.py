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

from activities.archive import Progress, hash_stream, list_archive, load_identities, unpack
from activities.catalog_db import Catalog
from activities.heartbeat import Heartbeater
from activities.pg import connect, count_rows, find_client_tools, libpq_env, server_major
from activities.storage import FILE_MODE, open_storage
from activities.subprocesses import kill_group, tail
from tenancy.errors import (
    BACKUP_NOT_FOUND,
    BACKUP_REJECTED,
    CLIENT_TOOLS_MISSING,
    INVALID_INPUT,
    RESTORE_FAILED,
    RESTORE_VERIFICATION_FAILED,
    InvalidInput,
    fail,
)
from tenancy.log import activity_logger
from tenancy.models import (
    BackupManifest,
    BackupSelection,
    DrillResult,
    RestoredCheckRequest,
    ScratchRestoreRequest,
    SwapRequest,
    SwapResult,
    TenantEvent,
)
from tenancy.naming import is_previous_database_name, parse_backup_name, partial_name
from tenancy.retention import BackupEntry
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
    row = await (
        await conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [dbname],
        )
    ).fetchone()
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
            entries = [
                BackupEntry(name=b.name, taken_at=b.taken_at, verified=b.verified)
                for b in self.storage.describe_backups(tenant_id)
            ]
            try:
                name = choose_backup(entries, selection.at).name
            except InvalidInput as exc:
                raise fail(BACKUP_NOT_FOUND, f"tenant {tenant_id!r} has {exc}") from None
        if not self.storage.exists(tenant_id, name):
            raise fail(BACKUP_NOT_FOUND, f"backup {name!r} of tenant {tenant_id!r} does not exist")
        manifest = self.storage.read_manifest(tenant_id, name)
        if manifest is None or not manifest.verified:
            raise fail(BACKUP_REJECTED, f"backup {name!r} has no verified manifest: it was never verified")
        if manifest.tenant_id != tenant_id or manifest.backup_name != name:
            raise fail(BACKUP_REJECTED, f"the manifest of {name!r} describes another backup ({manifest.backup_name})")

        progress = Progress()
        async with Heartbeater(lambda: {"bytes_read": progress.bytes}):
            size = self.storage.size(tenant_id, name)

            def read_back() -> str:
                with self.storage.open_for_read(tenant_id, name) as reader:
                    return hash_stream(reader, progress)

            digest = await asyncio.to_thread(read_back)
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
            tools = find_client_tools(major, self.settings.pg_bin_dir)
            # An encrypted backup needs the identity: a missing or wrong key fails here, before anything changes.
            identities = load_identities(self.settings.age_identity_file, name) if manifest.encrypted else None

            def feed(stdin) -> None:
                with self.storage.open_for_read(tenant_id, name) as reader:
                    unpack(reader, stdin, manifest.compression, identities, Progress())

            code, err, _ = await asyncio.to_thread(list_archive, tools.pg_restore, feed)
        if code != 0:
            raise fail(BACKUP_REJECTED, f"pg_restore {tools.version} cannot read backup {name!r}: {tail(err)}")
        self._log(tenant_id).info("backup selected", backup=name, taken_at=manifest.started_at.isoformat())
        return manifest

    @activity.defn
    async def restore_to_scratch(self, req: ScratchRestoreRequest) -> int:
        """pg_restore the backup into a fresh scratch database; returns how many tables got their data.
        A retried attempt drops what an earlier one left and starts over."""
        log = self._log(req.tenant_id)
        async with await connect(self.admin_url, autocommit=True) as conn:
            major = server_major(conn.info.server_version)
            await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(req.scratch_name)))
            owner = await (
                await conn.execute(
                    "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", [req.database_name]
                )
            ).fetchone()
            create = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(_ident(req.scratch_name))
            if owner:
                create += sql.SQL(" OWNER {}").format(_ident(owner[0]))
            await conn.execute(create)
            await _copy_database_acl(conn, req.database_name, req.scratch_name)
        tools = find_client_tools(major, self.settings.pg_bin_dir)
        manifest = self.storage.read_manifest(req.tenant_id, req.backup_name)
        encrypted = bool(manifest and manifest.encrypted)
        archive = self.storage.local_path(req.tenant_id, req.backup_name)
        work_dir = self.settings.state_dir.resolve() / "work"
        work = work_dir / partial_name(f"{req.scratch_name}.dump")
        progress = Progress()
        done = {"tables": 0}
        async with Heartbeater(lambda: {"tables_restored": done["tables"], "bytes_unpacked": progress.bytes}):
            try:
                if archive is None or encrypted or req.compression == "zstd":
                    # pg_restore --jobs needs a seekable, plain archive: fetch, decrypt and unpack it to a local
                    # work file first (0600, removed at the end).
                    identities = (
                        load_identities(self.settings.age_identity_file, req.backup_name) if encrypted else None
                    )

                    def materialize() -> None:
                        work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                        fd = os.open(work, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
                        with (
                            open(fd, "wb") as handle,
                            self.storage.open_for_read(req.tenant_id, req.backup_name) as reader,
                        ):
                            unpack(reader, handle, req.compression, identities, progress)

                    await asyncio.to_thread(materialize)
                    archive = work
                await self._pg_restore(tools.pg_restore, archive, req, done, log)
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._drop(req.scratch_name)
                raise
            finally:
                work.unlink(missing_ok=True)
        log.info("restored into scratch database", scratch=req.scratch_name, tables=done["tables"])
        return done["tables"]

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
                        row = await (await conn.execute(check)).fetchone()  # type: ignore[arg-type]
                except psycopg.Error as exc:
                    raise fail(RESTORE_VERIFICATION_FAILED, f"check {check!r} failed: {str(exc).strip()}") from None
                if not row or row[0] is not True:
                    raise fail(RESTORE_VERIFICATION_FAILED, f"check {check!r} did not return true")
        self._log(req.tenant_id).info("restored database verified", tables=len(counts), checks=len(req.checks))
        return counts

    @activity.defn
    async def swap_in_restored(self, req: SwapRequest) -> SwapResult:
        """Block new connections to the tenant's database, end the open ones, then in one transaction rename it
        aside and the restored database into its place. Safe to retry: a swap already made is recognised."""
        log = self._log(req.tenant_id)
        async with await connect(self.admin_url, autocommit=True) as conn, Heartbeater():
            live, scratch, previous = (
                await _exists(conn, req.database_name),
                await _exists(conn, req.scratch_name),
                await _exists(conn, req.previous_name),
            )
            if not scratch:
                if live and previous:
                    return SwapResult(terminated_sessions=0)  # an earlier attempt committed the swap
                raise fail(RESTORE_FAILED, f"restored database {req.scratch_name!r} is gone; nothing was changed")
            terminated = await _terminate(conn, req.scratch_name)
            if not live:
                # The tenant had lost its database: the restored one simply takes its name.
                await conn.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        _ident(req.scratch_name), _ident(req.database_name)
                    )
                )
                return SwapResult(terminated_sessions=0)
            await conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(_ident(req.database_name)))
            try:
                for _ in range(100):
                    terminated += await _terminate(conn, req.database_name)
                    try:
                        async with conn.transaction():
                            await conn.execute(
                                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                                    _ident(req.database_name), _ident(req.previous_name)
                                )
                            )
                            await conn.execute(
                                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                                    _ident(req.scratch_name), _ident(req.database_name)
                                )
                            )
                        break
                    except psycopg.errors.ObjectInUse:
                        await asyncio.sleep(0.1)  # a session was still closing
                else:
                    raise ApplicationError(f"sessions of {req.database_name!r} would not end", type=RESTORE_FAILED)
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.execute(
                        sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(_ident(req.database_name))
                    )
                raise
        log.info("restored database swapped in", previous=req.previous_name, terminated_sessions=terminated)
        return SwapResult(terminated_sessions=terminated)

    @activity.defn
    async def undo_unfinished_restore(self, req: SwapRequest) -> str:
        """After a restore failed or was cancelled: remove the scratch database and make sure the tenant's
        database accepts connections. Returns what state the tenant was left in."""
        async with await connect(self.admin_url, autocommit=True) as conn:
            await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(req.scratch_name)))
            if await _exists(conn, req.database_name):
                await conn.execute(
                    sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(_ident(req.database_name))
                )
            swapped = await _exists(conn, req.previous_name)
        state = "restored (the swap had happened)" if swapped else "unchanged"
        self._log(req.tenant_id).warning("unfinished restore undone", tenant_database=state)
        return state

    @activity.defn
    async def drop_previous_database(self, req: SwapRequest) -> bool:
        """Drop the database a restore replaced; refuses any name that is not such a database."""
        if not is_previous_database_name(req.database_name, req.previous_name):
            raise fail(INVALID_INPUT, f"{req.previous_name!r} is not a database a restore set aside")
        async with await connect(self.admin_url, autocommit=True) as conn:
            existed = await _exists(conn, req.previous_name)
            await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(req.previous_name)))
        self._log(req.tenant_id).info("previous database dropped", database=req.previous_name)
        return existed

    @activity.defn
    async def drop_scratch_database(self, req: SwapRequest) -> None:
        """Drop a scratch copy (a drill's, when it is done); refuses the tenant's own database."""
        if req.scratch_name == req.database_name or "__rs_" not in req.scratch_name:
            raise fail(INVALID_INPUT, f"{req.scratch_name!r} is not a scratch database")
        await self._drop(req.scratch_name)

    @activity.defn
    async def record_drill(self, result: DrillResult) -> None:
        """A drill's outcome goes into the backup's manifest (drilled at, passed or not) and the catalog."""
        if result.backup_name:
            manifest = self.storage.read_manifest(result.tenant_id, result.backup_name)
            if manifest is not None:
                self.storage.write_manifest(
                    manifest.model_copy(update={"drilled_at": datetime.now(UTC), "drill_ok": result.ok})
                )
        await self.catalog.record_event(
            result.tenant_id, "BackupDrilled", result.model_dump(mode="json"), activity.info().workflow_id
        )
        log = self._log(result.tenant_id)
        (log.info if result.ok else log.warning)(
            "restore drill", backup=result.backup_name, ok=result.ok, error=result.error
        )

    @activity.defn
    async def clear_tenant_cache(self, tenant_id: str) -> int | None:
        """Delete the tenant's cache keys (Redis, `cache_key_prefix`); None when no cache is configured."""
        if not self.settings.redis_url:
            return None
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
