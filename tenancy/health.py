"""Which health facts are alerts: pure."""

from __future__ import annotations

from tenancy.contracts.health import Alert, TenantHealth


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
