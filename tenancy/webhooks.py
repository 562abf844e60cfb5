"""Signed webhook deliveries, and the check a receiver makes (README, "Webhooks").

Every delivery carries `X-Tenants-Timestamp: <unix seconds>` (when this attempt was sent) and
`X-Tenants-Signature: sha256=<hex>`, the HMAC-SHA256, keyed with TENANTS_WEBHOOK_SECRET, of `"<timestamp>." + body`.
The timestamp is signed with the body, so a captured delivery cannot be sent again later with a fresh one: a
receiver rejects a delivery whose timestamp is more than five minutes from its own clock, and de-duplicates the
ones within that window by the event id (the body's `id`, also in `X-Tenants-Event-Id`).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

SIGNATURE_HEADER = "X-Tenants-Signature"
TIMESTAMP_HEADER = "X-Tenants-Timestamp"
# How far a delivery's timestamp may be from the receiver's clock, either way, in seconds.
TOLERANCE_SECONDS = 300
_SCHEME = "sha256="


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>`: the HMAC-SHA256 of `"<timestamp>." + body`."""
    signed = str(timestamp).encode() + b"." + body
    return _SCHEME + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The two headers that sign a delivery sent at `now` (unix seconds; the clock when None)."""
    timestamp = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> bool:
    """Whether a delivery is ours and fresh: its signature matches the body and timestamp, and the timestamp is
    within `tolerance` seconds of `now` (unix seconds; the clock when None). Header names in any case."""
    by_name = {name.lower(): value for name, value in headers.items()}
    stamp = by_name.get(TIMESTAMP_HEADER.lower(), "")
    claimed = by_name.get(SIGNATURE_HEADER.lower(), "")
    # Unix seconds have 10 digits until the year 2286: a longer value is refused before int() (which raises on
    # thousands of digits, and turns a huge one into an overflow when compared with a float clock).
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        return False
    timestamp = int(stamp)
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(claimed.encode(), signature(secret, timestamp, body).encode())
