"""HealthCheckWorkflow: the health of every tenant, and alerts when something needs a person."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.health import HealthActivities
    from tenancy.contracts.health import HealthInput, HealthReport
    from workflows.options import QUICK


@workflow.defn
class HealthCheckWorkflow:
    @workflow.run
    async def run(self, req: HealthInput) -> HealthReport:
        report = await workflow.execute_activity_method(HealthActivities.check_health, req, **QUICK)
        if req.send_alerts and report.alerts:
            await workflow.execute_activity_method(HealthActivities.send_alerts, report.alerts, **QUICK)
        return report
