"""Messages to people and systems: the welcome e-mail (SMTP) and signed event webhooks."""

from __future__ import annotations

import asyncio
import json
import smtplib
import urllib.error
import urllib.request
from email.message import EmailMessage

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.infra.catalog import Catalog
from tenancy.contracts.provision import WelcomeMail
from tenancy.contracts.tenants import DeliverEventInput
from tenancy.log import get_logger
from tenancy.settings import Settings
from tenancy.webhooks import signed_headers


class NotifyActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalog = Catalog(settings)

    @activity.defn
    async def send_welcome_email(self, mail: WelcomeMail) -> bool:
        """False when no SMTP server is configured; an unreachable server is retried by Temporal."""
        log = get_logger("activities.notify", tenant_id=mail.tenant_id, workflow_id=activity.info().workflow_id)
        smtp_host = self.settings.smtp_host
        if not smtp_host:
            log.info("no SMTP server configured: welcome mail not sent")
            return False
        message = EmailMessage()
        message["From"] = self.settings.mail_from
        message["To"] = mail.owner_email
        message["Subject"] = f"Welcome to {mail.tenant_name}"
        message.set_content(
            f"Hello,\n\nyour space {mail.tenant_name!r} (id {mail.tenant_id}) is ready.\n\n— tenant-lifecycle\n"
        )

        def send() -> None:
            with smtplib.SMTP(smtp_host, self.settings.smtp_port, timeout=10) as smtp:
                smtp.send_message(message)

        await asyncio.to_thread(send)
        log.info("welcome mail sent", to=mail.owner_email)
        return True

    @activity.defn
    async def deliver_event(self, req: DeliverEventInput) -> int | None:
        """POST one catalog event to the webhook, signed with the time of sending (tenancy/webhooks.py: receivers
        reject deliveries older than five minutes); at-least-once (receivers de-duplicate by `id`).
        Returns the HTTP status, or None when no webhook is configured."""
        if not self.settings.webhook_url:
            return None
        event = await self.catalog.event(req.event_id)
        if event is None:
            raise ApplicationError(f"event {req.event_id} does not exist", non_retryable=True)
        body = json.dumps(
            {
                "id": event["id"],
                "type": event["type"],
                "tenant_id": event["tenant_id"],
                "data": event["data"],
                "workflow_id": event["workflow_id"],
                "created_at": event["created_at"].isoformat(),
            },
            sort_keys=True,
        ).encode()
        headers = {"Content-Type": "application/json", "X-Tenants-Event-Id": str(event["id"])}
        if self.settings.webhook_secret:
            # Signed at each attempt, with its own time: a retry hours later is still fresh to the receiver.
            headers |= signed_headers(self.settings.webhook_secret, body)
        request = urllib.request.Request(self.settings.webhook_url, data=body, headers=headers, method="POST")

        def post() -> int:
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status
            except urllib.error.HTTPError as exc:
                return exc.code

        status = await asyncio.to_thread(post)
        if status >= 300:
            raise ApplicationError(f"webhook answered HTTP {status}", type="WebhookRejected")
        return status
