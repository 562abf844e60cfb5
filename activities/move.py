"""Move activities (workflows/move_tenant.py): a tenant's database copied to another server, checked, switched to.

Each resolves server names to admin URLs itself (activities/infra/servers.py) and acts only on what carries this
run's marks, so a retried attempt, or a new worker after a crash, picks up where the last one stopped.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from psycopg import sql
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.calling_run import CallingRun, calling_run
from activities.heartbeat import Heartbeater
from activities.infra import moving
from activities.infra.catalog import Catalog
from activities.infra.copy import copy_database
from activities.infra.credentials import credentials_path, read_credentials, write_credentials
from activities.infra.marks import database_mark, mark_database, role_mark
from activities.infra.pg import connect, find_client_tools, one_row
from activities.infra.restore_login import (
    create_restore_login,
    drop_restore_login_of_run,
    drop_restore_login_quietly,
    let_owner_create,
    restorer_mark,
    run_checks_as_owner,
)
from activities.infra.servers import ServerUrls, server_major_version
from activities.provisioning import _tenant_bytes as tenant_bytes
from activities.provisioning import server_loads
from tenancy.contracts.move import MOVE_ID_PREFIX
from tenancy.errors import (
    INVALID_INPUT,
    MOVE_FAILED,
    MOVE_REFUSED,
    MOVE_VERIFICATION_FAILED,
    NOTHING_TO_UNDO,
    TENANT_DATABASE_MISSING,
    TENANT_NOT_FOUND,
    InvalidInput,
    fail,
)
from tenancy.log import activity_logger
from tenancy.marks import Mark
from tenancy.messages.move import (
    CopyCheck,
    CopyFacts,
    CopyRequest,
    CopyResult,
    FreezeRequest,
    FreezeResult,
    KeptSource,
    MoveBackRequest,
    MoveCheck,
    MovePlan,
    ServerMoveRequest,
    SetAsideRequest,
    Switched,
    SwitchRequest,
    UnfinishedMove,
)
from tenancy.messages.progress import HeartbeatDetails
from tenancy.messages.tenants import TenantRequest
from tenancy.naming import is_previous_database_name
from tenancy.restore_roles import owner_role_names, restore_login_name
from tenancy.servers import ServerLoad, choose_server, move_dump_major, move_target_problem
from tenancy.settings import Settings


def _mark(kind: str, tenant_id: str, info: CallingRun, **extra: object) -> Mark:
    return Mark.model_validate(
        {
            "kind": kind,
            "tenant_id": tenant_id,
            "workflow_id": info.workflow_id,
            "run_id": info.workflow_run_id,
            "at": datetime.now(UTC),
            **extra,
        }
    )


class MoveActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalog = Catalog(settings)
        self.urls = ServerUrls(settings)

    def _log(self, tenant_id: str):
        return activity_logger("activities.move", tenant_id)

    @activity.defn
    async def check_move(self, plan: MovePlan) -> MoveCheck:
        """Everything that would stop the move, before anything is made: the tenant on its source, the target known,
        open, configured on this worker and not older than the source, client tools of the dump's major version,
        and nothing of the tenant's names on the target that is not the tenant's."""
        tenant = await self.catalog.get_tenant(plan.tenant_id)
        if tenant is None:
            raise fail(TENANT_NOT_FOUND, f"tenant {plan.tenant_id!r} is not in the catalog")
        if tenant.server != plan.source:
            raise fail(MOVE_REFUSED, f"tenant {plan.tenant_id!r} is on server {tenant.server!r}, not {plan.source!r}")
        if plan.target == plan.source:
            raise fail(INVALID_INPUT, f"tenant {plan.tenant_id!r} is on server {plan.target!r} already")
        server = await self.catalog.server(plan.target)
        if server is None:
            known = ", ".join(row["name"] for row in await self.catalog.servers())
            raise fail(INVALID_INPUT, f"no server named {plan.target!r} (servers: {known})")
        if server["status"] != "open":
            raise fail(MOVE_REFUSED, f"server {plan.target!r} is {server['status']}: it takes no tenants")
        source_url, target_url = self.urls.url(plan.source), self.urls.url(plan.target)
        source_major = await server_major_version(source_url)
        target_major = await server_major_version(target_url)
        if problem := move_target_problem(source_major, target_major):
            raise fail(MOVE_REFUSED, problem)
        dump_major = move_dump_major(source_major, target_major)
        tools = await asyncio.to_thread(find_client_tools, dump_major, self.settings.pg_bin_dir)
        fallback: int | None = None
        if source_major != dump_major:
            try:
                await asyncio.to_thread(find_client_tools, source_major, self.settings.pg_bin_dir)
                fallback = source_major
            except ApplicationError:
                fallback = None  # the newer pg_dump alone, as required
        async with await connect(source_url, autocommit=True) as source:
            state = await moving.database_state(source, plan.database_name)
            prepared = await moving.prepared_transactions(source, plan.database_name)
        if state is None:
            raise fail(TENANT_DATABASE_MISSING, f"database {plan.database_name!r} is not on server {plan.source!r}")
        if not state[0]:
            raise fail(
                MOVE_REFUSED,
                f"database {plan.database_name!r} on {plan.source!r} does not allow connections: nothing can copy it",
            )
        if prepared:
            # They outlive the freeze's terminations and would make the source's rename (set aside) fail.
            raise fail(
                MOVE_REFUSED,
                f"database {plan.database_name!r} on {plan.source!r} has {prepared} prepared transaction(s): commit "
                "or roll them back (pg_prepared_xacts) first; nothing was changed",
            )
        await self._check_capacity(plan.target, server, target_url)
        async with await connect(target_url, autocommit=True) as target:
            for name in (plan.database_name, plan.rehearsal_name, plan.final_name):
                if await moving.database_exists(target, name):
                    raise fail(
                        MOVE_REFUSED,
                        f"a database named {name!r} exists on server {plan.target!r}: left alone; nothing was changed",
                    )
            if plan.role_name:
                found = await role_mark(target, plan.role_name)
                exists = await (
                    await target.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [plan.role_name])
                ).fetchone()
                if exists and (found is None or not found.is_of(plan.tenant_id, "role")):
                    raise fail(
                        MOVE_REFUSED,
                        f"role {plan.role_name!r} exists on server {plan.target!r} and is not this tenant's: left "
                        "alone; nothing was changed",
                    )
        self._log(plan.tenant_id).info(
            "move checked", source=plan.source, target=plan.target, dump_major=dump_major, tools=tools.version
        )
        return MoveCheck(
            source_major=source_major,
            target_major=target_major,
            dump_major=dump_major,
            tools_version=tools.version,
            fallback_major=fallback,
            source_allows_connections=state[0],
            source_connection_limit=state[1],
        )

    async def _check_capacity(self, name: str, server: dict, url: str) -> None:
        """A target at its limits (max_tenants, max_size_mb) takes no more tenants, a moved one included."""
        max_mb = server["max_size_mb"]
        load = ServerLoad(
            name=name,
            status=server["status"],
            max_tenants=server["max_tenants"],
            max_size_bytes=max_mb * 1024 * 1024 if max_mb else None,
            tenants=await self._live_tenants(name),
            size_bytes=await tenant_bytes(self.settings, url) if max_mb else 0,
        )
        if load.full:
            limits = f"{load.tenants} of {load.max_tenants or 'unlimited'} tenants" + (
                f", {load.size_bytes // (1024 * 1024)} of {max_mb} MB" if max_mb else ""
            )
            raise fail(
                MOVE_REFUSED, f"server {name!r} is full ({limits}): it takes no more tenants; nothing was changed"
            )

    @activity.defn
    async def prepare_target(self, plan: MovePlan) -> list[str]:
        """The tenant's roles on the target: its login role with the source's password verifier, and the NOLOGIN
        role its objects will belong to; both marked. Returns the roles this call created."""
        info = calling_run()
        mark = _mark("role", plan.tenant_id, info)
        made: list[str] = []
        async with (
            Heartbeater(),
            await connect(self.urls.url(plan.source), autocommit=True) as source,
            await connect(self.urls.url(plan.target), autocommit=True) as target,
        ):
            if plan.role_name and await moving.copy_login_role(source, target, plan.role_name, mark):
                made.append(plan.role_name)
            if await moving.ensure_owner(target, plan.tenant_id, plan.database_name, plan.role_name, mark):
                made.append((await moving.owner_on(target, plan.tenant_id, plan.database_name, plan.role_name)).name)
        self._log(plan.tenant_id).info("tenant roles ready on the target", target=plan.target, created=made)
        return made

    @activity.defn
    async def copy_to_target(self, req: CopyRequest) -> CopyResult:
        """pg_dump the tenant's database on the source | pg_restore into a new scratch database on the target, marked
        as this run's and closed to all but the load's own login role (a member of the tenant's owner role only).
        A retried attempt drops what an earlier attempt of this run left and starts over."""
        done = {"tables": 0}
        async with Heartbeater(lambda: HeartbeatDetails(tables_restored=done["tables"])):
            return await self._copy(req, done)

    async def _copy(self, req: CopyRequest, done: dict[str, int]) -> CopyResult:
        plan, info = req.plan, calling_run()
        started = datetime.now(UTC)
        source_url, target_url = self.urls.url(plan.source), self.urls.url(plan.target)
        login_name = restore_login_name(req.scratch_name)
        async with await connect(target_url, autocommit=True) as target:
            if await moving.database_exists(target, req.scratch_name):
                mark = await database_mark(target, req.scratch_name)
                if mark is None or not (mark.is_of(plan.tenant_id, "scratch") and mark.made_by(info.workflow_id)):
                    raise fail(MOVE_REFUSED, f"database {req.scratch_name!r} exists and is not this run's: left alone")
                await target.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(moving.ident(req.scratch_name)))
            owner = await moving.owner_on(target, plan.tenant_id, plan.database_name, plan.role_name)
            if owner.create:
                raise fail(MOVE_FAILED, f"role {owner.name!r} is not on server {plan.target!r}: prepare it first")
            await target.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(moving.ident(req.scratch_name))
            )
            await mark_database(target, req.scratch_name, _mark("scratch", plan.tenant_id, info))
            await target.execute(
                sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(moving.ident(req.scratch_name))
            )
        dumper = await asyncio.to_thread(find_client_tools, req.dump_major, self.settings.pg_bin_dir)
        restorer = await asyncio.to_thread(
            find_client_tools, req.restore_major or req.dump_major, self.settings.pg_bin_dir
        )
        login = await create_restore_login(
            target_url,
            login_name,
            owner.name,
            req.scratch_name,
            restorer_mark(plan.tenant_id, info.workflow_id, info.workflow_run_id),
        )
        try:
            undo_grants = await let_owner_create(target_url, req.scratch_name, owner.name)

            def table_done() -> None:
                done["tables"] += 1

            await copy_database(
                dumper,
                restorer,
                source_url,
                plan.database_name,
                target_url,
                req.scratch_name,
                login,
                jobs=req.jobs,
                work_dir=self._work_dir(req.scratch_name),
                on_table=table_done,
            )
            await moving.settle_copy(target_url, req.scratch_name, login, undo_grants, owner.login_role)
        except BaseException:
            # Shielded: a cancelled attempt still removes its half-loaded copy.
            async def drop() -> None:
                async with await connect(target_url, autocommit=True) as target:
                    await moving.drop_marked_database(
                        target, req.scratch_name, plan.tenant_id, info.workflow_id, "scratch"
                    )

            try:
                await asyncio.shield(drop())
            except Exception as exc:
                self._log(plan.tenant_id).warning("copy not dropped", database=req.scratch_name, error=str(exc))
            raise
        finally:
            await drop_restore_login_quietly(target_url, login.name, plan.tenant_id)
        seconds = (datetime.now(UTC) - started).total_seconds()
        self._log(plan.tenant_id).info(
            "copied to the target", scratch=req.scratch_name, tables=done["tables"], seconds=round(seconds, 3)
        )
        return CopyResult(tables=done["tables"], seconds=seconds)

    def _work_dir(self, scratch_name: str):
        """Where a copy with several jobs keeps its directory dump: the worker's 0700 work folder."""
        folder = self.settings.state_dir.resolve() / "work"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
        return folder / f".{scratch_name}.dir.partial"

    @activity.defn
    async def verify_copy(self, req: CopyCheck) -> CopyFacts:
        """The copy against the source: with `exact` (the source is frozen) every table's row count and every
        sequence's last value equal; else the same tables and sequences. Then each check (one statement returning
        true) as the tenant's owner role, read only, with the statement timeout of restore checks."""
        plan = req.plan
        source_url, target_url = self.urls.url(plan.source), self.urls.url(plan.target)
        async with Heartbeater():
            # Both sides at once (the copy is closed to all, the source frozen or, in the rehearsal, compared by
            # names only): the slower side's time inside the freeze, not the sum. A failing side cancels the other.
            async with asyncio.TaskGroup() as counting:
                on_target = counting.create_task(moving.facts_of(target_url, req.scratch_name))
                on_source = counting.create_task(moving.facts_of(source_url, plan.database_name))
            counts, sequences = on_target.result()
            expected_counts, expected_sequences = on_source.result()
            missing = sorted(set(expected_counts) - set(counts)) + sorted(set(expected_sequences) - set(sequences))
            if missing:
                raise fail(MOVE_VERIFICATION_FAILED, f"the copy lacks {', '.join(missing[:5])}")
            if req.exact:
                wrong = [
                    f"{name}: {counts[name]} rows, {n} on the source"
                    for name, n in sorted(expected_counts.items())
                    if counts[name] != n
                ] + [
                    f"sequence {name}: {sequences[name]}, {value} on the source"
                    for name, value in sorted(expected_sequences.items())
                    if sequences[name] != value
                ]
                if wrong:
                    raise fail(
                        MOVE_VERIFICATION_FAILED, f"the copy differs from the frozen source: {'; '.join(wrong[:5])}"
                    )
            if req.checks:
                await self._run_checks(target_url, req)
        self._log(plan.tenant_id).info(
            "copy verified", scratch=req.scratch_name, tables=len(counts), exact=req.exact, checks=len(req.checks)
        )
        return CopyFacts(row_counts=counts, sequences=sequences)

    async def _run_checks(self, target_url: str, req: CopyCheck) -> None:
        plan, info = req.plan, calling_run()
        async with await connect(target_url, autocommit=True) as admin:
            owner = (await moving.owner_on(admin, plan.tenant_id, plan.database_name, plan.role_name)).name
        login = await create_restore_login(
            target_url,
            restore_login_name(req.scratch_name),
            owner,
            req.scratch_name,
            restorer_mark(plan.tenant_id, info.workflow_id, info.workflow_run_id),
        )
        timeout_ms = self.settings.check_timeout_seconds * 1000
        try:
            await run_checks_as_owner(
                login, target_url, req.scratch_name, owner, req.checks, timeout_ms, MOVE_VERIFICATION_FAILED
            )
        finally:
            await drop_restore_login_quietly(target_url, login.name, plan.tenant_id)

    @activity.defn
    async def drop_copy(self, req: CopyRequest) -> bool:
        """Drop a copy of this run's on the target (the rehearsal, once checked), and its load's login role."""
        plan, info = req.plan, calling_run()
        target_url = self.urls.url(plan.target)
        async with await connect(target_url, autocommit=True) as target:
            dropped = await moving.drop_marked_database(
                target, req.scratch_name, plan.tenant_id, info.workflow_id, "scratch"
            )
        await drop_restore_login_of_run(
            target_url, restore_login_name(req.scratch_name), plan.tenant_id, info.workflow_id
        )
        return dropped

    @activity.defn
    async def freeze_database(self, req: FreezeRequest) -> FreezeResult:
        """No new sessions of the tenant's database on `server` for any role but superusers (the admin's pg_dump
        still connects), and the open ones ended. Safe to repeat."""
        async with Heartbeater(), await connect(self.urls.url(req.server), autocommit=True) as conn:
            if await moving.database_state(conn, req.database_name) is None:
                raise fail(TENANT_DATABASE_MISSING, f"database {req.database_name!r} is not on server {req.server!r}")
            # From the CONNECTION LIMIT 0 at freeze()'s start: the freeze a move reports includes ending the sessions.
            # The source's own clock, read before the limit changes: every session that starts after it (a
            # superuser's, which the limit does not stop) is seen by the switch's check.
            frozen_at = datetime.now(UTC)
            on_server = (await one_row(await conn.execute("SELECT clock_timestamp()")))[0]
            terminated = await moving.freeze(conn, req.database_name)
            # A transaction prepared since the move's check survives every terminate and would stop the rename of
            # the source after the switch: refused now, while the undo can still let the source in.
            prepared = await moving.prepared_transactions(conn, req.database_name)
            if prepared:
                raise fail(
                    MOVE_REFUSED,
                    f"database {req.database_name!r} on {req.server!r} has {prepared} prepared transaction(s) "
                    "(COMMIT PREPARED or ROLLBACK PREPARED them, then move again): not moved",
                )
        self._log(req.tenant_id).info("database frozen", server=req.server, terminated=terminated)
        return FreezeResult(terminated_sessions=terminated, frozen_at=frozen_at, source_frozen_at=on_server)

    @activity.defn
    async def switch_to_target(self, req: SwitchRequest) -> Switched:
        """The final copy takes the tenant's name on the target and is let in as the source database was (grants,
        owner, connection limit); then the catalog points at the target. A switch already made is recognised."""
        plan, info = req.plan, calling_run()
        async with (
            Heartbeater(),
            await connect(self.urls.url(plan.source), autocommit=True) as source,
            await connect(self.urls.url(plan.target), autocommit=True) as target,
        ):
            current = await self.catalog.tenant_server(plan.tenant_id)
            if current == plan.target:
                return Switched(opened_at=datetime.now(UTC))
            if current != plan.source:
                raise fail(MOVE_REFUSED, f"tenant {plan.tenant_id!r} is on server {current!r} now: not switched")
            if req.frozen_at is not None:
                # Superusers are not held by CONNECTION LIMIT 0: a session of theirs since the freeze may have
                # written what the copy lacks. Not switched: the move is undone, the tenant stays on its source.
                late = await moving.sessions_since(source, plan.database_name, req.frozen_at)
                for _ in range(10):  # the move's own sessions (pg_dump, the check) may take a moment to end
                    if not late:
                        break
                    await asyncio.sleep(0.1)
                    late = await moving.sessions_since(source, plan.database_name, req.frozen_at)
                if late:
                    raise fail(
                        MOVE_FAILED,
                        f"{late} session(s) of database {plan.database_name!r} on {plan.source!r} began during the "
                        "freeze (superusers are not held by it; writes may be missing from the copy): not switched",
                    )
            if await moving.database_exists(target, plan.final_name):
                if await moving.database_exists(target, plan.database_name):
                    raise fail(MOVE_REFUSED, f"database {plan.database_name!r} appeared on {plan.target!r}: left alone")
                await moving.rename(target, plan.final_name, plan.database_name)
                await mark_database(target, plan.database_name, _mark("tenant", plan.tenant_id, info))
            else:
                mark = await database_mark(target, plan.database_name)
                if mark is None or not (mark.is_of(plan.tenant_id, "tenant") and mark.made_by(info.workflow_id)):
                    raise fail(MOVE_FAILED, f"the final copy {plan.final_name!r} is gone; nothing was switched")
            await moving.open_like(source, plan.database_name, target, plan.database_name, req.connection_limit)
            opened_at = datetime.now(UTC)
            if not await self.catalog.switch_tenant_server(plan.tenant_id, plan.source, plan.target):
                raise fail(MOVE_REFUSED, f"tenant {plan.tenant_id!r} left server {plan.source!r}: not switched")
        await self._point_credentials(plan.tenant_id, plan.target)
        self._log(plan.tenant_id).info("tenant switched", source=plan.source, target=plan.target)
        return Switched(opened_at=opened_at)

    async def _point_credentials(self, tenant_id: str, server: str) -> None:
        """The tenant's credentials file (provisioning's) names the server it is on now; the password is unchanged.
        A file that cannot be rewritten is logged: the catalog is what says where the tenant is."""
        folder = self.settings.effective_secrets_dir

        def rewrite() -> bool:
            if not credentials_path(folder, tenant_id).is_file():
                return False
            saved = read_credentials(folder, tenant_id)
            write_credentials(
                folder, tenant_id, saved["role"], saved["password"], saved["database"], self.urls.url(server), server
            )
            return True

        try:
            await asyncio.to_thread(rewrite)
        except Exception as exc:
            self._log(tenant_id).warning("credentials file not updated", server=server, error=str(exc))

    @activity.defn
    async def set_aside(self, req: SetAsideRequest) -> bool:
        """The tenant's database left behind on `server` (which the catalog no longer names for it): closed to
        everyone, renamed to `aside_name`, marked `previous`, and recorded as kept there until `keep_until`."""
        info = calling_run()
        if not is_previous_database_name(req.database_name, req.aside_name):
            raise fail(INVALID_INPUT, f"{req.aside_name!r} is not a name for a set-aside copy of {req.database_name!r}")
        if await self.catalog.tenant_server(req.tenant_id) == req.server:
            raise fail(MOVE_REFUSED, f"tenant {req.tenant_id!r} is on server {req.server!r}: its database stays")
        async with Heartbeater(), await connect(self.urls.url(req.server), autocommit=True) as conn:
            if await moving.database_exists(conn, req.database_name):
                if await moving.database_exists(conn, req.aside_name):
                    raise fail(MOVE_REFUSED, f"database {req.aside_name!r} exists on {req.server!r}: left alone")
                await moving.close(conn, req.database_name)
                await moving.rename(conn, req.database_name, req.aside_name)
            elif not await moving.database_exists(conn, req.aside_name):
                raise fail(MOVE_FAILED, f"database {req.database_name!r} is not on server {req.server!r}")
            await mark_database(conn, req.aside_name, _mark("previous", req.tenant_id, info, keep_until=req.keep_until))
            await moving.close(conn, req.aside_name)
            if req.role_name:
                await moving.retire_login(conn, req.role_name, req.tenant_id)
        if req.keep_until is not None:
            await self.catalog.record_kept_database(
                req.aside_name, req.tenant_id, req.database_name, info.workflow_id, None, req.keep_until, req.server
            )
        self._log(req.tenant_id).info("database set aside", server=req.server, name=req.aside_name)
        return True

    @activity.defn
    async def drop_set_aside(self, req: SetAsideRequest) -> bool:
        """Drop a database set aside on `server` (keep 0): only one that carries the tenant's `previous` mark, on a
        server the catalog no longer names for the tenant."""
        if not is_previous_database_name(req.database_name, req.aside_name):
            raise fail(INVALID_INPUT, f"{req.aside_name!r} is not a name for a set-aside copy of {req.database_name!r}")
        if await self.catalog.tenant_server(req.tenant_id) == req.server:
            raise fail(MOVE_REFUSED, f"tenant {req.tenant_id!r} is on server {req.server!r}: nothing dropped there")
        async with await connect(self.urls.url(req.server), autocommit=True) as conn:
            mark = (
                await database_mark(conn, req.aside_name)
                if await moving.database_exists(conn, req.aside_name)
                else None
            )
            if mark is None or not mark.is_of(req.tenant_id, "previous"):
                return False
            await conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(moving.ident(req.aside_name)))
        await self.catalog.end_kept_database(req.aside_name, "dropped")
        return True

    @activity.defn
    async def undo_unfinished_move(self, req: UnfinishedMove) -> str:
        """After a move failed or was cancelled before its switch (its activities have stopped): what this run made
        on the target (copies, login roles of the loads, the tenant's roles it created) dropped, and the source
        database let in exactly as it was. A switch that committed is left as it is: the tenant is on the target."""
        plan, info = req.plan, calling_run()
        if await self.catalog.tenant_server(plan.tenant_id) == plan.target:
            return "switched: the tenant is on the target"
        async with Heartbeater():
            # The source first: the tenant is reachable again whatever state the target is in (a target that went
            # down is the usual reason a copy fails).
            async with await connect(self.urls.url(plan.source), autocommit=True) as source:
                if await moving.database_exists(source, plan.database_name):
                    await moving.unfreeze(source, plan.database_name, req.allows_connections, req.connection_limit)
            try:
                await self._clear_target(plan, info)
            except Exception as exc:
                # Left to the sweeper: every copy and role of this run there carries its mark.
                self._log(plan.tenant_id).warning(
                    "target not cleared: left to the sweeper", target=plan.target, error=str(exc).strip()[:300]
                )
                return "unchanged: the tenant is on its source (the target was not cleared: sweep it)"
        self._log(plan.tenant_id).warning("unfinished move undone", target=plan.target)
        return "unchanged: the tenant is on its source"

    async def _clear_target(self, plan: MovePlan, info: CallingRun) -> None:
        """What this run made on the target dropped: its copies, its loads' login roles, the tenant's roles."""
        target_url = self.urls.url(plan.target)
        async with await connect(target_url, autocommit=True) as target:
            await moving.drop_marked_database(target, plan.database_name, plan.tenant_id, info.workflow_id, "tenant")
            for name in (plan.final_name, plan.rehearsal_name):
                await moving.drop_marked_database(target, name, plan.tenant_id, info.workflow_id, "scratch")
        for name in (plan.final_name, plan.rehearsal_name):
            await drop_restore_login_of_run(target_url, restore_login_name(name), plan.tenant_id, info.workflow_id)
        for role in [*owner_role_names(plan.database_name), *([plan.role_name] if plan.role_name else [])]:
            await moving.drop_role_of_run(target_url, role, plan.tenant_id, info.workflow_id)

    @activity.defn
    async def find_kept_source(self, req: TenantRequest) -> KeptSource:
        """The newest database a move of this tenant left on its source server that is still there, marked."""
        tenant = await self.catalog.get_tenant(req.tenant_id)
        if tenant is None:
            raise fail(TENANT_NOT_FOUND, f"tenant {req.tenant_id!r} is not in the catalog")
        for row in await self.catalog.kept_databases(tenant.id):
            server = row.get("server")
            if not row["workflow_id"].startswith(MOVE_ID_PREFIX) or not server or server == tenant.server:
                continue
            async with await connect(self.urls.url(server), autocommit=True) as conn:
                exists = await moving.database_exists(conn, row["name"])
                mark = await database_mark(conn, row["name"]) if exists else None
            if mark is None or not mark.is_of(tenant.id, "previous"):
                continue
            async with await connect(self.urls.url(tenant.server), autocommit=True) as conn:
                state = await moving.database_state(conn, tenant.database_name)
            if state is None:
                raise fail(TENANT_DATABASE_MISSING, f"database {tenant.database_name!r} is not on {tenant.server!r}")
            return KeptSource(
                name=row["name"],
                server=server,
                database_name=tenant.database_name,
                workflow_id=row["workflow_id"],
                kept_until=row["kept_until"],
                current_server=tenant.server,
                connection_limit=state[1],
                role_name=tenant.role_name,
            )
        raise fail(
            NOTHING_TO_UNDO,
            f"tenant {req.tenant_id!r} has no source database kept from a move to go back to "
            "(a move keeps it for --keep-source, 24h by default)",
        )

    @activity.defn
    async def move_back(self, req: MoveBackRequest) -> Switched:
        """The kept source database takes the tenant's name again on its server, is let in as the tenant's current
        (frozen) database is, and the catalog points back at it. A move back already made is recognised."""
        kept, info = req.kept, calling_run()
        async with (
            Heartbeater(),
            await connect(self.urls.url(kept.server), autocommit=True) as source,
            await connect(self.urls.url(kept.current_server), autocommit=True) as current_conn,
        ):
            current = await self.catalog.tenant_server(req.tenant_id)
            if current == kept.server:
                return Switched(opened_at=datetime.now(UTC))
            if current != kept.current_server:
                raise fail(MOVE_REFUSED, f"tenant {req.tenant_id!r} is on server {current!r} now: not moved back")
            if await moving.database_exists(source, kept.name):
                if await moving.database_exists(source, kept.database_name):
                    raise fail(MOVE_REFUSED, f"database {kept.database_name!r} exists on {kept.server!r}: left alone")
                await moving.rename(source, kept.name, kept.database_name)
                await mark_database(source, kept.database_name, _mark("tenant", req.tenant_id, info))
            else:
                mark = await database_mark(source, kept.database_name)
                if mark is None or not (mark.is_of(req.tenant_id, "tenant") and mark.made_by(info.workflow_id)):
                    raise fail(MOVE_FAILED, f"the kept database {kept.name!r} is gone; nothing was moved back")
            if kept.role_name:
                # Its login again, with the password it has now (changed since the move, or not).
                await moving.copy_login_role(current_conn, source, kept.role_name, _mark("role", req.tenant_id, info))
            await moving.open_like(current_conn, kept.database_name, source, kept.database_name, kept.connection_limit)
            opened_at = datetime.now(UTC)
            if not await self.catalog.switch_tenant_server(req.tenant_id, kept.current_server, kept.server):
                raise fail(MOVE_REFUSED, f"tenant {req.tenant_id!r} left server {kept.current_server!r}")
        await self.catalog.end_kept_database(kept.name, "moved back by an undo")
        await self._point_credentials(req.tenant_id, kept.server)
        self._log(req.tenant_id).info("move undone", back_on=kept.server, left=kept.current_server)
        return Switched(opened_at=opened_at)

    @activity.defn
    async def undo_unfinished_move_back(self, req: MoveBackRequest) -> str:
        """After an undo failed before its switch: the kept database set aside again as it was, and the tenant's
        current database let in again."""
        kept, info = req.kept, calling_run()
        if await self.catalog.tenant_server(req.tenant_id) == kept.server:
            return "switched: the tenant is back on its source"
        # The tenant's current database first: it is reachable again whatever state the kept side is in.
        async with await connect(self.urls.url(kept.current_server), autocommit=True) as current:
            if await moving.database_exists(current, kept.database_name):
                await moving.unfreeze(current, kept.database_name, True, kept.connection_limit)
        try:
            await self._set_kept_aside_again(req, info)
        except Exception as exc:
            self._log(req.tenant_id).warning(
                "kept database not set aside again", server=kept.server, error=str(exc).strip()[:300]
            )
            return f"unchanged: the tenant stays where it was (server {kept.server!r} not reached: its copy is as left)"
        return "unchanged: the tenant stays where it was"

    async def _set_kept_aside_again(self, req: MoveBackRequest, info: CallingRun) -> None:
        kept = req.kept
        async with await connect(self.urls.url(kept.server), autocommit=True) as source:
            mark = await database_mark(source, kept.database_name)
            if (
                mark is not None
                and mark.is_of(req.tenant_id, "tenant")
                and mark.made_by(info.workflow_id)
                and not await moving.database_exists(source, kept.name)
            ):
                await moving.close(source, kept.database_name)
                await moving.rename(source, kept.database_name, kept.name)
                previous = Mark(
                    kind="previous",
                    tenant_id=req.tenant_id,
                    workflow_id=kept.workflow_id,
                    at=datetime.now(UTC),
                    keep_until=kept.kept_until,
                )
                await mark_database(source, kept.name, previous)
            if kept.role_name:
                await moving.retire_login(source, kept.role_name, req.tenant_id)

    # A whole server moved (workflows/move_fleet.py).

    async def _live_tenants(self, server: str) -> int:
        for row in await self.catalog.servers():
            if row["name"] == server:
                return int(row["tenants"])
        return 0

    @activity.defn
    async def check_server_move(self, req: ServerMoveRequest) -> str:
        """What would stop moving every tenant off `source`, before any is moved: the source known and no longer
        taking tenants (draining or closed: an open one would be refilled while it empties), the target known,
        open and another server, or (no target) an open server placement can send tenants to. Returns the target
        (placement's choice as of now, when none was asked for)."""
        source = await self.catalog.server(req.source)
        if source is None:
            known = ", ".join(row["name"] for row in await self.catalog.servers())
            raise fail(INVALID_INPUT, f"no server named {req.source!r} (servers: {known})")
        if source["status"] == "open":
            raise fail(
                MOVE_REFUSED,
                f"server {req.source!r} is open: drain it first: tenants servers drain {req.source}",
            )
        if req.target is not None:
            if req.target == req.source:
                raise fail(INVALID_INPUT, f"--to {req.target!r} is the server being emptied")
            target = await self.catalog.server(req.target)
            if target is None:
                known = ", ".join(row["name"] for row in await self.catalog.servers())
                raise fail(INVALID_INPUT, f"no server named {req.target!r} (servers: {known})")
            if target["status"] != "open":
                raise fail(MOVE_REFUSED, f"server {req.target!r} is {target['status']}: it takes no tenants")
            return req.target
        return await self._choose(req)

    async def _choose(self, req: ServerMoveRequest) -> str:
        loads = await server_loads(self.settings, self.catalog, self._log(req.tenant_id or ""))
        try:
            return choose_server([load for load in loads if load.name != req.source])
        except InvalidInput as exc:
            raise fail(MOVE_REFUSED, f"no server to move to from {req.source!r}: {exc}") from None

    @activity.defn
    async def choose_move_target(self, req: ServerMoveRequest) -> str:
        """Where one tenant of a server being emptied goes: the open server placement would choose now, the source
        left out (tenancy.servers.choose_server)."""
        chosen = await self._choose(req)
        self._log(req.tenant_id or "").info("move target chosen", source=req.source, target=chosen)
        return chosen

    @activity.defn
    async def server_tenants_left(self, req: ServerMoveRequest) -> int:
        """How many live tenants the catalog still places on `source`."""
        return await self._live_tenants(req.source)
