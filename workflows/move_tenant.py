"""MoveTenantWorkflow: a tenant's database moved to another PostgreSQL server (a newer major version included), and
UndoMoveWorkflow, which moves it back while the source copy is kept.

A move, under the tenant's lock: check the target → the tenant's roles on it → a rehearsal copy, verified, dropped
(the target proves it can take the tenant before anything is frozen) → FREEZE the source (no new sessions, open ones
ended) → the final copy, its row counts and sequence values equal to the frozen source's → switch: the copy takes
the tenant's name, is let in as the source was, the catalog points at the target → the source set aside (renamed,
closed) and kept for `--keep-source`, then dropped by a durable timer → `TenantMoved` recorded and sent to the
webhook. Anything that fails or is cancelled before the switch drops what the run made on the target and lets the
source in again exactly as it was: the tenant stays on its source, untouched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from tenancy.bounds import JOBS, validate_keep_previous, validate_lock_wait, whole
    from tenancy.checks import validate_checks
    from tenancy.contracts.move import MOVE_ID_PREFIX, MoveTenantInput, MoveTenantResult, UndoMoveInput, UndoMoveResult
    from tenancy.contracts.restore import DropLaterInput
    from tenancy.contracts.tenants import Tenant, TenantEvent
    from tenancy.errors import INVALID_INPUT, MOVE_REFUSED, InvalidInput, fail, failure_message, failure_type
    from tenancy.messages.move import (
        CopyCheck,
        CopyRequest,
        FreezeRequest,
        MoveBackRequest,
        MovePlan,
        SetAsideRequest,
        SwitchRequest,
        UnfinishedMove,
    )
    from tenancy.messages.tenants import TenantRequest
    from tenancy.naming import previous_database_name, scratch_database_name
    from tenancy.servers import validate_server_name
    from workflows import steps
    from workflows.drop_later import DropPreviousDatabaseWorkflow
    from workflows.notify import announce
    from workflows.phase import ShowsPhase
    from workflows.tenant_lock import tenant_lock

# The statuses of a tenant whose database is in service: the ones that move.
MOVABLE = ("active", "inactive", "suspended")

# Runs recorded before: the switch could be cancelled, and the event came after the source was set aside (a failure
# or cancel there lost it). Since: the switch and what follows it run to the end, the event first.
RECORDS_RIGHT_AFTER_SWITCH = "move-records-right-after-switch"
UNDO_RECORDS_RIGHT_AFTER_SWITCH = "move-undo-records-right-after-switch"

T = TypeVar("T")


async def _despite_cancel(step: Awaitable[T]) -> T:
    """Wait for `step` to its end even when the run is cancelled meanwhile (the cancel does not reach it): a switch
    that may have committed, and what must follow it. A cancel that late is too late: the run goes on to its end."""
    task = asyncio.ensure_future(step)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            workflow.logger.warning("cancel requested during or after the switch: too late, finishing")


async def _set_aside_or_leave(aside: SetAsideRequest, keep_seconds: int, token: str, event_type: str) -> str | None:
    """After a committed switch: the database left on the old server set aside and kept (or dropped). Retried for
    half an hour (workflows/options.py AFTER_SWITCH_PATIENCE); if its server stays down that long, the database is
    left where it is, closed, under its own name — recorded and announced, so an operator finds it — and the run
    ends rather than hold the tenant's lock for as long as that server is down. Returns why, when it was left."""
    try:
        await steps.set_aside_database_until_done(aside)
        await _keep_or_drop(aside, keep_seconds, token, until_done=True)
    except ActivityError as exc:
        why = failure_message(exc)
        workflow.logger.warning("the database left on the old server was not set aside: %s", why)
        left = TenantEvent(
            tenant_id=aside.tenant_id,
            type=event_type,
            data={
                "server": aside.server,
                "database": aside.database_name,
                "error": why,
                "note": f"{aside.database_name} stays on {aside.server}, closed (CONNECTION LIMIT 0), under its own "
                "name: not kept for --undo and not dropped; drop it there by hand when it is not needed",
            },
        )
        await announce(await steps.record_event_until_done(left))
        return why
    return None


def _check_run_id() -> None:
    """A move's runs are named `move-...`: how the databases it keeps are told from a restore's (MOVE_ID_PREFIX)."""
    run_id = workflow.info().workflow_id
    if not run_id.startswith(MOVE_ID_PREFIX):
        raise fail(INVALID_INPUT, f"a move's workflow id starts with {MOVE_ID_PREFIX!r} (got {run_id!r})")


