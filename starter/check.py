"""`tenants backup --check`: is everything a backup needs usable? One line per check, exit 1 if any fails."""

from __future__ import annotations

import psycopg
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from activities.infra.catalog import Catalog
from activities.infra.manifest_signing import read_keyring
from activities.infra.pg import find_client_tools, one_row, server_major
from activities.infra.servers import ServerUrls
from activities.infra.storage import open_storage
from activities.infra.temporal import connect_client
from tenancy.errors import InvalidInput, failure_message
from tenancy.search import TENANT_ID
from tenancy.servers import DEFAULT_SERVER
from tenancy.settings import Settings


async def _postgres(settings: Settings, url: str | None = None) -> tuple[str, int]:
    async with await psycopg.AsyncConnection.connect(url or settings.effective_database_url, connect_timeout=5) as conn:
        version = (await one_row(await conn.execute("SHOW server_version")))[0].split()[0]
        return f"PostgreSQL {version} at {conn.info.host}:{conn.info.port}", server_major(conn.info.server_version)


async def _servers(settings: Settings) -> list[tuple[str, bool | None, str]]:
    """Each server besides `default` that this machine or the catalog knows: reachable, its major version, and the
    pg_dump/pg_restore of that major (a worker dumps and restores a tenant with the tools of its server's)."""
    results: list[tuple[str, bool | None, str]] = []
    try:
        urls = ServerUrls(settings).configured()
    except ValueError as exc:
        return [("servers file", False, str(exc))]
    try:
        known = {row["name"] for row in await Catalog(settings).servers()}
    except Exception:  # the catalog's own check says why
        known = set()
    for name in sorted((set(urls) | known) - {DEFAULT_SERVER}):
        label = f"server {name}"
        if name not in urls:
            results.append(
                (label, None, "in the catalog, but no URL for it here (TENANTS_SERVERS or the servers file)")
            )
            continue
        try:
            line, major = await _postgres(settings, urls[name])
        except Exception as exc:
            said = (failure_message(exc).strip().splitlines() or [type(exc).__name__])[0]
            results.append((label, False, f"cannot connect: {said}"))
            continue
        if name not in known:
            line += "; not in the catalog (`tenants servers add`): takes no tenant"
        try:
            tools = find_client_tools(major, settings.pg_bin_dir)
            results.append((label, True, f"{line}; pg_dump/pg_restore {tools.version} in {tools.pg_dump.parent}"))
        except Exception as exc:
            results.append((label, False, f"{line}; {failure_message(exc)}"))
    return results


async def _temporal(settings: Settings) -> list[tuple[str, bool, str]]:
    client = await connect_client(settings)
    results = [("Temporal", True, f"{settings.temporal_address}, namespace {settings.temporal_namespace}")]
    attrs = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=settings.temporal_namespace)
    )
    has_attr = TENANT_ID.name in attrs.custom_attributes
    results.append(("search attribute", has_attr, "TenantId" if has_attr else "TenantId is not registered"))
    queue = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(namespace=settings.temporal_namespace, task_queue=TaskQueue(name=settings.task_queue))
    )
    pollers = len(queue.pollers)
    results.append(
        (
            "worker",
            pollers > 0,
            f"{pollers} polling task queue {settings.task_queue}"
            if pollers
            else f"no worker polls task queue {settings.task_queue}: start one with `python worker.py`",
        )
    )
    return results


def signing_check(settings: Settings) -> tuple[str, bool | None, str]:
    """Backup signing: the key file's signing key, or a warning (not a failure) that backups are not authenticated."""
    path = settings.backup_signing_key_file
    if path is None:
        return (
            "signing",
            None,
            "backups are not authenticated: anyone who can write to backup storage can forge one that restores "
            "(set TENANTS_BACKUP_SIGNING_KEY_FILE, see `tenants keys init`)",
        )
    try:
        keyring = read_keyring(path)
    except InvalidInput as exc:
        return "signing", False, str(exc)
    return "signing", True, f"backups signed with key {keyring.signing.key_id} of {path} ({len(keyring.keys)} verify)"


async def run_checks(settings: Settings) -> int:
    # ok: True; FAIL: False; warn: None, said but not a failure.
    results: list[tuple[str, bool | None, str]] = []
    major: int | None = None
    try:
        line, major = await _postgres(settings)
        results.append(("PostgreSQL", True, line))
    except Exception as exc:
        results.append(("PostgreSQL", False, f"cannot connect: {failure_message(exc).strip()}"))
    if major is not None:
        try:
            tools = find_client_tools(major, settings.pg_bin_dir)
            results.append(("pg_dump", True, f"{tools.pg_dump} ({tools.version})"))
            results.append(("pg_restore", True, f"{tools.pg_restore} ({tools.version})"))
        except Exception as exc:
            results.append(("pg_dump/pg_restore", False, failure_message(exc)))
        try:
            await Catalog(settings).migrate()
            results.append(("catalog", True, f"database {settings.catalog_database}"))
        except Exception as exc:
            results.append(("catalog", False, failure_message(exc)))
        results += await _servers(settings)
    try:
        storage = open_storage(settings)
        storage.check_writable()
        results.append(("storage", True, f"{storage.location()} is writable"))
    except Exception as exc:
        results.append(("storage", False, f"{settings.storage_url}: {exc}"))
    results.append(signing_check(settings))
    try:
        results += await _temporal(settings)
    except Exception as exc:
        results.append(("Temporal", False, f"{settings.temporal_address}: {failure_message(exc)}"))
    width = max(len(name) for name, _, _ in results)
    for name, ok, detail in results:
        print(f"{'warn' if ok is None else 'ok  ' if ok else 'FAIL'}  {name.ljust(width)}  {detail}")
    return 0 if all(ok is not False for _, ok, _ in results) else 1
