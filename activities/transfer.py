"""Transfer activities: write a tenant's export file, check one before anything is created, put its archive into
this installation's storage as a backup of the new tenant, mask a clone's scratch copy, and what an import that
failed past provisioning leaves to clean up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from temporalio import activity

from activities.audit import audit, calling_actor
from activities.calling_run import calling_run
from activities.heartbeat import Heartbeater
from activities.infra.catalog import Catalog
from activities.infra.export_file import (
    Transfer,
    open_input,
    open_output,
    output_exists,
    read_export,
    write_export,
)
from activities.infra.manifest_signing import authentic_manifest, read_keyring
from activities.infra.pg import connect, connect_to_tenant_db
from activities.infra.restore_login import (
    create_restore_login,
    drop_restore_login_quietly,
    restorer_mark,
    role_facts,
)
from activities.infra.schema import SEED_VERSION, migration_files
from activities.infra.servers import server_major_version, tenant_admin_url
from activities.infra.storage import open_storage
from tenancy.contracts.backup import BackupManifest
from tenancy.contracts.transfer import (
    ExportWritten,
    ImportAbandoned,
    ImportFacts,
    InspectImportRequest,
    MaskRequest,
    StageRequest,
    WriteExportRequest,
)
from tenancy.errors import (
    BACKUP_NOT_AUTHENTIC,
    BACKUP_REJECTED,
    CLIENT_TOOLS_MISSING,
    EXPORT_REJECTED,
    INVALID_INPUT,
    MASKING_FAILED,
    PLAN_LIMIT_REACHED,
    TENANT_EXISTS,
    TENANT_NOT_FOUND,
    InvalidInput,
    fail,
)
from tenancy.log import activity_logger
from tenancy.messages.backup import BackupSelection
from tenancy.messages.progress import HeartbeatDetails
from tenancy.messages.provision import TenantDatabase
from tenancy.messages.tenants import TenantRequest
from tenancy.naming import BACKUP_EXTENSIONS, backup_name, validate_tenant_id
from tenancy.restore_roles import choose_restore_owner, owner_role_names, restore_login_name
from tenancy.settings import Settings
from tenancy.signing import KEY_ID_FIELD, SIGNATURE_FIELD, NotAuthentic, verify_document
from tenancy.transfer import (
    FORMAT_VERSION,
    SUMS,
    SUMS_SIG,
    TENANT_EXPORT,
    TENANT_IMPORT,
    TENANT_IMPORT_FAILED,
    TENANT_JSON,
    ExportedTenant,
    SourceInstallation,
    TenantDocument,
    archive_member,
    check_sums,
    manifest_member,
    members_of,
    parse_document,
    parse_sums,
    sign_sums,
    validate_location,
    verify_sums,
)

T = TypeVar("T")


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


async def _in_thread(work: Callable[[], T], progress: Transfer) -> T:
    """Blocking file or object-storage work in a thread; when the activity is cancelled the thread is told to
    stop and waited for, so nothing it writes completes after the activity has ended."""
    task = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        progress.stop.set()
        with contextlib.suppress(BaseException):
            await task
        raise


LEDGER = "tenant_schema_migrations"  # activities/infra/schema.py's ledger, in schema public


@dataclass(frozen=True)
class LedgerFacts:
    relkind: str
    owner: str
    owner_is_superuser: bool
    db_owner: str
    triggers: int
    rules: int


async def restrict_relation_kinds(conn: psycopg.AsyncConnection) -> None:
    """Views and foreign tables refused by the server for this session (PostgreSQL 15.8+/16.4+/17+ have the
    setting; older ones rely on the relkind checks alone)."""
    row = await (
        await conn.execute("SELECT 1 FROM pg_catalog.pg_settings WHERE name = 'restrict_nonsystem_relation_kind'")
    ).fetchone()
    if row is not None:
        await conn.execute("SET restrict_nonsystem_relation_kind = 'view, foreign-table'")


async def ledger_facts(conn: psycopg.AsyncConnection) -> LedgerFacts | None:
    """What the relation named public.tenant_schema_migrations is, read from the system catalog only."""
    row = await (
        await conn.execute(
            "SELECT c.relkind::text, r.rolname, r.rolsuper, pg_catalog.pg_get_userbyid(d.datdba),"
            " (SELECT count(*) FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid),"
            " (SELECT count(*) FROM pg_catalog.pg_rewrite w WHERE w.ev_class = c.oid)"
            " FROM pg_catalog.pg_class c"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_catalog.pg_roles r ON r.oid = c.relowner"
            " JOIN pg_catalog.pg_database d ON d.datname = pg_catalog.current_database()"
            " WHERE n.nspname = 'public' AND c.relname = %s",
            [LEDGER],
        )
    ).fetchone()
    if row is None:
        return None
    return LedgerFacts(
        relkind=row[0], owner=row[1], owner_is_superuser=row[2], db_owner=row[3], triggers=row[4], rules=row[5]
    )


async def imported_database_problem(conn: psycopg.AsyncConnection) -> str | None:
    """Why migrations must not run as the admin on a database restored from an export (None: they may): its
    ledger not a plain table or carrying triggers or rules, any trigger on any of its tables, any event trigger.
    Any of those would run the archive's code as the admin while the migrations write."""
    ledger = await ledger_facts(conn)
    if ledger is not None:
        if ledger.relkind != "r":
            return f"its {LEDGER} is not a plain table (kind {ledger.relkind!r})"
        if ledger.rules:
            return f"its {LEDGER} carries rules"
    triggers = await (
        await conn.execute(
            "SELECT n.nspname || '.' || c.relname || ': ' || t.tgname FROM pg_catalog.pg_trigger t"
            " JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE NOT t.tgisinternal ORDER BY 1 LIMIT 3"
        )
    ).fetchall()
    if triggers:
        return f"it has triggers ({', '.join(r[0] for r in triggers)})"
    event = await (await conn.execute("SELECT evtname FROM pg_catalog.pg_event_trigger LIMIT 1")).fetchone()
    if event is not None:
        return f"it has an event trigger ({event[0]})"
    return None


