"""Which backups retention deletes: one pure decision, `plan_retention`, tested on its own.

No I/O and no clock: the caller passes the backups (as storage and the catalog describe them) and `now`, so the same
history and policy always give the same plan. Two policies: keep-N (the `keep` newest good copies) and calendar.
Only good copies (`is_good_copy`) count as kept copies, the newest good copy is never deleted, pinned and
unverified backups are never deleted, and `must_keep` (the backup just verified) is kept or nothing is deleted.

Calendar ("grandfather-father-son") retention, with pins and a size cap, is modelled on spatie/laravel-backup's
default strategy: keep everything for a few days, then one backup per day, per ISO week, per month and per year,
each for a while.

One deliberate difference from spatie: a backup is kept by a calendar rule when it is the newest verified backup
of its whole UTC day/ISO week/month/year (not only of the part of that bucket inside the rule's period) and it is
younger than the rule's horizon. Spatie groups per period, so a day or week cut by a period boundary can keep two
copies, and a longer policy can delete a backup that a shorter one kept (a day that moves from the weekly into the
daily period). Grouping over the whole bucket makes the plan monotonic: a policy with every period at least as
long keeps a superset. The price: the newest backup of a month is also kept inside the weekly period when it is
not the newest of its ISO week (a week that straddles two months), as long as `monthly_months` is not 0.
"""

from __future__ import annotations

from calendar import monthrange
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from tenancy.errors import InvalidInput

# Far more than any retention needs: "keep everything" (a backup before maintenance or deprovisioning) is this.
MAX_KEEP = 10_000


def validate_keep(keep: int, most: int | None = MAX_KEEP) -> int:
    """`most=None`: only for replaying runs started before keep had an upper bound."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1 or (most is not None and keep > most):
        bound = f" and at most {most}" if most is not None else ""
        raise InvalidInput(f"--keep must be a whole number of at least 1{bound} (got {keep!r})")
    return keep


class RetentionRefused(Exception):
    """The plan would delete the backup that must be kept (the one just verified): nothing is deleted.

    Not bad input: a sign that names or clocks are off, so the caller fails the backup rather than the request.
    """


_EARLIEST = datetime.min.replace(tzinfo=UTC)

PINNED = "pinned"
NEWEST_VERIFIED = "newest verified backup"
NOT_VERIFIED = "not verified: left alone"
FUTURE = "taken after now: left alone"
OLDER_THAN_EVERY_RULE = "older than every rule"


def _whole_number(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be a whole number (got {value!r})")
    return value


@dataclass(frozen=True)
class CalendarPolicy:
    """How long each calendar rule reaches back; each period starts where the previous one ends.

    `max_total_bytes=None` means no size cap. A cap of 0 or less is refused rather than read as "no space",
    which would delete everything but the pinned and newest backups.
    """

    keep_all_days: int = 7
    daily_days: int = 16
    weekly_weeks: int = 8
    monthly_months: int = 4
    yearly_years: int = 2
    max_total_bytes: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> CalendarPolicy:
        """Refuse negative periods, non-integers and a cap that is not a positive number of bytes."""
        for name in ("keep_all_days", "daily_days", "weekly_weeks", "monthly_months", "yearly_years"):
            if _whole_number(name, getattr(self, name)) < 0:
                raise InvalidInput(f"{name} must not be negative (got {getattr(self, name)!r})")
        if self.max_total_bytes is not None and _whole_number("max_total_bytes", self.max_total_bytes) < 1:
            raise InvalidInput(
                f"max_total_bytes must be at least 1 byte, or None for no cap (got {self.max_total_bytes!r})"
            )
        return self


@dataclass(frozen=True)
class CalendarEntry:
    name: str
    taken_at: datetime
    verified: bool
    size_bytes: int
    pinned: bool = False
    # Known to restore: pg_restore read its table of contents, or a drill restored it (see is_good_copy).
    restorable: bool = True
    drill_failed: bool = False


@dataclass(frozen=True)
class Decision:
    entry: CalendarEntry
    keep: bool
    reason: str


@dataclass(frozen=True)
class CalendarPlan:
    """One decision per backup, newest first."""

    decisions: list[Decision] = field(default_factory=list)

    @property
    def keep(self) -> list[CalendarEntry]:
        return [d.entry for d in self.decisions if d.keep]

    @property
    def delete(self) -> list[CalendarEntry]:
        return [d.entry for d in self.decisions if not d.keep]


def _days_back(moment: datetime, days: int) -> datetime:
    """`moment` minus `days`, or the earliest datetime when that falls before year 1 (a huge period reaches forever)."""
    try:
        return moment - timedelta(days=days)
    except OverflowError:
        return _EARLIEST


def _months_back(moment: datetime, months: int) -> datetime:
    """The same day and time `months` calendar months earlier.

    When that day does not exist (31 March minus one month), the result is midnight at the start of the next
    month rather than the month's last day at the same time, so that the result never decreases as `moment`
    grows: horizons must move monotonically with the policy.
    """
    index = moment.year * 12 + (moment.month - 1) - months
    year, month = divmod(index, 12)
    month += 1
    if year < 1:
        return _EARLIEST
    if moment.day <= monthrange(year, month)[1]:
        return moment.replace(year=year, month=month)
    if month == 12:
        return moment.replace(year=year + 1, month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(year=year, month=month + 1, day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class _Horizons:
    """Exclusive lower bounds: a backup is in a rule's reach when taken strictly after its horizon."""

    keep_all: datetime
    daily: datetime
    weekly: datetime
    monthly: datetime
    yearly: datetime


