"""One database copied between two PostgreSQL servers: pg_dump from the source, pg_restore into the target.

With one job it is a pipe, `pg_dump --format=custom | pg_restore`: nothing touches the worker's disk. With more, a
directory dump (pg_dump --jobs) into the worker's 0700 work folder, then pg_restore --jobs from it, then the folder
is removed. pg_dump connects as the source's admin (it must read everything); pg_restore as the restore's own login
role (activities/infra/restore_login.py), whatever it creates belonging to the tenant's owner role: the tenant's data
is never loaded with the admin's rights. Both run in process groups of their own, killed when the activity is
cancelled (activities/infra/subprocesses.py).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

from temporalio.exceptions import ApplicationError

from activities.infra.pg import ClientTools, libpq_env
from activities.infra.restore_login import RestoreLogin
from activities.infra.subprocesses import kill_group, tail
from tenancy.errors import MOVE_FAILED, MOVE_REFUSED, fail

# pg_restore --verbose says this once per table whose data it has loaded (one job, or several).
_TABLE_DONE = re.compile(r"processing data for table|finished item \d+ TABLE DATA")
# The server refusing what the archive asks of the tenant's role: no retry changes that.
_NOT_ALLOWED = re.compile(
    r"permission denied|must be superuser|must be owner|must have privileges|must be member|must be able to set role",
    re.IGNORECASE,
)


class _Stderr:
    """The last lines a child wrote on stderr, read in a thread; `on_line` sees every line."""

    def __init__(self, proc: subprocess.Popen[bytes], on_line: Callable[[str], None] | None = None) -> None:
        self.lines: deque[str] = deque(maxlen=20)
        self._proc = proc
        self._on_line = on_line
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stderr is not None
        for raw in self._proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if self._on_line is not None:
                self._on_line(line)

    def join(self) -> None:
        self._thread.join(10)

    def reason(self) -> str:
        errors = [line for line in self.lines if "error" in line.lower()] or list(self.lines)
        return tail("\n".join([line for line in errors if "ERROR:" in line] or errors))


def _popen(args: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen[bytes]:
    # A session (process group) of its own: killing the group on cancellation reaches whatever it started.
    return subprocess.Popen(args, env=env, stderr=subprocess.PIPE, start_new_session=True, **kwargs)


def restore_args(tools: ClientTools, scratch: str, owner: str, jobs: int | None = None) -> list[str]:
    # --role: what it creates belongs to the owner; --no-owner / --no-acl: no ALTER OWNER or GRANT of the source's
    # roles (they name the source's admin); what the tenant's roles need is given after.
    args = [str(tools.pg_restore), "--dbname", scratch, "--exit-on-error", "--verbose", "--no-password"]
    args += ["--no-owner", "--no-acl", f"--role={owner}"]
    if jobs is not None:
        args.append(f"--jobs={jobs}")
    return args


async def copy_database(
    dumper: ClientTools,
    restorer: ClientTools,
    source_url: str,
    source_db: str,
    target_url: str,
    scratch: str,
    login: RestoreLogin,
    *,
    jobs: int,
    work_dir: Path,
    on_table: Callable[[], None],
) -> None:
    """pg_dump (of `dumper`) `source_db` on the source into the (empty, existing) database `scratch` on the target
    with pg_restore (of `restorer`, the target's major version). Raises a typed error naming the tool and its words
    when either fails: MoveRefused (not retried) when the target's server refused the archive's SQL, which it would
    do again; kills both when cancelled."""

    def seen(line: str) -> None:
        if _TABLE_DONE.search(line):
            on_table()

    dump_env = libpq_env(source_url, source_db)
    restore_env = login.env(target_url, scratch)
    procs: list[subprocess.Popen[bytes]] = []
    dump_stopped = False
    readers: list[_Stderr] = []
    try:
        if jobs <= 1:
            dump = _popen(
                [str(dumper.pg_dump), "--format=custom", "--compress=0", "--no-password"],
                dump_env,
                stdout=subprocess.PIPE,
            )
            procs.append(dump)
            restore = _popen(
                restore_args(restorer, scratch, login.owner), restore_env, stdin=dump.stdout, stdout=subprocess.DEVNULL
            )
            procs.append(restore)
            assert dump.stdout is not None
            dump.stdout.close()  # pg_restore holds the pipe: pg_dump sees it close if pg_restore dies
            dump_err, restore_err = _Stderr(dump), _Stderr(restore, seen)
            readers += [dump_err, restore_err]
            restore_code = await asyncio.to_thread(restore.wait)
            if restore_code != 0 and dump.poll() is None:
                dump_stopped = True  # by us: nothing reads its output any more
                await asyncio.to_thread(kill_group, dump)
            dump_code = await asyncio.to_thread(dump.wait)
            if restore_code != 0 and dump_code == -signal.SIGPIPE:
                dump_stopped = True  # by pg_restore's end: it wrote into a pipe nobody reads; pg_restore says why
        else:
            await asyncio.to_thread(shutil.rmtree, work_dir, True)  # a dead attempt's files
            dump = _popen(
                [
                    str(dumper.pg_dump),
                    "--format=directory",
                    "--compress=0",
                    f"--jobs={jobs}",
                    f"--file={work_dir}",
                    "--no-password",
                ],
                dump_env,
                stdout=subprocess.DEVNULL,
            )
            procs.append(dump)
            dump_err = _Stderr(dump)
            readers.append(dump_err)
            dump_code = await asyncio.to_thread(dump.wait)
            restore_code = 0
            restore_err = dump_err
            if dump_code == 0:
                restore = _popen(
                    [*restore_args(restorer, scratch, login.owner, jobs), str(work_dir)],
                    restore_env,
                    stdout=subprocess.DEVNULL,
                )
                procs.append(restore)
                restore_err = _Stderr(restore, seen)
                readers.append(restore_err)
                restore_code = await asyncio.to_thread(restore.wait)
    except BaseException:
        for proc in procs:
            await asyncio.to_thread(kill_group, proc)
        raise
    finally:
        for reader in readers:
            await asyncio.to_thread(reader.join)
        if jobs > 1:
            await asyncio.to_thread(shutil.rmtree, work_dir, True)
    if dump_code != 0 and not dump_stopped:
        # pg_dump failed first (its server went away, a lock it could not get): pg_restore only saw the input end.
        raise ApplicationError(
            f"pg_dump {dumper.version} exited with {dump_code}: {dump_err.reason()}", type=MOVE_FAILED
        )
    if restore_code != 0:
        message = (
            f"pg_restore {restorer.version} of a pg_dump {dumper.version} archive exited with {restore_code}: "
            f"{restore_err.reason()}"
        )
        if any(_NOT_ALLOWED.search(line) for line in restore_err.lines):
            # The archive asks more than the tenant's own role may do: refused, as a restore of it would be.
            raise fail(MOVE_REFUSED, f"{message} (the copy is loaded as the tenant's role {login.owner!r})")
        if any("ERROR:" in line for line in restore_err.lines):
            raise fail(MOVE_REFUSED, message)  # the target's server refused the archive's SQL: it would again
        raise ApplicationError(message, type=MOVE_FAILED)
