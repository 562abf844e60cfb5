"""Which backup a restore uses: a pure decision."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tenancy.errors import InvalidInput


@dataclass(frozen=True)
class BackupEntry:
    """A backup as restore selection sees it: `verified` means a restore may use it."""

    name: str
    taken_at: datetime
    verified: bool


def choose_backup(backups: list[BackupEntry], at: datetime | None = None) -> BackupEntry:
    """The newest verified backup, or the newest verified one taken at or before `at`."""
    candidates = [b for b in backups if b.verified and (at is None or b.taken_at <= at)]
    if not candidates:
        if at is not None:
            raise InvalidInput(f"no verified backup taken at or before {at.isoformat()}")
        raise InvalidInput("no verified backup")
    return max(candidates, key=lambda b: (b.taken_at, b.name))
