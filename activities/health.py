"""Health facts of every tenant (last verified backup, size against quota, last maintenance, failed runs) and
the delivery of alerts to the log, a webhook and e-mail."""

from __future__ import annotations

import asyncio
import json
import smtplib
import urllib.request
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

from temporalio import activity
from temporalio.client import Client

from activities.heartbeat import Heartbeater
from activities.infra.backup_facts import describe_backups, retention_entry
from activities.infra.catalog import Catalog
from activities.infra.pg import connect
from activities.infra.servers import ServerUrls
from activities.infra.storage import open_storage
from tenancy.contracts.health import Alert, HealthInput, HealthReport, TenantHealth
from tenancy.contracts.tenants import Tenant
from tenancy.errors import failure_message
from tenancy.health import alerts_for
from tenancy.log import get_logger
from tenancy.messages.health import AlertBatch, FleetHealth, HealthPage, HealthPageRequest
from tenancy.retention import is_good_copy
from tenancy.search import TENANT_ID
from tenancy.settings import Settings

# Every tenant but the deprovisioned and the failed ones.
CHECKED_STATUSES = ["provisioning", "active", "inactive", "suspended"]
# Tenants of a page whose backups are listed at the same time (object storage: each listing is a few requests).
PARALLEL_TENANTS = 8
SERVER_CONNECT_SECONDS = 10


