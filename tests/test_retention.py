"""Retention is a pure decision: property tests over random backup histories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenancy.calendar_retention import CalendarEntry, CalendarPolicy
from tenancy.errors import InvalidInput
from tenancy.retention import BackupEntry, is_good_copy, plan_keep_newest, plan_retention

BASE = datetime(2026, 1, 1, tzinfo=UTC)

histories = st.lists(
    st.tuples(st.integers(min_value=0, max_value=10_000), st.booleans()), max_size=40, unique_by=lambda t: t[0]
).map(
    lambda items: [
        BackupEntry(name=f"b{minutes:05d}", taken_at=BASE + timedelta(minutes=minutes), verified=verified)
        for minutes, verified in items
    ]
)


@given(histories, st.integers(min_value=1, max_value=50))
def test_keeps_exactly_min_of_n_and_verified_count(backups, keep):
    plan = plan_keep_newest(backups, keep)
    verified = [b for b in backups if b.verified]
    assert len(plan.keep) == min(keep, len(verified))
    assert len(plan.keep) + len(plan.delete) + len(plan.untouched) == len(backups)


@given(histories, st.integers(min_value=1, max_value=50))
def test_never_deletes_the_newest_verified_backup(backups, keep):
    plan = plan_keep_newest(backups, keep)
    verified = [b for b in backups if b.verified]
    if verified:
        newest = max(verified, key=lambda b: b.taken_at)
        assert newest in plan.keep
        assert newest not in plan.delete


@given(histories, st.integers(min_value=1, max_value=50))
def test_deletes_only_verified_backups_older_than_every_kept_one(backups, keep):
    plan = plan_keep_newest(backups, keep)
    assert all(b.verified for b in plan.delete)
    if plan.delete:
        assert max(b.taken_at for b in plan.delete) < min(b.taken_at for b in plan.keep)


def test_unverified_backups_are_neither_counted_nor_deleted():
    good = [BackupEntry(f"g{i}", BASE + timedelta(days=i), True) for i in range(3)]
    bad = BackupEntry("broken", BASE + timedelta(days=10), False)
    plan = plan_keep_newest([*good, bad], keep=2)
    assert [b.name for b in plan.keep] == ["g2", "g1"]
    assert [b.name for b in plan.delete] == ["g0"]
    assert plan.untouched == [bad]


@pytest.mark.parametrize("keep", [0, -1, -10, True, 1.5, "3"])
def test_keep_below_one_or_not_a_whole_number_is_refused(keep):
    with pytest.raises(InvalidInput, match="--keep"):
        plan_keep_newest([], keep)  # type: ignore[arg-type]


# plan_retention: the one decision retention makes, over good copies, unproven copies, pins and unverified ones.

kinds = st.sampled_from(["good", "unproven", "drill_failed", "unverified", "pinned"])
mixed_histories = st.lists(
    st.tuples(st.integers(min_value=0, max_value=60 * 24 * 90), kinds), max_size=30, unique_by=lambda t: t[0]
).map(
    lambda items: [
        CalendarEntry(
            name=f"b{minutes:06d}",
            taken_at=BASE + timedelta(minutes=minutes),
            verified=kind != "unverified",
            size_bytes=1000,
            pinned=kind == "pinned",
            restorable=kind in ("good", "pinned", "drill_failed"),
            drill_failed=kind == "drill_failed",
        )
        for minutes, kind in items
    ]
)
policies = st.sampled_from(["keep", "calendar"])
NOW = BASE + timedelta(days=91)


def plan_of(backups, policy, keep):
    return plan_retention(backups, policy=policy, keep=keep, calendar=CalendarPolicy(), now=NOW)


@given(mixed_histories, policies, st.integers(min_value=1, max_value=10))
def test_the_newest_good_copy_is_never_deleted(backups, policy, keep):
    plan = plan_of(backups, policy, keep)
    good = [b for b in backups if is_good_copy(b)]
    if good:
        assert max(good, key=lambda b: b.taken_at) in plan.keep


@given(mixed_histories, st.integers(min_value=1, max_value=10))
def test_keep_n_keeps_exactly_n_good_copies_when_there_are_that_many(backups, keep):
    plan = plan_of(backups, "keep", keep)
    good = [b for b in backups if is_good_copy(b) and not b.pinned]
    assert len([b for b in plan.keep if is_good_copy(b) and not b.pinned]) == min(keep, len(good))


@given(mixed_histories, policies, st.integers(min_value=1, max_value=10))
def test_pinned_and_unverified_backups_are_never_deleted(backups, policy, keep):
    plan = plan_of(backups, policy, keep)
    assert not [b for b in plan.delete if b.pinned or not b.verified]


@given(mixed_histories, policies, st.integers(min_value=1, max_value=10))
def test_a_copy_not_proven_restorable_is_deleted_only_when_older_than_every_kept_good_copy(backups, policy, keep):
    plan = plan_of(backups, policy, keep)
    kept_good = [b.taken_at for b in plan.keep if is_good_copy(b) and not b.pinned]
    for entry in plan.delete:
        if not is_good_copy(entry):
            assert kept_good and entry.taken_at < min(kept_good)


def test_an_undecryptable_newest_backup_never_rotates_out_the_last_restorable_ones():
    """Encrypted backups verified by checksum only (the worker has no identity) are not copies that count."""
    restorable = [CalendarEntry(f"r{i}", BASE + timedelta(days=i), True, 100) for i in range(2)]
    unproven = [CalendarEntry(f"u{i}", BASE + timedelta(days=5 + i), True, 100, restorable=False) for i in range(6)]
    plan = plan_retention([*restorable, *unproven], policy="keep", keep=2)
    assert {b.name for b in plan.keep} == {"r0", "r1", *(u.name for u in unproven)}
    assert plan.delete == []
    reasons = {d.entry.name: d.reason for d in plan.decisions}
    assert "not proven restorable" in reasons["u5"]
