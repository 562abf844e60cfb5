"""Maintenance policy, pure: cleanup rules, which tasks run in which order, and the index bloat estimate."""

from __future__ import annotations

import math
import re
from collections import Counter

from pydantic import BaseModel, field_validator, model_validator

from tenancy.errors import InvalidInput

# The order tasks run in when several are asked, whatever order they were given in.
TASK_ORDER = ["backup", "cleanup", "vacuum", "optimize", "analyze"]
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
# Where a rule's table is when it names no schema: where the tenant schema's migrations put their tables.
# (Maintenance sessions search pg_catalog only, so a table is always named with its schema.)
DEFAULT_SCHEMA = "public"
_DOLLAR_QUOTE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def _name_char(char: str) -> bool:
    """Whether `char` (one character, or "" before the start) can be part of a name."""
    return len(char) == 1 and (char.isalnum() or char in "_$")


def _after_quoted(text: str, start: int, quote: str, backslash_escapes: bool) -> int:
    """Index just past the quoted string or name opened at `start` (a doubled quote is one quote); -1 if it never
    closes."""
    i = start + 1
    while i < len(text):
        escaped = backslash_escapes and text[i] == "\\"
        if escaped or (text[i] == quote and text[i + 1 : i + 2] == quote):  # \x, or a doubled quote
            i += 2
        elif text[i] == quote:
            return i + 1
        else:
            i += 1
    return -1


def condition_problem(condition: str) -> str | None:
    """Why a cleanup rule's condition is not one SQL expression that can stand in `... AND (<condition>)`; None
    when it is. Strings, quoted names and dollar-quoted bodies are skipped; outside them there must be no `;` (a
    second statement), no comment (it would swallow what follows it) and no parenthesis closed that it did not
    open (`x) OR (true` would widen the DELETE to every row past the cutoff). PostgreSQL parses it afterwards at
    the worker's start (activities.maintenance.check_cleanup_rules)."""
    depth, i = 0, 0
    while i < len(condition):
        char = condition[i]
        if char in "'\"":
            # E'...' strings take backslash escapes; standard strings and quoted names do not.
            e_string = char == "'" and condition[i - 1 : i] in ("e", "E") and not _name_char(condition[i - 2 : i - 1])
            i = _after_quoted(condition, i, char, e_string)
            if i < 0:
                return "has a string or a quoted name that is never closed"
            continue
        dollar = _DOLLAR_QUOTE.match(condition, i) if char == "$" else None
        if dollar and not _name_char(condition[i - 1 : i]):
            end = condition.find(dollar.group(0), dollar.end())
            if end < 0:
                return "has a dollar-quoted string that is never closed"
            i = end + len(dollar.group(0))
            continue
        if condition.startswith(("--", "/*"), i):
            return "has a comment (-- or /*); write it without one"
        if char == ";":
            return "has a `;`: a condition is one expression, never a second statement"
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                return "closes a parenthesis it did not open"
        i += 1
    return "leaves a parenthesis open" if depth else None


class CleanupRule(BaseModel):
    """Delete rows of `table` whose `timestamp_column` is older than the cutoff (and `condition`, if any).
    Rules come from the worker's settings only (TENANTS_CLEANUP_RULES), never from a workflow's input."""

    table: str
    timestamp_column: str
    condition: str | None = None  # extra SQL condition, from the operator's configuration

    @field_validator("table", "timestamp_column")
    @classmethod
    def _identifier(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) > 2 or not all(_IDENT.fullmatch(p) for p in parts):
            raise ValueError(f"{value!r} is not a plain (schema.)name")
        return value

    @field_validator("condition")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value if value and value.strip() else None

    @model_validator(mode="after")
    def _one_expression(self) -> CleanupRule:
        problem = condition_problem(self.condition) if self.condition else None
        if problem:
            raise ValueError(f"cleanup rule on {self.table}: its condition {self.condition!r} {problem}")
        return self

    @property
    def qualified_table(self) -> tuple[str, str]:
        """(schema, table), the schema `public` when the rule names none."""
        schema, _, name = self.table.rpartition(".")
        return schema or DEFAULT_SCHEMA, name


DEFAULT_CLEANUP_RULES = [
    CleanupRule(table="activity_log", timestamp_column="happened_at"),
    CleanupRule(table="time_entries", timestamp_column="created_at"),
]


def ordered_tasks(asked: list[str]) -> list[str]:
    unknown = sorted(set(asked) - set(TASK_ORDER))
    if unknown:
        raise InvalidInput(f"unknown maintenance task(s) {', '.join(unknown)}")
    if not asked:
        raise InvalidInput("no maintenance task asked: give --backup, --cleanup, --vacuum, --optimize or --analyze")
    return [t for t in TASK_ORDER if t in asked]


# A hundred years: far beyond any retention, far below what a date can hold (a cutoff never overflows).
MAX_DAYS = 36500


def validate_days(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise InvalidInput(f"--days must be a whole number from 1 to {MAX_DAYS} (got {days!r})")
    return days


def rule_keys(rules: list[CleanupRule]) -> list[str]:
    """How each rule is named in counts and results: its table; when several rules name the same table, the
    table with the rule's own condition (and its place among identical ones), so no two rules share a count."""
    per_table = Counter(r.table for r in rules)
    keys = []
    for rule in rules:
        if per_table[rule.table] == 1:
            keys.append(rule.table)
        else:
            condition = f" and {rule.condition}" if rule.condition else ""
            keys.append(f"{rule.table} [{rule.timestamp_column} < cutoff{condition}]")
    seen: Counter[str] = Counter()
    unique = []
    for key in keys:
        seen[key] += 1
        unique.append(key if seen[key] == 1 else f"{key} #{seen[key]}")
    return unique


PAGE = 8192
PAGE_OVERHEAD = 24 + 16  # page header + btree special space
ITEM_OVERHEAD = 8 + 4  # index tuple header + line pointer
FILLFACTOR = 0.9


def expected_btree_bytes(live_tuples: float, key_width: float) -> int:
    """What a freshly built btree of this many keys of this average width would take."""
    tuple_bytes = ITEM_OVERHEAD + math.ceil(max(key_width, 1) / 8) * 8
    per_page = max(1, int((PAGE - PAGE_OVERHEAD) * FILLFACTOR // tuple_bytes))
    leaf_pages = math.ceil(max(live_tuples, 0) / per_page)
    internal = math.ceil(leaf_pages / per_page) if leaf_pages > 1 else 0
    return (1 + max(leaf_pages, 1) + internal) * PAGE  # + the metapage


def bloat_ratio(actual_bytes: int, live_tuples: float, key_width: float) -> float:
    """Share of the index that a rebuild would give back (0 when it is as small as a fresh one)."""
    if actual_bytes <= 0:
        return 0.0
    return max(0.0, 1.0 - expected_btree_bytes(live_tuples, key_width) / actual_bytes)
