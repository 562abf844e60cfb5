"""Naming rules: tenant ids, database names, backup file names. Pure functions."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from tenancy.errors import InvalidInput

TENANT_ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1
TIMESTAMP_FORMAT = "%Y-%m-%d_%H-%M-%S"
BACKUP_EXTENSIONS = {"gzip": "dump", "none": "dump", "zstd": "dump.zst"}
MANIFEST_SUFFIX = ".json"
PARTIAL_PREFIX = "."
PARTIAL_SUFFIX = ".partial"
_BACKUP_NAME_RE = re.compile(
    r"^tenant_(?P<tenant>[a-z0-9-]+)_(?P<ts>\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})\.(?P<ext>dump|dump\.zst)$"
)


def validate_tenant_id(tenant_id: str) -> str:
    """A tenant id is a slug: lowercase letters, digits and inner hyphens, 1 to 40 characters."""
    if not isinstance(tenant_id, str) or not TENANT_ID_RE.fullmatch(tenant_id):
        raise InvalidInput(
            f"invalid tenant id {tenant_id!r}: use 1-40 lowercase letters, digits and hyphens (not at the start or end)"
        )
    return tenant_id


def database_name(prefix: str, tenant_id: str) -> str:
    validate_tenant_id(tenant_id)
    name = f"{prefix}{tenant_id}"
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise InvalidInput(f"database name {name!r} is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES} bytes")
    return name


def backup_name(tenant_id: str, taken_at: datetime, compression: str) -> str:
    """`tenant_<id>_<YYYY-MM-DD_HH-MM-SS>.<ext>`, in UTC, as the original system named its files."""
    validate_tenant_id(tenant_id)
    stamp = taken_at.astimezone(UTC).strftime(TIMESTAMP_FORMAT)
    return f"tenant_{tenant_id}_{stamp}.{BACKUP_EXTENSIONS[compression]}"


def parse_backup_name(tenant_id: str, name: str) -> datetime:
    """The time a backup of this tenant was taken, from its name; InvalidInput for any other name."""
    match = _BACKUP_NAME_RE.fullmatch(name)
    if not match or match["tenant"] != tenant_id:
        raise InvalidInput(f"{name!r} is not the name of a backup of tenant {tenant_id!r}")
    return datetime.strptime(match["ts"], TIMESTAMP_FORMAT).replace(tzinfo=UTC)


def is_backup_name(tenant_id: str, name: str) -> bool:
    try:
        parse_backup_name(tenant_id, name)
    except InvalidInput:
        return False
    return True


def manifest_name(backup: str) -> str:
    return backup + MANIFEST_SUFFIX


def partial_name(final_name: str) -> str:
    """Name a file has while it is being written: hidden and never mistaken for a backup."""
    return f"{PARTIAL_PREFIX}{final_name}{PARTIAL_SUFFIX}"


def workflow_id(operation: str, tenant_id: str | None, at: datetime) -> str:
    """Meaningful workflow ids: `<operation>-<tenant>-<UTC time>`, e.g. backup-acme-20260115T020000Z."""
    stamp = at.astimezone(UTC).strftime("%Y%m%dT%H%M%S") + f"{at.microsecond // 1000:03d}Z"
    parts = [operation, tenant_id, stamp] if tenant_id else [operation, stamp]
    return "-".join(parts)


def _with_suffix(database: str, suffix: str) -> str:
    """`database` + suffix, the database part cut so the whole fits PostgreSQL's 63 bytes."""
    room = MAX_IDENTIFIER_BYTES - len(suffix.encode())
    return database.encode()[:room].decode(errors="ignore") + suffix


def scratch_database_name(database: str, token: str) -> str:
    """Where a restore puts the backup before it is checked and swapped in."""
    return _with_suffix(database, f"__rs_{token[:10]}")


def previous_database_name(database: str, token: str) -> str:
    """What the tenant's database is renamed to when a restore swaps the restored one in."""
    return _with_suffix(database, f"__old_{token[:10]}")


_COPY_NAME_RE = re.compile(r"(?P<base>.*)__(?P<kind>rs|old|pv)_(?P<token>[0-9a-z]{1,10})")


def is_copy_name(database: str, candidate: str) -> bool:
    """True when `candidate` is a name a restore's scratch or set-aside copy, or provisioning's copy, of
    `database` could have: what deprovisioning may drop besides the database itself."""
    match = _COPY_NAME_RE.fullmatch(candidate)
    return match is not None and _with_suffix(database, f"__{match['kind']}_{match['token']}") == candidate


def is_previous_database_name(database: str, candidate: str) -> bool:
    """True when `candidate` is a name previous_database_name could have given `database`."""
    match = re.fullmatch(r"(?P<base>.*)__old_(?P<token>[0-9a-z]{1,10})", candidate)
    return match is not None and previous_database_name(database, match["token"]) == candidate


def slugify(name: str) -> str:
    """A tenant id from a display name: 'Mi Empresa' → 'mi-empresa' (accents dropped, 40 characters at most)."""
    import unicodedata

    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:40].strip("-")
    if not slug:
        raise InvalidInput(f"cannot derive a tenant id from {name!r}: give one with --id")
    return slug


def role_name(prefix: str, tenant_id: str) -> str:
    """Each tenant database has a login role of the same name."""
    return database_name(prefix, tenant_id)


_EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")


def validate_email(email: str) -> str:
    if not _EMAIL_RE.fullmatch(email or "") or len(email) > 254:
        raise InvalidInput(f"invalid e-mail address {email!r}")
    return email.lower()


def validate_display_name(name: str) -> str:
    cleaned = (name or "").strip()
    if not cleaned or len(cleaned) > 200 or any(ord(c) < 32 for c in cleaned):
        raise InvalidInput("a tenant name is 1 to 200 printable characters")
    return cleaned


def provisioning_database_name(database: str, token: str) -> str:
    """Where provisioning copies the template before renaming the copy to the tenant's name: the tenant's name
    only ever appears on a database that already carries its mark."""
    return _with_suffix(database, f"__pv_{token[:10]}")


# Databases every PostgreSQL server has: never a tenant's.
SYSTEM_DATABASES = frozenset({"postgres", "template0", "template1"})
# A plain lowercase identifier (not PostgreSQL's reserved pg_ names), short enough that `<prefix>_template` and
# ids of 23 characters fit in 63 bytes.
DATABASE_PREFIX_RE = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")


def validate_database_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not DATABASE_PREFIX_RE.fullmatch(prefix) or prefix.startswith("pg_"):
        raise InvalidInput(
            f"invalid database prefix {prefix!r}: use 1-40 lowercase letters, digits and underscores, "
            "starting with a letter or underscore (and not pg_)"
        )
    return prefix


def reserved_database(name: str, catalog_database: str, template_database: str) -> str | None:
    """What a database of this name already is to this project or to PostgreSQL, or None when it is free to be
    a tenant's."""
    if name == catalog_database:
        return "the catalog database"
    if name == template_database:
        return "the template database"
    if name in SYSTEM_DATABASES:
        return "a PostgreSQL system database"
    return None


def tenant_database_name(prefix: str, tenant_id: str, catalog_database: str, template_database: str) -> str:
    """`<prefix><tenant id>`, refused when it would be the catalog, the template or a system database."""
    name = database_name(validate_database_prefix(prefix), tenant_id)
    clash = reserved_database(name, catalog_database, template_database)
    if clash:
        raise InvalidInput(
            f"tenant id {tenant_id!r} would name its database {name!r}, which is {clash}; choose another id"
        )
    return name
