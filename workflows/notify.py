"""Messages that must never hold up or fail the operation that caused them: each runs as its own workflow,
started and left to finish (and retry) on its own."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tenancy.contracts.provision import WelcomeMail
    from tenancy.contracts.tenants import DeliverEventInput
    from workflows import steps


@workflow.defn
class SendWelcomeEmailWorkflow:
    @workflow.run
    async def run(self, mail: WelcomeMail) -> bool:
        return await steps.send_welcome_email(mail)


@workflow.defn
class DeliverEventWorkflow:
    @workflow.run
    async def run(self, req: DeliverEventInput) -> int | None:
        return await steps.deliver_event(req)


async def announce(event_id: int | None) -> None:
    """Deliver a catalog event to the webhook (if one is configured) without waiting for it."""
    if event_id is None:
        return
    await workflow.start_child_workflow(
        DeliverEventWorkflow.run,
        DeliverEventInput(event_id=event_id),
        id=f"event-{event_id}-{workflow.info().workflow_id}",
        parent_close_policy=workflow.ParentClosePolicy.ABANDON,
    )
