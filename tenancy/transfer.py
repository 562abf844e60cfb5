"""The export file of a tenant (`tenants export`, read by `tenants import`), and the rules an import checks. Pure.

An export is a tar of four members, in this order:

    tenant.json                   the catalog row, settings, plan, tenant schema version, where it came from
    database/<backup>.json        the archive's manifest, as signed by the exporting installation
    database/<backup>             the database archive, as the backup workflow wrote it
    SHA256SUMS                    `<sha256>  <member>` for each member above
    SHA256SUMS.sig                (when the exporting installation has a signing key) {key_id, signature}: an
                                  HMAC of SHA256SUMS by its key, so tenant.json is as authentic as the manifest

An installation with a signing key refuses an export whose SHA256SUMS is not signed by a key of its keyring
(exports written before SHA256SUMS.sig existed included): checksums alone anyone can recompute.
A newer export format, or an export of a tenant schema version this installation does not have, is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ValidationError

from tenancy.errors import InvalidInput
from tenancy.naming import manifest_name
from tenancy.signing import KEY_ID_FIELD, SIGNATURE_FIELD, Keyring, NotAuthentic

FORMAT_VERSION = 1
TENANT_JSON = "tenant.json"
SUMS = "SHA256SUMS"
SUMS_SIG = "SHA256SUMS.sig"
# What the signature of SHA256SUMS is over (a domain of its own: never mistaken for a manifest's signature).
_SUMS_DOMAIN = b"tenant-export-sha256sums\n"
DATABASE_DIR = "database"
# tenant.json and a manifest are a few KiB; anything much bigger is not one (read into memory).
MAX_DOCUMENT_BYTES = 1 << 20
# The masking SQL travels in the workflow input: bounded.
MAX_MASK_BYTES = 256 * 1024
_SUM_LINE = re.compile(r"^(?P<sha>[0-9a-f]{64})  (?P<name>\S+)$")

# Audit actions of the transfer workflows (the catalog's audit trail takes any action name).
TENANT_EXPORT = "tenant.export"
TENANT_IMPORT = "tenant.import"
TENANT_IMPORT_FAILED = "tenant.import.failed"


class SourceInstallation(BaseModel):
    namespace: str
    catalog_database: str


class ExportedTenant(BaseModel):
    id: str
    name: str
    plan: str
    owner_email: str
    settings: dict[str, Any]
    status: str


class TenantDocument(BaseModel):
    """tenant.json."""

    format_version: int
    exported_at: datetime
    source: SourceInstallation
    tenant: ExportedTenant
    # The newest tenant migration applied to the database (migrations/tenant/), None when it has none.
    schema_version: str | None
    postgres_major: int
    backup_name: str
    kind: Literal["tenant-export"] = "tenant-export"


def archive_member(backup_name: str) -> str:
    return f"{DATABASE_DIR}/{backup_name}"


def manifest_member(backup_name: str) -> str:
    return f"{DATABASE_DIR}/{manifest_name(backup_name)}"


def members_of(backup_name: str, signed: bool = False) -> list[str]:
    """Every member of an export, in the order they are written."""
    members = [TENANT_JSON, manifest_member(backup_name), archive_member(backup_name), SUMS]
    return [*members, SUMS_SIG] if signed else members


def _sums_mac(secret: bytes, key_id: str, sums: bytes) -> str:
    return hmac.new(secret, _SUMS_DOMAIN + key_id.encode() + b"\n" + sums, hashlib.sha256).hexdigest()


def sign_sums(sums: bytes, keyring: Keyring) -> bytes:
    """SHA256SUMS.sig: the signing key's id and its HMAC of SHA256SUMS (which lists every other member's hash)."""
    key = keyring.signing
    return json.dumps({KEY_ID_FIELD: key.key_id, SIGNATURE_FIELD: _sums_mac(key.secret, key.key_id, sums)}).encode()


def verify_sums(sums: bytes, signature: bytes | None, keyring: Keyring) -> str:
    """The id of the key that signed SHA256SUMS; NotAuthentic when unsigned, malformed, by an unknown key or not
    matching."""
    if signature is None:
        raise NotAuthentic(f"its {SUMS} is not signed")
    try:
        document = json.loads(signature)
    except ValueError:
        document = None
    key_id = document.get(KEY_ID_FIELD) if isinstance(document, dict) else None
    mac = document.get(SIGNATURE_FIELD) if isinstance(document, dict) else None
    if not isinstance(key_id, str) or not key_id or not isinstance(mac, str):
        raise NotAuthentic(f"its {SUMS_SIG} is malformed")
    key = keyring.get(key_id)
    if key is None:
        raise NotAuthentic(f"its {SUMS} is signed by key {key_id!r}, which is not in the keyring")
    if not hmac.compare_digest(mac.encode(), _sums_mac(key.secret, key_id, sums).encode()):
        raise NotAuthentic(f"its {SUMS} does not match its signature by key {key_id!r}")
    return key_id


def sums_text(sums: dict[str, str]) -> str:
    return "".join(f"{sha}  {name}\n" for name, sha in sums.items())


def parse_sums(text: str) -> dict[str, str]:
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = _SUM_LINE.match(line)
        if match is None or match["name"] in sums:
            raise InvalidInput(f"the export's {SUMS} is malformed at line {number}")
        sums[match["name"]] = match["sha"]
    return sums


def check_sums(listed: dict[str, str], actual: dict[str, str]) -> None:
    """Every member but SHA256SUMS (and its signature) listed once, with the hash it has."""
    expected = set(actual) - {SUMS, SUMS_SIG}
    if set(listed) != expected:
        raise InvalidInput(
            f"the export's {SUMS} lists {sorted(listed)}, the file holds {sorted(expected)}: not an intact export"
        )
    wrong = sorted(name for name in expected if listed[name] != actual[name])
    if wrong:
        raise InvalidInput(f"the export is corrupted or was changed: {', '.join(wrong)} fails its checksum")


def parse_document(raw: Any, local_versions: list[str]) -> TenantDocument:
    """tenant.json, checked: a format this version reads, a tenant schema version this installation has (an older
    one is fine: the import migrates it). `local_versions`: this installation's tenant migrations, in order."""
    if not isinstance(raw, dict) or raw.get("kind", "tenant-export") != "tenant-export":
        raise InvalidInput(f"{TENANT_JSON} is not a tenant export's")
    version = raw.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise InvalidInput(f"{TENANT_JSON} has no valid format_version")
    if version > FORMAT_VERSION:
        raise InvalidInput(
            f"the export is of format {version}, newer than this installation reads ({FORMAT_VERSION}): "
            "upgrade this installation first"
        )
    try:
        document = TenantDocument.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{TENANT_JSON} is invalid at {where}: {first['msg']}") from None
    check_schema_version(document.schema_version, local_versions)
    return document


