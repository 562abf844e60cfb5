"""Erasure activities: destroy the tenant's backup key, delete every backup of it, record the erasure.

Each is safe to repeat: a destroyed key stays destroyed (and keeps who destroyed it, and when), deleted backups are
skipped, and the erasure is recorded once per run.
"""

from __future__ import annotations

import asyncio

from temporalio import activity

from activities.audit import audit, calling_actor
from activities.calling_run import calling_run
from activities.heartbeat import Heartbeater, recorded_details
from activities.infra.catalog import Catalog
from activities.infra.storage import open_storage
from activities.infra.tenant_keys import shredded_with_key
from tenancy.audit import BACKUP_DELETE
from tenancy.log import activity_logger
from tenancy.messages.erasure import ErasedBackups, ErasureRecord, TenantKeyState
from tenancy.messages.progress import HeartbeatDetails
from tenancy.messages.tenants import TenantRequest
from tenancy.settings import Settings

ERASED_EVENT = "TenantErased"


class ErasureActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.storage = open_storage(settings)
        self.catalog = Catalog(settings)

    def _log(self, tenant_id: str):
        return activity_logger("activities.erasure", tenant_id)

    @activity.defn
    async def destroy_tenant_key(self, req: TenantRequest) -> TenantKeyState:
        """The tenant's wrapped identity is destroyed: from now on no copy of a backup encrypted to its key can be
        decrypted, by anyone. Whether or not tenant keys are on now: a key made while they were goes too."""
        row = await self.catalog.destroy_tenant_key(req.tenant_id, calling_run().workflow_id)
        if row is None:
            self._log(req.tenant_id).info("tenant had no backup key of its own")
            return TenantKeyState(tenant_id=req.tenant_id, existed=False)
        self._log(req.tenant_id).warning("tenant backup key destroyed", recipient=row["recipient"])
        return TenantKeyState(
            tenant_id=req.tenant_id, existed=True, destroyed_at=row["destroyed_at"], destroyed_by=row["destroyed_by"]
        )

    @activity.defn
    async def erase_tenant_backups(self, req: TenantRequest) -> ErasedBackups:
        """Every backup of the tenant goes from storage, pinned ones too (an erasure overrides a pin), with what
        interrupted writes left, and then their facts in the catalog. Says which were not encrypted to the tenant's
        key, whose copies elsewhere stay readable."""
        tenant_id = req.tenant_id

        def look() -> tuple[list[str], list[str]]:
            names = self.storage.list_backups(tenant_id)
            readable = [n for n in names if not shredded_with_key(self.storage.read_manifest(tenant_id, n))]
            return names, readable

        names, readable = await asyncio.to_thread(look)
        # What an earlier attempt deleted is gone from storage now, but still part of the report (and of the
        # warning that copies elsewhere stay readable): it travels in the heartbeat details.
        earlier = recorded_details()
        erased = sorted(set(earlier.erased or []) | set(names))
        readable = sorted(set(earlier.readable_elsewhere or []) | set(readable))
        progress = HeartbeatDetails(erased=erased, readable_elsewhere=readable)
        activity.heartbeat(progress.to_heartbeat())
        async with Heartbeater(lambda: progress):
            for name in names:  # audited before it is done, as every deletion of a backup
                await audit(self.catalog, BACKUP_DELETE, tenant_id, name, {"reason": "erasure"})
            deleted = await asyncio.to_thread(self.storage.erase_tenant, tenant_id)
            forgotten = await self.catalog.forget_all_backups(tenant_id)
        deleted = sorted(set(deleted) | set(erased))
        self._log(tenant_id).warning(
            "tenant backups erased", deleted=len(deleted), readable_elsewhere=len(readable), facts_forgotten=forgotten
        )
        return ErasedBackups(
            tenant_id=tenant_id, deleted=deleted, readable_elsewhere=readable, facts_forgotten=forgotten
        )

    @activity.defn
    async def record_erasure(self, record: ErasureRecord) -> int:
        """The TenantErased event (once per run: a retried attempt finds the one it wrote), with its audit row
        (tenant.erase) in the same transaction."""
        workflow_id = calling_run().workflow_id
        for event in await self.catalog.events(record.tenant_id, limit=50):
            if event["type"] == ERASED_EVENT and event["workflow_id"] == workflow_id:
                return event["id"]
        data = record.model_dump(mode="json", exclude={"tenant_id"})
        event_id = await self.catalog.record_event(
            record.tenant_id, ERASED_EVENT, data, workflow_id, await calling_actor()
        )
        self._log(record.tenant_id).warning("tenant erased", **data)
        return event_id
