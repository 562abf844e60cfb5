"""Catalog activities: look tenants up and take or release their operation lock."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.infra.catalog import Catalog
from activities.infra.pg import connect
from activities.infra.schema import database_exists, existing_database_message, existing_role_message
from tenancy.contracts.provision import ProvisionTenantInput
from tenancy.contracts.tenants import Tenant, TenantRef
from tenancy.errors import INVALID_INPUT, TENANT_EXISTS, TENANT_NOT_FOUND, InvalidInput, fail
from tenancy.locks import HolderState
from tenancy.log import get_logger
from tenancy.messages.fleet import FleetOutcomes
from tenancy.messages.locks import LockOutcome, LockRequest, TenantPage
from tenancy.messages.provision import NewTenant
from tenancy.messages.tenants import TenantRequest
from tenancy.naming import (
    role_name,
    slugify,
    tenant_database_name,
    validate_display_name,
    validate_email,
    validate_tenant_id,
)
from tenancy.settings import Settings
from tenancy.tenant_settings import validate_settings

# Runs that ended: the lock the run took is no longer held (continued as new: the run the lock names is over).
_ENDED = {
    WorkflowExecutionStatus.COMPLETED,
    WorkflowExecutionStatus.FAILED,
    WorkflowExecutionStatus.CANCELED,
    WorkflowExecutionStatus.TERMINATED,
    WorkflowExecutionStatus.TIMED_OUT,
    WorkflowExecutionStatus.CONTINUED_AS_NEW,
}
# Answers that say the holder cannot be seen from here: no such run, no such namespace, no access to it.
_OUT_OF_SIGHT = {RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.PERMISSION_DENIED}


class CatalogActivities:
    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        self.catalog = Catalog(settings)
        self.client = client

    @activity.defn
    async def validate_new_tenant(self, req: ProvisionTenantInput) -> NewTenant:
        """Everything about a provisioning request that can be wrong, refused before anything is created: a
        database or role of the tenant's name that already exists is someone's (adopt it, or choose another id)."""
        try:
            name = validate_display_name(req.name)
            tenant_id = validate_tenant_id(req.tenant_id) if req.tenant_id else slugify(name)
            if req.plan not in self.settings.plans:
                raise InvalidInput(f"unknown plan {req.plan!r}; plans: {', '.join(sorted(self.settings.plans))}")
            new = NewTenant(
                tenant_id=tenant_id,
                name=name,
                plan=req.plan,
                owner_email=validate_email(req.owner_email),
                database_name=tenant_database_name(
                    self.settings.database_prefix,
                    tenant_id,
                    self.settings.catalog_database,
                    self.settings.template_database,
                ),
                role_name=role_name(self.settings.database_prefix, tenant_id),
                settings=validate_settings(req.settings),
            )
        except InvalidInput as exc:
            raise fail(INVALID_INPUT, str(exc)) from None
        known = await self.catalog.get_tenant(new.tenant_id)
        if known and known.status not in ("failed", "provisioning"):  # left to record_provisioning
            raise fail(TENANT_EXISTS, f"tenant {new.tenant_id!r} already exists ({known.status})")
        async with await connect(self.settings.effective_database_url) as admin:
            if await database_exists(admin, new.database_name):
                raise fail(TENANT_EXISTS, existing_database_message(new.database_name))
            if await (await admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [new.role_name])).fetchone():
                raise fail(TENANT_EXISTS, existing_role_message(new.role_name))
        return new

    @activity.defn
    async def get_tenant(self, req: TenantRequest) -> Tenant:
        try:
            validate_tenant_id(req.tenant_id)
        except InvalidInput as exc:
            raise fail(INVALID_INPUT, str(exc)) from None
        tenant = await self.catalog.get_tenant(req.tenant_id)
        if tenant is None:
            raise fail(TENANT_NOT_FOUND, f"tenant {req.tenant_id!r} is not in the catalog")
        return tenant

    @activity.defn
    async def list_tenant_page(self, page: TenantPage) -> list[TenantRef]:
        """The next page of tenants (by id) with one of the given statuses."""
        return await self.catalog.tenant_page(page.after, page.limit, page.statuses, server=page.server)

    @activity.defn
    async def record_fleet_outcomes(self, batch: FleetOutcomes) -> int:
        """Tenants' outcomes of a fleet run, into the catalog (what `tenants runs show` reads)."""
        return await self.catalog.record_fleet_outcomes(batch.fleet_workflow_id, batch.fleet_run_id, batch.outcomes)

    async def _holder_state(self, namespace: str, workflow_id: str, run_id: str) -> HolderState:
        """What the holder's own namespace says of its run. A run, or a namespace, this cluster does not know is
        out of sight ("unknown"), never proof that it ended: another deployment may share the catalog."""
        request = DescribeWorkflowExecutionRequest(
            namespace=namespace, execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id)
        )
        try:
            response = await self.client.workflow_service.describe_workflow_execution(request)
        except RPCError as exc:
            if exc.status in _OUT_OF_SIGHT:
                return "unknown"
            raise  # the server is unreachable or overloaded: retried, never a guess
        status = response.workflow_execution_info.status
        return "closed" if status in _ENDED else "running"

    @activity.defn
    async def acquire_tenant_lock(self, req: LockRequest) -> LockOutcome:
        outcome = await self.catalog.acquire_lock(
            req.tenant_id,
            req.operation,
            req.workflow_id,
            req.run_id,
            self._holder_state,
            namespace=self._namespace(),
            lease=timedelta(seconds=self.settings.lock_lease_seconds),
            shared=req.shared,
        )
        log = get_logger("activities.catalog", tenant_id=req.tenant_id, workflow_id=req.workflow_id, run_id=req.run_id)
        if outcome.acquired and outcome.holder_workflow_id:
            log.warning("took over a lock left by an ended run", previous_holder=outcome.holder_workflow_id)
        elif not outcome.acquired:
            log.info(
                "tenant busy",
                holder=outcome.holder_workflow_id,
                holder_operation=outcome.holder_operation,
                holder_namespace=outcome.holder_namespace,
            )
        return outcome

    @activity.defn
    async def release_tenant_lock(self, req: LockRequest) -> bool:
        return await self.catalog.release_lock(req.tenant_id, req.workflow_id, namespace=self._namespace())

    def _namespace(self) -> str:
        """The namespace of the run taking or releasing a lock: where its lock rows say it runs."""
        return activity.info().workflow_namespace or self.client.namespace