def _horizons(policy: CalendarPolicy, now: datetime) -> _Horizons:
    """Where each rule stops reaching back (UTC), given `now`; each starts where the previous one ends."""
    now = now.astimezone(UTC)
    keep_all = _days_back(now, policy.keep_all_days)
    daily = _days_back(keep_all, policy.daily_days)
    weekly = _days_back(daily, 7 * policy.weekly_weeks)
    monthly = _months_back(weekly, policy.monthly_months)
    yearly = _months_back(monthly, 12 * policy.yearly_years)
    return _Horizons(keep_all=keep_all, daily=daily, weekly=weekly, monthly=monthly, yearly=yearly)


def _day_of(moment: datetime) -> str:
    """The UTC calendar day, e.g. 2026-01-10."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def _week_of(moment: datetime) -> str:
    """The ISO week of the UTC day, e.g. 2026-W02 (31 December 2025 is in 2026-W01)."""
    iso = moment.astimezone(UTC).isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


def _month_of(moment: datetime) -> str:
    """The UTC calendar month, e.g. 2026-01."""
    return moment.astimezone(UTC).strftime("%Y-%m")


def _year_of(moment: datetime) -> str:
    """The UTC calendar year, e.g. 2025."""
    return f"{moment.astimezone(UTC).year:04d}"


def _order(entry: CalendarEntry) -> tuple[datetime, str]:
    return (entry.taken_at, entry.name)


def _check_entries(backups: Iterable[CalendarEntry]) -> list[CalendarEntry]:
    entries = list(backups)
    for entry in entries:
        if entry.taken_at.tzinfo is None or entry.taken_at.utcoffset() is None:
            raise InvalidInput(f"backup {entry.name!r}: taken_at must carry a time zone")
        if _whole_number(f"backup {entry.name!r} size_bytes", entry.size_bytes) < 0:
            raise InvalidInput(f"backup {entry.name!r}: size_bytes must not be negative (got {entry.size_bytes})")
    return entries


def plan_calendar(backups: Iterable[CalendarEntry], policy: CalendarPolicy, now: datetime) -> CalendarPlan:
    """Decide, for every backup, whether calendar retention keeps it and why.

    Rules, first match wins: pinned; the newest verified backup; unverified (never deleted, never counted as a
    copy); taken after `now` (clock skew, left alone); younger than `keep_all_days`; the newest verified backup of
    its UTC day, ISO week, month or year while younger than that rule's horizon; otherwise delete. Then, while the
    kept total exceeds `max_total_bytes`, the oldest kept backup that none of the first four rules protects is
    deleted. The cap never deletes a pinned, newest verified, unverified or future backup, so it can stay exceeded.
    """
    policy.validate()
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInput("now must carry a time zone")
    entries = _check_entries(backups)
    limits = _horizons(policy, now)

    verified = [e for e in entries if e.verified]
    newest = max(verified, key=_order) if verified else None
    # Newest verified backup of each bucket, over the whole history: independent of the policy, hence monotonic.
    newest_of: dict[tuple[str, str], CalendarEntry] = {}
    for entry in sorted(verified, key=_order):
        for kind, bucket in (("day", _day_of), ("week", _week_of), ("month", _month_of), ("year", _year_of)):
            newest_of[(kind, bucket(entry.taken_at))] = entry

    # A rule with a period of 0 is off. An active rule reaches from now back to its horizon, not only over its own
    # period: ISO weeks and months do not nest, so the newest of a month must survive when the weekly period grows
    # over it, or a longer policy would delete what a shorter one kept.
    rules = [
        (kind, bucket, horizon)
        for kind, bucket, horizon, count in (
            ("day", _day_of, limits.daily, policy.daily_days),
            ("week", _week_of, limits.weekly, policy.weekly_weeks),
            ("month", _month_of, limits.monthly, policy.monthly_months),
            ("year", _year_of, limits.yearly, policy.yearly_years),
        )
        if count > 0
    ]

    def decide(entry: CalendarEntry) -> Decision:
        if entry.pinned:
            return Decision(entry, True, PINNED)
        if entry is newest:
            return Decision(entry, True, NEWEST_VERIFIED)
        if not entry.verified:
            return Decision(entry, True, NOT_VERIFIED)
        if entry.taken_at > now:
            return Decision(entry, True, FUTURE)
        if entry.taken_at > limits.keep_all:
            return Decision(entry, True, f"within {policy.keep_all_days} day{'' if policy.keep_all_days == 1 else 's'}")
        for kind, bucket, horizon in rules:
            if entry.taken_at > horizon and newest_of[(kind, bucket(entry.taken_at))] is entry:
                return Decision(entry, True, f"newest of {kind} {bucket(entry.taken_at)}")
        for kind, bucket, horizon in rules:
            if entry.taken_at > horizon:
                return Decision(entry, False, f"not the newest of {kind} {bucket(entry.taken_at)}")
        return Decision(entry, False, OLDER_THAN_EVERY_RULE)

    decisions = [decide(entry) for entry in sorted(entries, key=_order, reverse=True)]

    if policy.max_total_bytes is not None:
        cap = policy.max_total_bytes
        protected = {PINNED, NEWEST_VERIFIED, NOT_VERIFIED, FUTURE}
        total = sum(d.entry.size_bytes for d in decisions if d.keep)
        # Oldest first: decisions are newest first, so walk them backwards.
        for index in range(len(decisions) - 1, -1, -1):
            if total <= cap:
                break
            decision = decisions[index]
            if decision.keep and decision.reason not in protected:
                decisions[index] = Decision(decision.entry, False, f"over the size cap of {cap} bytes")
                total -= decision.entry.size_bytes

    return CalendarPlan(decisions=decisions)


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
    must_keep: str | None = None,
) -> CalendarPlan:
    """Retention's one decision, for either policy ("keep": the `keep` newest good copies; "calendar").

    Only good copies (is_good_copy) count as kept copies: the policy runs over them, so the newest good copy is
    never deleted and keep-N never rotates restorable backups out in favour of ones that cannot be restored.
    A verified backup that is not a good copy (checksum-verified only, or a failed drill) is kept while it is newer
    than the oldest good copy kept (it may hold the newest data, and a drill may yet prove it), and deleted once
    older; with no good copy at all every one of them is kept. Pinned and unverified backups are never deleted.

    `must_keep`: the backup just verified. A plan that would not keep it raises RetentionRefused instead of being
    returned, so nothing is deleted around a backup whose name or time is not what retention expects.
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
    plan = CalendarPlan(decisions)
    if must_keep is not None and must_keep not in {entry.name for entry in plan.keep}:
        raise RetentionRefused(f"retention refused: the new backup {must_keep!r} would not be among the kept ones")
    return plan
