"""Naming rules: tenant ids, database names, backup names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenancy.errors import InvalidInput
from tenancy.naming import (
    backup_name,
    database_name,
    parse_backup_name,
    partial_name,
    validate_tenant_id,
    workflow_id,
)

ids = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?", fullmatch=True)


@pytest.mark.parametrize("good", ["acme", "mi-empresa", "a", "x1", "a" * 40])
def test_valid_ids(good):
    assert validate_tenant_id(good) == good


@pytest.mark.parametrize(
    "bad", ["", "Acme", "acme;drop", "a'b", "-acme", "acme-", "a b", "../x", "a/b", "a" * 41, "ñandú", "a_b"]
)
def test_invalid_ids_are_refused(bad):
    with pytest.raises(InvalidInput, match="invalid tenant id"):
        validate_tenant_id(bad)


def test_backup_name_follows_the_original_layout_in_utc():
    taken = datetime(2026, 1, 15, 3, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    assert backup_name("acme", taken, "gzip") == "tenant_acme_2026-01-15_02-00-00.dump"
    assert backup_name("acme", taken, "zstd") == "tenant_acme_2026-01-15_02-00-00.dump.zst"


@given(
    ids, st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1)), st.sampled_from(["gzip", "zstd"])
)
def test_backup_names_round_trip(tenant_id, taken, compression):
    taken = taken.replace(microsecond=0, tzinfo=UTC)
    name = backup_name(tenant_id, taken, compression)
    assert parse_backup_name(tenant_id, name) == taken


@pytest.mark.parametrize(
    "name",
    [
        "../tenant_acme_2026-01-15_02-00-00.dump",
        "tenant_acme_2026-01-15_02-00-00.dump/../../etc/passwd",
        "tenant_other_2026-01-15_02-00-00.dump",
        "tenant_acme_2026-01-15_02-00-00.sql",
        ".tenant_acme_2026-01-15_02-00-00.dump.partial",
        "tenant_acme_2026-01-15_02-00-00.dump.json",
    ],
)
def test_only_this_tenants_backup_names_parse(name):
    with pytest.raises(InvalidInput):
        parse_backup_name("acme", name)


def test_partial_names_are_hidden_and_never_backups():
    name = "tenant_acme_2026-01-15_02-00-00.dump"
    assert partial_name(name).startswith(".") and partial_name(name).endswith(".partial")


def test_database_name_fits_postgres_limit():
    assert database_name("tenant_", "acme") == "tenant_acme"
    with pytest.raises(InvalidInput, match="63 bytes"):
        database_name("p" * 30, "a" * 40)


def test_workflow_ids_say_operation_tenant_and_time():
    at = datetime(2026, 1, 15, 2, 0, 0, 123000, tzinfo=UTC)
    assert workflow_id("backup", "acme", at) == "backup-acme-20260115T020000123Z"
    assert workflow_id("backup-all", None, at) == "backup-all-20260115T020000123Z"