class HealthActivities:
    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.client = client
        self.catalog = Catalog(settings)
        self.storage = open_storage(settings)

    async def _failed_runs(self, window: timedelta, which: str) -> dict[str | None, list[str]]:
        """Runs that failed or timed out in the window (`which` narrows the query), by tenant (None: fleet runs)."""
        since = (datetime.now(UTC) - window).strftime("%Y-%m-%dT%H:%M:%SZ")
        query = f"ExecutionStatus IN ('Failed', 'TimedOut') AND CloseTime > '{since}'" + which
        failed: dict[str | None, list[str]] = {}
        async for run in self.client.list_workflows(query, limit=1000):
            tenant = run.typed_search_attributes.get(TENANT_ID)
            failed.setdefault(tenant, []).append(f"{run.workflow_type} {run.id}")
        return failed

    async def _database_sizes(self, tenants: list[Tenant]) -> tuple[dict[tuple[str, str], int], list[Alert]]:
        """Each tenant's database size, read on its own server: one connection per server, the servers at once.
        A server that cannot be reached (or that this worker has no URL for) leaves its tenants' sizes unknown and
        is an alert, not a failed check."""
        by_server: dict[str, list[str]] = {}
        for tenant in tenants:
            by_server.setdefault(tenant.server, []).append(tenant.database_name)
        urls = ServerUrls(self.settings)

        async def sizes_on(server: str, names: list[str]) -> dict[tuple[str, str], int]:
            # A server that does not answer holds up its tenants' sizes only, and not for long.
            conn = await asyncio.wait_for(connect(urls.url(server)), SERVER_CONNECT_SECONDS)
            async with conn:
                rows = await (
                    await conn.execute(
                        "SELECT datname, pg_database_size(datname) FROM pg_database WHERE datname = ANY(%s)", [names]
                    )
                ).fetchall()
            return {(server, name): size for name, size in rows}

        servers = sorted(by_server)
        results = await asyncio.gather(*(sizes_on(s, by_server[s]) for s in servers), return_exceptions=True)
        sizes: dict[tuple[str, str], int] = {}
        alerts = []
        for server, result in zip(servers, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # cancellation and the like are not a server's fault
                said = (failure_message(result).strip().splitlines() or [type(result).__name__])[0]
                alerts.append(
                    Alert(
                        kind="server_unreachable",
                        tenant_id=None,
                        message=f"server {server}: sizes of {len(by_server[server])} tenant database(s) not read: "
                        f"{said}",
                    )
                )
            else:
                sizes.update(result)
        return sizes, alerts

    async def _check(
        self, tenants: list[Tenant], failed: dict[str | None, list[str]]
    ) -> tuple[list[TenantHealth], list[Alert]]:
        """Each tenant's row and alerts; storage is read in threads, a few tenants at a time."""
        now = datetime.now(UTC)
        sizes, server_alerts = await self._database_sizes(tenants) if tenants else ({}, [])
        age = activity.metric_meter().create_gauge_float(
            "tenants_backup_age_seconds", "Age of the newest verified backup", "s"
        )
        gate = asyncio.Semaphore(PARALLEL_TENANTS)

        def hours_since(moment: datetime | None) -> float | None:
            return round((now - moment).total_seconds() / 3600, 1) if moment else None

        async def one(tenant: Tenant) -> TenantHealth:
            async with gate:
                backups = await describe_backups(self.storage, self.catalog, tenant.id)
                used = await asyncio.to_thread(self.storage.usage, tenant.id)
            last = next((b for b in reversed(backups) if b.verified), None)
            good = next((b for b in reversed(backups) if is_good_copy(retention_entry(b))), None)
            plan = self.settings.plans.get(tenant.plan)
            return TenantHealth(
                tenant_id=tenant.id,
                status=tenant.status,
                last_backup_at=last.taken_at if last else None,
                backup_age_hours=hours_since(last.taken_at if last else None),
                last_restorable_at=good.taken_at if good else None,
                restorable_age_hours=hours_since(good.taken_at if good else None),
                database_bytes=sizes.get((tenant.server, tenant.database_name)),
                quota_bytes=plan.quota_mb * 2**20 if plan else None,
                last_maintenance_at=(tenant.last_maintenance or {}).get("at"),
                failed_runs=len(failed.get(tenant.id, [])),
                backup_bytes=used,
                server=tenant.server,
            )

        rows = await asyncio.gather(*(one(t) for t in tenants))
        alerts: list[Alert] = list(server_alerts)
        for row in rows:
            if row.backup_age_hours is not None:
                age.with_additional_attributes({"tenant_id": row.tenant_id}).set(row.backup_age_hours * 3600)
            alerts += alerts_for(row, self.settings.backup_max_age_hours, self.settings.quota_alert_ratio)
            for run in failed.get(row.tenant_id, []):
                alerts.append(
                    Alert(kind="failed_run", tenant_id=row.tenant_id, message=f"tenant {row.tenant_id}: {run} failed")
                )
        return list(rows), alerts

    def _storage_facts(self) -> tuple[str, int, int | None]:
        """Where backups go, how much they take, what is free there: listings of the whole store, in a thread."""
        return self.storage.location(), self.storage.usage(), self.storage.free_bytes()

    @activity.defn
    async def check_health_page(self, req: HealthPageRequest) -> HealthPage:
        """One page of tenants (by id, after `req.after`): each one's row, and every alert about it."""
        async with Heartbeater():
            tenants = await self.catalog.tenants_page(req.after, req.limit, CHECKED_STATUSES)
            ids = ", ".join(f"'{t.id}'" for t in tenants)  # tenant ids are [a-z0-9-]: nothing to escape
            window = timedelta(hours=req.failure_window_hours)
            failed = await self._failed_runs(window, f" AND TenantId IN ({ids})") if tenants else {}
            rows, alerts = await self._check(tenants, failed)
        alerted = {a.tenant_id for a in alerts}
        return HealthPage(
            checked=len(tenants),
            last_tenant_id=tenants[-1].id if tenants else None,
            rows=[r for r in rows if r.tenant_id in alerted][: req.alerted_rows]
            + [r for r in rows if r.tenant_id not in alerted][: req.healthy_rows],
            alerts=alerts,
        )

    @activity.defn
    async def check_fleet_health(self, req: HealthInput) -> FleetHealth:
        """What is not any one tenant's: the backup storage, and fleet runs that failed."""
        async with Heartbeater():
            location, used, free = await asyncio.to_thread(self._storage_facts)
            failed = await self._failed_runs(timedelta(hours=req.failure_window_hours), " AND TenantId IS NULL")
        alerts = [Alert(kind="failed_run", tenant_id=None, message=f"{run} failed") for run in failed.get(None, [])]
        return FleetHealth(storage=location, storage_used_bytes=used, storage_free_bytes=free, alerts=alerts)

    @activity.defn
    async def check_health(self, req: HealthInput) -> HealthReport:
        """The whole fleet in one activity: what runs recorded before the health check went page by page call."""
        now = datetime.now(UTC)
        tenants = [t for t in await self.catalog.list_tenants() if t.status not in ("deprovisioned", "failed")]
        failed = await self._failed_runs(timedelta(hours=req.failure_window_hours), "")
        rows, alerts = await self._check(tenants, failed)
        for run in failed.get(None, []):
            alerts.append(Alert(kind="failed_run", tenant_id=None, message=f"{run} failed"))
        location, used, free = await asyncio.to_thread(self._storage_facts)
        return HealthReport(
            checked_at=now,
            tenants=rows,
            alerts=alerts,
            storage=location,
            storage_used_bytes=used,
            storage_free_bytes=free,
        )

    @activity.defn
    async def send_alerts(self, batch: AlertBatch) -> list[str]:
        """Every alert goes to the log; to the alert webhook and e-mail address when they are set. Returns where
        they were sent."""
        alerts = batch.alerts
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
        smtp_host = self.settings.smtp_host
        if self.settings.alert_email and smtp_host:
            message = EmailMessage()
            message["From"] = self.settings.mail_from
            message["To"] = self.settings.alert_email
            message["Subject"] = f"tenant-lifecycle: {len(alerts)} alert(s)"
            message.set_content("\n".join(a.message for a in alerts))

            def send() -> None:
                with smtplib.SMTP(smtp_host, self.settings.smtp_port, timeout=10) as smtp:
                    smtp.send_message(message)

            await asyncio.to_thread(send)
            sent.append("email")
        return sent
