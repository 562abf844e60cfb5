"""SweepWorkflow: find what dead runs left behind (databases, roles, work files, `.partial` files, unfinished
uploads) and, unless it is a dry run, remove it; a report says what and why, item by item."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tenancy.contracts.sweep import SweepInput, SweepReport
    from tenancy.errors import INVALID_INPUT, fail
    from tenancy.sweep import MAX_STALE_HOURS, MAX_SWEEP_ITEMS
    from workflows import steps
    from workflows.phase import ShowsPhase


def validate_sweep_input(req: SweepInput) -> None:
    if req.stale_hours is not None and not 0 <= req.stale_hours <= MAX_STALE_HOURS:
        raise fail(INVALID_INPUT, f"stale hours must be between 0 and {MAX_STALE_HOURS}")
    if not 1 <= req.limit <= MAX_SWEEP_ITEMS:
        raise fail(INVALID_INPUT, f"limit must be between 1 and {MAX_SWEEP_ITEMS}")


@workflow.defn
class SweepWorkflow(ShowsPhase):
    def __init__(self) -> None:
        self._phase = "starting"

    @workflow.query
    def progress(self) -> dict[str, str]:
        return {"phase": self._phase}

    @workflow.run
    async def run(self, req: SweepInput) -> SweepReport:
        validate_sweep_input(req)
        self._phase = "looking for orphans"
        report = await steps.find_orphans(req)
        if req.dry_run or not any(item.removable for item in report.items):
            self._phase = "done"
            return report
        self._phase = "removing orphans"
        report = await steps.remove_orphans(report)
        self._phase = "done"
        return report
