"""Backup activities: dump a tenant database, verify the archive, apply retention."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import tempfile
from datetime import UTC, datetime
from typing import Literal

import psycopg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.audit import audit, calling_actor
from activities.heartbeat import Heartbeater, recorded_details, stop_on_worker_shutdown
from activities.infra.archive import Progress, hash_stream, list_archive, store, unpack
from activities.infra.backup_facts import describe_backups, retention_entry
from activities.infra.catalog import Catalog
from activities.infra.pg import (
    connect_to_tenant_db,
    count_rows,
    find_client_tools,
    libpq_env,
    one_row,
    pg_dump_writes_zstd,
    server_major,
)
from activities.infra.servers import tenant_admin_url
from activities.infra.storage import open_storage
from activities.infra.subprocesses import kill_group, tail
from activities.infra.tenant_keys import MASTER_KEY, TENANT_KEY, identities_for, tenant_recipient
from activities.infra.threads import entered_in_thread
from tenancy.audit import BACKUP_CREATE, BACKUP_DELETE, BACKUP_LIST, deletion_reason
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
from tenancy.messages.backup import BackupNameRequest, DiscardRequest, DumpRequest, PinRequest, RetentionRequest
from tenancy.messages.progress import HeartbeatDetails
from tenancy.naming import BACKUP_EXTENSIONS, backup_name
from tenancy.retention import RetentionRefused, plan_retention
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
        # First: an erased tenant (its key destroyed) is refused before anything is read or written.
        recipients, encryption_key = await self._recipients(req.tenant_id)
        if req.backup_name is not None:
            name = req.backup_name
            await asyncio.to_thread(self._clear_for_attempt, req.tenant_id, name)
        else:  # a run recorded before the workflow named its backup
            await asyncio.to_thread(self._remove_previous_attempt, req.tenant_id)
            name = await self._fresh_name(req.tenant_id, req.compression)
        started = datetime.now(UTC)
        # The tenant's own server; its major picks the pg_dump (the manifest records it, and restores match it).
        admin_url = await tenant_admin_url(self.settings, req.tenant_id, req.server)
        try:
            conn = await connect_to_tenant_db(admin_url, req.database_name, autocommit=True)
        except psycopg.OperationalError as exc:
            if f'database "{req.database_name}" does not exist' in str(exc):
                raise fail(
                    TENANT_DATABASE_MISSING,
                    f"database {req.database_name!r} of tenant {req.tenant_id!r} does not exist",
                ) from None
            raise
        progress = Progress()
        async with conn, Heartbeater(lambda: HeartbeatDetails(backup_name=name, bytes_written=progress.bytes)):
            tools = await asyncio.to_thread(
                find_client_tools, server_major(conn.info.server_version), self.settings.pg_bin_dir
            )
            server_version = (await one_row(await conn.execute("SHOW server_version")))[0].split()[0]
            await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = (await one_row(await conn.execute("SELECT pg_export_snapshot()")))[0]
            # zstd by pg_dump itself where it can (the archive then restores as stored), else a zstd stream the
            # copy thread writes around an uncompressed archive.
            in_pg_dump = req.compression == "gzip" or (
                req.compression == "zstd" and await asyncio.to_thread(pg_dump_writes_zstd, tools.pg_dump)
            )
            stream = "zstd" if req.compression == "zstd" and not in_pg_dump else "none"
            if in_pg_dump and req.compression == "zstd":
                compress = f"--compress=zstd:{req.compression_level}"
            else:
                compress = f"--compress={req.compression_level if in_pg_dump else 0}"
            args = [str(tools.pg_dump), "--format=custom", compress, f"--snapshot={snapshot}", "--no-password"]
            log.info(
                "dump started", database=req.database_name, tool=str(tools.pg_dump), backup=name, compress=compress
            )
            loop = asyncio.get_running_loop()
            # Entered and left in a thread: opening creates an upload, closing fsyncs or uploads the last part.
            async with (
                entered_in_thread(tempfile.TemporaryFile()) as stderr,
                entered_in_thread(self.storage.open_for_write(req.tenant_id, name)) as sink,
            ):
                proc = subprocess.Popen(
                    args,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    env=libpq_env(admin_url, req.database_name),
                    start_new_session=True,
                )
                assert proc.stdout is not None
                pump = loop.run_in_executor(
                    None, store, proc.stdout, sink, stream, req.compression_level, recipients, progress
                )

                async def finish() -> tuple[dict[str, int], str, int]:
                    row_counts = await count_rows(conn)
                    sha256 = await asyncio.shield(pump)
                    return row_counts, sha256, await asyncio.to_thread(proc.wait)

                try:
                    # A dump cannot resume: when the worker shuts down it stops at once, cleanly, and starts over
                    # on another worker.
                    row_counts, sha256, code = await stop_on_worker_shutdown(finish(), "the dump")
                except BaseException:
                    # Cancelled, stopped or failed: kill pg_dump, let the copy thread drain, the partial file goes.
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
        size = await asyncio.to_thread(self.storage.size, req.tenant_id, name)
        activity.metric_meter().create_counter("tenants_backup_bytes", "Bytes of backups written", "By").add(size)
        log.info("dump finished", backup=name, size_bytes=size, sha256=sha256)
        await audit(self.catalog, BACKUP_CREATE, req.tenant_id, name, {"size_bytes": size, "sha256": sha256})
        return DumpResult(
            tenant_id=req.tenant_id,
            database_name=req.database_name,
            backup_name=name,
            compression=req.compression,
            compression_level=req.compression_level,
            stream_compression=stream,
            size_bytes=size,
            sha256=sha256,
            server_version=server_version,
            tool_version=tools.version,
            started_at=started,
            finished_at=datetime.now(UTC),
            row_counts=row_counts,
            encrypted=bool(recipients),
            recipients=recipients,
            encryption_key=encryption_key,
        )

    async def _recipients(self, tenant_id: str) -> tuple[list[str], Literal["master", "tenant"]]:
        """Whom the backup is encrypted to: with tenant keys, the tenant's recipient only (made on its first
        backup), so destroying that key makes every copy unreadable; else the operator's recipients, if any."""
        if self.settings.tenant_keys:
            return [await tenant_recipient(self.catalog, self.settings.age_recipients, tenant_id)], TENANT_KEY
        return self.settings.age_recipients, MASTER_KEY

    async def _fresh_name(self, tenant_id: str, compression: str) -> str:
        """Named after the moment the dump starts. The tenant lock keeps dumps of one tenant apart, but two may
        still start within the same second: the second waits for a name of its own rather than overwrite."""
        while True:
            name = backup_name(tenant_id, datetime.now(UTC), compression)
            if not await asyncio.to_thread(self._name_taken, tenant_id, name):
                return name
            await asyncio.sleep(0.2)

    def _name_taken(self, tenant_id: str, name: str) -> bool:
        return self.storage.exists(tenant_id, name) or self.storage.partial_exists(tenant_id, name)

    @activity.defn
    async def name_backup(self, req: BackupNameRequest | str, legacy_compression: str | None = None) -> str:
        """The name of the backup a run is about to take, decided once (the result is in the run's history)."""
        # Attempts scheduled by the previous release carry (tenant_id, compression); see tenancy/messages.
        naming = BackupNameRequest.model_validate(
            req if legacy_compression is None else {"tenant_id": req, "compression": legacy_compression}
        )
        if naming.compression not in BACKUP_EXTENSIONS:
            raise fail(INVALID_INPUT, f"unknown compression {naming.compression!r}")
        return await self._fresh_name(naming.tenant_id, naming.compression)

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
        previous = recorded_details().backup_name
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
        if not await asyncio.to_thread(self.storage.exists, dump.tenant_id, dump.backup_name):
            raise fail(BACKUP_VERIFICATION_FAILED, f"backup {dump.backup_name!r} is missing from storage")
        progress = Progress()
        async with Heartbeater(lambda: HeartbeatDetails(bytes_read=progress.bytes)):
            size = await asyncio.to_thread(self.storage.size, dump.tenant_id, dump.backup_name)
            # A worker that only backs up holds no private key: it checks the bytes, and the archive's table of
            # contents is read by the restore drills, which do hold it.
            readable = not (dump.encrypted and self.settings.age_identity_file is None)
            identities = await identities_for(self.catalog, self.settings.age_identity_file, dump) if readable else None
            major = int(dump.server_version.split(".")[0])
            tools = await asyncio.to_thread(find_client_tools, major, self.settings.pg_bin_dir) if readable else None
            digest = hashlib.sha256()

            def read_back() -> tuple[int, str, list[str]] | None:
                """One pass over the stored bytes: every one is hashed, and pg_restore --list reads the table of
                contents from the start of them (nothing past it is decompressed)."""
                if tools is None:
                    with self.storage.open_for_read(dump.tenant_id, dump.backup_name) as reader:
                        hash_stream(reader, progress, digest)
                    return None

                def feed(stdin) -> None:
                    with self.storage.open_for_read(dump.tenant_id, dump.backup_name) as reader:
                        unpack(reader, stdin, dump.stream_compression, identities, progress, digest)

                return list_archive(tools.pg_restore, feed)

            unreadable: ApplicationError | None = None
            try:
                listed = await asyncio.to_thread(read_back)
            except ApplicationError as exc:  # cannot decrypt: said after the checksum, which says more
                listed, unreadable = None, exc
            sha256 = digest.hexdigest()
            if size != dump.size_bytes or sha256 != dump.sha256:
                raise fail(
                    BACKUP_VERIFICATION_FAILED,
                    f"backup {dump.backup_name!r} does not match what was written "
                    f"(size {size} vs {dump.size_bytes}, sha256 {sha256[:12]}… vs {dump.sha256[:12]}…)",
                )
            if unreadable is not None:
                raise unreadable
            if listed is None:
                log.info("encrypted backup verified by checksum only", backup=dump.backup_name)
                manifest = BackupManifest(
                    **dump.model_dump(),
                    verified=True,
                    restorable=False,  # until a drill (which holds the identity) restores it
                    verified_at=datetime.now(UTC),
                    workflow_id=activity.info().workflow_id,
                )
                # Signed here when a signing key is set: the manifest as written is what the run records.
                return await asyncio.to_thread(self.storage.write_manifest, manifest)
            code, err, lines = listed
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
        manifest = await asyncio.to_thread(self.storage.write_manifest, manifest)  # signed when a key is set
        log.info("backup verified", backup=dump.backup_name, toc_entries=len(entries), key_id=manifest.key_id)
        return manifest

    @activity.defn
    async def discard_backup(self, req: DiscardRequest | str, legacy_backup_name: str | None = None) -> None:
        """Remove a backup that failed verification, so it is never mistaken for a good copy."""
        # Attempts scheduled by the previous release carry (tenant_id, backup_name); see tenancy/messages.
        discard = DiscardRequest.model_validate(
            req if legacy_backup_name is None else {"tenant_id": req, "backup_name": legacy_backup_name}
        )
        await audit(self.catalog, BACKUP_DELETE, discard.tenant_id, discard.backup_name, {"reason": "not verified"})
        await asyncio.to_thread(self.storage.delete_backup, discard.tenant_id, discard.backup_name)
        await self.catalog.forget_backup(discard.tenant_id, discard.backup_name)
        self._log(discard.tenant_id).warning("backup discarded", backup=discard.backup_name)

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
                must_keep=req.newest_backup,
            )
        except RetentionRefused as exc:
            # Never delete around a backup we did not just verify: something is off with names or clocks.
            raise fail(BACKUP_VERIFICATION_FAILED, str(exc)) from None
        except InvalidInput as exc:
            raise fail(INVALID_INPUT, str(exc)) from None
        kept = [d.entry.name for d in plan.decisions if d.keep]
        deleted = [d.entry.name for d in plan.decisions if not d.keep]
        reason = deletion_reason(activity.info().workflow_type)
        if req.dry_run:  # the backups listed, with what retention would do to each
            await audit(self.catalog, BACKUP_LIST, req.tenant_id, detail={"purpose": f"{reason} dry run"})
        else:
            for name in deleted:
                detail = {"reason": reason, "policy": self.settings.retention_policy}
                await audit(self.catalog, BACKUP_DELETE, req.tenant_id, name, detail)
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
        await self.catalog.set_backup_pinned(
            req.tenant_id, req.backup_name, req.pinned, await calling_actor(), activity.info().workflow_id
        )
        self._log(req.tenant_id).info("backup pinned" if req.pinned else "backup unpinned", backup=req.backup_name)
        return req.pinned
