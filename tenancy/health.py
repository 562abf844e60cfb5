"""Which health facts are alerts, and what a health check run keeps of them: pure."""

from __future__ import annotations

from datetime import datetime

from tenancy.contracts.health import Alert, HealthReport, TenantHealth
from tenancy.messages.health import FleetHealth, HealthPage


def alerts_for(tenant: TenantHealth, max_backup_age_hours: int, quota_ratio: float) -> list[Alert]:
    alerts = []
    if tenant.status == "active" and (
        tenant.backup_age_hours is None or tenant.backup_age_hours > max_backup_age_hours
    ):
        age = (
            "never backed up"
            if tenant.backup_age_hours is None
            else f"last verified backup {tenant.backup_age_hours:.0f} h ago"
        )
        alerts.append(
            Alert(
                kind="stale_backup",
                tenant_id=tenant.tenant_id,
                message=f"tenant {tenant.tenant_id}: {age} (limit {max_backup_age_hours} h)",
            )
        )
    if tenant.status == "active" and (
        tenant.restorable_age_hours is None or tenant.restorable_age_hours > max_backup_age_hours
    ):
        age = (
            "no backup known to restore"
            if tenant.restorable_age_hours is None
            else f"newest backup known to restore is {tenant.restorable_age_hours:.0f} h old"
        )
        alerts.append(
            Alert(
                kind="stale_restorable_backup",
                tenant_id=tenant.tenant_id,
                message=f"tenant {tenant.tenant_id}: {age} (limit {max_backup_age_hours} h; encrypted backups are "
                "proven by a drill or by a worker that holds the identity)",
            )
        )
    if (
        tenant.database_bytes is not None
        and tenant.quota_bytes
        and tenant.database_bytes > quota_ratio * tenant.quota_bytes
    ):
        share = tenant.database_bytes / tenant.quota_bytes
        alerts.append(
            Alert(
                kind="over_quota",
                tenant_id=tenant.tenant_id,
                message=f"tenant {tenant.tenant_id}: database uses {share:.0%} of its plan's quota",
            )
        )
    return alerts


# What a health check run carries in its result, whatever the fleet's size: 100 rows and 100 alerts are about
# 70 KB, well under Temporal's 256 KB for a result (a row of every tenant of a 10,000-tenant fleet would be 4 MB).
ROWS_SHOWN = 100
ALERTS_SHOWN = 100
# Alerts go out as the pages find them, this many at a time (one webhook call, one e-mail).
ALERTS_PER_DELIVERY = 200


class HealthTally:
    """What a health check keeps of its pages: the counts, the rows of the tenants that need attention (then of
    others, while there is room) and the first alerts; bounded, and deterministic (the workflow holds it)."""

    def __init__(self) -> None:
        self.tenants = 0
        self.alerts_total = 0
        self.attention: list[TenantHealth] = []
        self.others: list[TenantHealth] = []
        self.alerts: list[Alert] = []

    def rows_wanted(self) -> tuple[int, int]:
        """How many more rows of tenants with an alert, and of others, the report could show."""
        return ROWS_SHOWN - len(self.attention), max(0, ROWS_SHOWN - len(self.attention) - len(self.others))

    def add(self, page: HealthPage) -> None:
        self.tenants += page.checked
        alerted = {a.tenant_id for a in page.alerts}
        for row in page.rows:
            kept = self.attention if row.tenant_id in alerted else self.others
            if len(kept) < ROWS_SHOWN:
                kept.append(row)
        self.add_alerts(page.alerts)

    def add_alerts(self, alerts: list[Alert]) -> None:
        self.alerts_total += len(alerts)
        self.alerts += alerts[: max(0, ALERTS_SHOWN - len(self.alerts))]

    def progress(self) -> dict[str, str]:
        return {"phase": f"{self.tenants} tenants checked, {self.alerts_total} alert(s)"}

    def report(self, checked_at: datetime, fleet: FleetHealth) -> HealthReport:
        shown = self.attention[:ROWS_SHOWN]
        shown += self.others[: ROWS_SHOWN - len(shown)]
        return HealthReport(
            checked_at=checked_at,
            tenants=sorted(shown, key=lambda row: row.tenant_id),
            alerts=self.alerts,
            storage=fleet.storage,
            storage_used_bytes=fleet.storage_used_bytes,
            storage_free_bytes=fleet.storage_free_bytes,
            tenants_not_shown=self.tenants - len(shown),
            alerts_not_shown=self.alerts_total - len(self.alerts),
        )
