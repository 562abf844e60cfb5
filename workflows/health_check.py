"""HealthCheckWorkflow: the health of every tenant, and alerts when something needs a person."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tenancy.bounds import validate_health
    from tenancy.contracts.health import Alert, HealthInput, HealthReport
    from tenancy.health import ALERTS_PER_DELIVERY, HealthTally
    from tenancy.messages.health import AlertBatch, HealthPageRequest
    from workflows import steps
    from workflows.validation import check_input

# The fleet is checked a page of tenants at a time (one activity each), whatever its size; runs recorded before
# this checked it in one activity.
BY_PAGES = "health-checked-page-by-page"


@workflow.defn
class HealthCheckWorkflow:
    def __init__(self) -> None:
        self._tally = HealthTally()

    @workflow.query
    def progress(self) -> dict[str, str]:
        return self._tally.progress()

    @workflow.run
    async def run(self, req: HealthInput) -> HealthReport:
        if workflow.patched(BY_PAGES):
            return await self._by_pages(req)
        report = await steps.check_health(req)
        if req.send_alerts and report.alerts:
            await steps.send_alerts(AlertBatch(alerts=report.alerts))
        return report

    async def _by_pages(self, req: HealthInput) -> HealthReport:
        check_input(lambda: validate_health(req))
        checked_at = workflow.now()
        pending: list[Alert] = []  # found, not delivered yet

        async def deliver(everything: bool) -> None:
            while req.send_alerts and pending and (everything or len(pending) >= ALERTS_PER_DELIVERY):
                batch = pending[:ALERTS_PER_DELIVERY]
                await steps.send_alerts(AlertBatch(alerts=batch))
                del pending[: len(batch)]

        # 1. Tenants a page at a time, their alerts delivered as they add up.
        after: str | None = None
        while True:
            alerted_rows, healthy_rows = self._tally.rows_wanted()
            page = await steps.check_health_page(
                HealthPageRequest(
                    after=after,
                    limit=req.page_size,
                    failure_window_hours=req.failure_window_hours,
                    alerted_rows=alerted_rows,
                    healthy_rows=healthy_rows,
                )
            )
            self._tally.add(page)
            pending += page.alerts
            await deliver(everything=False)
            if page.checked < req.page_size or page.last_tenant_id is None:
                break
            after = page.last_tenant_id
        # 2. The fleet-wide facts (storage, failed fleet runs), 3. the alerts left delivered.
        fleet = await steps.check_fleet_health(req)
        self._tally.add_alerts(fleet.alerts)
        pending += fleet.alerts
        await deliver(everything=True)
        return self._tally.report(checked_at, fleet)
