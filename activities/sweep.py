"""The sweeper: find what dead runs left behind (scratch, previous and provisioning databases, restore work files,
roles of tenants that are gone, `.partial` files, unfinished uploads) and remove it, with a reason for each item.

Only what carries our mark and lies within this deployment's database prefix is considered; nothing whose run is
still going is touched (asked of Temporal), and each item is judged again right before it is removed. The
judgement itself is tenancy/sweep.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.audit import AuditNotWritten, audit
from activities.heartbeat import Heartbeater
from activities.infra.catalog import Catalog
from activities.infra.pg import connect
from activities.infra.restore_login import drop_restore_login
from activities.infra.servers import ServerUrls
from activities.infra.storage import open_storage
from tenancy.audit import SWEEP_REMOVE
from tenancy.contracts.move import MOVE_ID_PREFIX
from tenancy.contracts.sweep import SweepInput, SweepItem, SweepReport
from tenancy.errors import failure_message
from tenancy.log import activity_logger
from tenancy.marks import Mark, parse_mark
from tenancy.messages.progress import HeartbeatDetails
from tenancy.servers import DEFAULT_SERVER
from tenancy.settings import Settings
from tenancy.sweep import (
    MAX_LISTED_LEFT_ALONE,
    RunState,
    Verdict,
    judge_database,
    judge_restore_login,
    judge_role,
    judge_stale,
    judge_work_file,
    scratch_of_work_file,
    stale_limit,
)

_DATABASES = (
    "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
    "WHERE left(datname, length(%(prefix)s)) = %(prefix)s AND (%(name)s::text IS NULL OR datname = %(name)s) "
    "ORDER BY datname"
)
# What keeps a role from being an orphan: anything it owns or is granted in any database (pg_shdepend is shared
# by all databases), and databases it owns.
_ROLES = (
    "SELECT r.rolname, shobj_description(r.oid, 'pg_authid'), "
    "(SELECT count(*) FROM pg_shdepend s WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = r.oid "
    "AND s.deptype <> 'p'), "
    "(SELECT count(*) FROM pg_database d WHERE d.datdba = r.oid) "
    "FROM pg_roles r WHERE left(r.rolname, length(%(prefix)s)) = %(prefix)s "
    "AND (%(name)s::text IS NULL OR r.rolname = %(name)s) ORDER BY r.rolname"
)
_SWEPT_KINDS = ("scratch", "previous", "provisioning")
_RunCache = dict[tuple[str, str | None], RunState]
# A server that does not answer within this is reported and skipped, not waited on.
SERVER_CONNECT_SECONDS = 10


def _tenant_of_key(key: str) -> str | None:
    parts = key.split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "tenants" else None


class SweepActivities:
    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.client = client
        self.catalog = Catalog(settings)
        self.storage = open_storage(settings)
        self.prefix = settings.database_prefix
        self.work_dir = settings.state_dir.resolve() / "work"

    async def _run_state(self, workflow_id: str | None, run_id: str | None, runs: _RunCache) -> RunState | None:
        """What Temporal says of a run (cached for one pass; a re-check passes a fresh cache)."""
        if not workflow_id:
            return None
        if (workflow_id, run_id) not in runs:
            runs[(workflow_id, run_id)] = await self._describe(workflow_id, run_id)
        return runs[(workflow_id, run_id)]

    async def _describe(self, workflow_id: str, run_id: str | None) -> RunState:
        try:
            description = await self.client.get_workflow_handle(workflow_id, run_id=run_id).describe()
            if run_id and description.status != WorkflowExecutionStatus.RUNNING:
                # What the run made may be held by the run it continued as, or by the run a reset started.
                latest = await self.client.get_workflow_handle(workflow_id).describe()
                if latest.status == WorkflowExecutionStatus.RUNNING:
                    description = latest
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return RunState("not found")
            if exc.status == RPCStatusCode.INVALID_ARGUMENT:
                return RunState("unknown", exc.message)
            raise  # Temporal unreachable: no verdict without an answer (the activity is retried)
        if description.status == WorkflowExecutionStatus.RUNNING:
            return RunState("running")
        status = description.status.name.lower().replace("_", " ") if description.status else "closed"
        return RunState("ended", status)

    # The servers: every one this worker has a URL for, and every one the catalog knows (reported when it has none).

    async def _servers(self) -> tuple[dict[str, str], list[SweepItem]]:
        """The servers to look at (name → admin URL, `default` first), and an item for each that cannot be."""
        problems = []
        try:
            urls = ServerUrls(self.settings).configured()
        except ValueError as exc:  # a malformed servers file: the others are still swept
            urls = {DEFAULT_SERVER: self.settings.effective_database_url}
            problems.append(self._server_problem(None, str(exc), name="servers file"))
        known = {row["name"] for row in await self.catalog.servers()}
        for name in sorted(known - set(urls)):
            problems.append(
                self._server_problem(name, "this worker has no URL for it (TENANTS_SERVERS or the servers file)")
            )
        ordered = {DEFAULT_SERVER: urls[DEFAULT_SERVER], **{n: urls[n] for n in sorted(urls) if n != DEFAULT_SERVER}}
        return ordered, problems

    @staticmethod
    def _server_problem(server: str | None, why: str, name: str | None = None) -> SweepItem:
        return SweepItem(
            kind="server",
            name=name or server or "?",
            server=server,
            reason=f"not swept: {why}",
            removable=False,
            error=why,
        )

    def _url(self, server: str | None) -> str:
        """The admin URL of an item's server (None: `default`, as in reports made before there were servers)."""
        return ServerUrls(self.settings).url(server)

    async def _connect(self, url: str) -> psycopg.AsyncConnection:
        return await asyncio.wait_for(connect(url, autocommit=True), SERVER_CONNECT_SECONDS)

    async def _on_each_server(
        self,
        urls: dict[str, str],
        look: Callable[[str, psycopg.AsyncConnection], Awaitable[list[SweepItem]]],
        problems: list[SweepItem],
    ) -> list[SweepItem]:
        """`look` on every server, one connection each; a server that cannot be reached is one item in
        `problems` (once per sweep), not a failed sweep."""
        items: list[SweepItem] = []
        for server, url in urls.items():
            if any(p.kind == "server" and p.server == server for p in problems):
                continue
            try:
                conn = await self._connect(url)
            except Exception as exc:
                said = (failure_message(exc).strip().splitlines() or [type(exc).__name__])[0]
                problems.append(self._server_problem(server, f"not reached: {said}"))
                continue
            async with conn:
                items += await look(server, conn)
        return items

    # Judging each kind: used by the search and again right before each removal.

    async def _database_verdict(self, mark: Mark, now: datetime, stale: timedelta, runs: _RunCache) -> Verdict:
        return judge_database(mark, await self._run_state(mark.workflow_id, mark.run_id, runs), now, stale)

    async def _role_verdict(
        self,
        row: tuple,
        now: datetime,
        stale: timedelta,
        runs: _RunCache,
        tenants: dict[str, tuple[str, str] | None],
        server: str | None = None,
    ) -> Verdict | None:
        _, comment, dependencies, owned = row
        mark = parse_mark(comment)
        if mark is not None and mark.kind == "restorer":  # what it holds goes with it (drop_restore_login)
            return judge_restore_login(mark, await self._run_state(mark.workflow_id, mark.run_id, runs), now, stale)
        if mark is None or mark.kind != "role":
            return None
        if mark.tenant_id not in tenants:
            tenant = await self.catalog.get_tenant(mark.tenant_id)
            tenants[mark.tenant_id] = (tenant.status, tenant.server) if tenant else None
        found = tenants[mark.tenant_id]
        # A move's role on a server its tenant is not on (the target of a move that failed and was not cleared).
        moved_elsewhere = (
            found is not None
            and (mark.workflow_id or "").startswith(MOVE_ID_PREFIX)
            and found[1] != (server or DEFAULT_SERVER)
        )
        run = await self._run_state(mark.workflow_id, mark.run_id, runs)
        return judge_role(
            mark, found[0] if found else None, dependencies, owned, run, now, stale, moved_elsewhere=moved_elsewhere
        )

    async def _work_verdict(
        self,
        conns: list[psycopg.AsyncConnection],
        unreached: list[str],
        scratch: str,
        written: datetime,
        now: datetime,
        stale: timedelta,
        runs: _RunCache,
    ) -> Verdict:
        """A restore's work file, judged by its scratch database, looked for on every server (a restore may run on
        any of them)."""
        row = None
        for conn in conns:
            row = await (
                await conn.execute(
                    "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [scratch]
                )
            ).fetchone()
            if row is not None:
                break
        if row is None and unreached:
            return Verdict(
                False, f"its scratch database may be on server {', '.join(unreached)}, not reached: left alone"
            )
        mark = parse_mark(row[0]) if row else None
        run = await self._run_state(mark.workflow_id, mark.run_id, runs) if mark else None
        return judge_work_file(row is not None, mark, run, now - written, now, stale)

    @contextlib.asynccontextmanager
    async def _all_servers(self) -> AsyncIterator[tuple[list[psycopg.AsyncConnection], list[str]]]:
        """A connection to each server that answers, and the names of those that do not."""
        urls, problems = await self._servers()
        unreached = [p.server for p in problems if p.server]
        async with contextlib.AsyncExitStack() as stack:
            conns = []
            for server, url in urls.items():
                try:
                    conns.append(await stack.enter_async_context(await self._connect(url)))
                except Exception:
                    unreached.append(server)
            yield conns, unreached

    async def _busy(self, key: str, runs: _RunCache) -> str | None:
        """A file or upload of a tenant whose operation lock a running run holds (a backup stalled on a lock
        writes nothing for hours) is that run's."""
        tenant_id = _tenant_of_key(key)
        holder = await self.catalog.lock_holder(tenant_id) if tenant_id else None
        if not holder:
            return None
        if holder["namespace"] not in (None, self.client.namespace):  # another deployment's run, out of our sight
            return (
                f"tenant {tenant_id} is held by {holder['operation']} run {holder['workflow_id']} (namespace "
                f"{holder['namespace']})"
            )
        run = await self._run_state(holder["workflow_id"], holder["run_id"], runs)
        if run is not None and run.state in ("running", "unknown"):
            return f"tenant {tenant_id} is held by {holder['operation']} run {holder['workflow_id']}"
        return None

    # The search.

    @activity.defn
    async def find_orphans(self, req: SweepInput) -> SweepReport:
        """Everything the sweeper would remove (with why), and what it saw but leaves alone."""
        stale_hours = req.stale_hours if req.stale_hours is not None else self.settings.stale_partial_hours
        stale = stale_limit(stale_hours)
        now = datetime.now(UTC)
        runs: _RunCache = {}
        items: list[SweepItem] = []
        async with Heartbeater(lambda: HeartbeatDetails(checked=len(items))):
            urls, problems = await self._servers()
            items += await self._find_work_files(now, stale, runs)
            items += await self._on_each_server(
                urls, lambda server, conn: self._find_databases(server, conn, now, stale, runs), problems
            )
            items += await self._on_each_server(
                urls, lambda server, conn: self._find_roles(server, conn, now, stale, runs), problems
            )
            items += await self._find_files(now, stale, runs)
        removable = [i for i in items if i.removable]
        # The servers not looked at first: they are what a reader must not miss.
        left = problems + [i for i in items if not i.removable]
        activity_logger("activities.sweep").info(
            "sweep searched", removable=len(removable), left_alone=len(left), stale_hours=stale_hours
        )
        return SweepReport(
            swept_at=now,
            dry_run=req.dry_run,
            stale_hours=stale_hours,
            items=removable[: req.limit] + left[:MAX_LISTED_LEFT_ALONE],
            more=max(0, len(removable) - req.limit),
        )

    async def _find_work_files(self, now: datetime, stale: timedelta, runs: _RunCache) -> list[SweepItem]:
        def listing() -> list[tuple[Path, str, datetime]]:
            if not self.work_dir.is_dir():
                return []
            found = []
            for path in sorted(self.work_dir.iterdir()):
                scratch = scratch_of_work_file(path.name)
                try:
                    info = path.lstat()
                except FileNotFoundError:
                    continue
                if scratch and stat.S_ISREG(info.st_mode):
                    found.append((path, scratch, datetime.fromtimestamp(info.st_mtime, UTC)))
            return found

        items: list[SweepItem] = []
        files = await asyncio.to_thread(listing)
        if not files:
            return items
        async with self._all_servers() as (conns, unreached):
            for path, scratch, written in files:
                verdict = await self._work_verdict(conns, unreached, scratch, written, now, stale, runs)
                items.append(SweepItem(kind="work", name=str(path), reason=verdict.reason, removable=verdict.removable))
        return items

    async def _find_databases(
        self, server: str, conn: psycopg.AsyncConnection, now: datetime, stale: timedelta, runs: _RunCache
    ) -> list[SweepItem]:
        items = []
        rows = await (await conn.execute(_DATABASES, {"prefix": self.prefix, "name": None})).fetchall()
        for name, comment in rows:
            mark = parse_mark(comment)
            if mark is None:
                if "__rs_" in name or "__old_" in name:
                    items.append(
                        SweepItem(
                            kind="database",
                            name=name,
                            server=server,
                            reason="not ours (no mark): left alone",
                            removable=False,
                        )
                    )
                continue
            if mark.kind in _SWEPT_KINDS:
                verdict = await self._database_verdict(mark, now, stale, runs)
                items.append(
                    SweepItem(
                        kind=mark.kind, name=name, server=server, reason=verdict.reason, removable=verdict.removable
                    )
                )
        return items

    async def _find_roles(
        self, server: str, conn: psycopg.AsyncConnection, now: datetime, stale: timedelta, runs: _RunCache
    ) -> list[SweepItem]:
        items = []
        tenants: dict[str, tuple[str, str] | None] = {}
        rows = await (await conn.execute(_ROLES, {"prefix": self.prefix, "name": None})).fetchall()
        for row in rows:
            verdict = await self._role_verdict(row, now, stale, runs, tenants, server)
            if verdict is not None:
                items.append(
                    SweepItem(
                        kind="role", name=row[0], server=server, reason=verdict.reason, removable=verdict.removable
                    )
                )
        return items

    async def _find_files(self, now: datetime, stale: timedelta, runs: _RunCache) -> list[SweepItem]:
        items = []
        for key, written in await asyncio.to_thread(self.storage.partial_files):
            verdict = judge_stale(now - written, stale, await self._busy(key, runs), "last written")
            items.append(SweepItem(kind="partial", name=key, reason=verdict.reason, removable=verdict.removable))
        for key, upload_id, initiated in await asyncio.to_thread(self.storage.unfinished_uploads):
            verdict = judge_stale(now - initiated, stale, await self._busy(key, runs), "upload began")
            items.append(
                SweepItem(
                    kind="upload", name=key, upload_id=upload_id, reason=verdict.reason, removable=verdict.removable
                )
            )
        return items

    # The removal.

    @activity.defn
    async def remove_orphans(self, report: SweepReport) -> SweepReport:
        """Remove each removable item of the report, after judging it again with fresh facts. One item that
        cannot be removed is reported, not a failed sweep."""
        stale = stale_limit(report.stale_hours)
        log = activity_logger("activities.sweep")
        done = {"checked": 0, "removed": 0}
        items = []
        removers: dict[str, Callable[[SweepItem, datetime, timedelta], Awaitable[Verdict | None]]] = {
            "work": self._remove_work_file,
            "scratch": self._remove_database,
            "previous": self._remove_database,
            "provisioning": self._remove_database,
            "role": self._remove_role,
            "partial": self._remove_partial,
            "upload": self._remove_upload,
        }
        async with Heartbeater(lambda: HeartbeatDetails(**done)):
            for item in report.items:
                if not item.removable or item.kind not in removers:
                    items.append(item)
                    continue
                try:
                    refused = await removers[item.kind](item, datetime.now(UTC), stale)
                except (RPCError, AuditNotWritten):
                    raise  # Temporal unreachable, or no audit row: retry the activity rather than guess
                except Exception as exc:  # this item only; the next sweep tries again
                    log.warning("sweep could not remove", kind=item.kind, name=item.name, error=str(exc))
                    items.append(item.model_copy(update={"error": str(exc).strip() or type(exc).__name__}))
                    continue
                done["checked"] += 1
                if refused is None:
                    done["removed"] += 1
                    log.info("swept", kind=item.kind, name=item.name, reason=item.reason)
                    items.append(item.model_copy(update={"removed": True}))
                else:
                    items.append(item.model_copy(update=refused._asdict()))
        return report.model_copy(update={"items": items})

    async def _audit_removal(self, item: SweepItem, tenant_id: str | None) -> None:
        """Right before an item is removed, once it passed its re-check: nothing goes without its audit row."""
        detail = {"kind": item.kind, "name": item.name, "reason": item.reason}
        await audit(self.catalog, SWEEP_REMOVE, tenant_id, detail=detail)

    @staticmethod
    def _recheck(verdict: Verdict) -> Verdict | None:
        return None if verdict.removable else Verdict(False, f"on re-check: {verdict.reason}")

    async def _remove_database(self, item: SweepItem, now: datetime, stale: timedelta) -> Verdict | None:
        async with await self._connect(self._url(item.server)) as conn:
            row = await (await conn.execute(_DATABASES, {"prefix": self.prefix, "name": item.name})).fetchone()
            if row is None:
                return Verdict(False, "gone before the sweeper reached it")
            mark = parse_mark(row[1])
            if mark is None or mark.kind != item.kind:
                return Verdict(False, f"on re-check: no longer marked {item.kind}: left alone")
            refused = self._recheck(await self._database_verdict(mark, now, stale, {}))
            if refused:
                return refused
            await self._audit_removal(item, mark.tenant_id)
            await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(item.name)))
        if item.kind == "previous":
            await self.catalog.end_kept_database(item.name, "dropped by the sweeper")
        return None

    async def _remove_role(self, item: SweepItem, now: datetime, stale: timedelta) -> Verdict | None:
        admin_url = self._url(item.server)
        async with await self._connect(admin_url) as conn:
            row = await (await conn.execute(_ROLES, {"prefix": self.prefix, "name": item.name})).fetchone()
            if row is None:
                return Verdict(False, "gone before the sweeper reached it")
            verdict = await self._role_verdict(row, now, stale, {}, {}, item.server)
            if verdict is None:
                return Verdict(False, "on re-check: its tenant is live again: left alone")
            refused = self._recheck(verdict)
            if refused:
                return refused
            mark = parse_mark(row[1])  # a role with a verdict carries our mark
            await self._audit_removal(item, mark.tenant_id if mark else None)
            if mark is None or mark.kind != "restorer":
                # Anything granted or owned since the check makes DROP ROLE fail: reported as this item's error.
                await conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(item.name)))
                return None
        await drop_restore_login(admin_url, item.name)
        return None

    async def _remove_work_file(self, item: SweepItem, now: datetime, stale: timedelta) -> Verdict | None:
        path = Path(item.name)
        scratch = scratch_of_work_file(path.name)
        if path.parent != self.work_dir or scratch is None:
            raise ValueError(f"{item.name!r} is not a restore work file of this worker's state folder")
        try:
            info = await asyncio.to_thread(path.lstat)
        except FileNotFoundError:
            return Verdict(False, "gone before the sweeper reached it")
        async with self._all_servers() as (conns, unreached):
            written = datetime.fromtimestamp(info.st_mtime, UTC)
            refused = self._recheck(await self._work_verdict(conns, unreached, scratch, written, now, stale, {}))
        if refused:
            return refused
        await self._audit_removal(item, None)
        await asyncio.to_thread(path.unlink, missing_ok=True)
        return None

    async def _remove_partial(self, item: SweepItem, now: datetime, stale: timedelta) -> Verdict | None:
        busy = await self._busy(item.name, {})
        if busy:
            return Verdict(False, f"on re-check: {busy}: left alone")
        await self._audit_removal(item, _tenant_of_key(item.name))
        if not await asyncio.to_thread(self.storage.remove_partial_file, item.name, stale):
            return Verdict(False, "on re-check: gone or written to again: left alone")
        return None

    async def _remove_upload(self, item: SweepItem, now: datetime, stale: timedelta) -> Verdict | None:
        busy = await self._busy(item.name, {})
        if busy:
            return Verdict(False, f"on re-check: {busy}: left alone")
        await self._audit_removal(item, _tenant_of_key(item.name))
        if not item.upload_id or not await asyncio.to_thread(
            self.storage.abort_unfinished_upload, item.name, item.upload_id, stale
        ):
            return Verdict(False, "on re-check: already completed or aborted")
        return None