def _check_tools(manifest: BackupManifest, major: int) -> None:
    made_by = int(manifest.tool_version.split(".")[0])
    if made_by > major:
        raise fail(
            CLIENT_TOOLS_MISSING,
            f"the archive was made by pg_dump {manifest.tool_version}; the target server is PostgreSQL {major}, "
            f"whose pg_restore cannot read it: import onto a server of {made_by} or newer",
        )


class TransferActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.storage = open_storage(settings)
        self.catalog = Catalog(settings)

    def _log(self, tenant_id: str):
        return activity_logger("activities.transfer", tenant_id)

    def _local_versions(self) -> list[str]:
        return [m.version for m in migration_files(self.settings.migrations_dir)]

    # Export.

    async def _schema_version(self, tenant_id: str, database_name: str) -> str | None:
        """The newest tenant migration applied to the tenant's database (None: it has no ledger). The admin reads
        the tenant's ledger only when it is a plain table of an expected owner, with views and foreign tables
        refused by the server in that session where it can: anything else would run the tenant's code as the
        admin (a view's functions, a foreign table's wrapper)."""
        tenant = await self.catalog.get_tenant(tenant_id)
        url = await tenant_admin_url(self.settings, tenant_id)
        # The admin's session on a tenant database resolves names in the system catalog only: qualified names.
        async with await connect_to_tenant_db(url, database_name, autocommit=True) as conn:
            await restrict_relation_kinds(conn)
            ledger = await ledger_facts(conn)
            if ledger is None:
                return None
            # The tenant's login role (provisioned tenants), its restores' owner role (restored, imported, cloned
            # ones: tenancy/restore_roles.py), the database's owner, or a superuser (the template's ledger).
            owners = {*owner_role_names(database_name), *([tenant.role_name] if tenant is not None else [])}
            if ledger.relkind != "r" or not (ledger.owner_is_superuser or ledger.owner in owners | {ledger.db_owner}):
                raise fail(
                    EXPORT_REJECTED,
                    f"tenant {tenant_id!r}'s {LEDGER} is not a plain table of its own (kind {ledger.relkind!r}, "
                    f"owner {ledger.owner!r}): not read, not exported",
                )
            rows = await (
                await conn.execute(
                    sql.SQL("SELECT version::text FROM {}.{} WHERE version::text <> %s").format(
                        _ident("public"), _ident(LEDGER)
                    ),
                    [SEED_VERSION],
                )
            ).fetchall()
        versions = [row[0] for row in rows]
        return max(versions) if versions else None

    @activity.defn
    async def write_export(self, req: WriteExportRequest) -> ExportWritten:
        """The export file, from a backup the workflow just took and verified: tenant.json, the archive's signed
        manifest, the archive as stored, SHA256SUMS. Written whole or not at all; an existing file is refused."""
        try:
            validate_location(req.output)
        except InvalidInput as exc:
            raise fail(INVALID_INPUT, str(exc)) from None
        tenant = await self.catalog.get_tenant(req.tenant_id)
        if tenant is None:
            raise fail(TENANT_NOT_FOUND, f"tenant {req.tenant_id!r} is not in the catalog")
        manifest = await asyncio.to_thread(authentic_manifest, self.storage, tenant.id, req.backup_name)
        stored = await asyncio.to_thread(self.storage.read_manifest_document, tenant.id, req.backup_name)
        if manifest is None or stored is None or not manifest.verified:
            raise fail(BACKUP_REJECTED, f"backup {req.backup_name!r} has no verified manifest")
        document = TenantDocument(
            format_version=FORMAT_VERSION,
            exported_at=datetime.now(UTC),
            source=SourceInstallation(
                namespace=self.settings.temporal_namespace, catalog_database=self.settings.catalog_database
            ),
            tenant=ExportedTenant(
                id=tenant.id,
                name=tenant.name,
                plan=tenant.plan,
                owner_email=tenant.owner_email,
                settings=tenant.settings,
                status=tenant.status,
            ),
            schema_version=await self._schema_version(tenant.id, tenant.database_name),
            postgres_major=int(manifest.server_version.split(".")[0]),
            backup_name=req.backup_name,
        )
        try:
            keyring = read_keyring(self.storage.signing_key_file) if self.storage.signing_key_file else None
        except InvalidInput as exc:
            raise fail(INVALID_INPUT, str(exc)) from None
        # SHA256SUMS signed with this installation's key: tenant.json is then as authentic as the manifest.
        sign = (lambda listing: sign_sums(listing, keyring)) if keyring is not None else None
        await audit(self.catalog, TENANT_EXPORT, tenant.id, req.backup_name, {"output": req.output})
        progress = Transfer()

        def written_before() -> ExportWritten | None:
            """The export this run already wrote, complete (an attempt whose worker died after the file appeared
            and before it reported): recognised by its backup (each export takes a backup of its own) and every
            member matching its checksums. Anything else at the location is never overwritten."""
            if not output_exists(self.settings, req.output):
                return None
            try:
                with open_input(self.settings, req.output) as reader:
                    found = read_export(reader, Transfer())
                earlier = json.loads(found.documents.get(TENANT_JSON, b"{}"))
                listed = parse_sums(found.documents.get(SUMS, b"").decode())
                check_sums(listed, {k: v for k, v in found.sums.items() if k != SUMS})
            except (InvalidInput, ValueError, OSError):
                return None
            if (
                earlier.get("backup_name") != req.backup_name
                or found.sums.get(archive_member(req.backup_name)) != manifest.sha256
            ):
                return None
            return ExportWritten(
                output=req.output,
                size_bytes=found.file_size,
                sha256=found.file_sha256,
                schema_version=earlier.get("schema_version"),
                members=members_of(req.backup_name, signed=SUMS_SIG in found.sums),
            )

        def write() -> ExportWritten:
            earlier = written_before()
            if earlier is not None:
                return earlier
            size = self.storage.size(tenant.id, req.backup_name)
            with (
                open_output(self.settings, req.output) as sink,
                self.storage.open_for_read(tenant.id, req.backup_name) as reader,
            ):
                written = write_export(
                    sink,
                    document.model_dump_json(indent=2).encode(),
                    manifest_member(req.backup_name),
                    json.dumps(stored, indent=2).encode(),
                    archive_member(req.backup_name),
                    reader,
                    size,
                    progress,
                    sign,
                )
                if written.sums[archive_member(req.backup_name)] != manifest.sha256:
                    # Raised inside: the output is abandoned, never left looking complete.
                    raise InvalidInput(f"backup {req.backup_name!r} does not match its manifest: not exported")
            return ExportWritten(
                output=req.output,
                size_bytes=written.size,
                sha256=written.sha256,
                schema_version=document.schema_version,
                members=members_of(req.backup_name, signed=sign is not None),
            )

        async with Heartbeater(lambda: HeartbeatDetails(bytes_read=progress.bytes)):
            try:
                result = await _in_thread(write, progress)
            except InvalidInput as exc:
                raise fail(INVALID_INPUT, str(exc)) from None
        self._log(tenant.id).info("tenant exported", output=req.output, size_bytes=result.size_bytes)
        return result

    # Import: every check first.

    def _authentic(self, document: dict[str, Any], name: str) -> None:
        """The exported manifest verified with this installation's keyring (an export from elsewhere verifies
        when the exporting installation's key is in it, as a verify-only line)."""
        if self.storage.signing_key_file is None:
            return
        try:
            verify_document(document, read_keyring(self.storage.signing_key_file))
        except NotAuthentic as exc:
            raise fail(
                BACKUP_NOT_AUTHENTIC,
                f"the export's manifest of {name!r} is refused: {exc} (add the exporting installation's key to "
                "TENANTS_BACKUP_SIGNING_KEY_FILE as a verify-only line to import from it)",
            ) from None

    def _authentic_sums(self, sums: bytes, signature: bytes | None) -> None:
        """SHA256SUMS (the hashes of tenant.json, the manifest and the archive) signed by a key of this
        installation's keyring, when it has one: checksums alone anyone editing tenant.json can recompute."""
        if self.storage.signing_key_file is None:
            return
        try:
            verify_sums(sums, signature, read_keyring(self.storage.signing_key_file))
        except NotAuthentic as exc:
            raise fail(
                BACKUP_NOT_AUTHENTIC,
                f"the export is refused: {exc} (exports are imported only when signed by a key of "
                "TENANTS_BACKUP_SIGNING_KEY_FILE; add the exporting installation's key as a verify-only line)",
            ) from None

    @activity.defn
    async def inspect_import(self, req: InspectImportRequest) -> ImportFacts:
        """Read the whole export file and check everything an import relies on, before anything is created:
        its members and checksums, tenant.json's format and tenant schema version, the manifest's signature and
        that it describes the archive, the new id free, the plan's limit, pg_restore able to read it there."""
        try:
            validate_location(req.source, "the export file")
            validate_tenant_id(req.new_tenant_id)
        except InvalidInput as exc:
            raise fail(INVALID_INPUT, str(exc)) from None
        existing = await self.catalog.get_tenant(req.new_tenant_id)
        if existing is not None and existing.status != "failed":
            raise fail(TENANT_EXISTS, f"tenant {req.new_tenant_id!r} already exists ({existing.status})")
        progress = Transfer()

        def read() -> Any:
            with open_input(self.settings, req.source) as reader:
                return read_export(reader, progress)

        async with Heartbeater(lambda: HeartbeatDetails(bytes_read=progress.bytes)):
            try:
                found = await _in_thread(read, progress)
            except InvalidInput as exc:
                raise fail(EXPORT_REJECTED, str(exc)) from None
        try:
            facts = self._check(found, req)
        except InvalidInput as exc:
            raise fail(EXPORT_REJECTED, str(exc)) from None
        document = TenantDocument.model_validate(facts.document)
        plan = req.plan or document.tenant.plan
        owner = req.owner_email or document.tenant.owner_email
        limits = self.settings.plans.get(plan)
        if limits is None:
            raise fail(INVALID_INPUT, f"unknown plan {plan!r}; plans: {', '.join(sorted(self.settings.plans))}")
        used = await self.catalog.count_owner_tenants(owner, plan)
        if used >= limits.max_tenants:
            raise fail(PLAN_LIMIT_REACHED, f"{owner} has {used} tenant(s) on plan {plan!r}, its limit")
        _check_tools(
            facts.manifest,
            await server_major_version(await tenant_admin_url(self.settings, req.new_tenant_id, req.server)),
        )
        self._log(req.new_tenant_id).info(
            "export checked", source=req.source, exported_tenant=document.tenant.id, sha256=facts.file_sha256
        )
        return facts

    def _check(self, found: Any, req: InspectImportRequest) -> ImportFacts:
        if TENANT_JSON not in found.documents:
            raise InvalidInput(f"the file holds no {TENANT_JSON}: not a tenant export")
        try:
            raw = json.loads(found.documents[TENANT_JSON])
        except ValueError:
            raise InvalidInput(f"the export's {TENANT_JSON} is not JSON") from None
        document = parse_document(raw, self._local_versions())
        expected = members_of(document.backup_name, signed=SUMS_SIG in found.sums)
        if list(found.sums) != expected:
            raise InvalidInput(f"the export holds {list(found.sums)}, not {expected}: not an intact export")
        check_sums(parse_sums(found.documents[SUMS].decode(errors="replace")), found.sums)
        self._authentic_sums(found.documents[SUMS], found.documents.get(SUMS_SIG))
        try:
            stored = json.loads(found.documents[manifest_member(document.backup_name)])
        except ValueError:
            raise InvalidInput("the export's manifest is not JSON") from None
        if not isinstance(stored, dict):
            raise InvalidInput("the export's manifest is not a manifest")
        self._authentic(stored, document.backup_name)
        try:
            manifest = BackupManifest.model_validate(stored)
        except ValueError:
            raise InvalidInput("the export's manifest is not a backup manifest") from None
        archive = archive_member(document.backup_name)
        if manifest.compression not in BACKUP_EXTENSIONS:
            # The new tenant's backup is named by it: checked before anything is created.
            raise InvalidInput(
                f"the export's manifest names compression {manifest.compression!r}, none of "
                f"{', '.join(sorted(BACKUP_EXTENSIONS))}: not a backup this installation reads"
            )
        if not manifest.verified:
            raise InvalidInput(f"backup {document.backup_name!r} in the export was never verified")
        if (manifest.tenant_id, manifest.backup_name) != (document.tenant.id, document.backup_name):
            raise InvalidInput(
                f"the export's manifest describes {manifest.backup_name!r} of tenant {manifest.tenant_id!r}, "
                f"not {document.backup_name!r} of {document.tenant.id!r}"
            )
        if manifest.sha256 != found.sums[archive] or manifest.size_bytes != found.sizes[archive]:
            raise InvalidInput(
                f"the export's archive does not match its manifest (sha256 {found.sums[archive][:12]}… vs "
                f"{manifest.sha256[:12]}…): corrupted or changed"
            )
        if manifest.encrypted and manifest.encryption_key == "tenant":
            raise InvalidInput(
                "the export's archive is encrypted to the exported tenant's own key, which no other tenant can "
                "read: export it from an installation without TENANTS_TENANT_KEYS"
            )
        return ImportFacts(
            document=document.model_dump(mode="json"),
            manifest=manifest,
            archive_size=found.sizes[archive],
            file_sha256=found.file_sha256,
        )

    # The archive, as a backup of the new tenant.

    @activity.defn
    async def stage_import(self, req: StageRequest) -> BackupManifest:
        """Copy the archive (from an export file, or another tenant's backup for a clone) into storage as a
        backup of the new tenant, its bytes checked against the manifest on the way, and write a new manifest
        naming the new tenant (signed with this installation's key), recording where it came from. A retried
        attempt of the same run finds its own copy; a backup of the name made by anyone else is refused."""
        info = calling_run()
        source = await self._stage_source(req)
        await self._restorable_there(req.new_tenant_id, source)
        name = backup_name(req.new_tenant_id, source.started_at, source.compression)
        earlier = await asyncio.to_thread(self.storage.read_manifest, req.new_tenant_id, name)
        if earlier is not None:
            if earlier.workflow_id == info.workflow_id and earlier.sha256 == req.expected_sha256:
                return earlier
            raise fail(BACKUP_REJECTED, f"backup {name!r} of tenant {req.new_tenant_id!r} exists: not overwritten")
        await audit(self.catalog, TENANT_IMPORT, req.new_tenant_id, name, dict(req.imported_from))
        progress = Transfer()

        def copy() -> None:
            self.storage.remove_partial(req.new_tenant_id, name)
            if req.source is not None:
                with open_input(self.settings, req.source) as reader:
                    read_export(
                        reader,
                        progress,
                        archive_sink=lambda _: self.storage.open_for_write(req.new_tenant_id, name),
                        archive_sha256=req.expected_sha256,
                    )
                return
            assert req.from_tenant is not None and req.from_backup is not None
            import hashlib

            digest = hashlib.sha256()
            with (
                self.storage.open_for_read(req.from_tenant, req.from_backup) as reader,
                self.storage.open_for_write(req.new_tenant_id, name) as sink,
            ):
                while chunk := reader.read(1 << 20):
                    progress.check()
                    digest.update(chunk)
                    progress.bytes += len(chunk)
                    sink.write(chunk)
                if digest.hexdigest() != req.expected_sha256:
                    raise InvalidInput(f"backup {req.from_backup!r} changed since it was checked: not cloned")

        async with Heartbeater(lambda: HeartbeatDetails(bytes_written=progress.bytes)):
            try:
                await _in_thread(copy, progress)
            except InvalidInput as exc:
                raise fail(EXPORT_REJECTED, str(exc)) from None
        document = source.model_dump(mode="json", exclude={KEY_ID_FIELD, SIGNATURE_FIELD})
        document.update(
            tenant_id=req.new_tenant_id,
            database_name=req.new_database_name,
            backup_name=name,
            workflow_id=info.workflow_id,
            verified_at=datetime.now(UTC).isoformat(),
            imported_from=dict(req.imported_from),
        )
        manifest = await asyncio.to_thread(self.storage.write_manifest, BackupManifest.model_validate(document))
        self._log(req.new_tenant_id).info("archive staged as a backup", backup=name, imported_from=req.imported_from)
        return manifest

    async def _restorable_there(self, tenant_id: str, source: BackupManifest) -> None:
        """pg_restore of the server the new tenant was placed on reads the archive. The import's check used the
        server asked for (or `default`); placement may have chosen another: checked again on the real one before
        anything is copied (a failure here undoes the new tenant)."""
        major = await server_major_version(await tenant_admin_url(self.settings, tenant_id))
        _check_tools(source, major)

    async def _stage_source(self, req: StageRequest) -> BackupManifest:
        if req.manifest is not None:
            manifest = req.manifest
        elif req.from_tenant is not None and req.from_backup is not None:
            found = await asyncio.to_thread(authentic_manifest, self.storage, req.from_tenant, req.from_backup)
            if found is None or not found.verified:
                raise fail(BACKUP_REJECTED, f"backup {req.from_backup!r} has no verified manifest")
            manifest = found
        else:
            raise fail(INVALID_INPUT, "nothing to stage: give an export file or a backup")
        if manifest.sha256 != req.expected_sha256:
            raise fail(BACKUP_REJECTED, "the archive's manifest changed since it was checked")
        return manifest

    # A clone's masking.

    async def _owner_role(self, admin: psycopg.AsyncConnection, tenant_id: str, database_name: str) -> str:
        """The role the restored objects belong to, by the rule restores use (tenancy/restore_roles.py); only
        looked up, never created."""
        tenant = await self.catalog.get_tenant(tenant_id)
        recorded = tenant.role_name if tenant else None
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
            raise fail(MASKING_FAILED, str(exc)) from None
        if choice.create:
            raise fail(MASKING_FAILED, f"tenant {tenant_id!r} has no role its restored copy belongs to")
        return choice.name

    @activity.defn
    async def mask_scratch(self, req: MaskRequest) -> float:
        """Run the masking SQL on the scratch copy as the new tenant's role (the owner of its restored objects,
        through a login role of this run's that is a member of it only; never the admin: the data and the SQL
        are untrusted), in one transaction with a statement timeout. SQL that ends that transaction is refused.
        Returns the seconds it took."""
        info = calling_run()
        admin_url = await tenant_admin_url(self.settings, req.tenant_id, req.server)
        async with await connect(admin_url, autocommit=True) as admin:
            owner = await self._owner_role(admin, req.tenant_id, req.database_name)
        login = await create_restore_login(
            admin_url,
            restore_login_name(req.scratch_name),
            owner,
            req.scratch_name,
            restorer_mark(req.tenant_id, info.workflow_id, info.workflow_run_id),
        )
        started = time.monotonic()
        try:
            async with (
                Heartbeater(),
                await psycopg.AsyncConnection.connect(
                    login.conninfo(admin_url, req.scratch_name), autocommit=True
                ) as conn,
            ):
                await conn.execute(sql.SQL("SET ROLE {}").format(_ident(owner)))
                try:
                    async with conn.transaction():
                        await conn.execute(
                            sql.SQL("SET LOCAL statement_timeout = {}").format(req.timeout_seconds * 1000)
                        )
                        try:
                            await conn.execute(req.sql.encode())  # several statements: the simple protocol
                        except asyncio.CancelledError:
                            with contextlib.suppress(Exception):
                                conn.cancel()
                            raise
                        if conn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
                            raise fail(MASKING_FAILED, "the masking SQL ended its transaction (COMMIT/ROLLBACK)")
                except psycopg.Error as exc:
                    said = str(exc).strip()
                    raise fail(
                        MASKING_FAILED,
                        f"the masking SQL failed: {said.splitlines()[0] if said else type(exc).__name__}",
                    ) from None
        finally:
            await drop_restore_login_quietly(admin_url, login.name, req.tenant_id)
        seconds = time.monotonic() - started
        self._log(req.tenant_id).info("scratch copy masked", scratch=req.scratch_name, seconds=round(seconds, 3))
        return seconds

    # Before an export or clone: refused up front when its archive could never be restored by another tenant.

    @activity.defn
    async def check_transferable(self, req: TenantRequest) -> None:
        """With TENANTS_TENANT_KEYS every backup is encrypted to its tenant's own key, which no other tenant (an
        import's, a clone's) can read: refused before any backup is taken or anything created."""
        if self.settings.tenant_keys:
            raise fail(
                EXPORT_REJECTED,
                f"tenant {req.tenant_id!r} cannot be exported or cloned with TENANTS_TENANT_KEYS on: its backups "
                "are encrypted to its own key, which no other tenant can read",
            )

    # An import, before its migrations run as the admin.

    @activity.defn
    async def check_imported_database(self, db: TenantDatabase) -> None:
        """Refuse to migrate a database restored from an export when running migrations as the admin would run
        its code: its ledger not a plain table or with rules, any trigger, any event trigger (tenant migrations
        create none). The import's undo follows."""
        url = await tenant_admin_url(self.settings, db.tenant_id, db.server)
        async with await connect_to_tenant_db(url, db.database_name, autocommit=True) as conn:
            await restrict_relation_kinds(conn)
            problem = await imported_database_problem(conn)
        if problem is not None:
            raise fail(
                EXPORT_REJECTED, f"the imported database of tenant {db.tenant_id!r} is refused: {problem}; not migrated"
            )

    # A masked clone: the unmasked archive it was restored from is not kept as its backup.

    @activity.defn
    async def drop_staged_backup(self, req: BackupSelection) -> None:
        """Delete the backup this run staged (storage and catalog) once a masked copy was swapped in and backed up:
        the staged archive is the source's unmasked data. Only a backup whose manifest names this run goes."""
        assert req.backup_name is not None
        info = calling_run()
        manifest = await asyncio.to_thread(self.storage.read_manifest, req.tenant_id, req.backup_name)
        if manifest is not None and manifest.workflow_id != info.workflow_id:
            raise fail(BACKUP_REJECTED, f"backup {req.backup_name!r} was not staged by this run: not deleted")
        if manifest is not None:
            await asyncio.to_thread(self.storage.delete_backup, req.tenant_id, req.backup_name)
        await self.catalog.forget_backup(req.tenant_id, req.backup_name)
        self._log(req.tenant_id).info("unmasked staged backup deleted", backup=req.backup_name)

    # After a failure past provisioning.

    @activity.defn
    async def abandon_import(self, req: ImportAbandoned) -> None:
        """The new tenant was deprovisioned (its database, role and credentials gone): the backup this run staged
        goes, and the tenant is recorded failed, so its id may be imported or provisioned again."""
        info = calling_run()
        if req.backup_name is not None:
            manifest = await asyncio.to_thread(self.storage.read_manifest, req.tenant_id, req.backup_name)
            if manifest is not None and manifest.workflow_id == info.workflow_id:
                await asyncio.to_thread(self.storage.delete_backup, req.tenant_id, req.backup_name)
                await self.catalog.forget_backup(req.tenant_id, req.backup_name)
        tenant = await self.catalog.get_tenant(req.tenant_id)
        if tenant is not None and tenant.status == "deprovisioned":
            await audit(self.catalog, TENANT_IMPORT_FAILED, req.tenant_id, req.backup_name, {"reason": req.reason})
            # deprovisioned → failed is no status change people make; here it frees the id of a tenant that
            # never was (failed ids may be provisioned again).
            await self.catalog.change_status(
                req.tenant_id,
                "failed",
                req.reason[:500],
                req.event_type,
                info.workflow_id,
                lambda old, new: None,
                actor=await calling_actor(),
            )
        self._log(req.tenant_id).warning("import abandoned", reason=req.reason)
