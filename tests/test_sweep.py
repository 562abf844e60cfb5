"""The sweeper on real servers: orphans planted for real (marked databases of ended, running and unknown runs,
roles, `.partial` files, restore work files, an unfinished S3 upload) are found with a reason, left in place by a
dry run, and removed by a real one, which leaves everything else alone."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import psycopg
import pytest
from psycopg import sql
from temporalio.client import WorkflowFailureError
from temporalio.testing import ActivityEnvironment

from activities.infra.marks import mark_database, mark_role
from activities.infra.pg import connect, conninfo_for
from activities.infra.storage import S3Storage, open_storage
from activities.sweep import SweepActivities
from starter.schedules import build_schedule
from tenancy.contracts.restore import DropLaterInput
from tenancy.contracts.sweep import SweepInput, SweepReport
from tenancy.errors import failure_type
from tenancy.marks import Mark
from tenancy.naming import previous_database_name
from tenancy.schedules import parse_schedules
from tenancy.settings import PROJECT_ROOT
from workflows.drop_later import DropPreviousDatabaseWorkflow
from workflows.sweep import SweepWorkflow

DAY = timedelta(days=1)


async def start_run(client, queue: str, delay_seconds: int, base: str):
    """A real run of a registered workflow: one that waits `delay_seconds` (a durable timer), then drops a
    database that does not exist."""
    return await client.start_workflow(
        DropPreviousDatabaseWorkflow.run,
        DropLaterInput(
            tenant_id="sweep-test",
            database_name=base,
            previous_name=previous_database_name(base, uuid.uuid4().hex[:8]),
            delay_seconds=delay_seconds,
        ),
        id=f"sweep-test-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
    )


async def runs(client, queue: str, base: str):
    """(completed, terminated, running) runs: (workflow id, run id) of each, and the running one's handle."""
    done = await start_run(client, queue, 0, base)
    await done.result()
    terminated = await start_run(client, queue, 3600, base)
    await terminated.terminate("sweep test")
    running = await start_run(client, queue, 3600, base)
    ids = [(h.id, h.result_run_id) for h in (done, terminated, running)]
    return ids, running


