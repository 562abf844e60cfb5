"""`--all`: one fleet workflow, a child per active tenant, failures isolated and reported."""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql

from tenancy.models import FleetBackupInput
from workflows.backup_fleet import BackupAllTenantsWorkflow


async def test_fleet_backup_reports_the_broken_tenant_and_backs_up_the_rest(
    temporal_env, task_queue, settings, make_tenant, backups_of
):
    good = [await make_tenant("good", entries=50) for _ in range(4)]
    broken = await make_tenant("broken", entries=10)
    with psycopg.connect(settings.effective_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(broken.database_name)))

    result = await temporal_env.client.execute_workflow(
        BackupAllTenantsWorkflow.run,
        FleetBackupInput(keep=3, concurrency=2),
        id=f"backup-all-{uuid.uuid4().hex[:6]}",
        task_queue=task_queue,
    )

    outcomes = {o.tenant_id: o for o in result.outcomes}
    assert {t.id for t in good} | {broken.id} <= set(outcomes)
    for tenant in good:
        assert outcomes[tenant.id].ok, outcomes[tenant.id].error
        assert [p.name for p in backups_of(tenant.id)] == [
            outcomes[tenant.id].backup_name,
            outcomes[tenant.id].backup_name + ".json",
        ]
    assert not outcomes[broken.id].ok
    assert "does not exist" in outcomes[broken.id].error
    assert result.failed >= 1 and result.succeeded >= 4
    assert result.total == result.succeeded + result.failed
