"""Event webhooks resist replay: a delivery is signed with its time of sending, and the receiver's check the README
documents (tenancy.webhooks.verify_webhook) accepts it fresh and refuses it replayed later or altered."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid

import pytest
from temporalio.testing import ActivityEnvironment

from activities.notify import NotifyActivities
from tenancy.contracts.tenants import DeliverEventInput
from tenancy.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, signed_headers, verify_webhook
from tests.servers import WebhookReceiver

SECRET = "whsec-test"
SIX_MINUTES = 6 * 60


@pytest.mark.one_server  # HTTP and a catalog row: nothing of the PostgreSQL version
async def test_a_delivery_verifies_fresh_and_is_refused_replayed_or_altered(settings, catalog):
    tenant_id = f"wh-{uuid.uuid4().hex[:8]}"
    event_id = await catalog.record_event(tenant_id, "TenantSuspended", {"reason": "unpaid"}, "status-x")
    try:
        with WebhookReceiver() as hook:
            delivering = settings.model_copy(update={"webhook_url": hook.url, "webhook_secret": SECRET})
            activities = NotifyActivities(delivering)
            before = time.time()
            status = await ActivityEnvironment().run(activities.deliver_event, DeliverEventInput(event_id=event_id))
            after = time.time()
        assert status == 200
        headers, body = hook.received[0]
        assert json.loads(body)["id"] == event_id
        assert int(before) <= int(headers[TIMESTAMP_HEADER]) <= after  # when it was sent, not when it happened

        assert verify_webhook(SECRET, headers, body)
        # The same delivery, captured and sent again six minutes later: too old.
        assert not verify_webhook(SECRET, headers, body, now=time.time() + SIX_MINUTES)
        # A body or a timestamp changed on the way (a fresh timestamp on a captured body): the signature fails.
        assert not verify_webhook(SECRET, headers, body.replace(b"unpaid", b"paid"))
        restamped = {**headers, TIMESTAMP_HEADER: str(int(headers[TIMESTAMP_HEADER]) + 60)}
        assert not verify_webhook(SECRET, restamped, body, now=time.time() + 60)
        assert not verify_webhook("another-secret", headers, body)
    finally:
        await catalog.drop_tenant(tenant_id)


def test_the_verifier_refuses_what_is_not_a_fresh_signed_delivery():
    body = b'{"id": 1}'
    now = 1_760_000_000
    headers = signed_headers(SECRET, body, now=now)
    assert verify_webhook(SECRET, headers, body, now=now)
    # Header names in any case (HTTP servers differ), and clocks a little apart either way.
    assert verify_webhook(SECRET, {k.lower(): v for k, v in headers.items()}, body, now=now + 299)
    assert verify_webhook(SECRET, headers, body, now=now - 299)
    assert not verify_webhook(SECRET, headers, body, now=now + 301)
    assert not verify_webhook(SECRET, headers, body, now=now - 301)  # from the future
    assert verify_webhook(SECRET, headers, body, now=now + 600, tolerance=900)
    # Missing or malformed headers.
    assert not verify_webhook(SECRET, {SIGNATURE_HEADER: headers[SIGNATURE_HEADER]}, body, now=now)
    assert not verify_webhook(SECRET, {TIMESTAMP_HEADER: headers[TIMESTAMP_HEADER]}, body, now=now)
    assert not verify_webhook(SECRET, {**headers, TIMESTAMP_HEADER: "-5"}, body, now=now)
    assert not verify_webhook(SECRET, {**headers, TIMESTAMP_HEADER: "1.76e9"}, body, now=now)
    # Absurdly long timestamps are refused, not raised on (int() fails on thousands of digits).
    assert not verify_webhook(SECRET, {**headers, TIMESTAMP_HEADER: "9" * 400}, body, now=now)
    assert not verify_webhook(SECRET, {**headers, TIMESTAMP_HEADER: "1" * 5000}, body, now=now)
    # The old scheme (the body alone, no timestamp) does not pass.
    body_only = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert not verify_webhook(SECRET, {**headers, SIGNATURE_HEADER: body_only}, body, now=now)
