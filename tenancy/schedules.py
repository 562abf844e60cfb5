"""Declared schedules: read, checked and turned into a plain description. Pure (the file is read by the caller)."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from tenancy.errors import InvalidInput
from tenancy.maintenance import TASK_ORDER

WEEKDAYS = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"]  # Temporal: 0 = Sunday
# Each run must end before the next one is due: skip-or-buffer-one never piles runs up.
EXECUTION_TIMEOUT = {
    "hour": timedelta(minutes=55),
    "day": timedelta(hours=23),
    "week": timedelta(days=6),
    "month": timedelta(days=27),
}
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class ScheduleDeclaration(BaseModel):
    id: str
    description: str = ""
    workflow: Literal["backup-all", "maintenance-all", "health-check", "drill-all", "sweep"]
    every: Literal["hour", "day", "week", "month"]
    at: str  # "HH:MM", or "MM" when hourly
    on: str | int | None = None  # weekday (weekly) or day of the month (monthly)
    keep: int = Field(default=7, ge=1)
    compression: Literal["gzip", "zstd", "none"] | None = None
    tasks: list[str] = Field(default_factory=list)
    days: int = Field(default=180, ge=1)
    full: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> ScheduleDeclaration:
        if not _ID.fullmatch(self.id):
            raise ValueError("ids are lowercase letters, digits and hyphens")
        self.hour_minute()
        if self.every == "week" and str(self.on).lower() not in WEEKDAYS:
            raise ValueError(f"weekly schedules need on = one of {', '.join(WEEKDAYS)}")
        if self.every == "month" and not (isinstance(self.on, int) and 1 <= self.on <= 28):
            raise ValueError("monthly schedules need on = a day of the month from 1 to 28")
        if self.workflow == "maintenance-all" and (not self.tasks or set(self.tasks) - set(TASK_ORDER)):
            raise ValueError(f"maintenance schedules need tasks from {', '.join(TASK_ORDER)}")
        if self.full:
            raise ValueError("VACUUM FULL locks tables and is never run from a schedule")
        return self

    def hour_minute(self) -> tuple[int | None, int]:
        if self.every == "hour":
            if not re.fullmatch(r"\d{1,2}", self.at) or int(self.at) > 59:
                raise ValueError('hourly schedules give at = the minute, e.g. "17"')
            return None, int(self.at)
        match = re.fullmatch(r"(\d{1,2}):(\d{2})", self.at)
        if not match or int(match[1]) > 23 or int(match[2]) > 59:
            raise ValueError(f'at = "HH:MM", not {self.at!r}')
        return int(match[1]), int(match[2])

    def weekday(self) -> int:
        """A weekly schedule's day, as Temporal counts (0 = Sunday)."""
        if self.every != "week":
            raise ValueError(f"schedule {self.id} is not weekly")
        return WEEKDAYS.index(str(self.on).lower())

    def day_of_month(self) -> int:
        if self.every != "month" or not isinstance(self.on, int):
            raise ValueError(f"schedule {self.id} is not monthly")
        return self.on

    def when(self) -> str:
        hour, minute = self.hour_minute()
        if self.every == "hour":
            return f"every hour at :{minute:02d}"
        clock = f"{hour:02d}:{minute:02d}"
        if self.every == "day":
            return f"every day at {clock}"
        if self.every == "week":
            return f"every {str(self.on).capitalize()} at {clock}"
        return f"day {self.on} of every month at {clock}"

    @property
    def execution_timeout(self) -> timedelta:
        return EXECUTION_TIMEOUT[self.every]

    def fingerprint(self, timezone: str, task_queue: str, catchup: int, overlap: str) -> str:
        """Changes whenever anything that makes up the Temporal schedule changes."""
        body = json.dumps(
            [self.model_dump(mode="json"), timezone, task_queue, catchup, overlap], sort_keys=True
        ).encode()
        return hashlib.sha256(body).hexdigest()[:16]


def parse_schedules(text: str, source: str = "schedules file") -> list[ScheduleDeclaration]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{source}: {exc}") from None
    declared = data.get("schedules", {})
    if not isinstance(declared, dict):
        raise InvalidInput(f"{source}: expected [schedules.<id>] tables")
    out = []
    for schedule_id, body in declared.items():
        try:
            out.append(ScheduleDeclaration(id=schedule_id, **body))
        except (ValidationError, TypeError) as exc:
            first = (
                exc.errors()[0]["msg"].removeprefix("Value error, ") if isinstance(exc, ValidationError) else str(exc)
            )
            raise InvalidInput(f"{source}: schedule {schedule_id!r}: {first}") from None
    return out
