"""The embedded PostgreSQL asks every client for a password (scram-sha-256): the superuser's is generated at initdb
and kept in a 0600 file of the state folder, tenant roles log in with theirs, and a data folder of a version that
trusted every local client is upgraded in place at start.

Runs once (one_server): against its own embedded server when the pass uses the machine's PostgreSQL, else
against the session's embedded server."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from activities.infra.catalog import Catalog
from activities.infra.credentials import read_credentials
from starter.services import PG_SYSTEM_USER, EmbeddedPostgres, free_port, hba_trusts, hba_with_scram
from tenancy.contracts.provision import ProvisionTenantInput
from tenancy.settings import EMBEDDED_PASSWORD_FILE, Settings
from workflows.provision_tenant import ProvisionTenantWorkflow

pytestmark = pytest.mark.one_server  # authentication of the embedded server: the machine's plays no part

INITDB_TRUST_HBA = """\
# TYPE  DATABASE        USER            ADDRESS                 METHOD

# "local" is for Unix domain socket connections only
local   all             all                                     trust
# IPv4 local connections:
host    all             all             127.0.0.1/32            trust
host    all             all             ::1/128                 trust
local   replication     all                                     trust
host    replication     all             127.0.0.1/32            trust
"""


@pytest.fixture
def no_ambient_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A password-less connection must not pick one up from the environment or a ~/.pgpass file."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))


def without_password(server: EmbeddedPostgres, **params: str) -> str:
    return make_conninfo(host="127.0.0.1", port=server.port, user="postgres", dbname="postgres", **params)


@contextlib.contextmanager
def state_folder() -> Iterator[Path]:
    """A folder of its own under /tmp, not pytest's: a concurrent pytest session resets pytest's folder to 0700,
    which the server's system user (the tests run as root) then cannot traverse."""
    folder = Path(tempfile.mkdtemp(prefix="tl-embedded-auth-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[EmbeddedPostgres]:
    if not os.environ.get("TENANTS_TEST_DATABASE_URL"):
        yield request.getfixturevalue("embedded_server")
        return
    with state_folder() as state:
        own = EmbeddedPostgres(state / "pgdata", free_port(), durable=False)
        own.start()
        try:
            yield own
        finally:
            own.stop()


def test_hba_rules_switch_from_trust_to_scram() -> None:
    assert hba_trusts(INITDB_TRUST_HBA)
    switched = hba_with_scram(INITDB_TRUST_HBA)
    assert not hba_trusts(switched)
    assert switched.count("scram-sha-256") == 5 and "# TYPE  DATABASE" in switched
    assert switched.splitlines()[5].split() == ["host", "all", "all", "127.0.0.1/32", "scram-sha-256"]
    assert not hba_trusts("# local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")


def test_settings_read_the_embedded_password_from_the_state_folder(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, database_url=None, state_dir=tmp_path, embedded_pg_port=5499)
    assert settings.effective_database_url == "postgresql://postgres@127.0.0.1:5499/postgres"
    (tmp_path / EMBEDDED_PASSWORD_FILE).write_text("s3cr/t\n")
    assert settings.effective_database_url == "postgresql://postgres:s3cr%2Ft@127.0.0.1:5499/postgres"
    given = Settings(_env_file=None, database_url="postgresql://u@h/db", state_dir=tmp_path)
    assert given.effective_database_url == "postgresql://u@h/db"


def test_the_server_asks_for_the_password_kept_in_a_private_file(
    server: EmbeddedPostgres, no_ambient_password: None
) -> None:
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(without_password(server), connect_timeout=5)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(without_password(server, password="not-the-password"), connect_timeout=5)

    assert stat.S_IMODE(server.password_file.stat().st_mode) == 0o600
    assert server.password in server.url
    with psycopg.connect(server.url, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    # A command of the stack (another process) finds the password through its settings' state folder.
    settings = Settings(
        _env_file=None, database_url=None, state_dir=server.password_file.parent, embedded_pg_port=server.port
    )
    with psycopg.connect(settings.effective_database_url, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    assert not hba_trusts((server.data_dir / "pg_hba.conf").read_text())


async def test_a_tenant_role_logs_in_with_its_stored_password_only(
    server: EmbeddedPostgres, settings: Settings, temporal_env, worker_with, no_ambient_password: None
) -> None:
    on_server = settings.model_copy(update={"database_url": server.url})
    catalog = Catalog(on_server)
    await catalog.migrate()
    tenant_id = f"auth-{uuid.uuid4().hex[:8]}"
    try:
        new = ProvisionTenantInput(name="Auth", plan="pro", owner_email=f"{tenant_id}@example.com", tenant_id=tenant_id)
        async with worker_with(database_url=server.url) as queue:
            result = await temporal_env.client.execute_workflow(
                ProvisionTenantWorkflow.run,
                new,
                id=f"provision-{tenant_id}",
                task_queue=queue,
            )
        creds = read_credentials(settings.effective_secrets_dir, tenant_id)
        assert creds["port"] == server.port
        as_tenant = make_conninfo(host="127.0.0.1", port=server.port, user=creds["role"], dbname=creds["database"])
        with psycopg.connect(make_conninfo(as_tenant, password=creds["password"]), connect_timeout=5) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (result.database_name,)
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(as_tenant, connect_timeout=5)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(make_conninfo(as_tenant, password="not-the-password"), connect_timeout=5)
    finally:
        await catalog.drop_tenant(tenant_id)


def initdb_with_trust(server: EmbeddedPostgres) -> None:
    """A data folder as the versions before scram made it: no password, every local client trusted."""
    server.data_dir.mkdir(parents=True, mode=0o700)
    if os.geteuid() == 0:
        server._prepare_for_root()
    args = [str(server.bin / "initdb"), "-D", str(server.data_dir), "-U", "postgres", "--auth=trust"]
    server._run_as_owner([*args, "--encoding=UTF8", "--locale=C", "--no-sync"], check=True)


def test_a_trusting_data_folder_is_upgraded_in_place(no_ambient_password: None) -> None:
    with state_folder() as state:
        upgrade_in_place(EmbeddedPostgres(state / "pgdata", free_port(), durable=False))


def upgrade_in_place(old: EmbeddedPostgres) -> None:
    initdb_with_trust(old)
    hba = old.data_dir / "pg_hba.conf"
    assert hba_trusts(hba.read_text()) and not old.password_file.exists()
    try:
        old.start()
        # Password set, file saved, rules switched: no client gets in without it.
        assert stat.S_IMODE(old.password_file.stat().st_mode) == 0o600
        assert not hba_trusts(hba.read_text())
        if os.geteuid() == 0:
            assert hba.owner() == PG_SYSTEM_USER
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(without_password(old), connect_timeout=5)
        with psycopg.connect(old.url, connect_timeout=5) as conn:
            conn.execute("CREATE TABLE kept (id int)")
        password = old.password

        # Stopped before the rules were switched (password set and saved, rules still trusting): the next start
        # switches them, with the same password.
        old.stop()
        hba.write_text(INITDB_TRUST_HBA)
        again = EmbeddedPostgres(old.data_dir, old.port, durable=False)
        again.start()
        assert again.password == password
        with psycopg.connect(again.url, connect_timeout=5) as conn:
            assert conn.execute("SELECT to_regclass('kept')").fetchone() == ("kept",)
        again.stop()

        # Without the file the server cannot be reached: start says so instead of starting a locked server.
        old.password_file.unlink()
        with pytest.raises(RuntimeError, match=EMBEDDED_PASSWORD_FILE):
            EmbeddedPostgres(old.data_dir, old.port, durable=False).start()
    finally:
        old.stop()
