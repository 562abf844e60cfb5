"""Backup activities: dump a tenant database, verify the archive, apply retention."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from datetime import UTC, datetime

import psycopg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import Heartbeater
from activities.infra.archive import Progress, hash_stream, list_archive, load_identities, store, unpack
from activities.infra.backup_facts import describe_backups, retention_entry
from activities.infra.catalog import Catalog
from activities.infra.pg import connect, count_rows, find_client_tools, libpq_env, server_major
from activities.infra.storage import open_storage
from activities.infra.subprocesses import kill_group, tail
from tenancy.contracts.backup import BackupManifest, DumpResult, RetentionDecision, RetentionResult
from tenancy.errors import (
    BACKUP_NOT_FOUND,
    BACKUP_VERIFICATION_FAILED,
    DUMP_FAILED,
    INVALID_INPUT,
    TENANT_DATABASE_MISSING,
    InvalidInput,
    fail,
)
from tenancy.log import activity_logger
from tenancy.messages.backup import DumpRequest, PinRequest, RetentionRequest
from tenancy.naming import BACKUP_EXTENSIONS, backup_name
from tenancy.retention import plan_retention
from tenancy.settings import Settings


class BackupActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.storage = open_storage(settings)
        self.catalog = Catalog(settings)

    def _log(self, tenant_id: str):
        return activity_logger("activities.backup", tenant_id)

    @activity.defn
    async def dump_database(self, req: DumpRequest) -> DumpResult:
        """pg_dump in custom format, streamed to storage under a temporary name and renamed when complete.

        Row counts are taken in the very snapshot pg_dump dumps (an exported snapshot), so a restore can later be
        checked against them exactly. A dump cannot resume mid-stream: a retried attempt starts over.
        """
        log = self._log(req.tenant_id)
        if req.backup_name is not None:
            name = req.backup_name
            await asyncio.to_thread(self._clear_for_attempt, req.tenant_id, name)
        else:  # a run recorded before the workflow named its backup
            self._remove_previous_attempt(req.tenant_id)
            name = await self._fresh_name(req.tenant_id, req.compression)
        started = datetime.now(UTC)
        try:
            conn = await connect(self.settings.effective_database_url, req.database_name, autocommit=True)
        except psycopg.OperationalError as exc:
            if f'database "{req.database_name}" does not exist' in str(exc):
                raise fail(
                    TENANT_DATABASE_MISSING,
                    f"database {req.database_name!r} of tenant {req.tenant_id!r} does not exist",
                ) from None
            raise
        progress = Progress()
        recipients = self.settings.age_recipients
        async with conn, Heartbeater(lambda: {"backup_name": name, "bytes_written": progress.bytes}):
            tools = find_client_tools(server_major(conn.info.server_version), self.settings.pg_bin_dir)
            server_version = (await (await conn.execute("SHOW server_version")).fetchone())[0].split()[0]
            await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = (await (await conn.execute("SELECT pg_export_snapshot()")).fetchone())[0]
            gzip_level = req.compression_level if req.compression == "gzip" else 0
            args = [
                str(tools.pg_dump),
                "--format=custom",
                f"--compress={gzip_level}",
                f"--snapshot={snapshot}",
                "--no-password",
            ]
            log.info("dump started", database=req.database_name, tool=str(tools.pg_dump), backup=name)
            loop = asyncio.get_running_loop()
            with (
                tempfile.TemporaryFile() as stderr,
                self.storage.open_for_write(req.tenant_id, name) as sink,
            ):
                proc = subprocess.Popen(
                    args,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    env=libpq_env(self.settings.effective_database_url, req.database_name),
                    start_new_session=True,
                )
                assert proc.stdout is not None
                pump = loop.run_in_executor(
                    None, store, proc.stdout, sink, req.compression, req.compression_level, recipients, progress
                )
                try:
                    row_counts = await count_rows(conn)
                    sha256 = await asyncio.shield(pump)
                    code = await asyncio.to_thread(proc.wait)
                except BaseException:
                    # Cancelled (or failed): kill pg_dump, let the copy thread drain, and the partial file goes.
                    kill_group(proc)
                    await asyncio.wait([pump])
                    log.warning("dump stopped before completion", bytes_written=progress.bytes)
                    raise
                finally:
                    proc.stdout.close()
                if code != 0:
                    stderr.seek(0)
                    raise ApplicationError(
                        f"pg_dump of {req.database_name!r} exited with {code}: {tail(stderr.read())}",
                        type=DUMP_FAILED,
                    )
            await conn.execute("COMMIT")
        size = self.storage.size(req.tenant_id, name)
        activity.metric_meter().create_counter("tenants_backup_bytes", "Bytes of backups written", "By").add(size)
        log.info("dump finished", backup=name, size_bytes=size, sha256=sha256)
        return DumpResult(
            tenant_id=req.tenant_id,
            database_name=req.database_name,
            backup_name=name,
            compression=req.compression,
            compression_level=req.compression_level,
            size_bytes=size,
            sha256=sha256,
            server_version=server_version,
            tool_version=tools.version,
            started_at=started,
            finished_at=datetime.now(UTC),
            row_counts=row_counts,
            encrypted=bool(recipients),
            recipients=recipients,
        )

    async def _fresh_name(self, tenant_id: str, compression: str) -> str:
        """Named after the moment the dump starts. The tenant lock keeps dumps of one tenant apart, but two may
        still start within the same second: the second waits for a name of its own rather than overwrite."""
        while True:
            name = backup_name(tenant_id, datetime.now(UTC), compression)
            if not self.storage.exists(tenant_id, name) and not self.storage.partial_exists(tenant_id, name):
                return name
            await asyncio.sleep(0.2)

    @activity.defn
    async def name_backup(self, tenant_id: str, compression: str) -> str:
        """The name of the backup a run is about to take, decided once (the result is in the run's history)."""
        if compression not in BACKUP_EXTENSIONS:
            raise fail(INVALID_INPUT, f"unknown compression {compression!r}")
        return await self._fresh_name(tenant_id, compression)

    def _clear_for_attempt(self, tenant_id: str, name: str) -> None:
        """Before an attempt writes `name`: what a dead earlier attempt of this run left goes (its partial file or
        unfinished upload, or a complete archive it never reported: no manifest, so never a verified backup).
        A backup of that name that has a manifest is someone else's: refuse rather than overwrite it."""
        removed = self.storage.remove_partial(tenant_id, name)
        if self.storage.exists(tenant_id, name):
            if self.storage.read_manifest(tenant_id, name) is not None:
                raise fail(INVALID_INPUT, f"backup {name!r} already exists and is verified: not overwritten")
            self.storage.delete_backup(tenant_id, name)
            removed += 1
        if removed:
            self._log(tenant_id).warning("removed what an interrupted attempt left", backup=name)

    def _remove_previous_attempt(self, tenant_id: str) -> None:
        """A retried dump starts over; an archive a dead earlier attempt completed but never reported is removed
        (it has no manifest, so it was never a verified backup)."""
        details = activity.info().heartbeat_details
        previous = details[0].get("backup_name") if details and isinstance(details[0], dict) else None
        if (
            previous
            and self.storage.exists(tenant_id, previous)
            and not self.storage.read_manifest(tenant_id, previous)
        ):
            self.storage.delete_backup(tenant_id, previous)

    @activity.defn
    async def verify_backup(self, dump: DumpResult) -> BackupManifest:
        """Re-read the stored archive (size and sha256 must match what was written), let pg_restore read its
        table of contents, then write the manifest that marks the backup verified."""
        log = self._log(dump.tenant_id)
        if not self.storage.exists(dump.tenant_id, dump.backup_name):
            raise fail(BACKUP_VERIFICATION_FAILED, f"backup {dump.backup_name!r} is missing from storage")
        progress = Progress()
        async with Heartbeater(lambda: {"bytes_read": progress.bytes}):
            size = self.storage.size(dump.tenant_id, dump.backup_name)

            def read_back() -> str:
                with self.storage.open_for_read(dump.tenant_id, dump.backup_name) as reader:
                    return hash_stream(reader, progress)

            sha256 = await asyncio.to_thread(read_back)
            if size != dump.size_bytes or sha256 != dump.sha256:
                raise fail(
                    BACKUP_VERIFICATION_FAILED,
                    f"backup {dump.backup_name!r} does not match what was written "
                    f"(size {size} vs {dump.size_bytes}, sha256 {sha256[:12]}… vs {dump.sha256[:12]}…)",
                )
            if dump.encrypted and self.settings.age_identity_file is None:
                # A worker that only backs up holds no private key: the bytes are checked, the archive's table
                # of contents is read by the restore drills, which do hold it.
                log.info("encrypted backup verified by checksum only", backup=dump.backup_name)
                manifest = BackupManifest(
                    **dump.model_dump(),
                    verified=True,
                    restorable=False,  # until a drill (which holds the identity) restores it
                    verified_at=datetime.now(UTC),
                    workflow_id=activity.info().workflow_id,
                )
                self.storage.write_manifest(manifest)
                return manifest
            identities = load_identities(self.settings.age_identity_file, dump.backup_name) if dump.encrypted else None
            major = int(dump.server_version.split(".")[0])
            tools = find_client_tools(major, self.settings.pg_bin_dir)

            def feed(stdin) -> None:
                with self.storage.open_for_read(dump.tenant_id, dump.backup_name) as reader:
                    unpack(reader, stdin, dump.compression, identities, Progress())

            code, err, lines = await asyncio.to_thread(list_archive, tools.pg_restore, feed)
        if code != 0:
            raise fail(
                BACKUP_VERIFICATION_FAILED,
                f"pg_restore cannot read backup {dump.backup_name!r}: {tail(err)}",
            )
        entries = [line for line in lines if line.strip() and not line.startswith(";")]
        # A TOC line reads "<id>; <oid> <oid> TABLE DATA <schema> <table> <owner>".
        data_lines = [line for line in entries if " TABLE DATA " in line]
        missing = [
            table
            for table in dump.row_counts
            if not any(" TABLE DATA {} {} ".format(*table.split(".", 1)) in line for line in data_lines)
        ]
        if missing:
            raise fail(
                BACKUP_VERIFICATION_FAILED,
                f"backup {dump.backup_name!r} has no data for table(s) {', '.join(sorted(missing)[:5])}",
            )
        manifest = BackupManifest(
            **dump.model_dump(),
            verified=True,
            restorable=True,
            verified_at=datetime.now(UTC),
            toc_entries=len(entries),
            workflow_id=activity.info().workflow_id,
        )
        self.storage.write_manifest(manifest)
        log.info("backup verified", backup=dump.backup_name, toc_entries=len(entries))
        return manifest

    @activity.defn
    async def discard_backup(self, tenant_id: str, backup_name: str) -> None:
        """Remove a backup that failed verification, so it is never mistaken for a good copy."""
        await asyncio.to_thread(self.storage.delete_backup, tenant_id, backup_name)
        await self.catalog.forget_backup(tenant_id, backup_name)
        self._log(tenant_id).warning("backup discarded", backup=backup_name)

    @activity.defn
    async def apply_retention(self, req: RetentionRequest) -> RetentionResult:
        """Decide which backups the policy keeps (keep-N, or calendar) and delete the others — or, in a dry run,
        only say why each one would be kept or deleted. Only good copies count (tenancy.retention.plan_retention);
        pinned and unverified backups are never deleted."""
        log = self._log(req.tenant_id)
        backups = await describe_backups(self.storage, self.catalog, req.tenant_id)
        try:
            plan = plan_retention(
                [retention_entry(b) for b in backups],
                policy=self.settings.retention_policy,
                keep=req.keep,
                calendar=self.settings.calendar_policy(),
                now=datetime.now(UTC),
            )
        except InvalidInput as exc:
            raise fail(INVALID_INPUT, str(exc)) from None
        kept = [d.entry.name for d in plan.decisions if d.keep]
        if req.newest_backup is not None and req.newest_backup not in kept:
            # Never delete around a backup we did not just verify: something is off with names or clocks.
            raise fail(
                BACKUP_VERIFICATION_FAILED,
                f"retention refused: the new backup {req.newest_backup!r} would not be among the kept ones",
            )
        deleted = [d.entry.name for d in plan.decisions if not d.keep]
        if not req.dry_run:
            for name in deleted:
                await asyncio.to_thread(self.storage.delete_backup, req.tenant_id, name)
                await self.catalog.forget_backup(req.tenant_id, name)
                log.info("backup deleted by retention", backup=name, policy=self.settings.retention_policy)
        return RetentionResult(
            kept=kept,
            deleted=deleted,
            decisions=[RetentionDecision(name=d.entry.name, keep=d.keep, reason=d.reason) for d in plan.decisions],
            policy=self.settings.retention_policy,
        )

    @activity.defn
    async def set_pinned(self, req: PinRequest) -> bool:
        """Pin a backup (retention never deletes it) or unpin it. The flag lives in the catalog, changed by one
        statement, so a drill recording its outcome at the same moment never undoes it."""
        exists = await asyncio.to_thread(self.storage.exists, req.tenant_id, req.backup_name)
        if not exists:
            raise fail(BACKUP_NOT_FOUND, f"backup {req.backup_name!r} of tenant {req.tenant_id!r} does not exist")
        manifest = await asyncio.to_thread(self.storage.read_manifest, req.tenant_id, req.backup_name)
        if manifest is None:
            raise fail(BACKUP_NOT_FOUND, f"backup {req.backup_name!r} has no manifest: it was never verified")
        await self.catalog.set_backup_pinned(req.tenant_id, req.backup_name, req.pinned)
        self._log(req.tenant_id).info("backup pinned" if req.pinned else "backup unpinned", backup=req.backup_name)
        return req.pinned
