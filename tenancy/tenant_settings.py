"""Validation of a tenant's own settings (time zone, language, feature flags). Pure."""

from __future__ import annotations

from typing import Any
from zoneinfo import available_timezones

from tenancy.errors import InvalidInput

LANGUAGES = {"en", "es", "pt", "fr", "de", "it", "nl", "ca", "ja", "zh"}
FEATURES = {"advanced_reports", "auto_tracking", "api_access", "sso", "audit_log", "invoicing"}
KEYS = {"timezone", "language", "features"}
_TIMEZONES: set[str] | None = None


def _timezones() -> set[str]:
    global _TIMEZONES
    if _TIMEZONES is None:
        _TIMEZONES = available_timezones()
    return _TIMEZONES


def parse_flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"on", "true", "yes", "1"}:
        return True
    if text in {"off", "false", "no", "0"}:
        return False
    raise InvalidInput(f"feature flags are on/off, not {value!r}")


def validate_settings(changes: dict[str, Any]) -> dict[str, Any]:
    """Return the normalised settings; InvalidInput naming the first bad key or value."""
    unknown = sorted(set(changes) - KEYS)
    if unknown:
        raise InvalidInput(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(KEYS))}")
    clean: dict[str, Any] = {}
    if "timezone" in changes:
        if changes["timezone"] not in _timezones():
            raise InvalidInput(f"{changes['timezone']!r} is not an IANA time zone (e.g. America/Mexico_City)")
        clean["timezone"] = changes["timezone"]
    if "language" in changes:
        if changes["language"] not in LANGUAGES:
            raise InvalidInput(f"language {changes['language']!r} is not one of {', '.join(sorted(LANGUAGES))}")
        clean["language"] = changes["language"]
    if "features" in changes:
        features = changes["features"]
        if not isinstance(features, dict):
            raise InvalidInput("features must be a mapping of feature name to on/off")
        bad = sorted(set(features) - FEATURES)
        if bad:
            raise InvalidInput(f"unknown feature(s) {', '.join(bad)}; known: {', '.join(sorted(FEATURES))}")
        clean["features"] = {name: parse_flag(value) for name, value in features.items()}
    return clean


def merge_settings(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = {**current, **{k: v for k, v in changes.items() if k != "features"}}
    if "features" in changes:
        merged["features"] = {**current.get("features", {}), **changes["features"]}
    return merged
