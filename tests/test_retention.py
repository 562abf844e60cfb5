"""Retention is a pure decision: properties of plan_retention, the one entry point production calls, over random
histories of good, unproven, failed-drill, unverified and pinned backups, under both policies.

The calendar rules themselves (days, ISO weeks, months, years, the size cap) are tested in test_calendar_retention.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tenancy.errors import InvalidInput
from tenancy.retention import CalendarEntry, CalendarPolicy, RetentionRefused, is_good_copy, plan_retention

BASE = datetime(2026, 1, 1, tzinfo=UTC)
NOW = BASE + timedelta(days=91)
NINETY_TWO_DAYS = 60 * 24 * 92  # a little past NOW: a backup stamped by a clock running ahead
DEFAULT_CALENDAR = CalendarPolicy()

entries = st.builds(
    lambda minutes, verified, restorable, drill_failed, pinned, size: CalendarEntry(
        name=f"b{minutes:06d}",
        taken_at=BASE + timedelta(minutes=minutes),
        verified=verified,
        size_bytes=size,
        pinned=pinned,
        restorable=restorable,
        drill_failed=drill_failed,
    ),
    st.integers(min_value=0, max_value=NINETY_TWO_DAYS),
    st.integers(min_value=0, max_value=4).map(lambda n: n != 0),  # verified, about four in five
    st.integers(min_value=0, max_value=3).map(lambda n: n != 0),  # restorable, about three in four
    st.integers(min_value=0, max_value=5).map(lambda n: n == 0),  # a failed drill, about one in six
    st.integers(min_value=0, max_value=7).map(lambda n: n == 0),  # pinned, about one in eight
    st.integers(min_value=0, max_value=1_000),
)
# One backup per minute at most: names and times are unique, as storage names them.
histories = st.lists(entries, max_size=30, unique_by=lambda b: b.taken_at)
calendar_policies = st.one_of(
    st.just(DEFAULT_CALENDAR),
    st.builds(
        CalendarPolicy,
        keep_all_days=st.integers(min_value=0, max_value=10),
        daily_days=st.integers(min_value=0, max_value=20),
        weekly_weeks=st.integers(min_value=0, max_value=8),
        monthly_months=st.integers(min_value=0, max_value=4),
        yearly_years=st.integers(min_value=0, max_value=2),
        max_total_bytes=st.one_of(st.none(), st.integers(min_value=1, max_value=20_000)),
    ),
)
keeps = st.integers(min_value=1, max_value=10)


@st.composite
def requests(draw):
    """A history and the arguments production passes: policy, keep and the calendar policy."""
    return draw(histories), draw(st.sampled_from(["keep", "calendar"])), draw(keeps), draw(calendar_policies)


def plan_of(backups, policy, keep, calendar=DEFAULT_CALENDAR, **kwargs):
    return plan_retention(backups, policy=policy, keep=keep, calendar=calendar, now=NOW, **kwargs)


def counted(b: CalendarEntry) -> bool:
    """A good copy the policy counts: pinned ones are kept anyway and count towards nothing."""
    return is_good_copy(b) and not b.pinned


def unproven(b: CalendarEntry) -> bool:
    return b.verified and not is_good_copy(b) and not b.pinned


def newest(backups):
    return max(backups, key=lambda b: (b.taken_at, b.name)) if backups else None


@settings(deadline=None)
@given(requests())
def test_every_backup_gets_one_decision_with_a_reason(request):
    backups, policy, keep, calendar = request
    plan = plan_of(backups, policy, keep, calendar)
    assert sorted(d.entry.name for d in plan.decisions) == sorted(b.name for b in backups)
    assert all(d.entry in backups and d.reason.strip() for d in plan.decisions)


@settings(deadline=None)
@given(requests())
def test_never_deletes_a_pinned_or_unverified_backup(request):
    backups, policy, keep, calendar = request
    plan = plan_of(backups, policy, keep, calendar)
    assert [b.name for b in plan.delete if b.pinned or not b.verified] == []


@settings(deadline=None)
@given(requests())
def test_always_keeps_the_newest_good_copy(request):
    backups, policy, keep, calendar = request
    plan = plan_of(backups, policy, keep, calendar)
    good = newest([b for b in backups if is_good_copy(b)])
    if good is not None:
        assert good in plan.keep


@settings(deadline=None)
@given(histories, keeps)
def test_keep_n_keeps_exactly_the_n_newest_good_copies(backups, keep):
    plan = plan_of(backups, "keep", keep)
    good = sorted((b for b in backups if counted(b)), key=lambda b: b.taken_at, reverse=True)
    kept_good = [b for b in plan.keep if counted(b)]
    assert len(kept_good) == min(keep, len(good))
    assert set(kept_good) == set(good[:keep])


@settings(deadline=None)
@given(requests())
def test_an_unproven_backup_is_kept_exactly_while_newer_than_the_oldest_kept_good_copy(request):
    backups, policy, keep, calendar = request
    plan = plan_of(backups, policy, keep, calendar)
    kept_good = [b.taken_at for b in plan.keep if counted(b)]
    for b in backups:
        if unproven(b):
            assert (b in plan.keep) == (not kept_good or b.taken_at > min(kept_good)), b


@settings(deadline=None)
@given(requests())
def test_must_keep_of_the_newest_verified_backup_never_refuses(request):
    backups, policy, keep, calendar = request
    # The backup just verified is the newest; it counts whether or not it is proven restorable yet.
    for candidate in (newest([b for b in backups if is_good_copy(b)]), newest([b for b in backups if b.verified])):
        if candidate is not None:
            plan = plan_of(backups, policy, keep, calendar, must_keep=candidate.name)
            assert candidate in plan.keep
            assert plan == plan_of(backups, policy, keep, calendar)


@settings(deadline=None)
@given(requests())
def test_must_keep_of_a_backup_the_plan_deletes_or_does_not_know_refuses(request):
    backups, policy, keep, calendar = request
    plan = plan_of(backups, policy, keep, calendar)
    for name in [*(b.name for b in plan.delete), "not-a-backup"]:
        with pytest.raises(RetentionRefused, match=f"the new backup '{name}' would not be among the kept ones"):
            plan_of(backups, policy, keep, calendar, must_keep=name)


@settings(deadline=None)
@given(requests(), st.randoms(use_true_random=False))
def test_the_same_input_gives_the_same_plan_whatever_its_order(request, rng):
    backups, policy, keep, calendar = request
    before = list(backups)
    plan = plan_of(backups, policy, keep, calendar)
    assert backups == before  # the input is not changed
    shuffled = list(backups)
    rng.shuffle(shuffled)
    assert plan_of(shuffled, policy, keep, calendar) == plan
    keys = [(d.entry.taken_at, d.entry.name) for d in plan.decisions]
    assert keys == sorted(keys, reverse=True)


def test_an_undecryptable_newest_backup_never_rotates_out_the_last_restorable_ones():
    """Encrypted backups verified by checksum only (the worker has no identity) are not copies that count."""
    restorable = [CalendarEntry(f"r{i}", BASE + timedelta(days=i), True, 100) for i in range(2)]
    unproven = [CalendarEntry(f"u{i}", BASE + timedelta(days=5 + i), True, 100, restorable=False) for i in range(6)]
    plan = plan_retention([*restorable, *unproven], policy="keep", keep=2, must_keep="u5")
    assert {b.name for b in plan.keep} == {"r0", "r1", *(u.name for u in unproven)}
    assert plan.delete == []
    reasons = {d.entry.name: d.reason for d in plan.decisions}
    assert "not proven restorable" in reasons["u5"]


def test_keep_n_with_pins_unverified_and_a_failed_drill():
    def backup(name, day, **flags):
        return CalendarEntry(name, BASE + timedelta(days=day), flags.pop("verified", True), 100, **flags)

    history = [
        backup("g0", 0),
        backup("pinned", 1, pinned=True),
        backup("g2", 2),
        backup("drill-failed", 3, drill_failed=True),
        backup("g4", 4),
        backup("broken", 5, verified=False),
    ]
    plan = plan_retention(history, policy="keep", keep=2)
    assert {d.entry.name: d.keep for d in plan.decisions} == {
        "broken": True,
        "g4": True,
        "drill-failed": True,  # newer than g2, the oldest good copy kept
        "g2": True,
        "pinned": True,
        "g0": False,
    }
    with pytest.raises(RetentionRefused):
        plan_retention(history, policy="keep", keep=2, must_keep="g0")


@pytest.mark.parametrize("keep", [0, -1, -10, True, 1.5, "3"])
def test_keep_below_one_or_not_a_whole_number_is_refused(keep):
    with pytest.raises(InvalidInput, match="--keep"):
        plan_retention([], policy="keep", keep=keep)  # type: ignore[arg-type]


def test_calendar_retention_without_a_policy_or_the_time_is_refused():
    with pytest.raises(InvalidInput, match="calendar retention needs"):
        plan_retention([], policy="calendar", keep=1)
