"""Who an activity acts for, and the audit rows activities write.

The actor is read from the calling run's start, without any command in the workflow: the memo its starter wrote
(`requested_by`: the command line's user@host, or `schedule:<id>` from a managed schedule), else the schedule that
started it (TemporalScheduledById), else its parent's actor (a fleet's child), else `workflow:<id>`. A run's actor
never changes, so it is remembered per run id.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.common import SearchAttributeKey

from activities.infra.catalog import Catalog
from tenancy.audit import MAX_PARENT_DEPTH, REQUESTED_BY, run_actor, workflow_actor
from tenancy.log import get_logger

SCHEDULED_BY = SearchAttributeKey.for_keyword("TemporalScheduledById")
# Actors by run id: a fleet's thousands of children share a few parents, each described once.
ACTOR_CACHE_SIZE = 2048
_DESCRIBE_TIMEOUT = timedelta(seconds=5)
_actors: OrderedDict[str, str] = OrderedDict()


class AuditNotWritten(RuntimeError):
    """The catalog refused or could not take an audit row: what it would record must not happen unrecorded."""


def _remember(run_id: str, actor: str) -> str:
    _actors[run_id] = actor
    _actors.move_to_end(run_id)
    while len(_actors) > ACTOR_CACHE_SIZE:
        _actors.popitem(last=False)
    return actor


async def _actor_of(client: Client, workflow_id: str, run_id: str | None, depth: int) -> str:
    if run_id and run_id in _actors:
        _actors.move_to_end(run_id)
        return _actors[run_id]
    description = await client.get_workflow_handle(workflow_id, run_id=run_id).describe(rpc_timeout=_DESCRIBE_TIMEOUT)
    memo = await description.memo()
    actor = run_actor(memo.get(REQUESTED_BY), description.typed_search_attributes.get(SCHEDULED_BY))
    if actor is None and description.parent_id:
        actor = workflow_actor(description.parent_id)
        if depth < MAX_PARENT_DEPTH:
            actor = await _actor_of(client, description.parent_id, description.parent_run_id, depth + 1)
    return _remember(description.run_id, actor or workflow_actor(workflow_id))


async def calling_actor() -> str:
    """Who the current activity's workflow run acts for. Never fails: when Temporal cannot say, the run itself
    (`workflow:<id>`) is the actor, and the audit row is written all the same."""
    info = activity.info()
    if not info.workflow_id:
        return workflow_actor("?")
    try:
        return await _actor_of(activity.client(), info.workflow_id, info.workflow_run_id, 0)
    except Exception as exc:  # no client (a test's ActivityEnvironment), Temporal unreachable, run not found
        get_logger("activities.audit").warning(
            "audit actor not resolved", workflow_id=info.workflow_id, error=str(exc) or type(exc).__name__
        )
        # Remembered for this run, so a loop of audited actions (retention, erasure, sweep) does not wait on a
        # slow Temporal once per row.
        return _remember(info.workflow_run_id or info.workflow_id, workflow_actor(info.workflow_id))


async def audit(
    catalog: Catalog,
    action: str,
    tenant_id: str | None,
    backup_name: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append the audit row of what the current activity does, before it does it. A row that cannot be written
    raises AuditNotWritten, which fails the activity (Temporal retries it): an access never goes unrecorded."""
    actor = await calling_actor()
    try:
        await catalog.audit(
            actor, action, tenant_id, backup_name, workflow_id=activity.info().workflow_id, detail=detail
        )
    except Exception as exc:
        raise AuditNotWritten(f"audit row {action} of tenant {tenant_id} not written: {exc}") from exc
