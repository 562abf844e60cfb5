"""ProvisionTenantWorkflow: validate → plan limit → record as provisioning → database from the template →
role → seed → active + TenantProvisioned → welcome mail (on its own). A step that fails for good undoes what
was created and records the tenant as failed."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from tenancy.contracts.provision import ProvisionTenantInput, ProvisionTenantResult, WelcomeMail
    from tenancy.errors import INVALID_INPUT, InvalidInput, fail, failure_message
    from tenancy.messages.provision import ProvisioningUndo, TenantDatabase
    from tenancy.messages.tenants import TenantRequest
    from tenancy.servers import validate_server_name
    from workflows import steps
    from workflows.notify import SendWelcomeEmailWorkflow, announce
    from workflows.phase import ShowsPhase
    from workflows.tenant_lock import tenant_lock


@workflow.defn
class ProvisionTenantWorkflow(ShowsPhase):
    def __init__(self) -> None:
        self._phase = "starting"

    @workflow.query
    def progress(self) -> dict[str, str]:
        return {"phase": self._phase}

    @workflow.run
    async def run(self, req: ProvisionTenantInput) -> ProvisionTenantResult:
        # 1. Validate, 2. the plan limit, 3. record the tenant as provisioning.
        self._phase = "validating"
        if req.server is not None:
            try:
                validate_server_name(req.server)
            except InvalidInput as exc:
                raise fail(INVALID_INPUT, str(exc)) from None
        new = await steps.validate_new_tenant(req)
        if req.server is not None:  # the server asked for (`--server`); placement checks it when recording
            new = new.model_copy(update={"server": req.server})
        self._phase = "checking the plan limit"
        await steps.check_plan_limit(new)
        self._phase = "recording the tenant"
        tenant = await steps.record_provisioning(new)
        # Every later step acts on the server the tenant was placed on (a run recorded before servers: `default`).
        db = TenantDatabase(
            tenant_id=new.tenant_id, database_name=new.database_name, role_name=new.role_name, server=tenant.server
        )

        async with tenant_lock(new.tenant_id, "provision", 0):
            try:
                # 4. The database from the template, 5. its role, 6. the seed: undone on failure or cancellation
                # (and waited for when cancelled, so the undo never runs beside them).
                self._phase = "creating the database"
                migration = await steps.create_tenant_database(db)
                self._phase = "creating the role"
                credentials = await steps.create_tenant_role(db)
                self._phase = "seeding"
                await steps.seed_tenant_database(db)
                # 7. Active, with TenantProvisioned.
                self._phase = "activating"
                event_id = await steps.activate_tenant(TenantRequest(tenant_id=new.tenant_id))
            except BaseException as exc:
                self._phase = "undoing"
                await steps.undo_provisioning(ProvisioningUndo(db=db, reason=failure_message(exc)))
                raise

        # 8. The event to the webhook and the welcome mail, each on its own.
        await announce(event_id)
        mail_id = f"welcome-{new.tenant_id}-{workflow.info().run_id[:8]}"
        await workflow.start_child_workflow(
            SendWelcomeEmailWorkflow.run,
            WelcomeMail(tenant_id=new.tenant_id, tenant_name=new.name, owner_email=new.owner_email),
            id=mail_id,
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
        )
        self._phase = "done"
        return ProvisionTenantResult(
            tenant_id=new.tenant_id,
            database_name=new.database_name,
            role_name=new.role_name,
            schema_version=migration.version,
            credentials_file=credentials,
            welcome_mail_workflow_id=mail_id,
            server=tenant.server,
        )
