"""Status and settings of a tenant: the state machine applied to the catalog and to database access."""

from __future__ import annotations

from psycopg import sql
from temporalio import activity

from activities.audit import calling_actor
from activities.infra.catalog import Catalog
from activities.infra.pg import connect, one_row
from activities.infra.servers import ServerUrls
from tenancy.contracts.tenants import SettingsChange, SettingsChangeResult, StatusChange, StatusChangeResult
from tenancy.errors import INVALID_INPUT, TENANT_NOT_FOUND, InvalidInput, fail
from tenancy.lifecycle import CAN_CONNECT, check_transition
from tenancy.log import get_logger
from tenancy.tenant_settings import merge_settings, validate_settings


class TenantAdminActivities:
    def __init__(self, settings) -> None:
        self.settings = settings
        self.catalog = Catalog(settings)

    @activity.defn
    async def change_tenant_status(self, change: StatusChange) -> StatusChangeResult:
        """Record the new status (and its event), then let the tenant's role in or keep it out: an inactive or
        suspended tenant's role cannot connect, and its open sessions are ended."""
        tenant = await self.catalog.get_tenant(change.tenant_id)
        if tenant is None:
            raise fail(TENANT_NOT_FOUND, f"tenant {change.tenant_id!r} is not in the catalog")
        try:
            old, event_id = await self.catalog.change_status(
                change.tenant_id,
                change.status,
                change.reason,
                "TenantStatusChanged",
                activity.info().workflow_id,
                check_transition,
                actor=await calling_actor(),
            )
        except InvalidInput as exc:
            raise fail(INVALID_INPUT, str(exc)) from None
        terminated = 0
        if tenant.role_name and change.status != "deprovisioned":
            role, database = sql.Identifier(tenant.role_name), sql.Identifier(tenant.database_name)
            # The role and the database are on the tenant's server.
            async with await connect(ServerUrls(self.settings).url(tenant.server), autocommit=True) as admin:
                if change.status in CAN_CONNECT:
                    await admin.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, role))
                else:
                    await admin.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(database, role))
                    row = await one_row(
                        await admin.execute(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = %s AND usename = %s",
                            [tenant.database_name, tenant.role_name],
                        )
                    )
                    terminated = row[0]
        get_logger("activities.tenant_admin", tenant_id=change.tenant_id, workflow_id=activity.info().workflow_id).info(
            "tenant status changed", old=old, new=change.status, reason=change.reason
        )
        return StatusChangeResult(
            tenant_id=change.tenant_id,
            old_status=old,
            new_status=change.status,
            terminated_sessions=terminated,
            event_id=event_id,
        )

    @activity.defn
    async def update_tenant_settings(self, change: SettingsChange) -> SettingsChangeResult:
        try:
            clean = validate_settings(change.changes)
        except InvalidInput as exc:
            raise fail(INVALID_INPUT, str(exc)) from None
        try:
            merged, event_id = await self.catalog.update_settings(
                change.tenant_id,
                lambda current: merge_settings(current, clean),
                activity.info().workflow_id,
                await calling_actor(),
            )
        except LookupError as exc:
            raise fail(TENANT_NOT_FOUND, str(exc)) from None
        return SettingsChangeResult(tenant_id=change.tenant_id, settings=merged, event_id=event_id)
