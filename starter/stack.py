"""`tenants up`: the whole stack on embedded defaults, serving until Ctrl-C.

Temporal dev server (Web UI, state in a file so runs survive a restart), PostgreSQL (embedded when no database
URL is set), the catalog, demo tenants on first start, and a worker. Ctrl-C stops all of them cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from urllib.parse import urlparse

from activities.infra.catalog import Catalog
from activities.infra.manifest_signing import create_key_file
from activities.infra.storage import open_storage
from activities.infra.temporal import connect_client
from starter.demo import seed_tenant_data
from starter.schedules import apply_schedules
from starter.services import EmbeddedPostgres, TemporalDevServer, port_open
from tenancy.audit import REQUESTED_BY, local_actor
from tenancy.contracts.provision import ProvisionTenantInput
from tenancy.log import get_logger
from tenancy.search import tenant_attributes
from tenancy.settings import Settings, redact_url
from worker import run_worker
from workflows.provision_tenant import ProvisionTenantWorkflow

DEMO_TENANTS = [
    ("acme", "Acme Corp", "pro", 20_000),
    ("globex", "Globex", "business", 5_000),
    ("initech", "Initech", "free", 1_000),
]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("up", help="start Temporal, PostgreSQL and a worker; serve until Ctrl-C")
    p.add_argument("--no-demo", action="store_true", help="do not create the demo tenants on first start")
    p.set_defaults(handler=run)


async def _seed_demo(settings: Settings) -> list[str]:
    """On first start, provision the demo tenants through the workflow (they show in the Web UI) and fill them."""
    if await Catalog(settings).list_tenants():
        return []
    client = await connect_client(settings)
    created = []
    for tenant_id, name, plan, entries in DEMO_TENANTS:
        result = await client.execute_workflow(
            ProvisionTenantWorkflow.run,
            ProvisionTenantInput(name=name, plan=plan, owner_email=f"admin@{tenant_id}.example", tenant_id=tenant_id),
            id=f"provision-{tenant_id}",
            task_queue=settings.task_queue,
            search_attributes=tenant_attributes(tenant_id),
            static_summary=f"Provisioning of demo tenant {tenant_id}",
            memo={REQUESTED_BY: local_actor()},
        )
        await seed_tenant_data(settings.effective_database_url, result.database_name, entries)
        created.append(tenant_id)
    return created


def _with_signing_key(settings: Settings) -> Settings:
    """The stack signs its backups: with TENANTS_BACKUP_SIGNING_KEY_FILE when set, else with the key file of its
    state folder, made at first start. Not made once storage holds backups: the unsigned ones taken before would
    no longer restore (`tenants keys init` makes it, deliberately)."""
    if settings.backup_signing_key_file is not None:
        return settings
    path = settings.stack_signing_key_file
    if not path.exists():
        if open_storage(settings).usage() > 0:
            return settings  # the worker says at start-up that backups are not authenticated
        create_key_file(path)
    return settings.model_copy(update={"backup_signing_key_file": path})


async def run(args: argparse.Namespace, settings: Settings) -> int:
    log = get_logger("stack")
    state = settings.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    settings = await asyncio.to_thread(_with_signing_key, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    temporal: TemporalDevServer | None = None
    postgres: EmbeddedPostgres | None = None
    address = urlparse(f"//{settings.temporal_address}")
    try:
        if port_open(address.hostname or "127.0.0.1", address.port or 7233):
            log.info("using the Temporal server already listening", address=settings.temporal_address)
        else:
            ui_port = urlparse(settings.temporal_ui_url).port or 8233
            temporal = TemporalDevServer(
                state / "temporal.db", address.port or 7233, ui_port, log_file=state / "temporal.log"
            )
            await asyncio.to_thread(temporal.start)
            log.info("Temporal dev server started", address=temporal.address, web_ui=settings.temporal_ui_url)
        if settings.database_url:
            log.info("using PostgreSQL from TENANTS_DATABASE_URL")
        else:
            postgres = EmbeddedPostgres(
                state / "pgdata", settings.embedded_pg_port, password_file=settings.embedded_password_file
            )
            await asyncio.to_thread(postgres.start)
            log.info(
                "embedded PostgreSQL started",
                url=redact_url(postgres.url),
                data=str(postgres.data_dir),
                password_file=str(postgres.password_file),
            )
        await Catalog(settings).migrate()
        worker = asyncio.create_task(run_worker(settings, stop))
        if not args.no_demo:
            created = await _seed_demo(settings)
            if created:
                log.info("demo tenants created", tenants=created)
        report = await apply_schedules(await connect_client(settings), settings)
        log.info("schedules applied", created=report.created, updated=report.updated, unchanged=report.unchanged)
        postgres_line = redact_url(settings.effective_database_url)
        if postgres:
            postgres_line += f" (password in {postgres.password_file})"
        print(
            f"\ntenant-lifecycle is up.\n"
            f"  Temporal Web UI : {settings.temporal_ui_url}\n"
            f"  Temporal        : {settings.temporal_address} (namespace {settings.temporal_namespace})\n"
            f"  PostgreSQL      : {postgres_line}\n"
            f"  backups         : {settings.storage_url}\n"
            f"  signing keys    : {settings.backup_signing_key_file or 'none: backups are not authenticated'}\n"
            f"  schedules       : {', '.join(report.created + report.updated + report.unchanged)} "
            f"(tenants schedules list)\n"
            f"  try             : tenants list; tenants backup --tenant acme; tenants backup --all\n"
            f"Ctrl-C stops everything.\n",
            flush=True,
        )
        await worker
    finally:
        if postgres:
            await asyncio.to_thread(postgres.stop)
        if temporal:
            await asyncio.to_thread(temporal.stop)
        log.info("stack stopped")
    return 0
