"""Health facts of every tenant (last verified backup, size against quota, last maintenance, failed runs) and
the delivery of alerts to the log, a webhook and e-mail."""

from __future__ import annotations

import asyncio
import json
import smtplib
import urllib.request
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import psycopg
from temporalio import activity
from temporalio.client import Client

from activities.infra.backup_facts import describe_backups, retention_entry
from activities.infra.catalog import Catalog
from activities.infra.storage import open_storage
from tenancy.contracts.health import Alert, HealthInput, HealthReport, TenantHealth
from tenancy.health import alerts_for
from tenancy.log import get_logger
from tenancy.retention import is_good_copy
from tenancy.search import TENANT_ID
from tenancy.settings import Settings


class HealthActivities:
    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.client = client
        self.catalog = Catalog(settings)
        self.storage = open_storage(settings)

    async def _failed_runs(self, window: timedelta) -> dict[str | None, list[str]]:
        """Runs that failed or timed out in the window, by tenant (None: fleet runs)."""
        since = (datetime.now(UTC) - window).strftime("%Y-%m-%dT%H:%M:%SZ")
        query = f"ExecutionStatus IN ('Failed', 'TimedOut') AND CloseTime > '{since}'"
        failed: dict[str | None, list[str]] = {}
        async for run in self.client.list_workflows(query, limit=1000):
            tenant = run.typed_search_attributes.get(TENANT_ID)
            failed.setdefault(tenant, []).append(f"{run.workflow_type} {run.id}")
        return failed

    @activity.defn
    async def check_health(self, req: HealthInput) -> HealthReport:
        now = datetime.now(UTC)
        tenants = [t for t in await self.catalog.list_tenants() if t.status not in ("deprovisioned", "failed")]
        with psycopg.connect(self.settings.effective_database_url) as conn:
            sizes = dict(conn.execute("SELECT datname, pg_database_size(datname) FROM pg_database").fetchall())
        failed = await self._failed_runs(timedelta(hours=req.failure_window_hours))
        rows, alerts = [], []
        age = activity.metric_meter().create_gauge_float(
            "tenants_backup_age_seconds", "Age of the newest verified backup", "s"
        )

        def hours_since(moment: datetime | None) -> float | None:
            return round((now - moment).total_seconds() / 3600, 1) if moment else None

        for tenant in tenants:
            backups = await describe_backups(self.storage, self.catalog, tenant.id)
            last = next((b for b in reversed(backups) if b.verified), None)
            good = next((b for b in reversed(backups) if is_good_copy(retention_entry(b))), None)
            plan = self.settings.plans.get(tenant.plan)
            row = TenantHealth(
                tenant_id=tenant.id,
                status=tenant.status,
                last_backup_at=last.taken_at if last else None,
                backup_age_hours=hours_since(last.taken_at if last else None),
                last_restorable_at=good.taken_at if good else None,
                restorable_age_hours=hours_since(good.taken_at if good else None),
                database_bytes=sizes.get(tenant.database_name),
                quota_bytes=plan.quota_mb * 2**20 if plan else None,
                last_maintenance_at=(tenant.last_maintenance or {}).get("at"),
                failed_runs=len(failed.get(tenant.id, [])),
                backup_bytes=self.storage.usage(tenant.id),
            )
            rows.append(row)
            if row.backup_age_hours is not None:
                age.with_additional_attributes({"tenant_id": tenant.id}).set(row.backup_age_hours * 3600)
            alerts += alerts_for(row, self.settings.backup_max_age_hours, self.settings.quota_alert_ratio)
            for run in failed.get(tenant.id, []):
                alerts.append(
                    Alert(kind="failed_run", tenant_id=tenant.id, message=f"tenant {tenant.id}: {run} failed")
                )
        for run in failed.get(None, []):
            alerts.append(Alert(kind="failed_run", tenant_id=None, message=f"{run} failed"))
        return HealthReport(
            checked_at=now,
            tenants=rows,
            alerts=alerts,
            storage=self.storage.location(),
            storage_used_bytes=self.storage.usage(),
            storage_free_bytes=self.storage.free_bytes(),
        )

    @activity.defn
    async def send_alerts(self, alerts: list[Alert]) -> list[str]:
        """Every alert goes to the log; to the alert webhook and e-mail address when they are set. Returns where
        they were sent."""
        log = get_logger("activities.health", workflow_id=activity.info().workflow_id)
        for alert in alerts:
            log.warning("alert", kind=alert.kind, tenant_id=alert.tenant_id, message=alert.message)
        sent = ["log"]
        if self.settings.alert_webhook_url:
            body = json.dumps({"alerts": [a.model_dump() for a in alerts]}).encode()
            request = urllib.request.Request(
                self.settings.alert_webhook_url, data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=10).close())
            sent.append("webhook")
        if self.settings.alert_email and self.settings.smtp_host:
            message = EmailMessage()
            message["From"] = self.settings.mail_from
            message["To"] = self.settings.alert_email
            message["Subject"] = f"tenant-lifecycle: {len(alerts)} alert(s)"
            message.set_content("\n".join(a.message for a in alerts))

            def send() -> None:
                with smtplib.SMTP(self.settings.smtp_host, self.settings.smtp_port, timeout=10) as smtp:
                    smtp.send_message(message)

            await asyncio.to_thread(send)
            sent.append("email")
        return sent
