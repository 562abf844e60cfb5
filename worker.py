"""The tenant-lifecycle worker: `python worker.py` runs one until Ctrl-C. Add more on more hosts to scale."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.adoption import AdoptionActivities
from activities.backup import BackupActivities
from activities.catalog import CatalogActivities
from activities.deprovision import DeprovisionActivities
from activities.erasure import ErasureActivities
from activities.health import HealthActivities
from activities.infra.archive import check_age_keys
from activities.infra.catalog import Catalog, catalog_pool
from activities.infra.interceptors import LogContextAndMetrics
from activities.infra.leases import LockLeaseRenewal, LockLeases
from activities.infra.manifest_signing import read_keyring
from activities.infra.temporal import connect_client, ensure_search_attributes, metrics_runtime
from activities.infra.tenant_keys import check_tenant_keys
from activities.maintenance import MaintenanceActivities, check_cleanup_rules
from activities.move import MoveActivities
from activities.notify import NotifyActivities
from activities.provisioning import ProvisioningActivities
from activities.restore import RestoreActivities
from activities.sweep import SweepActivities
from activities.tenant_admin import TenantAdminActivities
from activities.transfer import TransferActivities
from tenancy.log import configure_logging, get_logger
from tenancy.settings import Settings, load_settings
from workflows.registry import WORKFLOWS


def activities_of(*instances: object) -> list[Callable[..., Any]]:
    """Every @activity.defn method of the given activity classes' instances."""
    found = []
    for instance in instances:
        for name in dir(type(instance)):
            method = getattr(instance, name)
            if callable(method) and hasattr(getattr(type(instance), name), "__temporal_activity_definition"):
                found.append(method)
    return found


# A workflow that raises one of these fails its run with the error's message, rather than failing the workflow task,
# which Temporal retries forever (the same code on the same history raises it again). Deliberately not Exception:
# temporalio.workflow.NondeterminismError must still fail only the task, so a fixed worker can continue the run.
WORKFLOW_BUGS: list[type[BaseException]] = [
    AssertionError,
    ArithmeticError,  # ZeroDivisionError, OverflowError (a date or timedelta out of range)
    AttributeError,
    LookupError,  # KeyError, IndexError
    NameError,
    TypeError,
    ValueError,  # pydantic's ValidationError, InvalidInput
]
# Stateless helpers the workflows import as `from workflows import steps`, a form imports_passed_through() does not
# cover: without this the sandbox would parse and run the module again for every workflow run (a tenth of the
# worker's CPU per tenant in a fleet of small tenants, docs/benchmarks.md).
PASSED_THROUGH = ("workflows.steps",)
HEARTBEAT_THROTTLE = timedelta(seconds=1)
MAX_CONCURRENT_ACTIVITIES = 32
# asyncio.to_thread's pool (the loop's default executor): a dump, a verification or a restore holds up to two of its
# threads for its whole length (the byte pump and the wait on pg_dump or pg_restore). Python's default, cores + 4,
# would have three dumps make every other activity's storage call wait for them.
IO_THREADS = 2 * MAX_CONCURRENT_ACTIVITIES + 16
# On SIGTERM the worker stops polling and waits this long before cancelling the activities still running. A dump
# stops at once, cleanly (it cannot resume: pg_dump killed, at most ~5 s, no partial file or upload left; another
# worker starts it over); the rest get this long to finish. Whatever is cancelled then is still waited for while
# it cleans up, so the process manager must allow more (docs/operations.md: 60 s).
GRACEFUL_SHUTDOWN = timedelta(seconds=30)


def build_worker(
    client: Client, settings: Settings, task_queue: str | None = None, workflows: Sequence[type] = WORKFLOWS
) -> Worker:
    check_age_keys(settings.age_recipients, settings.age_identity_file)
    check_tenant_keys(settings)
    if settings.backup_signing_key_file is not None:
        read_keyring(settings.backup_signing_key_file)  # a missing or malformed key file stops the worker here
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=workflows,
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSED_THROUGH)
        ),
        activities=activities_of(
            CatalogActivities(settings, client),
            BackupActivities(settings),
            RestoreActivities(settings),
            ProvisioningActivities(settings),
            AdoptionActivities(settings),
            DeprovisionActivities(settings),
            ErasureActivities(settings),
            TenantAdminActivities(settings),
            NotifyActivities(settings),
            MaintenanceActivities(settings),
            HealthActivities(settings, client),
            SweepActivities(settings, client),
            MoveActivities(settings),
            TransferActivities(settings),
        ),
        # Every activity is `async def`: no activity_executor (it runs only sync activities). Their blocking calls
        # go through asyncio.to_thread, sized in run_worker.
        max_concurrent_activities=MAX_CONCURRENT_ACTIVITIES,
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        # Tenant, workflow, run, activity and attempt on every log line; per-activity metrics; heartbeats renew
        # the leases of the tenant locks their runs hold.
        interceptors=[
            LogContextAndMetrics(),
            LockLeaseRenewal(LockLeases(Catalog(settings), client, settings.lock_lease_seconds)),
        ],
        workflow_failure_exception_types=WORKFLOW_BUGS,
        # Heartbeats reach the server every second, not every 80 % of the heartbeat timeout (16 s): a
        # cancellation reaches a dump within a couple of seconds, and `tenants` shows its bytes moving.
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        default_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
    )


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    log = get_logger("worker", task_queue=settings.task_queue)
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(IO_THREADS, thread_name_prefix="activity-io"))
    await Catalog(settings).migrate()
    # A cleanup rule PostgreSQL refuses stops the worker here, before it takes any work.
    for rule, note in (await check_cleanup_rules(settings)).items():
        log.warning("cleanup rule checked in each tenant only", rule=rule, note=note)
    runtime = metrics_runtime(settings.metrics_port) if settings.metrics_port else None
    client = await connect_client(settings, runtime)
    await ensure_search_attributes(client, settings.temporal_namespace)
    worker = build_worker(client, settings)
    log.info("worker started", temporal=settings.temporal_address, namespace=settings.temporal_namespace)
    if settings.backup_signing_key_file is None:
        log.warning(
            "backups are not authenticated: anyone who can write to backup storage can forge one that restores; "
            "set TENANTS_BACKUP_SIGNING_KEY_FILE (tenants keys init)"
        )
    else:
        keyring = await asyncio.to_thread(read_keyring, settings.backup_signing_key_file)
        log.info("backups are signed", signing_key=keyring.signing.key_id, verifying_keys=len(keyring.keys))
    # The pool closes after the worker has stopped, once its last activities have finished.
    async with catalog_pool(settings), worker:
        await stop.wait()
    log.info("worker stopped")


def main() -> None:
    try:
        settings = load_settings()
    except ValidationError as exc:  # one line naming the setting, not pydantic's report
        first = exc.errors()[0]
        said = str(first["msg"]).removeprefix("Value error, ")
        print(f"worker: invalid setting TENANTS_{str(first['loc'][0]).upper()}: {said}", file=sys.stderr)
        sys.exit(1)
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
