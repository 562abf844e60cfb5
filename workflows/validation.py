"""A run's first step: its input checked against tenancy/bounds.py, a bad one failing the run (InvalidInput, never
retried) before anything is started."""

from __future__ import annotations

from collections.abc import Callable

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tenancy.errors import INVALID_INPUT, InvalidInput, fail

# Runs started before the bounds existed replay with the checks they had then, so a run that was started with a
# number now out of bounds (e.g. keep=1,000,000 for the backup before a maintenance) still finishes.
BOUNDED = "bounded-inputs"


def check_input(bounded: Callable[[], object], legacy: Callable[[], object] = lambda: None) -> None:
    """Run `bounded` (or, replaying a run recorded before the bounds, `legacy`); InvalidInput fails the run."""
    try:
        if workflow.patched(BOUNDED):
            bounded()
        else:
            legacy()
    except InvalidInput as exc:
        raise fail(INVALID_INPUT, str(exc)) from None
