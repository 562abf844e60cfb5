"""Server names to admin URLs, as this process is configured (tenancy/servers.py says why URLs stay here).

A name resolves from, in order: `default` → TENANTS_DATABASE_URL (or the embedded server); TENANTS_SERVERS (a JSON
object); the servers file (`tenants servers add` writes it, 0600). A name no source knows fails with one line naming
the setting that fixes it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from activities.infra.pg import connect, one_row, server_major
from tenancy.errors import SERVER_NOT_CONFIGURED, fail
from tenancy.servers import DEFAULT_SERVER, validate_server_name
from tenancy.settings import Settings

# The servers file as last read: (path, mtime_ns, size) → its URLs, so a lookup costs a stat, not a read.
_FILE_CACHE: dict[Path, tuple[int, int, dict[str, str]]] = {}


def read_servers_file(path: Path) -> dict[str, str]:
    """The name → URL object of a servers file; {} when there is none. A malformed file raises ValueError."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return {}
    cached = _FILE_CACHE.get(path)
    if cached and cached[0] == stat.st_mtime_ns and cached[1] == stat.st_size:
        return cached[2]
    try:
        data: Any = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"the servers file {path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"the servers file {path} must hold one JSON object of server name → admin URL")
    _FILE_CACHE[path] = (stat.st_mtime_ns, stat.st_size, data)
    return data


def write_server_url(path: Path, name: str, url: str | None) -> None:
    """Add (or with url None, remove) one server's URL in the servers file, written whole and replaced atomically,
    readable by its owner only."""
    current = dict(read_servers_file(path))
    if url is None:
        current.pop(name, None)
    else:
        current[name] = url
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.partial")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(current, handle, indent=2, sort_keys=True)
    os.replace(temp, path)
    _FILE_CACHE.pop(path, None)


class ServerUrls:
    """The admin URL of each server this process knows."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def configured(self) -> dict[str, str]:
        """Every server name this process can reach → its admin URL (`default` always)."""
        urls = dict(read_servers_file(self.settings.effective_servers_file))
        urls.update(self.settings.servers)
        urls[DEFAULT_SERVER] = self.settings.effective_database_url
        return urls

    def url(self, name: str | None) -> str:
        """The admin URL of server `name` (None: `default`). A name this process has no URL for is a typed,
        non-retryable failure: retrying on this worker cannot help; configuring it (and restarting) does."""
        name = name or DEFAULT_SERVER
        if name == DEFAULT_SERVER:
            return self.settings.effective_database_url
        validate_server_name(name)
        try:
            url = self.configured().get(name)
        except ValueError as exc:
            raise fail(SERVER_NOT_CONFIGURED, str(exc)) from None
        if not url:
            raise fail(
                SERVER_NOT_CONFIGURED,
                f"this process has no URL for server {name!r}: add it with `tenants servers add {name} URL`, or set "
                f"TENANTS_SERVERS / TENANTS_SERVERS_FILE on this worker",
            )
        return url


async def server_major_version(admin_url: str) -> int:
    """The major version of the server behind an admin URL (15, 18, ...)."""
    async with await connect(admin_url) as conn:
        row = await one_row(await conn.execute("SHOW server_version_num"))
    return server_major(int(row[0]))


async def tenant_admin_url(settings: Settings, tenant_id: str, server: str | None = None) -> str:
    """The admin URL of the server holding the tenant's database: `server` when the caller names one (a move's
    target), else the one the catalog records for the tenant (`default` for a tenant it does not know)."""
    if server is None:
        from activities.infra.catalog import Catalog

        server = await Catalog(settings).tenant_server(tenant_id)
    return ServerUrls(settings).url(server)
