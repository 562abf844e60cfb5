"""The full test suite, run twice: against the machine's PostgreSQL (TENANTS_TEST_DATABASE_URL, or the server on
127.0.0.1:5432 when one answers) and against an embedded PostgreSQL started by the test session. The second pass
runs only the tests that reach PostgreSQL: pure logic and workflow logic on stand-in activities run once.

`make test` calls this; `.ci/run` calls `make test`. Extra arguments go to pytest.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

MACHINE_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def machine_postgres() -> str | None:
    if os.environ.get("TENANTS_TEST_DATABASE_URL"):
        return os.environ["TENANTS_TEST_DATABASE_URL"]
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return MACHINE_PG
    except OSError:
        return None


def pytest(label: str, url: str | None, extra: list[str], only_postgres: bool = False) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTS_")}
    if url:
        env["TENANTS_TEST_DATABASE_URL"] = url
    if only_postgres:
        env["TENANTS_TEST_ONLY_POSTGRES"] = "1"
    print(f"\n=== tests against {label} ===", flush=True)
    return subprocess.call([sys.executable, "-m", "pytest", *extra], env=env)


def main() -> int:
    extra = sys.argv[1:]
    codes = []
    url = machine_postgres()
    if url:
        codes.append(pytest(f"the machine's PostgreSQL ({url})", url, extra))
    else:
        print("\n=== no PostgreSQL on 127.0.0.1:5432 and no TENANTS_TEST_DATABASE_URL: that pass is skipped ===")
    # Tests that never reach PostgreSQL ran in the first pass; a second server only changes the ones that do.
    codes.append(pytest("an embedded PostgreSQL", None, extra, only_postgres=bool(codes)))
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
