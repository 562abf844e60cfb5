"""The move's pg_dump | pg_restore pipe (activities/infra/copy.py) tells a refused archive from a failed dump when
pg_restore stops first: pg_dump then dies of SIGPIPE, which is not pg_dump's failure. No server: stand-in tools."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.infra.copy import copy_database
from activities.infra.pg import ClientTools
from activities.infra.restore_login import RestoreLogin
from tenancy.errors import MOVE_REFUSED

URL = "postgresql://admin@127.0.0.1:1/postgres"  # never connected to: the tools are scripts


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


async def test_a_refused_archive_is_refused_even_when_pg_dump_died_of_the_closed_pipe(tmp_path: Path) -> None:
    # pg_dump writes for ever; pg_restore closes its input (pg_dump dies of SIGPIPE at once), then says why it
    # stopped, as PostgreSQL 18 does for a pg_dump 18 archive of this machine's PostgreSQL 15.20.
    dump = _script(tmp_path / "pg_dump", "exec yes archive-bytes\n")
    restore = _script(
        tmp_path / "pg_restore",
        "exec 0<&-\nsleep 0.5\n"
        "echo 'pg_restore: error: could not execute query: ERROR:  unrecognized parameter \"pg_attver\"' >&2\n"
        "exit 1\n",
    )
    tools = ClientTools(pg_dump=dump, pg_restore=restore, version="18.6", major=18)
    with pytest.raises(ApplicationError) as raised:
        await copy_database(
            tools,
            tools,
            URL,
            "tenant_db",
            URL,
            "tenant_db__rs_x",
            RestoreLogin(name="loader", password="secret", owner="tenant_owner"),
            jobs=1,
            work_dir=tmp_path / "work",
            on_table=lambda: None,
        )
    # Refused (not retried, the move falls back to the source's own pg_dump at once), with pg_restore's words.
    assert raised.value.type == MOVE_REFUSED
    assert "pg_attver" in str(raised.value)