async def create_database(url: str, name: str, mark: Mark | None) -> None:
    async with await connect(url, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        if mark is not None:
            await mark_database(conn, name, mark)


async def create_role(url: str, name: str, mark: Mark) -> None:
    async with await connect(url, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
        await mark_role(conn, name, mark)


def databases(url: str, prefix: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", [prefix])}


def roles(url: str, prefix: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", [prefix])}


def plant_file(path: Path, age: timedelta, body: bytes = b"x" * 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    when = (datetime.now(UTC) - age).timestamp()
    os.utime(path, (when, when))
    return path


def cli_env(temporal_env, settings, queue: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTS_")}
    env.update(
        TENANTS_DATABASE_URL=settings.effective_database_url,
        TENANTS_CATALOG_DATABASE=settings.catalog_database,
        TENANTS_DATABASE_PREFIX=settings.database_prefix,
        TENANTS_STORAGE_URL=f"file://{settings.storage_root}",
        TENANTS_STATE_DIR=str(settings.state_dir),
        TENANTS_SECRETS_DIR=str(settings.effective_secrets_dir),
        TENANTS_TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host,
        TENANTS_TASK_QUEUE=queue,
    )
    return env


async def tenants(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "starter.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def mine(items, token: str) -> dict[tuple[str, str], dict]:
    """The report's items about what this test planted (the sweep sees the whole session's server)."""
    return {(i["kind"], i["name"]): i for i in items if token in i["name"]}


async def test_sweep_dry_run_lists_the_orphans_and_the_real_one_removes_exactly_them(
    temporal_env, task_queue, settings, make_tenant, catalog
):
    url = settings.effective_database_url
    client = temporal_env.client
    token = f"sw{uuid.uuid4().hex[:6]}"
    base = f"{settings.database_prefix}{token}"
    now = datetime.now(UTC)
    (done, terminated, live), running = await runs(client, task_queue, base)
    lost = (f"sweep-test-lost-{token}", None)  # a run Temporal does not know

    def scratch(run, at=now, kind="scratch", **more) -> Mark:
        return Mark(kind=kind, tenant_id="ghost", workflow_id=run[0], run_id=run[1], at=at, **more)

    busy_tenant = await make_tenant("swbusy", entries=0)
    try:
        names = {
            "done": f"{base}__rs_done",
            "terminated": f"{base}__rs_term",
            "lost-old": f"{base}__rs_lost",
            "lost-new": f"{base}__rs_new",
            "live": f"{base}__rs_live",
            "expired": f"{base}__old_gone",
            "kept": f"{base}__old_kept",
            "alien": f"{base}__rs_alien",
            "provisioning": f"{base}_prov",
            "owned": f"{base}_own",
        }
        marks = {
            "done": scratch(done),
            "terminated": scratch(terminated),
            "lost-old": scratch(lost, at=now - 3 * DAY),
            "lost-new": scratch(lost),
            "live": scratch(live),
            "expired": scratch(done, kind="previous", keep_until=now - timedelta(hours=1)),
            "kept": scratch(done, kind="previous", keep_until=now + DAY),
            "alien": None,
            "provisioning": scratch(terminated, kind="provisioning"),
            "owned": None,
        }
        for key, name in names.items():
            await create_database(url, name, marks[key])
        await catalog.record_kept_database(names["expired"], "ghost", base, done[0], None, now - timedelta(hours=1))

        orphan_role, owner_role, live_role = f"{base}_r_orphan", f"{base}_r_owner", f"{base}_r_live"
        await create_role(url, orphan_role, Mark(kind="role", tenant_id=f"gone-{token}", at=now))
        await create_role(url, owner_role, Mark(kind="role", tenant_id=f"gone-{token}", at=now))
        await create_role(url, live_role, Mark(kind="role", tenant_id=busy_tenant.id, at=now))
        with psycopg.connect(conninfo_for(url, names["owned"]), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept_by_role (id int)")
            conn.execute(sql.SQL("ALTER TABLE kept_by_role OWNER TO {}").format(sql.Identifier(owner_role)))

        # Files: an old and a fresh `.partial`, an old one of a tenant a running run holds, a finished backup.
        folder = settings.storage_root / "tenants" / token
        old_partial = plant_file(folder / f".tenant_{token}_2026-01-01_00-00-00.dump.partial", 2 * DAY)
        fresh_partial = plant_file(folder / f".tenant_{token}_2026-01-02_00-00-00.dump.partial", timedelta(0))
        backup = plant_file(folder / f"tenant_{token}_2026-01-01_00-00-00.dump", 30 * DAY)
        held = settings.storage_root / "tenants" / busy_tenant.id / f".tenant_{busy_tenant.id}_x.dump.partial"
        plant_file(held, 2 * DAY)
        with psycopg.connect(conninfo_for(url, settings.catalog_database), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO tenant_locks (tenant_id, operation, workflow_id, run_id) VALUES (%s, 'backup', %s, %s)",
                [busy_tenant.id, *live],
            )
        work = settings.state_dir.resolve() / "work"
        work_done = plant_file(work / f".{names['done']}.dump.partial", timedelta(0))
        work_live = plant_file(work / f".{names['live']}.dump.partial", timedelta(0))
        work_nodb = plant_file(work / f".{base}__rs_nodb.dump.partial", timedelta(0))

        removable = {
            ("scratch", names["done"]),
            ("scratch", names["terminated"]),
            ("scratch", names["lost-old"]),
            ("previous", names["expired"]),
            ("provisioning", names["provisioning"]),
            ("role", orphan_role),
            ("partial", f"tenants/{token}/{old_partial.name}"),
            ("work", str(work_done)),
            ("work", str(work_nodb)),
        }
        left_alone = {
            ("scratch", names["lost-new"]): "not found, but marked only",
            ("scratch", names["live"]): "is running",
            ("previous", names["kept"]): "kept until",
            ("database", names["alien"]): "not ours (no mark)",
            ("role", owner_role): "owns or holds privileges on 1 object",
            ("partial", f"tenants/{token}/{fresh_partial.name}"): "under 24 h",
            ("work", str(work_live)): "is running",
        }
        env = cli_env(temporal_env, settings, task_queue)
        before = (databases(url, base), roles(url, base))

        dry = await tenants(env, "sweep", "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        report = json.loads(dry.stdout)
        assert report["dry_run"] and report["stale_hours"] == 24
        found = mine(report["items"], token)
        assert {k for k, i in found.items() if i["removable"]} == removable
        for key, why in left_alone.items():
            assert why in found[key]["reason"] and not found[key]["removable"], found[key]
        assert found[("scratch", names["terminated"])]["reason"].endswith("ended (terminated)")
        assert "not found; marked 72 h ago" in found[("scratch", names["lost-old"])]["reason"]
        assert not any(i["removed"] for i in report["items"])
        held_item = next(i for i in report["items"] if i["name"].endswith(held.name))
        assert not held_item["removable"] and "backup run" in held_item["reason"]
        assert not {k for k in found if k[1] in (backup.name, live_role, names["owned"])}
        assert (databases(url, base), roles(url, base)) == before  # a dry run removes nothing
        assert all(p.exists() for p in (old_partial, fresh_partial, work_done, work_live, work_nodb, held))

        done_run = await tenants(env, "sweep")
        assert done_run.returncode == 0, done_run.stderr
        lines = done_run.stdout.splitlines()[1:]  # after "started <workflow id> — <web ui link>"
        assert lines[0].split() == ["kind", "name", "reason", "action"]
        assert any(names["expired"] in line and line.endswith("removed") for line in lines)
        summary = re.fullmatch(r"(\d+) removed, 0 failed, \d+ left alone", lines[-1])
        assert summary and int(summary[1]) >= len(removable), lines[-1]  # and what other tests left, if any

        assert databases(url, base) == before[0] - {
            n for k, n in removable if k in ("scratch", "previous", "provisioning")
        }
        assert roles(url, base) == before[1] - {orphan_role}
        assert not old_partial.exists() and not work_done.exists() and not work_nodb.exists()
        assert fresh_partial.exists() and backup.exists() and work_live.exists() and held.exists()
        async with await catalog._connect() as conn:
            kept = await (
                await conn.execute("SELECT ended_how FROM kept_databases WHERE name = %s", [names["expired"]])
            ).fetchone()
        assert kept["ended_how"] == "dropped by the sweeper"
    finally:
        await running.terminate("sweep test over")


async def test_each_item_is_judged_again_right_before_it_is_removed(temporal_env, task_queue, settings):
    url = settings.effective_database_url
    client = temporal_env.client
    token = f"sw{uuid.uuid4().hex[:6]}"
    base = f"{settings.database_prefix}{token}"
    (done, _, live), running = await runs(client, task_queue, base)
    try:
        ended, reused = f"{base}__rs_a", f"{base}__rs_b"
        for name in (ended, reused):
            await create_database(
                url, name, Mark(kind="scratch", tenant_id="ghost", workflow_id=done[0], run_id=done[1])
            )
        partial = plant_file(settings.storage_root / "tenants" / token / f".tenant_{token}_x.dump.partial", 2 * DAY)

        sweeper = SweepActivities(settings, client)
        env = ActivityEnvironment()
        found = await env.run(sweeper.find_orphans, SweepInput())
        assert {("scratch", ended), ("scratch", reused), ("partial", f"tenants/{token}/{partial.name}")} <= {
            (i.kind, i.name) for i in found.items if i.removable
        }
        # Meanwhile a running run takes one database over, and a writer touches the partial file.
        async with await connect(url, autocommit=True) as conn:
            await mark_database(
                conn, reused, Mark(kind="scratch", tenant_id="ghost", workflow_id=live[0], run_id=live[1])
            )
        plant_file(partial, timedelta(0))
        mine_only = [i for i in found.items if token in i.name]
        swept: SweepReport = await env.run(sweeper.remove_orphans, found.model_copy(update={"items": mine_only}))
        by_name = {i.name: i for i in swept.items}
        assert by_name[ended].removed
        assert not by_name[reused].removed and by_name[reused].reason.startswith("on re-check: run ")
        assert "is running" in by_name[reused].reason
        assert not by_name[f"tenants/{token}/{partial.name}"].removed
        assert databases(url, base) == {reused} and partial.exists()
    finally:
        await running.terminate("sweep test over")


async def test_an_unfinished_upload_past_the_threshold_is_aborted_and_a_backup_is_untouched(
    temporal_env, worker_with, settings, s3_endpoint
):
    bucket = f"sweep-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    s3 = {"storage_url": f"s3://{bucket}/prod", "s3_endpoint_url": s3_endpoint}
    storage = open_storage(settings.model_copy(update=s3))
    assert isinstance(storage, S3Storage)
    tenant = f"sw{uuid.uuid4().hex[:6]}"
    complete = f"tenant_{tenant}_2026-01-01_00-00-00.dump"
    with storage.open_for_write(tenant, complete) as sink:
        sink.write(b"a whole backup")
    key = f"prod/tenants/{tenant}/tenant_{tenant}_2026-01-02_00-00-00.dump"
    upload = storage.client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    storage.client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"half a backup")

    async with worker_with(**s3) as queue:

        async def sweep(**req) -> SweepReport:
            return await temporal_env.client.execute_workflow(
                SweepWorkflow.run, SweepInput(**req), id=f"sweep-{uuid.uuid4().hex[:8]}", task_queue=queue
            )

        # (moto reports every upload as begun in 2010, so a fresh one cannot be made here: partial files show
        # the threshold at work.)
        listed = await sweep(dry_run=True, stale_hours=0)
        item = next(i for i in listed.items if i.kind == "upload" and i.upload_id == upload)
        assert item.removable and item.reason.startswith("upload began") and not item.removed
        assert [u["UploadId"] for u in storage.client.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [upload]
        swept = await sweep(stale_hours=0)
        item = next(i for i in swept.items if i.kind == "upload" and i.upload_id == upload)
        assert item.removed and item.name == key.removeprefix("prod/")
        for bad in (SweepInput(stale_hours=-1), SweepInput(stale_hours=10**6), SweepInput(limit=0)):
            with pytest.raises(WorkflowFailureError) as failed:
                await temporal_env.client.execute_workflow(
                    SweepWorkflow.run, bad, id=f"sweep-{uuid.uuid4().hex[:8]}", task_queue=queue
                )
            assert failure_type(failed.value) == "InvalidInput"
    assert storage.client.list_multipart_uploads(Bucket=bucket, Prefix="prod/").get("Uploads", []) == []
    with storage.open_for_read(tenant, complete) as reader:
        assert reader.read() == b"a whole backup"


async def test_the_daily_sweep_schedule_and_bad_cli_input(temporal_env, settings, task_queue):
    declared = {d.id: d for d in parse_schedules((PROJECT_ROOT / "schedules.toml").read_text())}
    schedule = build_schedule(declared["daily-sweep"], settings)
    assert schedule.action.workflow == "SweepWorkflow"
    assert declared["daily-sweep"].when() == "every day at 05:30"
    env = cli_env(temporal_env, settings, task_queue)
    done = await tenants(env, "sweep", "--stale-hours", "-1")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "tenants: error: --stale-hours must be between 0 and 8760"
