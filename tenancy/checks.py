"""Checks of a restored copy (`--check`, TENANTS_RESTORE_CHECKS, a drill's checks): each is one SQL statement that
returns true. The guarantee is the server's: checks are sent with the extended query protocol, which refuses a string
of two statements, in a READ ONLY transaction of the tenant's role with a statement timeout
(RestoreActivities.verify_restored). This only refuses, early and with a clear line, what is plainly not one
statement. Pure.
"""

from __future__ import annotations

import re

from tenancy.errors import InvalidInput

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_IDENTIFIER_CHAR = re.compile(r"[A-Za-z0-9_$]")


def _skip_quoted(text: str, at: int, quote: str, backslashes: bool) -> int:
    """The index just past the literal or quoted identifier opening at `at`; len(text) when unterminated."""
    i = at + 1
    while i < len(text):
        if backslashes and text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            if i + 1 < len(text) and text[i + 1] == quote:  # '' or "" inside
                i += 2
                continue
            return i + 1
        i += 1
    return len(text)


def _skip_block_comment(text: str, at: int) -> int:
    depth, i = 0, at
    while i < len(text):
        if text.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    return len(text)


def _dollar_quote_at(text: str, i: int) -> re.Match[str] | None:
    """The opening tag of a dollar-quoted string at `i` ($$ or $tag$; not $1, nor a $ inside a name)."""
    if text[i] != "$" or (i > 0 and _IDENTIFIER_CHAR.match(text[i - 1])):
        return None
    return _DOLLAR_TAG.match(text, i)


def statement_ends(text: str) -> list[int]:
    """Where statements end (the index of each `;` outside literals, quoted names, comments and dollar quotes)."""
    ends, i = [], 0
    while i < len(text):
        char = text[i]
        if char == "'":
            escaped = i > 0 and text[i - 1] in "eE" and (i < 2 or not _IDENTIFIER_CHAR.match(text[i - 2]))
            i = _skip_quoted(text, i, "'", escaped)
        elif char == '"':
            i = _skip_quoted(text, i, '"', False)
        elif text.startswith("--", i):
            newline = text.find("\n", i)
            i = len(text) if newline < 0 else newline + 1
        elif text.startswith("/*", i):
            i = _skip_block_comment(text, i)
        elif (tag := _dollar_quote_at(text, i)) is not None:
            close = text.find(tag.group(0), tag.end())
            i = len(text) if close < 0 else close + len(tag.group(0))
        elif char == ";":
            ends.append(i)
            i += 1
        else:
            i += 1
    return ends


def _is_blank(text: str) -> bool:
    """Only whitespace, comments and semicolons."""
    rest = re.sub(r"--[^\n]*", " ", text)
    rest = re.sub(r"/\*.*?\*/", " ", rest, flags=re.DOTALL)
    return not rest.replace(";", " ").strip()


def validate_check(check: str) -> None:
    """InvalidInput for an empty check or one of plainly more than one statement (a `;` with more SQL after it)."""
    if _is_blank(check):
        raise InvalidInput(f"check {check!r} is empty: each check is one SQL statement that returns true")
    ends = statement_ends(check)
    if ends and not _is_blank(check[ends[0] :]):
        raise InvalidInput(f"check {check!r} is not one statement: each check is one SQL statement that returns true")


def validate_checks(checks: list[str]) -> None:
    for check in checks:
        validate_check(check)
