"""What long activities heartbeat: the progress `tenants` shows while a run goes on, and where a retried attempt
of the activity resumes. One model for both sides (activities.heartbeat writes it, starter.progress reads it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator


class HeartbeatDetails(BaseModel):
    """Each activity sets only the fields it has; the others stay None and are not sent."""

    model_config = ConfigDict(extra="ignore")

    # Progress, shown by `tenants` (starter.progress).
    backup_name: str | None = None  # dump: the archive being written (a retried attempt removes what it left)
    bytes_written: int | None = None  # dump
    bytes_read: int | None = None  # verify_backup, select_backup
    tables_restored: int | None = None  # restore_to_scratch
    bytes_unpacked: int | None = None  # restore_to_scratch
    checked: int | None = None  # sweep: items looked at
    removed: int | None = None  # sweep: items removed

    # Where a retried attempt goes on (maintenance).
    batches: int | None = None  # cleanup: DELETE batches so far
    next_block: dict[str, dict[str, int]] | None = None  # cleanup: per rule, per heap, the next block to delete in
    longest_batch_ms: float | None = None  # cleanup
    after: list[Any] | None = None  # table by table: the order (Table.order) of the last table done
    tables: int | None = None  # table by table: tables done
    timed_out: dict[str, str] | None = None  # table by table: table → why it was left
    dead_before: int | None = None  # vacuum: dead tuples before the first attempt began
    erased: list[str] | None = None  # erasure: the backups it deletes (a retry reports those of earlier attempts)
    readable_elsewhere: list[str] | None = None  # erasure: those not encrypted to the tenant's key

    @field_validator("next_block", mode="before")
    @classmethod
    def _per_heap_only(cls, value: Any) -> Any:
        # Details of an older shape (one block per table) are not trusted: starting a heap again is only slower.
        if isinstance(value, dict):
            return {rule: heaps for rule, heaps in value.items() if isinstance(heaps, dict)}
        return value

    def to_heartbeat(self) -> dict[str, Any]:
        """As heartbeated: a plain dict of the fields set. Nulls are left out so workers of the previous release,
        which read these dicts with `.get(key, default)` during a rolling upgrade, find what they expect."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_heartbeat(cls, values: Sequence[Any] | None) -> HeartbeatDetails:
        """The details of a heartbeat as decoded (a dict, from any release), or empty ones when there are none or
        they cannot be read: a retried attempt then starts from the beginning, which is only slower."""
        first = values[0] if values else None
        if isinstance(first, cls):
            return first
        if isinstance(first, dict):
            try:
                return cls.model_validate(first)
            except ValidationError:
                pass
        return cls()
