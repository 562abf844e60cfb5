"""The `tenants` command line. Bad input is one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import NoReturn

import pydantic
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from starter import (
    audit_cmd,
    backup_cmd,
    erase_cmd,
    fleet_output,
    keys_cmd,
    list_cmd,
    maintenance_cmd,
    move_cmd,
    offsite_cmds,
    restore_cmd,
    schedules_cmd,
    servers_cmd,
    stack,
    sweep_cmd,
    tenant_cmds,
    transfer_cmd,
)
from starter.output import error
from tenancy.errors import InvalidInput, failure_message, failure_type
from tenancy.log import configure_logging
from tenancy.settings import load_settings

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
BAD_INPUT_TYPES = {
    "InvalidInput",
    "TenantNotFound",
    "BackupNotFound",
    "TenantExists",
    "PlanLimitReached",
    "ExportRejected",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        error(f"{message} (see `{self.prog} --help`)")
        _exit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tenants", description="Run the lifecycle of database-per-tenant PostgreSQL tenants.")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    stack.add_parser(subparsers)
    list_cmd.add_parser(subparsers)
    backup_cmd.add_parser(subparsers)
    restore_cmd.add_parser(subparsers)
    move_cmd.add_parser(subparsers)
    tenant_cmds.add_parsers(subparsers)
    erase_cmd.add_parser(subparsers)
    maintenance_cmd.add_parser(subparsers)
    schedules_cmd.add_parsers(subparsers)
    offsite_cmds.add_parsers(subparsers)
    sweep_cmd.add_parser(subparsers)
    fleet_output.add_parsers(subparsers)
    audit_cmd.add_parser(subparsers)
    keys_cmd.add_parsers(subparsers)
    transfer_cmd.add_parsers(subparsers)
    servers_cmd.add_parsers(subparsers)
    worker = subparsers.add_parser("worker", help="run a worker (same as `python worker.py`)")
    worker.set_defaults(handler=None)
    return parser


def _exit(code: int) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # sdk-python#300: a process that used the Temporal client can abort at interpreter exit


def main(argv: list[str] | None = None) -> NoReturn:
    args = build_parser().parse_args(argv)
    if args.command == "worker":
        import worker

        worker.main()
    try:
        settings = load_settings()
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        error(f"invalid setting TENANTS_{str(first['loc'][0]).upper()}: {first['msg']}")
        _exit(EXIT_BAD_INPUT)
    configure_logging(settings.log_level if args.command == "up" else "WARNING", settings.log_format)
    try:
        code = asyncio.run(args.handler(args, settings))
    except InvalidInput as exc:
        error(str(exc))
        code = EXIT_BAD_INPUT
    except WorkflowFailureError as exc:
        kind = failure_type(exc)
        error(failure_message(exc) + (f" [{kind}]" if kind else ""))
        code = EXIT_BAD_INPUT if kind in BAD_INPUT_TYPES else EXIT_FAILED
    except WorkflowAlreadyStartedError as exc:
        error(f"{exc.workflow_id} is already running")
        code = EXIT_FAILED
    except RPCError as exc:
        error(f"Temporal at {settings.temporal_address}: {exc.message}")
        code = EXIT_FAILED
    except (OSError, RuntimeError, ValueError) as exc:
        error(failure_message(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        code = EXIT_FAILED
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # the last resort: still one line, never a traceback
        said = failure_message(exc).strip()
        error(f"unexpected {type(exc).__name__}: {said.splitlines()[0] if said else '(no message)'}")
        code = EXIT_FAILED
    _exit(code)


if __name__ == "__main__":
    main()
