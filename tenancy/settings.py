"""Settings, read from TENANTS_* environment variables and an optional .env file."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlparse

from pydantic import BaseModel, Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tenancy.errors import InvalidInput
from tenancy.maintenance import DEFAULT_CLEANUP_RULES, CleanupRule

Compression = Literal["gzip", "zstd", "none"]
# zstd 1, not zstd's usual 3: level 3 costs twice the CPU of level 1 for an archive no smaller on the sample tenant,
# and on a busy 2-core worker took a backup to 1.7x the time of reading the tenant, level 1 to 1.3x
# (docs/benchmarks.md).
DEFAULT_COMPRESSION_LEVELS = {"gzip": 6, "zstd": 1, "none": 0}
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The backup signing key file of the embedded stack (`tenants up`), in its state folder.
STACK_SIGNING_KEY_FILE = "backup-signing.keys"
# The embedded PostgreSQL's superuser password, generated at its initdb, in this file of the state folder (0600).
EMBEDDED_PASSWORD_FILE = "postgres-superuser-password"


class PlanLimits(BaseModel):
    max_tenants: int = Field(ge=0)  # tenants one owner may have on this plan
    quota_mb: int = Field(ge=1)  # database size quota per tenant


DEFAULT_PLANS = {
    "free": PlanLimits(max_tenants=1, quota_mb=500),
    "pro": PlanLimits(max_tenants=5, quota_mb=10_240),
    "business": PlanLimits(max_tenants=50, quota_mb=102_400),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TENANTS_", env_file=".env", extra="ignore")

    # PostgreSQL server that holds the tenant databases (an admin connection). Empty: the embedded server.
    database_url: str | None = None
    # More servers for tenant databases, by name (tenancy/servers.py): a JSON object {"pg-b": "postgresql://..."}
    # here, and the servers file (`tenants servers add` writes it; 0600, default <secrets folder>/servers.json).
    # The server of database_url is named `default`. Only workers and the command line read these URLs: a workflow
    # names a server, never its URL.
    servers: dict[str, str] = Field(default_factory=dict)
    servers_file: Path | None = None
    # Database of the control-plane catalog, on the default server.
    catalog_database: str = "tenants_catalog"
    # Tenant databases are named <prefix><tenant id>.
    database_prefix: str = "tenant_"
    # Port of the embedded PostgreSQL started when no database URL is set.
    embedded_pg_port: int = 54329

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_ui_url: str = "http://localhost:8233"
    task_queue: str = "tenant-lifecycle"

    # Where backups go: a folder path or a file:// URL.
    storage_url: str = ".tenants/backups"
    # Local state of the embedded stack (Temporal's database file, PostgreSQL data folder).
    state_dir: Path = Path(".tenants")

    # S3-compatible storage (TENANTS_STORAGE_URL=s3://bucket/prefix): endpoint for MinIO, GCS interoperability
    # or a local test server; credentials come from the usual AWS variables or files.
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_part_size_mb: int = Field(default=16, ge=5, le=5120)
    # Encryption at rest with age: backups are encrypted to these public recipients (age1…); restores and drills
    # read the private identity from a file. Workers that only back up never need the identity.
    age_recipients: list[str] = Field(default_factory=list)
    age_identity_file: Path | None = None
    # Signed manifests (tenancy/signing.py): a key file, one `key_id:base64secret` a line (`tenants keys init`).
    # Set: every backup's manifest is signed with its first key, and restores and drills refuse a backup not signed
    # by one of its keys. Unset: `<state_dir>/backup-signing.keys` when it exists (`tenants up` makes it), else
    # backups are not authenticated.
    backup_signing_key_file: Path | None = None
    # Per-tenant keys (TENANTS_TENANT_KEYS=on): each tenant's backups are encrypted only to a key of its own, whose
    # private half is kept in the catalog wrapped to the age recipients above (the master; the identity file
    # unwraps it). Erasing the tenant destroys the key, so every copy of its backups, wherever it is, is unreadable.
    tenant_keys: bool = False

    # zstd: pg_dump's own (`--compress=zstd`, pg_dump 16+ built with zstd), else a zstd stream the worker writes
    # around an uncompressed dump, on up to 4 cores; gzip: pg_dump's own, single-threaded, about 4-5x the time of
    # reading the tenant (docs/benchmarks.md).
    compression: Compression = "zstd"
    # gzip: 0-9 (6 is the original system's advice); zstd: 1-22 (1 by default, see DEFAULT_COMPRESSION_LEVELS).
    compression_level: int | None = None
    keep: int = Field(default=7, ge=1)
    # Retention: "keep" keeps the N newest verified backups (--keep); "calendar" keeps all for a few days, then
    # one a day, a week, a month, a year (spatie's defaults), with an optional size cap. Pinned backups always stay.
    retention_policy: Literal["keep", "calendar"] = "keep"
    calendar_keep_all_days: int = Field(default=7, ge=0)
    calendar_daily_days: int = Field(default=16, ge=0)
    calendar_weekly_weeks: int = Field(default=8, ge=0)
    calendar_monthly_months: int = Field(default=4, ge=0)
    calendar_yearly_years: int = Field(default=2, ge=0)
    calendar_max_total_mb: int | None = Field(default=None, ge=1)
    # Restore drills: each tenant's newest backup is drilled once every N weeks (1: every tenant every week).
    drill_every_weeks: int = Field(default=1, ge=1, le=52)
    fleet_concurrency: int = Field(default=4, ge=1, le=64)
    # How long a mutating operation waits for another one on the same tenant; 0 fails at once.
    lock_wait_seconds: int = Field(default=0, ge=0, le=86_400)
    # A tenant lock's lease, renewed by its holder's heartbeats: a holder no worker can see (another deployment
    # sharing the catalog) loses the lock when it runs out. Why an hour: tenancy/locks.py.
    lock_lease_seconds: int = Field(default=3600, ge=1, le=7 * 86_400)
    # pg_restore --jobs for restores (parallel restore of custom-format archives).
    restore_jobs: int = Field(default=2, ge=1, le=32)
    # How long a restore keeps the database it replaced (renamed aside), so `tenants restore --undo` can swap it
    # back: "24h", "90m", "7d", "3600" (seconds), or 0 to drop it at once. TENANTS_RESTORE_KEEP_PREVIOUS.
    restore_keep_previous: int = 86_400
    # SQL queries that must each return true in a restored database before it replaces the tenant's.
    restore_checks: list[str] = Field(default_factory=list)
    # How long one such check (or a drill's) may run, as the tenant's role, before it is cancelled and fails.
    check_timeout_seconds: int = Field(default=30, ge=1, le=3600)
    # Cache clearing after a restore: with a Redis URL, the tenant's keys (this prefix) are deleted.
    redis_url: str | None = None
    cache_key_prefix: str = "tenant:{tenant_id}:"
    # A folder with pg_dump/pg_restore to use before any other.
    pg_bin_dir: Path | None = None

    # Provisioning: plan limits (JSON in the environment), the tenant schema's SQL migrations, where tenant
    # role credentials are kept (0600 files), welcome mail and event webhooks.
    plans: dict[str, PlanLimits] = Field(default_factory=lambda: dict(DEFAULT_PLANS))
    migrations_dir: Path = PROJECT_ROOT / "migrations" / "tenant"
    secrets_dir: Path | None = None
    smtp_host: str | None = None
    smtp_port: int = 25
    mail_from: str = "tenant-lifecycle@localhost"
    webhook_url: str | None = None
    webhook_secret: str | None = None

    # Maintenance: cleanup rules (JSON list of {table, timestamp_column, condition}), batch size, timeouts on
    # every maintenance statement, the bloat share above which optimize rebuilds an index, and the age after
    # which a leftover `.partial` file in the backup folder is removed.
    cleanup_rules: list[CleanupRule] = Field(default_factory=lambda: list(DEFAULT_CLEANUP_RULES))
    cleanup_batch_size: int = Field(default=5000, ge=1, le=1_000_000)
    maintenance_statement_timeout_s: int = Field(default=300, ge=1)
    maintenance_lock_timeout_ms: int = Field(default=2000, ge=1)
    reindex_bloat_threshold: float = Field(default=0.3, gt=0, lt=1)
    reindex_min_bytes: int = Field(default=1 << 20, ge=0)
    stale_partial_hours: int = Field(default=24, ge=1)

    # Schedules: the declarations (this repository's schedules.toml unless given), their time zone (IANA),
    # what happens when a run is still going at the next time, and how far back missed runs are caught up.
    schedules_file: Path = PROJECT_ROOT / "schedules.toml"
    timezone: str = "UTC"
    schedule_overlap: Literal["skip", "buffer_one"] = "skip"
    schedule_catchup_minutes: int = Field(default=360, ge=1)
    # Health: a tenant with no verified backup for this long, or over this share of its plan's quota, alerts.
    # Alerts go to the log, and to these when set.
    backup_max_age_hours: int = Field(default=48, ge=1)
    quota_alert_ratio: float = Field(default=0.8, gt=0, le=1)
    alert_webhook_url: str | None = None
    alert_email: str | None = None
    # Prometheus metrics of the worker (the SDK's and ours) on this port; empty: off.
    metrics_port: int | None = None

    log_level: str = "INFO"
    log_format: Literal["console", "json"] = "console"

    _embedded_password_read: str | None = PrivateAttr(default=None)

    @field_validator("timezone")
    @classmethod
    def _iana_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone") from None
        return value

    @field_validator("restore_keep_previous", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        from tenancy.durations import parse_duration

        if isinstance(value, str):
            try:
                return parse_duration(value)
            except InvalidInput as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("database_prefix")
    @classmethod
    def _plain_prefix(cls, value: str) -> str:
        from tenancy.naming import validate_database_prefix

        try:
            return validate_database_prefix(value)
        except InvalidInput as exc:
            raise ValueError(str(exc)) from None

    @field_validator("catalog_database")
    @classmethod
    def _catalog_not_a_system_database(cls, value: str) -> str:
        from tenancy.naming import SYSTEM_DATABASES

        if not value or len(value.encode()) > 63 or value in SYSTEM_DATABASES:
            raise ValueError(f"{value!r} cannot be the catalog database: give a name of its own (1-63 bytes)")
        return value

    @model_validator(mode="after")
    def _the_stacks_signing_key_by_default(self) -> Settings:
        # Every process of one deployment must sign and verify alike: a second worker or a CLI next to `tenants up`
        # finds the key file the stack made in the state folder, as it finds the embedded server's password there.
        if self.backup_signing_key_file is None and self.stack_signing_key_file.is_file():
            self.backup_signing_key_file = self.stack_signing_key_file
        return self

    @field_validator("compression_level")
    @classmethod
    def _level_in_range(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= 22:
            raise ValueError("compression level must be between 0 and 22")
        return value

    @property
    def effective_compression_level(self) -> int:
        if self.compression_level is not None:
            if self.compression == "gzip":
                return min(self.compression_level, 9)
            return self.compression_level
        return DEFAULT_COMPRESSION_LEVELS[self.compression]

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        password = self._embedded_password()
        credentials = f"postgres:{quote(password, safe='')}" if password else "postgres"
        return f"postgresql://{credentials}@127.0.0.1:{self.embedded_pg_port}/postgres"

    @property
    def embedded_password_file(self) -> Path:
        return (self.state_dir / EMBEDDED_PASSWORD_FILE).resolve()

    def _embedded_password(self) -> str | None:
        """The embedded server's superuser password, read once it exists (`tenants up` writes it before the
        server starts, other commands find it there); kept, so async callers read the file at most once."""
        if self._embedded_password_read is None:
            try:
                self._embedded_password_read = self.embedded_password_file.read_text().strip() or None
            except FileNotFoundError:
                return None
        return self._embedded_password_read

    def calendar_policy(self):
        from tenancy.retention import CalendarPolicy

        cap = self.calendar_max_total_mb * 2**20 if self.calendar_max_total_mb else None
        return CalendarPolicy(
            keep_all_days=self.calendar_keep_all_days,
            daily_days=self.calendar_daily_days,
            weekly_weeks=self.calendar_weekly_weeks,
            monthly_months=self.calendar_monthly_months,
            yearly_years=self.calendar_yearly_years,
            max_total_bytes=cap,
        )

    @property
    def stack_signing_key_file(self) -> Path:
        """The key file `tenants up` signs backups with when TENANTS_BACKUP_SIGNING_KEY_FILE is not set."""
        return (self.state_dir / STACK_SIGNING_KEY_FILE).resolve()

    @property
    def effective_secrets_dir(self) -> Path:
        return (self.secrets_dir or self.state_dir / "secrets").resolve()

    @property
    def effective_servers_file(self) -> Path:
        return (self.servers_file or self.effective_secrets_dir / "servers.json").resolve()

    @property
    def template_database(self) -> str:
        """The database new tenants are copied from, kept at the newest migration."""
        return f"{self.database_prefix}_template"

    @cached_property
    def storage_root(self) -> Path:
        url = self.storage_url
        if url.startswith("file://"):
            return Path(urlparse(url).path).resolve()
        if url.startswith("s3://"):
            return (self.state_dir / "s3-cache").resolve()  # object storage: nothing is kept locally
        if "://" in url:
            raise ValueError(f"unsupported storage URL {url!r}: use a folder path, file:// or s3://bucket/prefix")
        return Path(url).expanduser().resolve()


_SECRET_QUERY_KEYS = {"password", "sslpassword"}


def redact_url(url: str) -> str:
    """A connection URL fit for logs and screens: any password (`user:password@`, or `?password=` and
    `sslpassword=` in its query) replaced by ***."""
    from urllib.parse import parse_qsl, urlencode

    parsed = urlparse(url)
    if parsed.password is not None:
        parsed = parsed._replace(netloc=parsed.netloc.replace(f":{parsed.password}@", ":***@", 1))
    if parsed.query:
        pairs = parse_qsl(parsed.query, keep_blank_values=True)
        if any(key.lower() in _SECRET_QUERY_KEYS for key, _ in pairs):
            redacted = [(key, "***" if key.lower() in _SECRET_QUERY_KEYS else value) for key, value in pairs]
            parsed = parsed._replace(query=urlencode(redacted, safe="*"))
    return parsed.geturl()


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)  # pydantic checks each override's type
