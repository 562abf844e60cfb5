"""ProvisionTenantWorkflow: validate → plan limit → record as provisioning → database from the template →
role → seed → active + TenantProvisioned → welcome mail (on its own). A step that fails for good undoes what
was created and records the tenant as failed."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.catalog import CatalogActivities
    from activities.provisioning import ProvisioningActivities
    from tenancy.contracts.provision import ProvisionTenantInput, ProvisionTenantResult, WelcomeMail
    from tenancy.errors import failure_message
    from tenancy.messages.provision import TenantDatabase
    from workflows.notify import SendWelcomeEmailWorkflow, announce
    from workflows.options import HEARTBEAT_TIMEOUT, QUICK, SLOW_DDL, undoable_cancellation
    from workflows.phase import ShowsPhase
    from workflows.tenant_lock import tenant_lock

# What undo_provisioning may undo heartbeats, so a cancellation reaches it (and is waited for: see run).
_UNDOABLE = {"heartbeat_timeout": HEARTBEAT_TIMEOUT}


@workflow.defn
class ProvisionTenantWorkflow(ShowsPhase):
    def __init__(self) -> None:
        self._phase = "starting"

    @workflow.query
    def progress(self) -> dict[str, str]:
        return {"phase": self._phase}

    @workflow.run
    async def run(self, req: ProvisionTenantInput) -> ProvisionTenantResult:
        self._phase = "validating"
        new = await workflow.execute_activity_method(CatalogActivities.validate_new_tenant, req, **QUICK)
        self._phase = "checking the plan limit"
        await workflow.execute_activity_method(ProvisioningActivities.check_plan_limit, new, **QUICK)
        self._phase = "recording the tenant"
        await workflow.execute_activity_method(ProvisioningActivities.record_provisioning, new, **QUICK)
        db = TenantDatabase(tenant_id=new.tenant_id, database_name=new.database_name, role_name=new.role_name)

        async with tenant_lock(new.tenant_id, "provision", 0):
            cancel = undoable_cancellation()
            try:
                self._phase = "creating the database"
                migration = await workflow.execute_activity_method(
                    ProvisioningActivities.create_tenant_database, db, cancellation_type=cancel, **SLOW_DDL, **_UNDOABLE
                )
                self._phase = "creating the role"
                credentials = await workflow.execute_activity_method(
                    ProvisioningActivities.create_tenant_role, db, cancellation_type=cancel, **QUICK, **_UNDOABLE
                )
                self._phase = "seeding"
                await workflow.execute_activity_method(
                    ProvisioningActivities.seed_tenant_database, db, cancellation_type=cancel, **QUICK, **_UNDOABLE
                )
                self._phase = "activating"
                event_id = await workflow.execute_activity_method(
                    ProvisioningActivities.activate_tenant, new.tenant_id, **QUICK
                )
            except BaseException as exc:
                self._phase = "undoing"
                await workflow.execute_activity_method(
                    ProvisioningActivities.undo_provisioning, args=[db, failure_message(exc)], **QUICK
                )
                raise

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
        )
