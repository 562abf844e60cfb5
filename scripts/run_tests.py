"""The full test suite, run twice: against the machine's PostgreSQL (TENANTS_TEST_DATABASE_URL, or the server on
127.0.0.1:5432 when one answers) and against an embedded PostgreSQL started by the test session. The second pass
runs only the tests that reach PostgreSQL: pure logic and workflow logic on stand-in activities run once.

The two passes share nothing (each has its own Temporal dev server, PostgreSQL server, folders and names) and
spend most of their time waiting on those servers, so they run at the same time: the first pass prints as it
goes, the second's output follows when it is done. TENANTS_TEST_PASSES=serial runs them one after the other.

`make test` calls this; `.ci/run` calls `make test`. Extra arguments go to pytest.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

MACHINE_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def machine_postgres() -> str | None:
    if os.environ.get("TENANTS_TEST_DATABASE_URL"):
        return os.environ["TENANTS_TEST_DATABASE_URL"]
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return MACHINE_PG
    except OSError:
        return None


def pytest_command(url: str | None, extra: list[str], only_postgres: bool, basetemp: str) -> tuple[list[str], dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTS_")}
    if url:
        env["TENANTS_TEST_DATABASE_URL"] = url
    if only_postgres:
        env["TENANTS_TEST_ONLY_POSTGRES"] = "1"
    # Each pass its own temporary folder: pytest would otherwise prune the other's.
    return [sys.executable, "-m", "pytest", f"--basetemp={basetemp}", *extra], env


def main() -> int:
    work = tempfile.mkdtemp(prefix="tl-tests-")
    try:
        return run_passes(sys.argv[1:], work)
    finally:
        # Backups, age identities, signing keys and passwords of the test servers: not left in /tmp.
        shutil.rmtree(work, ignore_errors=True)


def run_passes(extra: list[str], work: str) -> int:
    serial = os.environ.get("TENANTS_TEST_PASSES") == "serial"
    url = machine_postgres()
    started = time.monotonic()
    embedded_label = "an embedded PostgreSQL"
    embedded_cmd, embedded_env = pytest_command(None, extra, bool(url), f"{work}/embedded")
    if not url:
        print("\n=== no PostgreSQL on 127.0.0.1:5432 and no TENANTS_TEST_DATABASE_URL: that pass is skipped ===")
        print(f"\n=== tests against {embedded_label} ===", flush=True)
        return subprocess.call(embedded_cmd, env=embedded_env)

    machine_cmd, machine_env = pytest_command(url, extra, False, f"{work}/machine")
    print(f"\n=== tests against the machine's PostgreSQL ({url}) ===", flush=True)
    if serial:
        first = subprocess.call(machine_cmd, env=machine_env)
        print(f"\n=== tests against {embedded_label} ===", flush=True)
        return max(first, subprocess.call(embedded_cmd, env=embedded_env))

    # Tests that never reach PostgreSQL run in the first pass only; a second server changes only the ones that do.
    with tempfile.TemporaryFile() as second_output:
        second = subprocess.Popen(embedded_cmd, env=embedded_env, stdout=second_output, stderr=subprocess.STDOUT)
        first = subprocess.call(machine_cmd, env=machine_env)
        code = second.wait()
        second_output.seek(0)
        print(f"\n=== tests against {embedded_label} (run at the same time) ===", flush=True)
        sys.stdout.buffer.write(second_output.read())
    print(f"\n=== both passes: {time.monotonic() - started:.0f} s ===", flush=True)
    return max(first, code)


if __name__ == "__main__":
    sys.exit(main())