def validate_move_input(req: MoveTenantInput) -> None:
    _check_run_id()
    try:
        validate_server_name(req.target)
        if req.source is not None:
            validate_server_name(req.source)
        whole("--jobs", req.jobs, *JOBS)
        validate_keep_previous(req.keep_source_seconds)
        validate_lock_wait(req.lock_wait_seconds)
        validate_checks(req.checks)
    except InvalidInput as exc:
        raise fail(INVALID_INPUT, str(exc)) from None


def validate_undo_move_input(req: UndoMoveInput) -> None:
    _check_run_id()
    try:
        validate_keep_previous(req.keep_seconds)
        validate_lock_wait(req.lock_wait_seconds)
    except InvalidInput as exc:
        raise fail(INVALID_INPUT, str(exc)) from None


def _movable(tenant: Tenant) -> None:
    if tenant.status not in MOVABLE:
        raise fail(INVALID_INPUT, f"tenant {tenant.id!r} is {tenant.status}: only a tenant in service moves")


def _seconds(start: datetime, end: datetime) -> float:
    return round(max(0.0, (end - start).total_seconds()), 3)


async def _keep_or_drop(aside: SetAsideRequest, keep_seconds: int, token: str, until_done: bool = False) -> None:
    """The database left behind: kept `keep_seconds` (then dropped by a durable timer of its own), or dropped now."""
    if not keep_seconds:
        if until_done:
            await steps.drop_set_aside_database_until_done(aside)
        else:
            await steps.drop_set_aside_database(aside)
        return
    await workflow.start_child_workflow(
        DropPreviousDatabaseWorkflow.run,
        DropLaterInput(
            tenant_id=aside.tenant_id,
            database_name=aside.database_name,
            previous_name=aside.aside_name,
            delay_seconds=keep_seconds,
            server=aside.server,
        ),
        id=f"drop-previous-{aside.tenant_id}-{token}",
        parent_close_policy=workflow.ParentClosePolicy.ABANDON,
        static_summary=f"Drop {aside.aside_name} on {aside.server} after {keep_seconds}s",
    )


