"""The backup signing key file on disk, and the one check every reader of a backup calls before trusting it.

The key file is read on every use (it is a few lines): a rotation takes effect at the next backup, with no worker
restart. What is signed and how is tenancy/signing.py.
"""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tenancy.contracts.backup import BackupManifest
from tenancy.errors import BACKUP_NOT_AUTHENTIC, InvalidInput, fail
from tenancy.signing import (
    Keyring,
    NotAuthentic,
    SigningKey,
    new_key,
    parse_keyring,
    verify_document,
    with_new_signing_key,
)

if TYPE_CHECKING:
    from activities.infra.storage import Storage

KEY_FILE_MODE = 0o600
KEY_DIR_MODE = 0o700


def read_keyring(path: Path) -> Keyring:
    """The keys of a key file; a missing, unreadable or malformed file is one clear InvalidInput."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise InvalidInput(f"backup signing key file {path} does not exist (create it: tenants keys init)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read backup signing key file {path}: {exc}") from None
    return parse_keyring(text, source=f"backup signing key file {path}")


def _write_new(path: Path, text: str) -> None:
    """Create `path` (0600) holding `text`; never replaces a file that exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), KEY_FILE_MODE)  # whatever the umask
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def create_key_file(path: Path, now: datetime | None = None) -> SigningKey:
    """A new key file with one fresh key (0600; missing folders are made 0700). Refuses to replace one."""
    path = Path(path)
    missing = [p for p in [*reversed(path.parent.parents), path.parent] if not p.exists()]
    for folder in missing:
        folder.mkdir(mode=KEY_DIR_MODE, exist_ok=True)
    key = new_key(now or datetime.now(UTC))
    header = (
        "# Backup signing keys (tenants keys): the first key signs new backups, every key verifies.\n"
        "# Rotate with `tenants keys rotate`; remove a key only when no backup signed by it is kept.\n"
    )
    try:
        _write_new(path, header + key.line() + "\n")
    except FileExistsError:
        raise InvalidInput(f"{path} exists: not overwritten (its keys verify the backups they signed)") from None
    return key


def rotate_key_file(path: Path, now: datetime | None = None) -> SigningKey:
    """Put a fresh key first in the key file (it signs from now on); every other key stays, to verify the backups
    it signed. The file is replaced atomically, still 0600."""
    path = Path(path)
    keyring = read_keyring(path)
    key = new_key(now or datetime.now(UTC), taken={k.key_id for k in keyring.keys})
    text = with_new_signing_key(path.read_text(), key)
    temp = path.with_name(f".{path.name}.new")
    temp.unlink(missing_ok=True)
    _write_new(temp, text)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return key


def authentic_manifest(storage: Storage, tenant_id: str, name: str) -> BackupManifest | None:
    """The manifest of a backup, read once from storage, and authenticated when the storage has a signing key
    file: an unsigned or mis-signed manifest fails with BACKUP_NOT_AUTHENTIC (non-retryable) before anyone acts
    on it. None: no manifest, or one that is not a manifest. Restores, drills and any import call this."""
    document = storage.read_manifest_document(tenant_id, name)
    if document is None:
        return None
    if storage.signing_key_file is not None:
        try:
            verify_document(document, read_keyring(storage.signing_key_file))
        except NotAuthentic as exc:
            raise fail(
                BACKUP_NOT_AUTHENTIC,
                f"backup {name!r} of tenant {tenant_id!r} is refused: {exc} "
                "(only backups signed by a key of TENANTS_BACKUP_SIGNING_KEY_FILE are restored)",
            ) from None
    try:
        return BackupManifest.model_validate(document)
    except ValueError:
        return None