def check_schema_version(exported: str | None, local_versions: list[str]) -> None:
    if exported is None or exported in local_versions:
        return
    newest = local_versions[-1] if local_versions else None
    if newest is None or exported > newest:
        raise InvalidInput(
            f"the export was taken at tenant schema version {exported!r}, newer than this installation's "
            f"({newest or 'none'}): upgrade this installation first"
        )
    raise InvalidInput(
        f"the export was taken at tenant schema version {exported!r}, which this installation's migrations do "
        f"not include (newest {newest!r}): refused"
    )


def migrations_to_apply(exported: str | None, local_versions: list[str]) -> bool:
    """Whether the imported database lacks migrations this installation has."""
    return bool(local_versions) and exported != local_versions[-1]


def validate_location(location: str, what: str = "--output") -> str:
    """An export file's place: s3://bucket/key, or an absolute path (the command line makes relative ones
    absolute: the workers, not the command line, read and write it)."""
    if location.startswith("s3://"):
        parsed = urlparse(location)
        if not parsed.netloc or not parsed.path.strip("/"):
            raise InvalidInput(f"{what} {location!r} names no bucket and key (s3://bucket/key)")
        return location
    if not location.startswith("/"):
        raise InvalidInput(f"{what} {location!r} must be an absolute path or s3://bucket/key")
    if location.endswith("/"):
        raise InvalidInput(f"{what} {location!r} names a folder, not a file")
    return location


def validate_mask_sql(text: str | None) -> None:
    if text is None:
        return
    size = len(text.encode())
    if size > MAX_MASK_BYTES:
        raise InvalidInput(f"the masking SQL is {size} bytes; at most {MAX_MASK_BYTES} are taken")
    if not text.strip():
        raise InvalidInput("the masking SQL is empty")
    if "\x00" in text:
        raise InvalidInput("the masking SQL contains a NUL byte")


def validate_member_name(name: str, backup_name: str) -> None:
    if name not in members_of(backup_name, signed=True):
        raise InvalidInput(f"the export holds an unexpected member {name!r}")
