"""Recorded histories (tests/histories/): append-only.

Each file is named `<WorkflowType>-<YYYYMMDD>--<workflow id>.json` (files recorded before that rule keep their
names, the workflow id): the replay takes the run's workflow id from the
name (fleet runs name their children after it). Every file's checksum is recorded: SHA256SUMS (frozen, the
histories before per-file sums), SHA256SUMS-5595325.sha256 (the sums of the files under their earlier names, kept
beside them) and, for each later history, a `<name>.sha256` beside it, so recording one adds files and changes
none. A recorded history is never changed or deleted (tests/test_replay.py fails if one is),
only new ones added, with TENANTS_RECORD_HISTORIES=1 (see docs/operations.md).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from temporalio.client import WorkflowHistory

HISTORIES = Path(__file__).parent / "histories"
SUMS = HISTORIES / "SHA256SUMS"
RECORD = os.environ.get("TENANTS_RECORD_HISTORIES") == "1"


def workflow_id_of(path: Path) -> str:
    """Histories recorded before the naming rule keep their names: the name was the workflow id."""
    return path.stem.split("--", 1)[1] if "--" in path.stem else path.stem


def recorded_sums() -> dict[str, str]:
    sums = {}
    for source in [SUMS, *sorted(HISTORIES.glob("*.sha256"))]:
        for line in source.read_text().splitlines():
            digest, name = line.split(maxsplit=1)
            sums[name] = digest
    return sums


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_history(history: WorkflowHistory, workflow_type: str) -> Path:
    """Add a history; never overwrites one (the same run recorded twice is refused)."""
    started = history.events[0].event_time.ToDatetime().strftime("%Y%m%d")
    path = HISTORIES / f"{workflow_type}-{started}--{history.workflow_id}.json"
    if path.exists():
        raise FileExistsError(f"{path.name} is already recorded: histories are never re-recorded")
    path.write_text(history.to_json())
    path.with_suffix(".sha256").write_text(f"{sha256_of(path)}  {path.name}\n")
    return path
