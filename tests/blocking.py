"""Hold a table lock so a dump waits: makes "mid-dump" a state a test can reach and leave at will."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
from psycopg import sql


@contextlib.contextmanager
def table_locked(admin_url: str, dbname: str, table: str = "time_entries") -> Iterator[psycopg.Connection]:
    conn = psycopg.connect(psycopg.conninfo.make_conninfo(admin_url, dbname=dbname))
    try:
        conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(table)))
        yield conn
    finally:
        conn.rollback()
        conn.close()


async def wait_until(condition: Callable[[], object], timeout: float = 30, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def partial_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.partial")) if folder.is_dir() else []
