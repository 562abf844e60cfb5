"""DropPreviousDatabaseWorkflow: a durable timer, then the drop of a database a restore set aside."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tenancy.contracts.restore import DropLaterInput
    from tenancy.messages.restore import PreviousDatabase
    from workflows import steps


@workflow.defn
class DropPreviousDatabaseWorkflow:
    @workflow.run
    async def run(self, req: DropLaterInput) -> bool:
        await workflow.sleep(timedelta(seconds=req.delay_seconds))
        return await steps.drop_previous_database(
            PreviousDatabase(
                tenant_id=req.tenant_id,
                database_name=req.database_name,
                previous_name=req.previous_name,
                server=req.server,
            )
        )
