"""The tenant-lifecycle worker: `python worker.py` runs one until Ctrl-C. Add more on more hosts to scale."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities.backup import BackupActivities
from activities.catalog import CatalogActivities
from activities.catalog_db import Catalog
from activities.restore import RestoreActivities
from tenancy.log import configure_logging, get_logger
from tenancy.settings import Settings, load_settings
from tenancy.temporal import connect_client, ensure_search_attributes
from workflows.registry import WORKFLOWS


def build_worker(client: Client, settings: Settings, task_queue: str | None = None) -> Worker:
    backup = BackupActivities(settings)
    catalog = CatalogActivities(settings, client)
    restore = RestoreActivities(settings)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=WORKFLOWS,
        activities=[
            catalog.get_tenant,
            catalog.list_active_tenant_ids,
            catalog.acquire_tenant_lock,
            catalog.release_tenant_lock,
            backup.dump_database,
            backup.verify_backup,
            backup.discard_backup,
            backup.apply_retention,
            restore.select_backup,
            restore.restore_to_scratch,
            restore.verify_restored,
            restore.swap_in_restored,
            restore.undo_unfinished_restore,
            restore.drop_previous_database,
            restore.clear_tenant_cache,
            restore.record_event,
        ],
        # Dumps copy bytes in threads; keep a few free for the event loop's own to_thread calls.
        activity_executor=ThreadPoolExecutor(max_workers=40),
        max_concurrent_activities=32,
        graceful_shutdown_timeout=timedelta(seconds=10),
    )


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    log = get_logger("worker", task_queue=settings.task_queue)
    await Catalog(settings).migrate()
    client = await connect_client(settings)
    await ensure_search_attributes(client, settings.temporal_namespace)
    worker = build_worker(client, settings)
    log.info("worker started", temporal=settings.temporal_address, namespace=settings.temporal_namespace)
    async with worker:
        await stop.wait()
    log.info("worker stopped")


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    stop = asyncio.Event()

    async def _run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(settings, stop)

    code = 0
    try:
        asyncio.run(_run())
    except Exception as exc:  # one clear line, not a traceback
        print(f"worker: {exc}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # sdk-python#300: avoid an abort at interpreter exit


if __name__ == "__main__":
    main()
