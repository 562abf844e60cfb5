"""Calendar retention is a pure decision: hand-made histories for each rule, then properties over random ones."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tenancy.errors import InvalidInput
from tenancy.retention import CalendarEntry, CalendarPlan, CalendarPolicy, Decision, plan_calendar

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # a Sunday
ONLY = dict(keep_all_days=0, daily_days=0, weekly_weeks=0, monthly_months=0, yearly_years=0)


def at(*args: int, tz: timezone = UTC) -> datetime:
    return datetime(*args, tzinfo=tz)  # type: ignore[misc]


def entry(name: str, taken_at: datetime, *, verified: bool = True, size: int = 100, pinned: bool = False):
    return CalendarEntry(name=name, taken_at=taken_at, verified=verified, size_bytes=size, pinned=pinned)


def reasons(plan: CalendarPlan) -> dict[str, tuple[bool, str]]:
    return {d.entry.name: (d.keep, d.reason) for d in plan.decisions}


# --- hand-made histories, one rule at a time ---------------------------------------------------------------------


def test_sixty_daily_backups_with_the_default_policy():
    # One backup a day at 03:00 UTC from 1 January to 1 March 2026; now is 1 March 12:00.
    days = [datetime(2026, 1, 1, 3, tzinfo=UTC) + timedelta(days=i) for i in range(60)]
    assert days[-1].date().isoformat() == "2026-03-01"
    backups = [entry(d.strftime("%m-%d"), d) for d in days]
    plan = plan_calendar(backups, CalendarPolicy(), NOW)

    kept = {b.name for b in plan.keep}
    within_7_days = {f"02-{d}" for d in range(23, 29)} | {"03-01"}  # younger than 22 Feb 12:00
    daily = {f"02-{d:02d}" for d in range(7, 23)}  # 16 days, down to 6 Feb 12:00
    weekly = {"02-01", "01-25", "01-18", "01-11", "01-04"}  # Sundays of ISO weeks 2026-W05 .. W01
    monthly = {"01-31"}  # newest of January; its week W05 is represented by 1 February
    assert kept == within_7_days | daily | weekly | monthly
    assert len(plan.delete) == 60 - 29

    why = reasons(plan)
    assert why["03-01"] == (True, "newest verified backup")
    assert why["02-23"] == (True, "within 7 days")
    assert why["02-22"] == (True, "newest of day 2026-02-22")
    assert why["02-07"] == (True, "newest of day 2026-02-07")
    # 2-6 February are in the weekly period, and their week 2026-W06 is already covered by 8 February.
    assert why["02-06"] == (False, "not the newest of week 2026-W06")
    assert why["02-02"] == (False, "not the newest of week 2026-W06")
    assert why["02-01"] == (True, "newest of week 2026-W05")
    assert why["01-31"] == (True, "newest of month 2026-01")
    assert why["01-30"] == (False, "not the newest of week 2026-W05")
    assert why["01-04"] == (True, "newest of week 2026-W01")
    assert why["01-01"] == (False, "not the newest of week 2026-W01")


def test_weekly_boundaries_follow_iso_weeks_in_utc():
    policy = CalendarPolicy(**{**ONLY, "weekly_weeks": 10})
    now = at(2026, 1, 20, 12)
    backups = [
        entry("newest", at(2026, 1, 19, 10)),
        entry("mon", at(2026, 1, 5, 0, 30)),  # Monday: 2026-W02
        entry("sun-late", at(2026, 1, 4, 23, 30)),  # Sunday: 2026-W01
        entry("mon-local", at(2026, 1, 5, 1, 0, tz=timezone(timedelta(hours=2)))),  # Sunday 23:00 UTC
        entry("sat", at(2026, 1, 3, 12)),
        entry("dec-29", at(2025, 12, 29, 9)),  # ISO week 2026-W01 although the year is 2025
        entry("dec-28", at(2025, 12, 28, 9)),  # Sunday: 2025-W52
    ]
    assert reasons(plan_calendar(backups, policy, now)) == {
        "newest": (True, "newest verified backup"),
        "mon": (True, "newest of week 2026-W02"),
        "sun-late": (True, "newest of week 2026-W01"),
        "mon-local": (False, "not the newest of week 2026-W01"),
        "sat": (False, "not the newest of week 2026-W01"),
        "dec-29": (False, "not the newest of week 2026-W01"),
        "dec-28": (True, "newest of week 2025-W52"),
    }


def test_weekly_period_ends_where_its_weeks_run_out():
    policy = CalendarPolicy(**{**ONLY, "weekly_weeks": 2})  # reaches back to 6 January 12:00
    now = at(2026, 1, 20, 12)
    backups = [
        entry("newest", at(2026, 1, 19, 10)),
        entry("inside", at(2026, 1, 6, 13)),
        entry("out", at(2026, 1, 6, 11)),
    ]
    assert reasons(plan_calendar(backups, policy, now)) == {
        "newest": (True, "newest verified backup"),
        "inside": (True, "newest of week 2026-W02"),
        "out": (False, "older than every rule"),
    }


def test_month_boundary_is_the_utc_calendar_month():
    policy = CalendarPolicy(**{**ONLY, "monthly_months": 12})
    now = at(2026, 3, 10, 12)
    backups = [
        entry("mar-05", at(2026, 3, 5)),
        entry("feb-10", at(2026, 2, 10)),
        entry("feb-01", at(2026, 2, 1, 1)),
        entry("jan-31-local-feb", at(2026, 2, 1, 0, 30, tz=timezone(timedelta(hours=1)))),  # 31 Jan 23:30 UTC
        entry("jan-31", at(2026, 1, 31, 23)),
        entry("jan-15", at(2026, 1, 15)),
    ]
    assert reasons(plan_calendar(backups, policy, now)) == {
        "mar-05": (True, "newest verified backup"),
        "feb-10": (True, "newest of month 2026-02"),
        "feb-01": (False, "not the newest of month 2026-02"),
        "jan-31-local-feb": (True, "newest of month 2026-01"),
        "jan-31": (False, "not the newest of month 2026-01"),
        "jan-15": (False, "not the newest of month 2026-01"),
    }


def test_a_longer_weekly_period_keeps_the_newest_of_a_month_whose_week_ends_in_the_next_month():
    # 31 January (Saturday) is the newest of January; 1 February (Sunday) is the newest of ISO week 2026-W05.
    now = at(2026, 3, 10, 12)
    backups = [entry("newest", at(2026, 3, 9)), entry("feb-01", at(2026, 2, 1, 9)), entry("jan-31", at(2026, 1, 31, 9))]
    monthly_only = CalendarPolicy(**{**ONLY, "monthly_months": 6})
    with_weeks = CalendarPolicy(**{**ONLY, "weekly_weeks": 10, "monthly_months": 6})
    assert reasons(plan_calendar(backups, monthly_only, now))["jan-31"] == (True, "newest of month 2026-01")
    # Grouping per period (spatie) would now delete it as "not the newest of week 2026-W05".
    assert reasons(plan_calendar(backups, with_weeks, now))["jan-31"] == (True, "newest of month 2026-01")
    # With monthly copies off, the week decides.
    weeks_only = CalendarPolicy(**{**ONLY, "weekly_weeks": 10})
    assert reasons(plan_calendar(backups, weeks_only, now))["jan-31"] == (False, "not the newest of week 2026-W05")


def test_one_month_back_from_the_31st_stops_at_the_start_of_the_month():
    policy = CalendarPolicy(**{**ONLY, "monthly_months": 1})
    now = at(2026, 3, 31, 12)  # 31 February does not exist: the month reaches back to 1 March 00:00
    backups = [
        entry("newest", at(2026, 3, 30)),
        entry("mar-01", at(2026, 3, 1, 0, 1)),
        entry("feb-28", at(2026, 2, 28)),
    ]
    assert reasons(plan_calendar(backups, policy, now)) == {
        "newest": (True, "newest verified backup"),
        "mar-01": (False, "not the newest of month 2026-03"),
        "feb-28": (False, "older than every rule"),
    }


def test_yearly_backups_with_the_default_policy():
    # Default horizons from 1 March 2026 12:00: daily to 6 Feb, weekly to 12 Dec 2025, monthly to 12 Aug 2025,
    # yearly to 12 Aug 2023.
    backups = [
        entry("recent", at(2026, 2, 28)),
        entry("2025-05", at(2025, 5, 1)),
        entry("2025-02", at(2025, 2, 1)),
        entry("2024-11", at(2024, 11, 30)),
        entry("2024-03", at(2024, 3, 1)),
        entry("2023-09", at(2023, 9, 1)),
        entry("2023-06", at(2023, 6, 1)),
    ]
    assert reasons(plan_calendar(backups, CalendarPolicy(), NOW)) == {
        "recent": (True, "newest verified backup"),
        "2025-05": (True, "newest of year 2025"),
        "2025-02": (False, "not the newest of year 2025"),
        "2024-11": (True, "newest of year 2024"),
        "2024-03": (False, "not the newest of year 2024"),
        "2023-09": (True, "newest of year 2023"),
        "2023-06": (False, "older than every rule"),
    }


def test_keep_all_period_uses_the_configured_number():
    backups = [
        entry("a", NOW - timedelta(hours=1)),
        entry("b", NOW - timedelta(hours=20)),
        entry("c", NOW - timedelta(days=2)),
    ]
    assert reasons(plan_calendar(backups, CalendarPolicy(**{**ONLY, "keep_all_days": 1}), NOW)) == {
        "a": (True, "newest verified backup"),
        "b": (True, "within 1 day"),
        "c": (False, "older than every rule"),
    }
    assert reasons(plan_calendar(backups, CalendarPolicy(**{**ONLY, "keep_all_days": 3}), NOW))["c"] == (
        True,
        "within 3 days",
    )


def test_unverified_backups_are_left_alone_and_do_not_count_as_copies():
    policy = CalendarPolicy(**{**ONLY, "daily_days": 30})
    backups = [
        entry("broken-newest", NOW - timedelta(hours=1), verified=False),
        entry("good", NOW - timedelta(days=3, hours=2)),
        entry("broken-same-day", NOW - timedelta(days=5, hours=1), verified=False),
        entry("good-same-day", NOW - timedelta(days=5, hours=2)),
        entry("ancient-broken", at(2001, 1, 1), verified=False),
    ]
    assert reasons(plan_calendar(backups, policy, NOW)) == {
        "broken-newest": (True, "not verified: left alone"),
        "good": (True, "newest verified backup"),
        "broken-same-day": (True, "not verified: left alone"),
        "good-same-day": (True, "newest of day 2026-02-24"),
        "ancient-broken": (True, "not verified: left alone"),
    }


def test_backups_taken_after_now_are_left_alone():
    backups = [
        entry("skew-2h", NOW + timedelta(hours=2)),
        entry("skew-1h", NOW + timedelta(hours=1)),
        entry("old", at(2020, 1, 1)),
    ]
    plan = plan_calendar(backups, CalendarPolicy(**ONLY, max_total_bytes=1), NOW)
    assert reasons(plan) == {
        "skew-2h": (True, "newest verified backup"),
        "skew-1h": (True, "taken after now: left alone"),
        "old": (False, "older than every rule"),
    }


def test_size_cap_deletes_the_oldest_first_and_stops_once_under():
    policy = CalendarPolicy(keep_all_days=30, max_total_bytes=250)
    backups = [entry(f"d{i}", NOW - timedelta(days=5 - i)) for i in range(5)]  # d4 is the newest
    plan = plan_calendar(backups, policy, NOW)
    assert [b.name for b in plan.keep] == ["d4", "d3"]
    assert [d.reason for d in plan.decisions if not d.keep] == ["over the size cap of 250 bytes"] * 3
    assert [b.name for b in plan.delete] == ["d2", "d1", "d0"]


def test_size_cap_spares_pins_and_the_newest_even_when_it_stays_exceeded():
    policy = CalendarPolicy(keep_all_days=30, max_total_bytes=250)
    backups = [entry("d0", NOW - timedelta(days=5), pinned=True)]
    backups += [entry(f"d{i}", NOW - timedelta(days=5 - i)) for i in range(1, 5)]
    plan = plan_calendar(backups, policy, NOW)
    assert [b.name for b in plan.keep] == ["d4", "d0"]
    assert [b.name for b in plan.delete] == ["d3", "d2", "d1"]

    tiny = CalendarPolicy(keep_all_days=30, max_total_bytes=1)
    assert reasons(plan_calendar(backups, tiny, NOW)) == {
        "d4": (True, "newest verified backup"),
        "d3": (False, "over the size cap of 1 bytes"),
        "d2": (False, "over the size cap of 1 bytes"),
        "d1": (False, "over the size cap of 1 bytes"),
        "d0": (True, "pinned"),
    }


def test_pins_survive_every_rule_and_the_cap():
    backups = [
        entry("newest", NOW - timedelta(hours=1), size=10),
        entry("pinned-ancient", at(2001, 6, 1), pinned=True, size=10_000),
        entry("pinned-unverified", at(2002, 6, 1), pinned=True, verified=False),
        entry("pinned-shadowed", NOW - timedelta(hours=2), pinned=True),
        entry("plain-ancient", at(2001, 6, 2)),
    ]
    for policy in (CalendarPolicy(**ONLY), CalendarPolicy(), CalendarPolicy(max_total_bytes=1)):
        why = reasons(plan_calendar(backups, policy, NOW))
        assert why["pinned-ancient"] == (True, "pinned")
        assert why["pinned-unverified"] == (True, "pinned")
        assert why["pinned-shadowed"] == (True, "pinned")
        assert why["newest"] == (True, "newest verified backup")
        assert why["plain-ancient"] == (False, "older than every rule")


def test_a_pinned_newest_backup_is_still_the_newest_copy():
    backups = [entry("pinned-newest", NOW - timedelta(hours=1), pinned=True), entry("older", at(2001, 1, 1))]
    assert reasons(plan_calendar(backups, CalendarPolicy(), NOW)) == {
        "pinned-newest": (True, "pinned"),
        "older": (False, "older than every rule"),
    }


def test_plan_is_deterministic_and_newest_first():
    backups = [entry(f"b{i:02d}", NOW - timedelta(hours=7 * i)) for i in range(40)]
    backups.append(entry("tie", backups[5].taken_at))
    shuffled = backups[:]
    random.Random(4).shuffle(shuffled)
    plan = plan_calendar(backups, CalendarPolicy(keep_all_days=2, daily_days=3), NOW)
    assert plan == plan_calendar(shuffled, CalendarPolicy(keep_all_days=2, daily_days=3), NOW)
    keys = [(d.entry.taken_at, d.entry.name) for d in plan.decisions]
    assert keys == sorted(keys, reverse=True)
    assert isinstance(plan.decisions[0], Decision)


def test_empty_history_gives_an_empty_plan():
    assert plan_calendar([], CalendarPolicy(), NOW) == CalendarPlan(decisions=[])


@pytest.mark.parametrize("cap", [0, -1, -(2**40), True, 1.5, "100"])
def test_a_cap_that_is_not_a_positive_number_of_bytes_is_refused(cap):
    with pytest.raises(InvalidInput, match="max_total_bytes"):
        CalendarPolicy(max_total_bytes=cap)


@pytest.mark.parametrize("field", ["keep_all_days", "daily_days", "weekly_weeks", "monthly_months", "yearly_years"])
@pytest.mark.parametrize("value", [-1, -30, 2.0, None, False])
def test_negative_or_non_integer_periods_are_refused(field, value):
    with pytest.raises(InvalidInput, match=field):
        CalendarPolicy(**{field: value})


def test_zero_periods_and_huge_periods_are_accepted():
    assert CalendarPolicy(**ONLY).keep_all_days == 0
    huge = CalendarPolicy(keep_all_days=10**12, yearly_years=10**9)
    plan = plan_calendar([entry("a", at(1970, 1, 1)), entry("b", at(1971, 1, 1))], huge, NOW)
    assert [d.reason for d in plan.decisions] == ["newest verified backup", "within 1000000000000 days"]


def test_naive_times_and_bad_sizes_are_refused():
    with pytest.raises(InvalidInput, match="now"):
        plan_calendar([], CalendarPolicy(), datetime(2026, 1, 1))
    with pytest.raises(InvalidInput, match="taken_at"):
        plan_calendar([entry("naive", datetime(2026, 1, 1))], CalendarPolicy(), NOW)
    with pytest.raises(InvalidInput, match="size_bytes"):
        plan_calendar([entry("negative", NOW, size=-1)], CalendarPolicy(), NOW)


# --- properties over random histories ----------------------------------------------------------------------------

ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
THREE_YEARS = 3 * 366 * 86_400

nows = st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2090, 12, 31), timezones=st.just(UTC))
offsets = st.one_of(
    st.integers(min_value=-2 * 86_400, max_value=THREE_YEARS),  # anywhere, a little in the future for clock skew
    st.integers(min_value=0, max_value=60 * 86_400),  # crowded recent history: shared days and weeks
    st.integers(min_value=0, max_value=400).map(lambda h: h * 3_600),  # crowded recent days
)
flags = st.tuples(
    st.integers(min_value=0, max_value=4).map(lambda n: n != 0),  # verified, about four in five
    st.integers(min_value=0, max_value=9).map(lambda n: n == 0),  # pinned, about one in ten
    st.integers(min_value=0, max_value=1_000),  # size
    st.sampled_from(ZONES),
)
irregular_histories = st.lists(st.tuples(offsets, flags), max_size=60)


@st.composite
def regular_histories(draw):
    """A backup every few hours or days, like a real schedule: dense enough to share days, weeks and months."""
    start = draw(st.integers(min_value=-86_400, max_value=40 * 86_400))
    every = draw(st.integers(min_value=1, max_value=240)) * 3_600
    jitter = st.integers(min_value=0, max_value=3_599)
    return [(start + i * every + draw(jitter), draw(flags)) for i in range(draw(st.integers(0, 60)))]


raw_histories = st.one_of(irregular_histories, regular_histories())
period_fields = {
    "keep_all_days": st.integers(min_value=0, max_value=30),
    "daily_days": st.integers(min_value=0, max_value=60),
    "weekly_weeks": st.integers(min_value=0, max_value=30),
    "monthly_months": st.integers(min_value=0, max_value=24),
    "yearly_years": st.integers(min_value=0, max_value=4),
}
uncapped_policies = st.fixed_dictionaries(period_fields).map(lambda kw: CalendarPolicy(**kw))
caps = st.one_of(st.none(), st.integers(min_value=1, max_value=30_000))
policies = st.builds(
    lambda kw, cap: CalendarPolicy(**kw, max_total_bytes=cap), st.fixed_dictionaries(period_fields), caps
)


def build(now: datetime, raw) -> list[CalendarEntry]:
    return [
        CalendarEntry(
            name=f"b{i:02d}",
            taken_at=(now - timedelta(seconds=offset)).astimezone(zone),
            verified=verified,
            size_bytes=size,
            pinned=pinned,
        )
        for i, (offset, (verified, pinned, size, zone)) in enumerate(raw)
    ]


def newest_verified(backups: list[CalendarEntry]) -> CalendarEntry | None:
    verified = [b for b in backups if b.verified]
    return max(verified, key=lambda b: (b.taken_at, b.name)) if verified else None


def protected(b: CalendarEntry, backups: list[CalendarEntry], now: datetime) -> bool:
    """Nothing may delete these: pinned, the newest verified, unverified, taken after now."""
    return b.pinned or b is newest_verified(backups) or not b.verified or b.taken_at > now


def is_cap_reason(reason: str) -> bool:
    return reason.startswith("over the size cap of ")


def utc_day(b: CalendarEntry):
    return b.taken_at.astimezone(UTC).date()


def utc_week(b: CalendarEntry):
    return b.taken_at.astimezone(UTC).isocalendar()[:2]


def utc_month(b: CalendarEntry):
    return b.taken_at.astimezone(UTC).timetuple()[:2]


def utc_year(b: CalendarEntry):
    return b.taken_at.astimezone(UTC).year


@settings(deadline=None)
@given(nows, raw_histories, policies)
def test_every_backup_gets_exactly_one_decision_with_a_reason_newest_first(now, raw, policy):
    backups = build(now, raw)
    plan = plan_calendar(backups, policy, now)
    assert Counter(d.entry.name for d in plan.decisions) == Counter(b.name for b in backups)
    assert all(d.reason.strip() for d in plan.decisions)
    assert all(d.entry in backups for d in plan.decisions)
    keys = [(d.entry.taken_at, d.entry.name) for d in plan.decisions]
    assert keys == sorted(keys, reverse=True)
    assert len(plan.keep) + len(plan.delete) == len(backups)


@settings(deadline=None)
@given(nows, raw_histories, policies)
def test_never_deletes_the_newest_verified_a_pinned_an_unverified_or_a_future_backup(now, raw, policy):
    backups = build(now, raw)
    plan = plan_calendar(backups, policy, now)
    newest = newest_verified(backups)
    if newest is not None:
        assert newest in plan.keep
    for d in plan.decisions:
        if d.entry.pinned:
            assert d.keep and d.reason == "pinned"
        if not d.entry.verified:
            assert d.keep
        if d.entry.taken_at > now:
            assert d.keep
        if not d.keep:
            assert not protected(d.entry, backups, now)


@settings(deadline=None)
@given(nows, raw_histories, policies)
def test_everything_within_keep_all_days_is_kept_unless_the_cap_takes_it(now, raw, policy):
    backups = build(now, raw)
    plan = plan_calendar(backups, policy, now)
    recent_limit = now - timedelta(days=policy.keep_all_days)
    for d in plan.decisions:
        if recent_limit < d.entry.taken_at <= now:
            assert d.keep or (policy.max_total_bytes is not None and is_cap_reason(d.reason))


@settings(deadline=None)
@given(nows, raw_histories, uncapped_policies)
def test_each_day_week_month_and_year_in_reach_keeps_a_verified_copy(now, raw, policy):
    backups = build(now, raw)
    kept = plan_calendar(backups, policy, now).keep
    daily = now - timedelta(days=policy.keep_all_days + policy.daily_days)
    weekly = daily - timedelta(weeks=policy.weekly_weeks)
    # Calendar months and years are at least 28 and 365 days, so these bounds are inside each rule's reach.
    monthly = weekly - timedelta(days=28 * policy.monthly_months)
    yearly = monthly - timedelta(days=365 * policy.yearly_years)
    rules = (
        (utc_day, daily, policy.daily_days),
        (utc_week, weekly, policy.weekly_weeks),
        (utc_month, monthly, policy.monthly_months),
        (utc_year, yearly, policy.yearly_years),
    )
    for bucket, horizon, count in rules:
        if count == 0:
            continue  # a rule with a period of 0 is off
        wanted = {bucket(b) for b in backups if b.verified and b.taken_at > horizon}
        covered = {bucket(b) for b in kept if b.verified}
        assert wanted <= covered, bucket.__name__


@settings(deadline=None)
@given(nows, raw_histories, uncapped_policies)
def test_deletes_what_no_rule_reaches_and_keeps_at_most_the_newest_of_a_day(now, raw, policy):
    backups = build(now, raw)
    plan = plan_calendar(backups, policy, now)
    weekly = now - timedelta(days=policy.keep_all_days + policy.daily_days, weeks=policy.weekly_weeks)
    # Calendar months and years are at most 31 and 366 days, so anything at or before this is out of every reach.
    beyond = weekly - timedelta(days=31 * policy.monthly_months + 366 * policy.yearly_years)
    recent_limit = now - timedelta(days=policy.keep_all_days)
    newest_of_day: dict = {}
    for b in sorted((b for b in backups if b.verified), key=lambda b: (b.taken_at, b.name)):
        newest_of_day[utc_day(b)] = b
    for d in plan.decisions:
        if protected(d.entry, backups, now):
            continue
        if d.entry.taken_at <= beyond:
            assert not d.keep and d.reason == "older than every rule"
        if d.keep and d.entry.taken_at <= recent_limit:
            assert newest_of_day[utc_day(d.entry)] is d.entry, d.reason


@settings(deadline=None, max_examples=300)
@given(
    nows,
    raw_histories,
    uncapped_policies,
    st.fixed_dictionaries({name: st.integers(min_value=0, max_value=20) for name in period_fields}),
)
def test_longer_periods_keep_a_superset(now, raw, shorter, extra):
    backups = build(now, raw)
    longer = CalendarPolicy(**{name: getattr(shorter, name) + extra[name] for name in period_fields})
    kept_short = {b.name for b in plan_calendar(backups, shorter, now).keep}
    kept_long = {b.name for b in plan_calendar(backups, longer, now).keep}
    assert kept_short <= kept_long


@settings(deadline=None)
@given(nows, raw_histories, uncapped_policies, st.integers(min_value=0, max_value=120))
def test_size_cap_holds_unless_only_protected_backups_remain(now, raw, periods, percent):
    backups = build(now, raw)
    uncapped = plan_calendar(backups, periods, now)
    cap = max(1, sum(b.size_bytes for b in uncapped.keep) * percent // 100)  # somewhere around what is kept
    capped = CalendarPolicy(**{name: getattr(periods, name) for name in period_fields}, max_total_bytes=cap)
    plan = plan_calendar(backups, capped, now)
    kept_total = sum(b.size_bytes for b in plan.keep)
    if kept_total > cap:
        assert all(protected(b, backups, now) for b in plan.keep)

    # The cap only turns keeps into deletes; every other decision is the same as without it.
    cap_deleted = [d.entry for d in plan.decisions if is_cap_reason(d.reason)]
    assert all(not d.keep for d in plan.decisions if is_cap_reason(d.reason))
    assert [d for d in plan.decisions if not is_cap_reason(d.reason)] == [
        d for d in uncapped.decisions if d.entry not in cap_deleted
    ]
    if cap_deleted:
        assert sum(b.size_bytes for b in uncapped.keep) > cap
        # Oldest first: every cap deletion is older than every backup the cap could still have taken.
        exposed = [b for b in plan.keep if not protected(b, backups, now)]
        if exposed:
            assert max(b.taken_at for b in cap_deleted) <= min(b.taken_at for b in exposed)
        # And it stops as soon as it is under: the last one it took was needed.
        last = max(cap_deleted, key=lambda b: (b.taken_at, b.name))
        assert kept_total + last.size_bytes > cap
        assert kept_total <= cap or all(protected(b, backups, now) for b in plan.keep)
