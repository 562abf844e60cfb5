"""How the command line shows a fleet run: every tenant's outcome, read from the catalog (the run itself carries
only its counters and first failures), and `tenants runs show <workflow-id>` for any fleet run, finished or not."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from activities.infra.catalog import Catalog
from starter.output import table
from tenancy.contracts.fleet import FleetResult, TenantOutcome
from tenancy.errors import InvalidInput
from tenancy.settings import Settings

Column = Callable[[TenantOutcome], str | None]


def detail_or_error(outcome: TenantOutcome) -> str | None:
    return outcome.detail or outcome.error


def backup_or_error(outcome: TenantOutcome) -> str | None:
    return outcome.backup_name or outcome.error


async def every_outcome(result: FleetResult, settings: Settings) -> list[TenantOutcome]:
    """Every tenant's outcome: the catalog's for runs of the fleet engine, the result's own for older runs."""
    if result.workflow_id is None:
        return result.outcomes
    return await Catalog(settings).fleet_outcomes(result.workflow_id)


async def show_fleet_result(
    result: FleetResult, settings: Settings, *, as_json: bool, column: str = "detail", value: Column = detail_or_error
) -> int:
    outcomes = await every_outcome(result, settings)
    if as_json:
        print(result.model_copy(update={"outcomes": outcomes}).model_dump_json(indent=2))
    else:
        print_outcomes(outcomes, column, value)
        print(summary_line(result))
    return 0 if result.failed == 0 else 1


def print_outcomes(outcomes: list[TenantOutcome], column: str = "detail", value: Column = detail_or_error) -> None:
    rows = [(o.tenant_id, _result_word(o), value(o)) for o in outcomes]
    print(table(["tenant", "result", column], rows))


def summary_line(result: FleetResult) -> str:
    line = f"{result.succeeded} succeeded, {result.failed} failed, {result.skipped} skipped, {result.total} tenants"
    return line + (f" (run {result.workflow_id})" if result.workflow_id else "")


def _result_word(outcome: TenantOutcome) -> str:
    return "skipped" if outcome.skipped else "ok" if outcome.ok else "FAILED"


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    runs = subparsers.add_parser("runs", help="fleet runs: every tenant's outcome")
    commands = runs.add_subparsers(dest="runs_command", required=True)
    p = commands.add_parser(
        "show",
        help="every tenant's outcome of a fleet run (backup, maintenance, migrate, prune, drill of every tenant)",
    )
    p.add_argument("workflow_id", help="the fleet run's workflow id (as `tenants` printed it, or from the Web UI)")
    p.add_argument("--failed", action="store_true", help="only the tenants that failed")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=show_run)


async def show_run(args: argparse.Namespace, settings: Settings) -> int:
    outcomes = await Catalog(settings).fleet_outcomes(args.workflow_id, failed_only=args.failed)
    if not outcomes and not args.failed:
        raise InvalidInput(f"no tenant outcomes recorded for a fleet run {args.workflow_id!r} (yet)")
    if args.json:
        print(json.dumps([o.model_dump() for o in outcomes], indent=2))
    else:
        rows = [(o.tenant_id, _result_word(o), o.backup_name or o.detail or o.error, o.workflow_id) for o in outcomes]
        print(table(["tenant", "result", "backup / detail / error", "run"], rows))
        failed = sum(not o.ok for o in outcomes)
        print(f"{len(outcomes)} tenants recorded, {failed} failed")
    return 1 if any(not o.ok for o in outcomes) else 0
