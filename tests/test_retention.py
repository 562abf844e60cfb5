"""Retention is a pure decision: property tests over random backup histories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenancy.errors import InvalidInput
from tenancy.retention import BackupEntry, plan_keep_newest

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