@workflow.defn
class MoveTenantWorkflow(ShowsPhase):
    def __init__(self) -> None:
        self._phase = "starting"
        self._source: str | None = None
        self._target: str | None = None
        self._freeze_seconds: float | None = None
        self._fallback: str | None = None  # why the newer pg_dump was not used, when it was not
        self._source_left: str | None = None  # why the source could not be set aside, when it could not

    @workflow.query
    def progress(self) -> dict[str, str | float | None]:
        return {
            "phase": self._phase,
            "source": self._source,
            "target": self._target,
            "freeze_seconds": self._freeze_seconds,
        }

    @workflow.run
    async def run(self, req: MoveTenantInput) -> MoveTenantResult:
        validate_move_input(req)
        self._target = req.target
        self._phase = "looking up tenant"
        tenant = await steps.get_tenant(TenantRequest(tenant_id=req.tenant_id))
        _movable(tenant)
        self._phase = "waiting for the tenant lock"
        async with tenant_lock(tenant.id, "move", req.lock_wait_seconds):
            tenant = await steps.get_tenant(TenantRequest(tenant_id=req.tenant_id))  # as it is under the lock
            _movable(tenant)
            if req.source is not None and tenant.server != req.source:
                raise fail(MOVE_REFUSED, f"tenant {tenant.id!r} is on server {tenant.server!r}, not {req.source!r}")
            if tenant.server == req.target:
                raise fail(INVALID_INPUT, f"tenant {tenant.id!r} is on server {req.target!r} already")
            self._source = tenant.server
            token, final_token = workflow.uuid4().hex[:10], workflow.uuid4().hex[:10]
            plan = MovePlan(
                tenant_id=tenant.id,
                database_name=tenant.database_name,
                role_name=tenant.role_name,
                source=tenant.server,
                target=req.target,
                rehearsal_name=scratch_database_name(tenant.database_name, token),
                final_name=scratch_database_name(tenant.database_name, final_token),
                aside_name=previous_database_name(tenant.database_name, token),
            )
            # 1. What would stop the move, before anything is made.
            self._phase = "checking the target"
            check = await steps.check_move(plan)
            frozen_at: datetime | None = None
            terminated = 0
            try:
                # 2. The tenant's roles on the target.
                self._phase = "creating the tenant's roles on the target"
                await steps.prepare_move_target(plan)
                # 3. The rehearsal: the target takes a whole copy, or the move fails before any freeze.
                rehearsal = CopyRequest(
                    plan=plan,
                    scratch_name=plan.rehearsal_name,
                    dump_major=check.dump_major,
                    restore_major=check.target_major,
                    jobs=req.jobs,
                )
                self._phase = "rehearsal: copying to the target"
                try:
                    await steps.copy_to_target(rehearsal)
                except ActivityError as exc:
                    # The target refused the newer pg_dump's archive: once more with the source's own pg_dump.
                    if check.fallback_major is None or failure_type(exc) != MOVE_REFUSED:
                        raise
                    self._fallback = failure_message(exc)
                    rehearsal = rehearsal.model_copy(update={"dump_major": check.fallback_major})
                    self._phase = f"rehearsal: copying again with pg_dump {check.fallback_major}"
                    await steps.copy_to_target(rehearsal)
                self._phase = "rehearsal: verifying the copy"
                await steps.verify_move_copy(CopyCheck(plan=plan, scratch_name=plan.rehearsal_name, exact=False))
                await steps.drop_move_copy(rehearsal)
                # 4. Freeze the source.
                self._phase = "freezing writes on the source"
                frozen = await steps.freeze_database(
                    FreezeRequest(tenant_id=tenant.id, server=plan.source, database_name=plan.database_name)
                )
                frozen_at, terminated = frozen.frozen_at, frozen.terminated_sessions
                # 5. The final copy, equal to the frozen source.
                self._phase = "final copy (writes frozen)"
                await steps.copy_to_target(rehearsal.model_copy(update={"scratch_name": plan.final_name}))
                self._phase = "verifying the final copy against the frozen source"
                facts = await steps.verify_move_copy(
                    CopyCheck(plan=plan, scratch_name=plan.final_name, exact=True, checks=req.checks)
                )
                # 6. Switch: the target is the tenant's.
                self._phase = "switching to the target"
                switch = SwitchRequest(
                    plan=plan,
                    connection_limit=check.source_connection_limit,
                    frozen_at=frozen.source_frozen_at,  # the source's clock: compared with its sessions' starts
                )
                records_first = workflow.patched(RECORDS_RIGHT_AFTER_SWITCH)
                if records_first:
                    switched = await _despite_cancel(steps.switch_to_target(switch))
                else:
                    switched = await steps.switch_to_target(switch)
            except BaseException:
                # Failed or cancelled, every activity above stopped: the target cleared of this run's copies and
                # roles, the source let in as it was.
                self._phase = "undoing the unfinished move"
                await steps.undo_unfinished_move(
                    UnfinishedMove(
                        plan=plan,
                        allows_connections=check.source_allows_connections,
                        connection_limit=check.source_connection_limit,
                    )
                )
                raise
            if frozen_at is None:  # set before the switch, which returned: never, unless this code is wrong
                raise ApplicationError("the move switched without a recorded freeze", non_retryable=True)
            self._freeze_seconds = _seconds(frozen_at, switched.opened_at)

            # 7. The source set aside, kept for --undo, then dropped.
            keep_until = (
                workflow.now() + timedelta(seconds=req.keep_source_seconds) if req.keep_source_seconds else None
            )
            aside = SetAsideRequest(
                tenant_id=tenant.id,
                server=plan.source,
                database_name=plan.database_name,
                aside_name=plan.aside_name,
                keep_until=keep_until,
                role_name=plan.role_name,
            )
            # 8. Recorded, and sent to the webhook so applications re-route.
            moved = TenantEvent(
                tenant_id=tenant.id,
                type="TenantMoved",
                data={
                    "from": plan.source,
                    "to": plan.target,
                    "database": plan.database_name,
                    "freeze_seconds": self._freeze_seconds,
                    "terminated_sessions": terminated,
                    "source_database_kept_as": plan.aside_name if keep_until else None,
                    "source_database_kept_until": keep_until.isoformat() if keep_until else None,
                    "dump_major": rehearsal.dump_major,
                    "restore_major": check.target_major,
                    "newer_pg_dump_refused": self._fallback,
                    "tables": len(facts.row_counts),
                    "rows": sum(facts.row_counts.values()),
                },
            )
            if records_first:
                # The tenant is on the target: the event (applications re-route), then the source set aside and
                # recorded for --undo, each retried until done and out of a cancel's reach.
                async def after_switch() -> None:
                    self._phase = "recording the move"
                    await announce(await steps.record_event_until_done(moved))
                    self._phase = "setting the source database aside"
                    self._source_left = await _set_aside_or_leave(
                        aside, req.keep_source_seconds, token, "TenantMoveSourceLeft"
                    )

                await _despite_cancel(after_switch())
            else:
                self._phase = "setting the source database aside"
                await steps.set_aside_database(aside)
                await _keep_or_drop(aside, req.keep_source_seconds, token)
                self._phase = "recording the move"
                await announce(await steps.record_event(moved))
        self._phase = "done"
        return MoveTenantResult(
            tenant_id=tenant.id,
            database_name=plan.database_name,
            source=plan.source,
            target=plan.target,
            freeze_seconds=self._freeze_seconds,
            row_counts=facts.row_counts,
            sequences=len(facts.sequences),
            terminated_sessions=terminated,
            source_kept_as=plan.aside_name,
            source_kept_until=keep_until,
            dump_major=rehearsal.dump_major,
            newer_pg_dump_refused=self._fallback,
            source_left=self._source_left,
        )


