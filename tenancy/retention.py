"""Which backups retention deletes: a pure decision, tested on its own."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from tenancy.calendar_retention import (
    NOT_VERIFIED,
    PINNED,
    CalendarEntry,
    CalendarPlan,
    CalendarPolicy,
    Decision,
    plan_calendar,
)
from tenancy.errors import InvalidInput


@dataclass(frozen=True)
class BackupEntry:
    name: str
    taken_at: datetime
    verified: bool


@dataclass(frozen=True)
class RetentionPlan:
    keep: list[BackupEntry] = field(default_factory=list)
    delete: list[BackupEntry] = field(default_factory=list)
    # Backups without a verified manifest: never counted as kept copies, never deleted by keep-N.
    untouched: list[BackupEntry] = field(default_factory=list)


# Far more than any retention needs: "keep everything" (a backup before maintenance or deprovisioning) is this.
MAX_KEEP = 10_000


def validate_keep(keep: int, most: int | None = MAX_KEEP) -> int:
    """`most=None`: only for replaying runs started before keep had an upper bound."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1 or (most is not None and keep > most):
        bound = f" and at most {most}" if most is not None else ""
        raise InvalidInput(f"--keep must be a whole number of at least 1{bound} (got {keep!r})")
    return keep


def plan_keep_newest(backups: list[BackupEntry], keep: int) -> RetentionPlan:
    """Keep the `keep` newest verified backups; delete older verified ones; leave unverified ones alone.

    The newest verified backup is always kept because `keep` is at least 1.
    """
    validate_keep(keep, most=None)  # bounded where the input comes in; runs started with more still finish
    verified = sorted((b for b in backups if b.verified), key=lambda b: (b.taken_at, b.name), reverse=True)
    untouched = [b for b in backups if not b.verified]
    return RetentionPlan(keep=verified[:keep], delete=verified[keep:], untouched=untouched)


def plan_keep_n(backups: list[CalendarEntry], keep: int) -> CalendarPlan:
    """Keep-N with pins and reasons: pinned and unverified backups are kept; of the verified ones, the `keep`
    newest are kept and the older ones deleted."""
    validate_keep(keep, most=None)  # bounded where the input comes in; runs started with more still finish
    decisions = []
    verified = sorted((b for b in backups if b.verified and not b.pinned), key=lambda b: (b.taken_at, b.name))
    newest = set(id(b) for b in verified[-keep:])
    for entry in sorted(backups, key=lambda b: (b.taken_at, b.name), reverse=True):
        if entry.pinned:
            decisions.append(Decision(entry, True, PINNED))
        elif not entry.verified:
            decisions.append(Decision(entry, True, NOT_VERIFIED))
        elif id(entry) in newest:
            decisions.append(Decision(entry, True, f"one of the {keep} newest verified backups"))
        else:
            decisions.append(Decision(entry, False, f"older than the {keep} newest verified backups"))
    return CalendarPlan(decisions)


def is_good_copy(entry: CalendarEntry) -> bool:
    """A copy that can be restored: checksum-verified, known to restore (its table of contents read, with the
    identity when encrypted, or a passed drill), and no failed drill since."""
    return entry.verified and entry.restorable and not entry.drill_failed


def plan_retention(
    backups: list[CalendarEntry],
    *,
    policy: str,
    keep: int,
    calendar: CalendarPolicy | None = None,
    now: datetime | None = None,
) -> CalendarPlan:
    """Retention's one decision, for either policy ("keep": the `keep` newest good copies; "calendar").

    Only good copies (is_good_copy) count as kept copies: the policy runs over them, so the newest good copy is
    never deleted and keep-N never rotates restorable backups out in favour of ones that cannot be restored.
    A verified backup that is not a good copy (checksum-verified only, or a failed drill) is kept while it is newer
    than the oldest good copy kept (it may hold the newest data, and a drill may yet prove it), and deleted once
    older; with no good copy at all every one of them is kept. Pinned and unverified backups are never deleted.
    """
    unproven = {b.name for b in backups if b.verified and not is_good_copy(b)}
    # The policy sees unproven backups as unverified: neither counted as copies nor deleted by it.
    seen = [replace(b, verified=False) if b.name in unproven else b for b in backups]
    if policy == "calendar":
        if calendar is None or now is None:
            raise InvalidInput("calendar retention needs a policy and the current time")
        base = plan_calendar(seen, calendar, now)
    else:
        base = plan_keep_n(seen, keep)
    kept_good = [d.entry for d in base.decisions if d.keep and d.entry.verified and not d.entry.pinned]
    oldest_good = min((e.taken_at for e in kept_good), default=None)
    original = {b.name: b for b in backups}
    decisions = []
    for decision in base.decisions:
        entry = original[decision.entry.name]
        if entry.name not in unproven or entry.pinned:
            decisions.append(Decision(entry, decision.keep, decision.reason))
            continue
        why = "a failed restore drill" if entry.drill_failed else "checksum-verified only, not proven restorable"
        if oldest_good is None or entry.taken_at > oldest_good:
            decisions.append(Decision(entry, True, f"{why}: kept while newer than the oldest kept good copy"))
        else:
            decisions.append(Decision(entry, False, f"{why}, and older than every kept good copy"))
    return CalendarPlan(decisions)
