"""Worker interceptors: every log line emitted inside an activity carries its tenant, workflow, run, activity type
and attempt (and inside a workflow: its tenant, workflow, run and type), bound in structlog's contextvars, so no
call site has to pass them; and every activity attempt is counted and timed.

Metrics (served for Prometheus with the SDK's own when TENANTS_METRICS_PORT is set; the activity meter adds
`activity_type`, `namespace` and `task_queue`):
- tenants_activity_attempts{outcome=ok|failed|cancelled}
- tenants_activity_failures{error_type}: the ApplicationError type, else the exception's class
- tenants_activity_duration{outcome}: a histogram, in milliseconds
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import structlog
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)


@functools.cache
def _parameters(fn: Callable[..., Any]) -> tuple[str, ...]:
    return tuple(inspect.signature(fn).parameters)


def tenant_of(fn: Callable[..., Any], args: Sequence[Any]) -> str | None:
    """The tenant an activity or workflow works on: the `tenant_id` of an input model (or of the dict an activity
    with `legacy_*` parameters gets its model as: see tenancy/messages), or the argument named `tenant_id`. None for
    fleet-wide work (sweeps, health checks, fleet runs)."""
    for arg in args:
        tenant = getattr(arg, "tenant_id", None) if isinstance(arg, BaseModel) else None
        tenant = arg.get("tenant_id") if isinstance(arg, dict) else tenant
        if isinstance(tenant, str):
            return tenant
    function = getattr(fn, "__func__", fn)
    names = _parameters(function)
    if function is not fn or (names and names[0] == "self"):  # a method: args start after self
        names = names[1:]
    for name, arg in zip(names, args, strict=False):
        if name == "tenant_id" and isinstance(arg, str):
            return arg
    return None


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, ApplicationError) and exc.type:
        return exc.type
    return type(exc).__name__


class _ActivityContextAndMetrics(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        context: dict[str, Any] = {
            "workflow_id": info.workflow_id,
            "run_id": info.workflow_run_id,
            "activity": info.activity_type,
            "attempt": info.attempt,
        }
        tenant = tenant_of(input.fn, input.args)
        if tenant is not None:
            context["tenant_id"] = tenant
        meter = activity.metric_meter()
        started = time.monotonic()
        outcome = "ok"
        with structlog.contextvars.bound_contextvars(**context):
            try:
                return await self.next.execute_activity(input)
            except (asyncio.CancelledError, CancelledError):
                outcome = "cancelled"
                raise
            except BaseException as exc:
                outcome = "failed"
                meter.create_counter("tenants_activity_failures", "Activity attempts that failed, by error type").add(
                    1, {"error_type": _error_type(exc)}
                )
                raise
            finally:
                meter.create_counter("tenants_activity_attempts", "Activity attempts, by outcome").add(
                    1, {"outcome": outcome}
                )
                meter.create_histogram_timedelta(
                    "tenants_activity_duration", "How long activity attempts took", "duration"
                ).record(timedelta(seconds=time.monotonic() - started), {"outcome": outcome})


class _WorkflowLogContext(WorkflowInboundInterceptor):
    """Binds in the workflow's own task only, so nothing leaks to other runs; writes no command, so replay is
    unaffected. (This class comes from outside the sandbox: structlog is the worker's.)"""

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        info = workflow.info()
        context: dict[str, Any] = {
            "workflow_id": info.workflow_id,
            "run_id": info.run_id,
            "workflow": info.workflow_type,
        }
        tenant = tenant_of(input.run_fn, input.args)
        if tenant is not None:
            context["tenant_id"] = tenant
        with structlog.contextvars.bound_contextvars(**context):
            return await self.next.execute_workflow(input)


class LogContextAndMetrics(Interceptor):
    """Registered on the worker (worker.build_worker)."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityContextAndMetrics(next)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _WorkflowLogContext