UNDO_NOTE = "writes made on {server} since the move are not in the restored database: they are in {aside} on {server}"


@workflow.defn
class UndoMoveWorkflow(ShowsPhase):
    def __init__(self) -> None:
        self._phase = "starting"
        self._left_problem: str | None = None

    @workflow.query
    def progress(self) -> dict[str, str]:
        return {"phase": self._phase}

    @workflow.run
    async def run(self, req: UndoMoveInput) -> UndoMoveResult:
        validate_undo_move_input(req)
        self._phase = "looking up tenant"
        tenant = await steps.get_tenant(TenantRequest(tenant_id=req.tenant_id))
        token = workflow.uuid4().hex[:10]
        self._phase = "waiting for the tenant lock"
        async with tenant_lock(tenant.id, "move-undo", req.lock_wait_seconds):
            # 1. The source database the last move kept.
            self._phase = "finding the kept source database"
            kept = await steps.find_kept_source(TenantRequest(tenant_id=tenant.id))
            back = MoveBackRequest(kept=kept, tenant_id=tenant.id)
            try:
                # 2. Freeze the tenant's database where it is now, 3. the kept one takes its name and the catalog.
                self._phase = "freezing writes on the current server"
                frozen = await steps.freeze_database(
                    FreezeRequest(tenant_id=tenant.id, server=kept.current_server, database_name=kept.database_name)
                )
                self._phase = "moving back to the source"
                records_first = workflow.patched(UNDO_RECORDS_RIGHT_AFTER_SWITCH)
                if records_first:
                    switched = await _despite_cancel(steps.move_back(back))
                else:
                    switched = await steps.move_back(back)
            except BaseException:
                self._phase = "undoing the unfinished undo"
                await steps.undo_unfinished_move_back(back)
                raise
            freeze_seconds = _seconds(frozen.frozen_at, switched.opened_at)
            # 4. The database it leaves behind set aside, kept, then dropped.
            aside_name = previous_database_name(kept.database_name, token)
            keep_until = workflow.now() + timedelta(seconds=req.keep_seconds) if req.keep_seconds else None
            aside = SetAsideRequest(
                tenant_id=tenant.id,
                server=kept.current_server,
                database_name=kept.database_name,
                aside_name=aside_name,
                keep_until=keep_until,
                role_name=kept.role_name,
            )
            # 5. Recorded and sent: applications re-route, and learn where the writes since the move are.
            undone = TenantEvent(
                tenant_id=tenant.id,
                type="TenantMoveUndone",
                data={
                    "from": kept.current_server,
                    "to": kept.server,
                    "undone_move": kept.workflow_id,
                    "restored_from": kept.name,
                    "freeze_seconds": freeze_seconds,
                    "writes_since_move_in": aside_name if keep_until else None,
                    "writes_since_move_kept_until": keep_until.isoformat() if keep_until else None,
                    "note": UNDO_NOTE.format(server=kept.current_server, aside=aside_name),
                },
            )
            if records_first:
                # As a move's (MoveTenantWorkflow): the event first, then the left database set aside, to the end.
                async def after_switch() -> None:
                    self._phase = "recording the undo"
                    await announce(await steps.record_event_until_done(undone))
                    self._phase = "setting the left database aside"
                    self._left_problem = await _set_aside_or_leave(
                        aside, req.keep_seconds, token, "TenantMoveUndoLeftDatabase"
                    )

                await _despite_cancel(after_switch())
            else:
                self._phase = "setting the left database aside"
                await steps.set_aside_database(aside)
                await _keep_or_drop(aside, req.keep_seconds, token)
                self._phase = "recording the undo"
                await announce(await steps.record_event(undone))
        self._phase = "done"
        return UndoMoveResult(
            tenant_id=tenant.id,
            database_name=kept.database_name,
            server=kept.server,
            left_server=kept.current_server,
            restored_from=kept.name,
            undone_move=kept.workflow_id,
            set_aside=aside_name,
            set_aside_kept_until=keep_until,
            terminated_sessions=frozen.terminated_sessions,
            freeze_seconds=freeze_seconds,
            left_database_problem=self._left_problem,
        )
