"""Running the `tenants` command as a user does: a real process against the test session's servers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

TENANTS = [sys.executable, "-m", "starter.cli"]


def cli_environment(temporal_env, settings, task_queue: str) -> dict[str, str]:
    """The environment a user's shell would have: the session's servers, storage and task queue."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTS_")}
    env.update(
        TENANTS_SECRETS_DIR=str(settings.effective_secrets_dir),
        TENANTS_DATABASE_URL=settings.effective_database_url,
        TENANTS_CATALOG_DATABASE=settings.catalog_database,
        TENANTS_DATABASE_PREFIX=settings.database_prefix,
        TENANTS_STORAGE_URL=f"file://{settings.storage_root}",
        TENANTS_TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host,
        TENANTS_TASK_QUEUE=task_queue,
    )
    return env


async def tenants(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `tenants ARGS`; no terminal on stdin, as in a script (confirmations then need --yes)."""
    return await asyncio.to_thread(
        subprocess.run,
        [*TENANTS, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
