"""What a fleet run carries across continue-as-new: counters and the first failures, bounded whatever the fleet."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tenancy.contracts.fleet import FAILURES_CARRIED, FleetCursor, TenantOutcome

KINDS = st.sampled_from(["ok", "failed", "skipped"])


def outcome(i: int, kind: str) -> TenantOutcome:
    return TenantOutcome(
        tenant_id=f"t{i:05d}",
        ok=kind != "failed",
        skipped=kind == "skipped",
        workflow_id=f"backup-t{i:05d}@fleet",
        error="boom" if kind == "failed" else None,
    )


@given(st.lists(KINDS, max_size=400))
def test_counters_add_up_and_the_first_failures_are_kept_in_full(kinds):
    cursor = FleetCursor.model_validate({"started_at": "2026-11-29T03:00:00Z"})
    outcomes = [outcome(i, k) for i, k in enumerate(kinds)]
    for o in outcomes:
        cursor.count(o)
    failed = [o for o in outcomes if not o.ok]
    assert cursor.total == len(outcomes) == cursor.succeeded + cursor.failed + cursor.skipped
    assert cursor.failed == len(failed)
    assert cursor.skipped == kinds.count("skipped")
    assert cursor.failures == failed[:FAILURES_CARRIED]
    assert cursor.failures_not_shown == max(0, len(failed) - FAILURES_CARRIED)

    result = cursor.summary("fleet")
    assert (result.total, result.failed, result.skipped) == (cursor.total, cursor.failed, cursor.skipped)
    assert result.outcomes == failed[:FAILURES_CARRIED] and result.workflow_id == "fleet"


def test_ten_thousand_failures_stay_a_small_payload():
    cursor = FleetCursor.model_validate({"started_at": "2026-11-29T03:00:00Z"})
    for i in range(10_000):
        cursor.count(outcome(i, "failed"))
    payload = cursor.summary("fleet").model_dump_json()
    assert cursor.failed == 10_000 and cursor.failures_not_shown == 10_000 - FAILURES_CARRIED
    assert len(payload) < 64 * 1024, len(payload)
