"""Messages that must never hold up or fail the operation that caused them: each runs as its own workflow,
started and left to finish (and retry) on its own."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.notify import NotifyActivities
    from tenancy.contracts.provision import WelcomeMail

# Mail servers and webhook receivers go down for a while: keep trying for a day, backing off to 10 minutes.
PATIENT = {
    "start_to_close_timeout": timedelta(seconds=30),
    "schedule_to_close_timeout": timedelta(days=1),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=10)
    ),
}


@workflow.defn
class SendWelcomeEmailWorkflow:
    @workflow.run
    async def run(self, mail: WelcomeMail) -> bool:
        return await workflow.execute_activity_method(NotifyActivities.send_welcome_email, mail, **PATIENT)


@workflow.defn
class DeliverEventWorkflow:
    @workflow.run
    async def run(self, event_id: int) -> int | None:
        return await workflow.execute_activity_method(NotifyActivities.deliver_event, event_id, **PATIENT)


async def announce(event_id: int | None) -> None:
    """Deliver a catalog event to the webhook (if one is configured) without waiting for it."""
    if event_id is None:
        return
    await workflow.start_child_workflow(
        DeliverEventWorkflow.run,
        event_id,
        id=f"event-{event_id}-{workflow.info().workflow_id}",
        parent_close_policy=workflow.ParentClosePolicy.ABANDON,
    )
