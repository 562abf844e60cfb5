"""MaintainTenantWorkflow: backup → cleanup → vacuum → optimize → analyze (the tasks asked, in that order),
under the tenant's lock; MaintainAllTenantsWorkflow fans it out. A failed backup stops every destructive task;
a failed task stops the ones after it and the run reports what was done."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from tenancy.bounds import validate_maintenance
    from tenancy.contracts.backup import BackupTenantInput
    from tenancy.contracts.fleet import FleetMaintenanceInput, FleetResult, TenantOutcome
    from tenancy.contracts.maintenance import MaintainTenantInput, MaintainTenantResult, TaskReport
    from tenancy.contracts.tenants import TenantRef
    from tenancy.errors import INVALID_INPUT, fail, failure_message
    from tenancy.maintenance import ordered_tasks, validate_days
    from tenancy.messages.maintenance import CleanupRequest, MaintenanceRecord, MaintenanceTarget, VacuumRequest
    from tenancy.messages.tenants import TenantRequest
    from tenancy.search import tenant_attributes
    from workflows import steps
    from workflows.backup_tenant import BackupTenantWorkflow
    from workflows.fleet import Fleet, FleetProgress, child_options, run_child, run_fleet, skipped, start_cursor
    from workflows.phase import ShowsPhase
    from workflows.tenant_lock import tenant_lock
    from workflows.validation import check_input


@workflow.defn
class MaintainTenantWorkflow(ShowsPhase):
    def __init__(self) -> None:
        self._phase = "starting"

    @workflow.query
    def progress(self) -> dict[str, str]:
        return {"phase": self._phase}

    @workflow.run
    async def run(self, req: MaintainTenantInput) -> MaintainTenantResult:
        def legacy() -> None:  # the checks of runs recorded before the bounds
            if "cleanup" in ordered_tasks(req.tasks) or req.dry_run:
                validate_days(req.days)
            if req.max_attempts < 1:
                raise fail(INVALID_INPUT, "max_attempts must be at least 1")

        check_input(lambda: validate_maintenance(req), legacy)
        tasks = ordered_tasks(req.tasks)
        tenant = await steps.get_tenant(TenantRequest(tenant_id=req.tenant_id))
        target = MaintenanceTarget(tenant_id=tenant.id, database_name=tenant.database_name)
        # Fixed once for the whole run: retries and a resumed run delete exactly up to the same instant.
        cutoff = workflow.now() - timedelta(days=req.days)
        cleanup = CleanupRequest(**target.model_dump(), cutoff=cutoff)

        size_before = await steps.database_size(target)
        if req.dry_run:
            self._phase = "planning"
            plan = await steps.plan_maintenance(cleanup, max_attempts=req.max_attempts)
            self._phase = "done"
            return MaintainTenantResult(
                tenant_id=tenant.id,
                dry_run=True,
                ok=True,
                cutoff=cutoff,
                size_before=size_before,
                size_after=size_before,
                tasks=[],
                plan=plan,
            )

        reports: list[TaskReport] = []
        error: str | None = None
        async with tenant_lock(tenant.id, "maintenance", req.lock_wait_seconds):
            for task in tasks:
                self._phase = task
                started = workflow.time()
                try:
                    detail = await self._run_task(task, tenant.id, target, cleanup, req)
                except (ActivityError, ChildWorkflowError) as exc:
                    error = f"{task} failed: {failure_message(exc)}"
                    reports.append(
                        TaskReport(
                            task=task, ok=False, seconds=round(workflow.time() - started, 2), error=failure_message(exc)
                        )
                    )
                    break
                reports.append(
                    TaskReport(task=task, ok=True, seconds=round(workflow.time() - started, 2), detail=detail)
                )
            self._phase = "recording"
            size_after = await steps.database_size(target)
            result = MaintainTenantResult(
                tenant_id=tenant.id,
                dry_run=False,
                ok=error is None,
                cutoff=cutoff if "cleanup" in tasks else None,
                size_before=size_before,
                size_after=size_after,
                tasks=reports,
                error=error,
            )
            await steps.record_maintenance(
                MaintenanceRecord(
                    tenant_id=tenant.id, summary={"at": workflow.now().isoformat(), **result.model_dump(mode="json")}
                )
            )
        self._phase = "done"
        return result

    async def _run_task(
        self,
        task: str,
        tenant_id: str,
        target: MaintenanceTarget,
        cleanup: CleanupRequest,
        req: MaintainTenantInput,
    ) -> dict[str, Any]:
        attempts = req.max_attempts
        if task == "backup":
            # Under this run's lock; it prunes none of the tenant's backups.
            backup = await workflow.execute_child_workflow(
                BackupTenantWorkflow.run,
                BackupTenantInput(tenant_id=tenant_id, lock_held_by_parent=True, apply_retention=False),
                id=f"backup-{tenant_id}-maintenance-{workflow.info().run_id[:8]}",
                search_attributes=tenant_attributes(tenant_id),
                static_summary=f"Backup of tenant {tenant_id} before maintenance",
            )
            return {"backup": backup.backup_name}
        if task == "cleanup":
            planned = await steps.count_old_rows(cleanup, max_attempts=attempts)
            done = await steps.cleanup_old_rows(cleanup.model_copy(update={"planned": planned}), max_attempts=attempts)
            return done.model_dump()
        if task == "vacuum":
            vacuum = VacuumRequest(**target.model_dump(), full=req.full)
            return (await steps.vacuum_database(vacuum, max_attempts=attempts)).model_dump()
        if task == "optimize":
            return (await steps.optimize_indexes(target, max_attempts=attempts)).model_dump()
        # The same command as before; the result says which tables timed out (None in older histories).
        analyzed = await steps.analyze_database(target, max_attempts=attempts)
        return analyzed.model_dump() if analyzed is not None else {}


@workflow.defn
class MaintainAllTenantsWorkflow:
    def __init__(self) -> None:
        self._progress = FleetProgress()

    @workflow.query
    def progress(self) -> dict[str, int]:
        return self._progress.as_dict()

    @workflow.run
    async def run(self, req: FleetMaintenanceInput) -> FleetResult:
        def legacy() -> None:  # the checks of runs recorded before the bounds
            if req.concurrency < 1:
                raise fail(INVALID_INPUT, "concurrency must be at least 1")

        # Tasks and days are checked once here, rather than failing every tenant's run.
        check_input(lambda: validate_maintenance(req), legacy)

        async def maintain(tenant: TenantRef, child_id: str) -> TenantOutcome:
            if tenant.status not in ("active", "inactive"):
                return skipped(tenant)  # suspended tenants are listed, not maintained
            maintenance = MaintainTenantInput(
                tenant_id=tenant.id,
                tasks=req.tasks,
                days=req.days,
                dry_run=req.dry_run,
                full=req.full,
                max_attempts=req.max_attempts,
            )
            outcome = await run_child(
                tenant.id,
                child_id,
                lambda: workflow.execute_child_workflow(
                    MaintainTenantWorkflow.run, maintenance, **child_options("maintenance", tenant.id, child_id)
                ),
                lambda result: {"ok": result.ok, "error": result.error, "detail": summarize(result)},
            )
            return outcome

        fleet = Fleet(kind="maintenance", statuses=["active", "inactive", "suspended"], start_child=maintain)
        return await run_fleet(req, start_cursor(req.cursor), fleet, self._progress)


def summarize(result: MaintainTenantResult) -> str:
    if result.plan is not None:
        rows = sum(result.plan.cleanup_rows.values())
        return (
            f"would delete {rows} rows, rebuild {len(result.plan.indexes_to_rebuild)} indexes, "
            f"reclaim ~{result.plan.dead_tuples} dead tuples"
        )
    parts = []
    for report in result.tasks:
        if report.task == "cleanup" and report.ok:
            parts.append(f"deleted {sum(report.detail['rows_deleted'].values())} rows")
        elif report.task == "optimize" and report.ok:
            parts.append(f"rebuilt {len(report.detail['rebuilt'])} indexes")
        else:
            parts.append(report.task + ("" if report.ok else " FAILED"))
    return ", ".join(parts) + f"; {result.size_before // 1024} → {result.size_after // 1024} KiB"
