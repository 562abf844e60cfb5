"""The bounds of every input, pure: what they accept never overflows what a run computes from it, and every
whole-number field of every run's input is bounded (a new field without a bound fails here)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from temporalio.api.common.v1 import RetryPolicy as RetryPolicyProto
from temporalio.common import RetryPolicy

from tenancy import bounds
from tenancy.contracts.backup import BackupTenantInput
from tenancy.contracts.fleet import DrillFleetInput, FleetBackupInput, FleetInput, FleetMaintenanceInput, PruneInput
from tenancy.contracts.maintenance import MaintainTenantInput
from tenancy.contracts.restore import RestoreTenantInput
from tenancy.errors import InvalidInput
from tenancy.maintenance import MAX_DAYS
from tenancy.retention import MAX_KEEP

# Every run input with numbers, and the check its workflow runs first.
CHECKS = [
    (BackupTenantInput(tenant_id="acme"), bounds.validate_backup),
    (FleetBackupInput(), bounds.validate_backup),
    (RestoreTenantInput(tenant_id="acme"), bounds.validate_restore),
    (MaintainTenantInput(tenant_id="acme", tasks=["cleanup"]), bounds.validate_maintenance),
    (FleetMaintenanceInput(tasks=["cleanup"]), bounds.validate_maintenance),
    (FleetInput(), bounds.validate_fleet),
    (PruneInput(tenant_id="acme"), lambda req: bounds.validate_prune(req, fleet=False)),
    (PruneInput(), lambda req: bounds.validate_prune(req, fleet=True)),
    (DrillFleetInput(), bounds.validate_drill_fleet),
]
WHOLE_FIELDS = [
    (req, check, name)
    for req, check in CHECKS
    for name, value in req.model_dump().items()
    if isinstance(value, int) and not isinstance(value, bool)
]
# The latest "now" a run is expected to see: far enough for the property to mean something, short of year 9999.
LATE = datetime(2200, 1, 1, tzinfo=UTC)
EARLY = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("req", "check"), CHECKS, ids=lambda v: type(v).__name__ if hasattr(v, "model_dump") else "")
def test_the_defaults_are_within_bounds(req, check):
    check(req)


@pytest.mark.parametrize(("req", "check", "name"), WHOLE_FIELDS, ids=lambda v: v if isinstance(v, str) else "")
@given(huge=st.integers(min_value=10**8, max_value=10**30), negative=st.integers(max_value=-1))
def test_every_whole_number_of_every_input_is_bounded_both_ways(req, check, name, huge, negative):
    for value in (huge, negative):
        with pytest.raises(InvalidInput) as raised:
            check(req.model_copy(update={name: value}))
        message = str(raised.value)
        assert "\n" not in message and str(value) in message  # one line that shows what was wrong


@given(st.integers(min_value=-(10**12), max_value=10**12), st.integers(-100, 100), st.integers(-100, 100))
def test_whole_accepts_exactly_the_range(value, low, width):
    high = low + abs(width)
    if low <= value <= high:
        assert bounds.whole("--n", value, low, high) == value
    else:
        with pytest.raises(InvalidInput, match=rf"--n must be a whole number from {low} to {high} \(got {value}\)"):
            bounds.whole("--n", value, low, high)


@pytest.mark.parametrize("value", [True, 2.0, "3", None])
def test_only_whole_numbers_pass(value):
    with pytest.raises(InvalidInput):
        bounds.whole("--n", value, 0, 10)


@given(
    days=st.integers(min_value=1, max_value=MAX_DAYS),
    now=st.datetimes(EARLY.replace(tzinfo=None), LATE.replace(tzinfo=None)),
)
def test_a_cleanup_cutoff_never_overflows(days, now):
    bounds.validate_maintenance(MaintainTenantInput(tenant_id="acme", tasks=["cleanup"], days=days))
    assert now.replace(tzinfo=UTC) - timedelta(days=days) < now.replace(tzinfo=UTC)


@given(
    seconds=st.integers(0, bounds.MAX_KEEP_PREVIOUS_SECONDS),
    now=st.datetimes(EARLY.replace(tzinfo=None), LATE.replace(tzinfo=None)),
)
def test_keeping_the_previous_database_never_overflows(seconds, now):
    bounds.validate_restore(RestoreTenantInput(tenant_id="acme", keep_previous_seconds=seconds))
    assert now.replace(tzinfo=UTC) + timedelta(seconds=seconds) >= now.replace(tzinfo=UTC)


@given(attempts=st.integers(*bounds.MAX_ATTEMPTS))
def test_every_accepted_attempt_count_fits_a_retry_policy(attempts):
    bounds.validate_maintenance(MaintainTenantInput(tenant_id="acme", tasks=["vacuum"], max_attempts=attempts))
    proto = RetryPolicyProto()
    RetryPolicy(maximum_attempts=attempts).apply_to_proto(proto)  # an int32 on the wire
    assert proto.maximum_attempts == attempts


@given(every=st.integers(*bounds.EVERY_WEEKS), week=st.integers(1, 53), crc=st.integers(0, 2**32 - 1))
def test_every_accepted_drill_rotation_can_pick_a_week(every, week, crc):
    bounds.validate_drill_fleet(DrillFleetInput(every_weeks=every))
    assert 0 <= (crc + week) % every < every


def test_the_limits_users_hit():
    with pytest.raises(InvalidInput, match="--days must be a whole number from 1 to 36500"):
        bounds.validate_maintenance(MaintainTenantInput(tenant_id="acme", tasks=["vacuum"], days=36501))
    with pytest.raises(InvalidInput, match=r"--keep-previous \(seconds\) must be a whole number from 0 to 31622400"):
        bounds.validate_restore(RestoreTenantInput(tenant_id="acme", keep_previous_seconds=366 * 86400 + 1))
    bounds.validate_restore(RestoreTenantInput(tenant_id="acme", keep_previous_seconds=366 * 86400))
    with pytest.raises(InvalidInput, match="--wait-lock must be a whole number from 0 to 86400"):
        bounds.validate_backup(BackupTenantInput(tenant_id="acme", lock_wait_seconds=86401))
    with pytest.raises(InvalidInput, match=f"--keep must be a whole number of at least 1 and at most {MAX_KEEP}"):
        bounds.validate_backup(FleetBackupInput(keep=MAX_KEEP + 1))
    bounds.validate_backup(FleetBackupInput(keep=MAX_KEEP))
    with pytest.raises(InvalidInput, match="--concurrency must be a whole number from 1 to 64"):
        bounds.validate_fleet(FleetInput(concurrency=0))  # a semaphore of 0 would wait forever
    with pytest.raises(InvalidInput, match="page_size must be a whole number from 1 to 1000"):
        bounds.validate_fleet(FleetInput(page_size=0))
    with pytest.raises(InvalidInput, match="--every-weeks must be a whole number from 1 to 52"):
        bounds.validate_drill_fleet(DrillFleetInput(every_weeks=0))  # would divide by zero
    with pytest.raises(InvalidInput, match="--jobs must be a whole number from 1 to 32"):
        bounds.validate_restore(RestoreTenantInput(tenant_id="acme", jobs=33))


@pytest.mark.parametrize(("compression", "top"), [("gzip", 9), ("zstd", 22), ("none", 22)])
def test_compression_levels(compression, top):
    for level in range(top + 1):
        bounds.validate_backup(BackupTenantInput(tenant_id="acme", compression=compression, compression_level=level))
    with pytest.raises(InvalidInput, match=f"--level for {compression} must be a whole number from 0 to {top}"):
        bounds.validate_backup(BackupTenantInput(tenant_id="acme", compression=compression, compression_level=top + 1))


def test_a_restore_takes_a_name_or_a_time_and_a_prune_of_one_tenant_its_id():
    with pytest.raises(InvalidInput, match="not both"):
        bounds.validate_restore(RestoreTenantInput(tenant_id="acme", backup_name="x", at=LATE))
    with pytest.raises(InvalidInput, match="its id is missing"):
        bounds.validate_prune(PruneInput(), fleet=False)


def test_maintenance_tasks_come_back_in_order_and_unknown_ones_are_refused():
    req = MaintainTenantInput(tenant_id="acme", tasks=["analyze", "backup", "vacuum"])
    assert bounds.validate_maintenance(req) == ["backup", "vacuum", "analyze"]
    with pytest.raises(InvalidInput, match="unknown maintenance task"):
        bounds.validate_maintenance(req.model_copy(update={"tasks": ["defrag"]}))
