"""The sweeper's judgement: is a leftover an orphan it may remove, and why (or why not). Pure: the activity
(activities/sweep.py) gathers the facts (marks, run states, ages, ownership) and removes what is judged removable.

Only what carries our mark is ever removable, and nothing whose run is still going. A run Temporal does not know
(another namespace on the same server, or a history past retention) counts as gone only once its mark is older than
the stale threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, NamedTuple

from tenancy.marks import Mark

MAX_STALE_HOURS = 24 * 365
# Removable items one sweep acts on, and items left alone it lists: bounded so a report stays a small payload.
MAX_SWEEP_ITEMS = 2000
MAX_LISTED_LEFT_ALONE = 1000
WORK_SUFFIX = ".dump.partial"  # restores unpack to <state_dir>/work/.<scratch database>.dump.partial
GONE_TENANT_STATUSES = ("deprovisioned", "failed")


class Verdict(NamedTuple):
    removable: bool
    reason: str


@dataclass(frozen=True)
class RunState:
    """What Temporal says of the run a mark names."""

    state: Literal["running", "ended", "not found", "unknown"]
    detail: str = ""  # ended: how (completed, failed, terminated…); unknown: why


def hours(delta: timedelta) -> str:
    value = delta.total_seconds() / 3600
    return f"{value:.0f} h" if value >= 10 else f"{value:.1f} h"


def stale_limit(stale_hours: int) -> timedelta:
    return timedelta(hours=stale_hours)


def _run_name(mark: Mark) -> str:
    return f"run {mark.workflow_id}" + (f" ({mark.run_id[:8]}…)" if mark.run_id else "")


def run_verdict(mark: Mark, run: RunState | None, now: datetime, stale: timedelta) -> Verdict:
    """Whether the run that made a marked object lets it go: removable only when that run is over."""
    if run is None or not mark.workflow_id:
        return Verdict(False, "its mark names no run: left alone")
    who = _run_name(mark)
    if run.state == "running":
        return Verdict(False, f"{who} is running: left alone")
    if run.state == "unknown":
        return Verdict(False, f"cannot look up {who}: {run.detail}: left alone")
    if run.state == "ended":
        return Verdict(True, f"{who} ended ({run.detail})")
    # Not found: maybe another namespace's run, or one past retention. Gone only once clearly old.
    if mark.at is None:
        return Verdict(False, f"{who} not found and the mark has no time: left alone")
    age = now - mark.at
    if age >= stale:
        return Verdict(True, f"{who} not found; marked {hours(age)} ago")
    return Verdict(False, f"{who} not found, but marked only {hours(age)} ago (under {hours(stale)}): left alone")


def judge_database(mark: Mark, run: RunState | None, now: datetime, stale: timedelta) -> Verdict:
    """A marked scratch, previous or provisioning database."""
    if mark.kind not in ("scratch", "previous", "provisioning"):
        return Verdict(False, f"a {mark.kind} database: never swept")
    if mark.kind == "previous":
        if mark.keep_until is None:
            return Verdict(False, "set aside by a restore with no keep time in its mark: left alone")
        if now < mark.keep_until:
            return Verdict(False, f"kept until {mark.keep_until:%Y-%m-%d %H:%M} UTC: left alone")
    verdict = run_verdict(mark, run, now, stale)
    if verdict.removable and mark.kind == "previous":
        return Verdict(True, f"kept until {mark.keep_until:%Y-%m-%d %H:%M} UTC, now past; {verdict.reason}")
    return verdict


def judge_role(
    mark: Mark,
    tenant_status: str | None,
    dependencies: int,
    owned_databases: int,
    run: RunState | None,
    now: datetime,
    stale: timedelta,
    moved_elsewhere: bool = False,
) -> Verdict | None:
    """A marked role. None: it belongs to a live tenant (not worth listing). `moved_elsewhere`: a move made it on a
    server the live tenant is not on (a failed move's target, whose undo could not reach it): judged as a gone
    tenant's, once that move is over."""
    if mark.kind != "role":
        return None
    live = tenant_status is not None and tenant_status not in GONE_TENANT_STATUSES
    if live and not moved_elsewhere:
        return None
    whose = f"tenant {mark.tenant_id} is " + (
        "on another server (a move's role)" if live else tenant_status if tenant_status else "not in the catalog"
    )
    if owned_databases:
        return Verdict(False, f"{whose}, but the role owns {owned_databases} database(s): left alone")
    if dependencies:
        return Verdict(False, f"{whose}, but the role owns or holds privileges on {dependencies} object(s): left alone")
    if mark.workflow_id:
        verdict = run_verdict(mark, run, now, stale)
        if not verdict.removable:
            return verdict
    return Verdict(True, f"{whose}; the role owns nothing and holds no privileges")


def judge_restore_login(mark: Mark, run: RunState | None, now: datetime, stale: timedelta) -> Verdict:
    """The short-lived login role of a restore attempt (marked `restorer`): removable once its run is over, whatever
    it still holds (its privileges and anything it made are dropped with it, never handed on)."""
    verdict = run_verdict(mark, run, now, stale)
    return Verdict(verdict.removable, f"a restore's login role; {verdict.reason}")


def scratch_of_work_file(name: str) -> str | None:
    """The scratch database a restore's work file belongs to; None for any other file name."""
    if name.startswith(".") and name.endswith(WORK_SUFFIX) and len(name) > len(WORK_SUFFIX) + 1:
        return name[1 : -len(WORK_SUFFIX)]
    return None


def judge_work_file(
    database_exists: bool, mark: Mark | None, run: RunState | None, age: timedelta, now: datetime, stale: timedelta
) -> Verdict:
    """A restore's decrypted/unpacked work file: it goes as soon as no running run holds its scratch database."""
    if not database_exists:
        return Verdict(True, "its scratch database does not exist")
    if mark is None or not mark.workflow_id:
        # An unmarked (or run-less) database of that name: no run to ask, so only its age can tell.
        if age >= stale:
            return Verdict(True, f"its scratch database names no run; unchanged for {hours(age)}")
        return Verdict(False, f"its scratch database names no run; changed {hours(age)} ago: left alone")
    verdict = run_verdict(mark, run, now, stale)
    return Verdict(verdict.removable, f"scratch database: {verdict.reason}")


def judge_stale(age: timedelta, stale: timedelta, busy: str | None, what: str) -> Verdict:
    """A `.partial` file (age since its last write) or an unfinished upload (age since it began)."""
    if busy:
        return Verdict(False, f"{busy}: left alone")
    if age >= stale:
        return Verdict(True, f"{what} {hours(age)} ago (threshold {hours(stale)})")
    return Verdict(False, f"{what} {hours(age)} ago, under {hours(stale)}: left alone")
