"""Structured logging with structlog; standard-library records (Temporal's own) go through the same renderer."""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.typing import Processor

_configured = False


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    global _configured
    if _configured:
        return
    _configured = True
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def get_logger(name: str = "tenants", **bound: object) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name).bind(**bound)


def activity_logger(component: str, tenant_id: str | None = None) -> structlog.stdlib.BoundLogger:
    """A logger bound to the running activity: tenant, workflow, run, activity type and attempt. In a worker the
    interceptor (activities.infra.interceptors) binds these for every line anyway; bound here too, they are there
    when an activity runs outside one (tests)."""
    from temporalio import activity

    info = activity.info()
    tenant = {"tenant_id": tenant_id} if tenant_id is not None else {}  # None would hide the interceptor's
    return get_logger(
        component,
        **tenant,
        workflow_id=info.workflow_id,
        run_id=info.workflow_run_id,
        activity=info.activity_type,
        attempt=info.attempt,
    )
