"""Which backups retention deletes: a pure decision, tested on its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from tenancy.calendar_retention import NOT_VERIFIED, PINNED, CalendarEntry, CalendarPlan, Decision
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


def validate_keep(keep: int) -> int:
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise InvalidInput(f"--keep must be a whole number of at least 1 (got {keep!r})")
    return keep


def plan_keep_newest(backups: list[BackupEntry], keep: int) -> RetentionPlan:
    """Keep the `keep` newest verified backups; delete older verified ones; leave unverified ones alone.

    The newest verified backup is always kept because `keep` is at least 1.
    """
    validate_keep(keep)
    verified = sorted((b for b in backups if b.verified), key=lambda b: (b.taken_at, b.name), reverse=True)
    untouched = [b for b in backups if not b.verified]
    return RetentionPlan(keep=verified[:keep], delete=verified[keep:], untouched=untouched)


def plan_keep_n(backups: list[CalendarEntry], keep: int) -> CalendarPlan:
    """Keep-N with pins and reasons: pinned and unverified backups are kept; of the verified ones, the `keep`
    newest are kept and the older ones deleted."""
    validate_keep(keep)
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
