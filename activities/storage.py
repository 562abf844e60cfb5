"""Backup storage. A local folder for now, laid out as the original system did:
`<root>/tenants/<tenant>/tenant_<tenant>_<YYYY-MM-DD_HH-MM-SS>.<ext>`, with `<name>.json` manifests beside them.

Files are written under a hidden `.partial` name and renamed into place only when complete, so a reader never
sees half a backup. Folders are 0700 and files 0600: backups are readable by their owner only.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from tenancy.errors import InvalidInput
from tenancy.models import BackupInfo, BackupManifest
from tenancy.naming import (
    PARTIAL_PREFIX,
    PARTIAL_SUFFIX,
    is_backup_name,
    manifest_name,
    parse_backup_name,
    partial_name,
)

DIR_MODE = 0o700
FILE_MODE = 0o600


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def tenant_dir(self, tenant_id: str, create: bool = False) -> Path:
        path = self.root / "tenants" / tenant_id
        if create:
            for folder in (self.root, self.root / "tenants", path):
                folder.mkdir(mode=DIR_MODE, exist_ok=True)
        return path

    def backup_path(self, tenant_id: str, name: str) -> Path:
        """Path of one of this tenant's backups; refuses any name that is not one (no separators, no `..`)."""
        parse_backup_name(tenant_id, name)
        return self.tenant_dir(tenant_id) / name

    @contextlib.contextmanager
    def open_for_write(self, tenant_id: str, name: str) -> Iterator[BinaryIO]:
        """Write a backup atomically: on success it appears under its name; on any error nothing is left."""
        final = self.backup_path(tenant_id, name)
        folder = self.tenant_dir(tenant_id, create=True)
        temp = folder / partial_name(name)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            with os.fdopen(fd, "wb", buffering=0) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
            _fsync_dir(folder)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def partial_exists(self, tenant_id: str, name: str) -> bool:
        return (self.tenant_dir(tenant_id) / partial_name(name)).exists()

    def open_for_read(self, tenant_id: str, name: str) -> BinaryIO:
        path = self.backup_path(tenant_id, name)
        if not path.is_file():
            raise InvalidInput(f"backup {name!r} of tenant {tenant_id!r} does not exist")
        return path.open("rb")

    def exists(self, tenant_id: str, name: str) -> bool:
        return self.backup_path(tenant_id, name).is_file()

    def list_backups(self, tenant_id: str) -> list[str]:
        folder = self.tenant_dir(tenant_id)
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_file() and is_backup_name(tenant_id, p.name))

    def describe_backups(self, tenant_id: str) -> list[BackupInfo]:
        """Every backup of the tenant with what its manifest says, oldest first."""
        infos = []
        for name in self.list_backups(tenant_id):
            manifest = self.read_manifest(tenant_id, name)
            infos.append(
                BackupInfo(
                    name=name,
                    taken_at=parse_backup_name(tenant_id, name),
                    size_bytes=self.backup_path(tenant_id, name).stat().st_size,
                    verified=bool(manifest and manifest.verified),
                    compression=manifest.compression if manifest else None,
                    sha256=manifest.sha256 if manifest else None,
                )
            )
        return infos

    def write_manifest(self, manifest: BackupManifest) -> None:
        path = self.backup_path(manifest.tenant_id, manifest.backup_name)
        target = path.with_name(manifest_name(path.name))
        temp = target.with_name(partial_name(target.name))
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "w") as handle:
            handle.write(manifest.model_dump_json(indent=2))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)

    def read_manifest(self, tenant_id: str, name: str) -> BackupManifest | None:
        path = self.backup_path(tenant_id, name)
        target = path.with_name(manifest_name(path.name))
        try:
            return BackupManifest.model_validate_json(target.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # an unreadable manifest is no evidence the backup is good

    def delete_backup(self, tenant_id: str, name: str) -> None:
        """Delete the manifest first: a backup without manifest is never counted as a good copy."""
        path = self.backup_path(tenant_id, name)
        path.with_name(manifest_name(path.name)).unlink(missing_ok=True)
        path.unlink(missing_ok=True)

    def remove_stale_partials(self, tenant_id: str, older_than: timedelta) -> int:
        """Remove `.partial` files a crashed backup or restore left behind, once they are clearly abandoned."""
        folder = self.tenant_dir(tenant_id)
        if not folder.is_dir():
            return 0
        limit = time.time() - older_than.total_seconds()
        removed = 0
        for path in folder.iterdir():
            if (
                path.name.startswith(PARTIAL_PREFIX)
                and path.name.endswith(PARTIAL_SUFFIX)
                and path.stat().st_mtime < limit
            ):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def check_writable(self) -> None:
        self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        probe = self.root / partial_name("write-check")
        probe.write_bytes(b"ok")
        probe.unlink()
