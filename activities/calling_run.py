"""The workflow run an activity works for: what it writes in the marks and events it makes, and how it tells the
objects it made from those of other runs."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import activity

from tenancy.errors import INVALID_INPUT, fail


@dataclass(frozen=True)
class CallingRun:
    workflow_id: str
    workflow_run_id: str


def calling_run() -> CallingRun:
    """The current activity's workflow run. temporalio types both ids as optional (a standalone activity has no
    workflow); every activity here is scheduled by a workflow, and one that is not is refused."""
    info = activity.info()
    if info.workflow_id is None or info.workflow_run_id is None:
        raise fail(INVALID_INPUT, f"activity {info.activity_type} must be scheduled by a workflow")
    return CallingRun(workflow_id=info.workflow_id, workflow_run_id=info.workflow_run_id)
