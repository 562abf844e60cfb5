# The tenant-lifecycle worker. Build: docker build --build-arg PG_MAJOR=16 -t tenant-lifecycle-worker .
FROM python:3.11-slim

# pg_dump/pg_restore must be of the tenants' PostgreSQL server major version: the worker refuses to back up or
# restore with any other (a newer pg_dump's archive does not restore into an older server). Set PG_MAJOR to the
# server's major version; the client comes from the PostgreSQL project's own apt repository (apt.postgresql.org).
ARG PG_MAJOR=16

RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl; \
    install -d /usr/share/postgresql-common/pgdg; \
    curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
        https://www.postgresql.org/media/keys/ACCC4CF8.asc; \
    . /etc/os-release; \
    echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt ${VERSION_CODENAME}-pgdg main" \
        > /etc/apt/sources.list.d/pgdg.list; \
    apt-get update; \
    apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}"; \
    apt-get purge -y --auto-remove curl; \
    rm -rf /var/lib/apt/lists/*; \
    "/usr/lib/postgresql/${PG_MAJOR}/bin/pg_dump" --version

# TENANTS_PG_BIN_DIR: the pg_dump/pg_restore of PG_MAJOR are tried before any other found on the machine.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TENANTS_PG_BIN_DIR=/usr/lib/postgresql/${PG_MAJOR}/bin \
    TENANTS_MIGRATIONS_DIR=/app/migrations/tenant \
    TENANTS_STORAGE_URL=/backups \
    TENANTS_SECRETS_DIR=/secrets \
    TENANTS_STATE_DIR=/tmp/tenants

WORKDIR /app
COPY . /app
# Bytecode for /app, where `python worker.py` imports the code from: PYTHONDONTWRITEBYTECODE stops Python writing it
# at run time, and without it the workflow sandbox compiles a workflow's module again for every run it starts.
RUN pip install --no-cache-dir . && python -m compileall -q worker.py workflows activities tenancy starter

# A non-root user. The volume mount points exist and belong to it, so named volumes start out writable by it.
RUN set -eux; \
    groupadd --system --gid 10001 tenants; \
    useradd --system --uid 10001 --gid tenants --home-dir /app --no-create-home --shell /usr/sbin/nologin tenants; \
    install -d -o tenants -g tenants -m 0700 /backups /secrets
USER tenants

CMD ["python", "worker.py"]
