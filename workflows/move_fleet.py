"""MoveAllFromServerWorkflow (`tenants move --all-from SOURCE`): every tenant in service on a server moved away,
one MoveTenantWorkflow child each, `concurrency` at a time, through the fleet engine (workflows/fleet.py).

The source must take no new tenants (draining or closed): otherwise placement could refill it while it empties.
Each child is given `source`, so a tenant that left the server by other means meanwhile is refused, not moved from
wherever it is now. Without --to, each tenant goes where placement would put it at that moment (an activity reads
the servers' loads; the source is left out). One tenant's failure is its outcome, never the run's; the result says
how many moved, how many failed, and how many live tenants are still on the source (0: it is empty).
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from tenancy.bounds import JOBS, validate_fleet, validate_keep_previous, validate_lock_wait, whole
    from tenancy.checks import validate_checks
    from tenancy.contracts.fleet import TenantOutcome
    from tenancy.contracts.move import MoveAllFromServerInput, MoveAllFromServerResult, MoveTenantInput
    from tenancy.contracts.tenants import TenantRef
    from tenancy.errors import INVALID_INPUT, InvalidInput, fail, failure_message
    from tenancy.messages.move import ServerMoveRequest
    from tenancy.servers import validate_server_name
    from workflows import steps
    from workflows.fleet import Fleet, FleetProgress, child_options, run_child, run_fleet, start_cursor
    from workflows.move_tenant import MOVABLE, MoveTenantWorkflow


def validate_server_move(req: MoveAllFromServerInput) -> None:
    try:
        validate_server_name(req.source)
        if req.target is not None:
            validate_server_name(req.target)
            if req.target == req.source:
                raise InvalidInput(f"--to {req.target!r} is the server being emptied")
        validate_fleet(req)
        whole("--jobs", req.jobs, *JOBS)
        validate_keep_previous(req.keep_source_seconds)
        validate_lock_wait(req.lock_wait_seconds)
        validate_checks(req.checks)
    except InvalidInput as exc:
        raise fail(INVALID_INPUT, str(exc)) from None


@workflow.defn
class MoveAllFromServerWorkflow:
    def __init__(self) -> None:
        self._progress = FleetProgress()

    @workflow.query
    def progress(self) -> dict[str, int]:
        return self._progress.as_dict()

    @workflow.run
    async def run(self, req: MoveAllFromServerInput) -> MoveAllFromServerResult:
        validate_server_move(req)
        if req.cursor is None:  # once, before any tenant moves (a continued run was checked by its first)
            await steps.check_server_move(ServerMoveRequest(source=req.source, target=req.target))

        async def move(tenant: TenantRef, child_id: str) -> TenantOutcome:
            target = req.target
            if target is None:
                try:
                    target = await steps.choose_move_target(ServerMoveRequest(source=req.source, tenant_id=tenant.id))
                except ActivityError as exc:  # nowhere to go: this tenant's outcome
                    return TenantOutcome(
                        tenant_id=tenant.id, ok=False, workflow_id=child_id, error=failure_message(exc)
                    )
            one = MoveTenantInput(
                tenant_id=tenant.id,
                source=req.source,
                target=target,
                keep_source_seconds=req.keep_source_seconds,
                lock_wait_seconds=req.lock_wait_seconds,
                jobs=req.jobs,
                checks=req.checks,
            )
            return await run_child(
                tenant.id,
                child_id,
                lambda: workflow.execute_child_workflow(
                    MoveTenantWorkflow.run, one, **child_options("move", tenant.id, child_id)
                ),
                lambda result: {
                    "detail": f"{result.source} → {result.target}, writes frozen {result.freeze_seconds:.1f} s"
                },
            )

        # Children are `move-<tenant>@<this run's id>`: a move's id starts with MOVE_ID_PREFIX, as --undo needs.
        fleet = Fleet(kind="move", statuses=list(MOVABLE), start_child=move, server=req.source)
        summary = await run_fleet(req, start_cursor(req.cursor), fleet, self._progress)
        left = await steps.server_tenants_left(ServerMoveRequest(source=req.source))
        return MoveAllFromServerResult(**summary.model_dump(), source=req.source, tenants_left=left)
