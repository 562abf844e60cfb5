"""Pure maintenance decisions: task order, days, the index bloat estimate, cleanup rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenancy.errors import InvalidInput
from tenancy.maintenance import CleanupRule, bloat_ratio, expected_btree_bytes, ordered_tasks, validate_days


def test_tasks_run_in_the_documented_order_whatever_order_they_are_asked_in():
    assert ordered_tasks(["analyze", "vacuum", "backup", "optimize", "cleanup"]) == [
        "backup",
        "cleanup",
        "vacuum",
        "optimize",
        "analyze",
    ]
    with pytest.raises(InvalidInput, match="unknown maintenance task"):
        ordered_tasks(["defrag"])
    with pytest.raises(InvalidInput, match="no maintenance task"):
        ordered_tasks([])


@pytest.mark.parametrize("days", [0, -1, True, 2.5])
def test_days_must_be_a_positive_whole_number(days):
    with pytest.raises(InvalidInput, match="--days"):
        validate_days(days)


def test_a_fresh_index_has_no_bloat_and_a_mostly_emptied_one_has_a_lot():
    fresh = expected_btree_bytes(100_000, 8)
    assert bloat_ratio(fresh, 100_000, 8) == 0
    # 90% of the rows deleted and vacuumed: the index keeps its pages.
    assert bloat_ratio(fresh, 10_000, 8) > 0.8


@given(st.integers(min_value=0, max_value=10**8), st.integers(min_value=1, max_value=500))
def test_expected_size_grows_with_rows_and_width(rows, width):
    assert expected_btree_bytes(rows + 1000, width) >= expected_btree_bytes(rows, width)
    assert expected_btree_bytes(rows, width + 64) >= expected_btree_bytes(rows, width)
    assert 0 <= bloat_ratio(expected_btree_bytes(rows, width) * 2, rows, width) <= 0.5 + 1e-9


@pytest.mark.parametrize("name", ["activity_log; DROP TABLE x", "public.a.b", "Log", "a-b", ""])
def test_cleanup_rules_take_plain_names_only(name):
    with pytest.raises(ValueError):
        CleanupRule(table=name, timestamp_column="created_at")
