"""Catalog activities: look tenants up and take or release their operation lock."""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.catalog_db import Catalog
from tenancy.errors import INVALID_INPUT, TENANT_NOT_FOUND, InvalidInput, fail
from tenancy.log import get_logger
from tenancy.models import LockOutcome, LockRequest, NewTenant, ProvisionTenantInput, Tenant, TenantPage, TenantRef
from tenancy.naming import (
    database_name,
    role_name,
    slugify,
    validate_display_name,
    validate_email,
    validate_tenant_id,
)
from tenancy.settings import Settings
from tenancy.tenant_settings import validate_settings


class CatalogActivities:
    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.catalog = Catalog(settings)
        self.client = client

    @activity.defn
    async def validate_new_tenant(self, req: ProvisionTenantInput) -> NewTenant:
        """Everything about a provisioning request that can be wrong, refused before anything is created."""
        try:
            name = validate_display_name(req.name)
            tenant_id = validate_tenant_id(req.tenant_id) if req.tenant_id else slugify(name)
            if req.plan not in self.settings.plans:
                raise InvalidInput(f"unknown plan {req.plan!r}; plans: {', '.join(sorted(self.settings.plans))}")
            return NewTenant(
                tenant_id=tenant_id,
                name=name,
                plan=req.plan,
                owner_email=validate_email(req.owner_email),
                database_name=database_name(self.settings.database_prefix, tenant_id),
                role_name=role_name(self.settings.database_prefix, tenant_id),
                settings=validate_settings(req.settings),
            )
        except InvalidInput as exc:
            raise fail(INVALID_INPUT, str(exc)) from None

    @activity.defn
    async def get_tenant(self, tenant_id: str) -> Tenant:
        try:
            validate_tenant_id(tenant_id)
        except InvalidInput as exc:
            raise fail(INVALID_INPUT, str(exc)) from None
        tenant = await self.catalog.get_tenant(tenant_id)
        if tenant is None:
            raise fail(TENANT_NOT_FOUND, f"tenant {tenant_id!r} is not in the catalog")
        return tenant

    @activity.defn
    async def list_tenant_page(self, page: TenantPage) -> list[TenantRef]:
        """The next page of tenants (by id) with one of the given statuses."""
        return await self.catalog.tenant_page(page.after, page.limit, page.statuses)

    async def _holder_is_gone(self, workflow_id: str, run_id: str) -> bool:
        try:
            description = await self.client.get_workflow_handle(workflow_id, run_id=run_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return True
            raise
        return description.status != WorkflowExecutionStatus.RUNNING

    @activity.defn
    async def acquire_tenant_lock(self, req: LockRequest) -> LockOutcome:
        outcome = await self.catalog.acquire_lock(
            req.tenant_id, req.operation, req.workflow_id, req.run_id, self._holder_is_gone
        )
        log = get_logger("activities.catalog", tenant_id=req.tenant_id, workflow_id=req.workflow_id, run_id=req.run_id)
        if outcome.acquired and outcome.holder_workflow_id:
            log.warning("took over a lock left by an ended run", previous_holder=outcome.holder_workflow_id)
        elif not outcome.acquired:
            log.info("tenant busy", holder=outcome.holder_workflow_id, holder_operation=outcome.holder_operation)
        return outcome

    @activity.defn
    async def release_tenant_lock(self, req: LockRequest) -> bool:
        return await self.catalog.release_lock(req.tenant_id, req.workflow_id)
