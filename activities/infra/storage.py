"""Backup storage behind one small interface: a local folder, or S3-compatible object storage (AWS S3, MinIO,
Google Cloud Storage's S3 interoperability).

Layout, as the original system's: `<root>/tenants/<tenant>/tenant_<tenant>_<YYYY-MM-DD_HH-MM-SS>.<ext>`, with
`<name>.json` manifests beside the archives. A backup appears under its name only when complete: locally it is
written under a hidden `.partial` name and renamed; on S3 it is a multipart upload completed at the end and
aborted on any error. Nothing holds a whole backup in memory. Local folders are 0700 and files 0600.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlparse

from activities.infra.manifest_signing import read_keyring
from tenancy.contracts.backup import BackupInfo, BackupManifest
from tenancy.errors import InvalidInput
from tenancy.naming import (
    PARTIAL_PREFIX,
    PARTIAL_SUFFIX,
    is_backup_name,
    manifest_name,
    parse_backup_name,
    partial_name,
)
from tenancy.settings import Settings
from tenancy.signing import KEY_ID_FIELD, SIGNATURE_FIELD, sign_document

DIR_MODE = 0o700
FILE_MODE = 0o600


class Sink(Protocol):
    def write(self, data: bytes) -> int: ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Storage(ABC):
    """What backups, restores, retention and health need from a place that keeps backups."""

    # Set (open_storage, from TENANTS_BACKUP_SIGNING_KEY_FILE): every manifest written is signed with its first
    # key, and activities.infra.manifest_signing.authentic_manifest refuses one no key of it signed.
    signing_key_file: Path | None = None

    @staticmethod
    def key(tenant_id: str, name: str) -> str:
        """The key of one of this tenant's backups (or its manifest); refuses any other name."""
        parse_backup_name(tenant_id, name.removesuffix(".json"))
        return f"tenants/{tenant_id}/{name}"

    # The backend's own operations, on keys relative to the storage root.
    @abstractmethod
    def _writer(self, key: str) -> contextlib.AbstractContextManager[Sink]: ...

    @abstractmethod
    def _reader(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]: ...

    @abstractmethod
    def _size(self, key: str) -> int | None: ...

    @abstractmethod
    def _names(self, prefix: str) -> list[str]: ...

    @abstractmethod
    def _delete(self, key: str) -> None: ...

    @abstractmethod
    def _put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def _get(self, key: str) -> bytes | None: ...

    @abstractmethod
    def location(self, key: str = "") -> str:
        """Where a key is, for people: a path or an s3:// URL."""

    # Shared behaviour.
    def open_for_write(self, tenant_id: str, name: str) -> contextlib.AbstractContextManager[Sink]:
        """Write a backup atomically: on success it appears under its name; on any error nothing is left."""
        return self._writer(self.key(tenant_id, name))

    def open_for_read(self, tenant_id: str, name: str) -> contextlib.AbstractContextManager[BinaryIO]:
        if not self.exists(tenant_id, name):
            raise InvalidInput(f"backup {name!r} of tenant {tenant_id!r} does not exist")
        return self._reader(self.key(tenant_id, name))

    def size(self, tenant_id: str, name: str) -> int:
        size = self._size(self.key(tenant_id, name))
        if size is None:
            raise InvalidInput(f"backup {name!r} of tenant {tenant_id!r} does not exist")
        return size

    def exists(self, tenant_id: str, name: str) -> bool:
        return self._size(self.key(tenant_id, name)) is not None

    def partial_exists(self, tenant_id: str, name: str) -> bool:
        return False

    def remove_partial(self, tenant_id: str, name: str) -> int:
        """Remove what an interrupted write of this backup left (a partial file, an unfinished upload)."""
        return 0

    def local_path(self, tenant_id: str, name: str) -> Path | None:
        """A path pg_restore can read directly, where the backend has one."""
        return None

    def list_backups(self, tenant_id: str) -> list[str]:
        return sorted(n for n in self._names(f"tenants/{tenant_id}/") if is_backup_name(tenant_id, n))

    def describe_backups(self, tenant_id: str) -> list[BackupInfo]:
        """Every backup of the tenant with what its manifest says, oldest first. What the catalog knows on top
        (pins, drills) is added by activities.infra.backup_facts.describe_backups: use that one."""
        infos = []
        for name in self.list_backups(tenant_id):
            manifest = self.read_manifest(tenant_id, name)
            infos.append(
                BackupInfo(
                    name=name,
                    taken_at=parse_backup_name(tenant_id, name),
                    size_bytes=self._size(self.key(tenant_id, name)) or 0,
                    verified=bool(manifest and manifest.verified),
                    compression=manifest.compression if manifest else None,
                    sha256=manifest.sha256 if manifest else None,
                    encrypted=bool(manifest and manifest.encrypted),
                    pinned=bool(manifest and manifest.pinned),
                    drilled_at=manifest.drilled_at if manifest else None,
                    drill_ok=manifest.drill_ok if manifest else None,
                    restorable=bool(manifest and manifest.verified and manifest.restorable),
                )
            )
        return infos

    def write_manifest(self, manifest: BackupManifest) -> BackupManifest:
        """Write a backup's manifest, signed when a signing key file is set (any earlier signature is dropped:
        every manifest written, wherever, is signed anew or not at all); returns it as written."""
        document = manifest.model_dump(mode="json", exclude={KEY_ID_FIELD, SIGNATURE_FIELD})
        if self.signing_key_file is not None:
            document = sign_document(document, read_keyring(self.signing_key_file))
        self._put(
            self.key(manifest.tenant_id, manifest_name(manifest.backup_name)),
            json.dumps(document, indent=2).encode(),
        )
        return BackupManifest.model_validate(document)

    def read_manifest_document(self, tenant_id: str, name: str) -> dict[str, Any] | None:
        """The manifest as stored, a JSON object (what a signature covers); None when absent or not an object."""
        data = self._get(self.key(tenant_id, manifest_name(name)))
        if data is None:
            return None
        try:
            document = json.loads(data)
        except ValueError:
            return None
        return document if isinstance(document, dict) else None

    def read_manifest(self, tenant_id: str, name: str) -> BackupManifest | None:
        """The manifest, not authenticated: for listing and housekeeping. Whatever restores a backup reads it
        through activities.infra.manifest_signing.authentic_manifest."""
        document = self.read_manifest_document(tenant_id, name)
        if document is None:
            return None
        try:
            return BackupManifest.model_validate(document)
        except ValueError:
            return None  # an unreadable manifest is no evidence the backup is good

    def delete_backup(self, tenant_id: str, name: str) -> None:
        """The manifest goes first: a backup without manifest is never counted as a good copy."""
        self._delete(self.key(tenant_id, manifest_name(name)))
        self._delete(self.key(tenant_id, name))

    def usage(self, tenant_id: str | None = None) -> int:
        """Bytes of backups kept, for one tenant or all of them."""
        prefix = f"tenants/{tenant_id}/" if tenant_id else "tenants/"
        return self._usage(prefix)

    def _usage(self, prefix: str) -> int:
        return sum(self._size(prefix + n) or 0 for n in self._names(prefix))

    def free_bytes(self) -> int | None:
        """Free space where backups go; None where the backend has no such limit (object storage)."""
        return None

    def remove_stale_partials(self, tenant_id: str, older_than: timedelta) -> int:
        return 0

    # The sweeper's view: what interrupted writes left anywhere under tenants/, with when it was last touched.
    def partial_files(self) -> list[tuple[str, datetime]]:
        """Every `.partial` file in the tenants folder and each tenant's folder (key, last written); local only."""
        return []

    def remove_partial_file(self, key: str, older_than: timedelta) -> bool:
        """Remove one `.partial` file if it is still there and still untouched for `older_than`."""
        return False

    def unfinished_uploads(self) -> list[tuple[str, str, datetime]]:
        """Multipart uploads under tenants/ neither completed nor aborted: (key, upload id, initiated); S3 only."""
        return []

    def abort_unfinished_upload(self, key: str, upload_id: str, older_than: timedelta) -> bool:
        """Abort one unfinished upload if it is still pending and began at least `older_than` ago."""
        return False

    def check_writable(self) -> None:
        with self._writer("tenants/.write-check") as sink:
            sink.write(b"ok")
        self._delete("tenants/.write-check")

    def erase_tenant(self, tenant_id: str) -> list[str]:
        """An erasure: every backup of the tenant with its manifest (pinned or not, verified or not, a manifest
        whose archive is gone), and whatever interrupted writes of it left. Files of other names in its folder are
        not ours and stay. Returns the backups' names; safe to repeat (what is gone is skipped)."""
        prefix = f"tenants/{tenant_id}/"
        stems = {n.removesuffix(manifest_name("")) for n in self._names(prefix)}
        names = sorted(n for n in stems if is_backup_name(tenant_id, n))
        for name in names:
            self.delete_backup(tenant_id, name)
            self.remove_partial(tenant_id, name)
        self.remove_stale_partials(tenant_id, timedelta(0))
        for key, upload_id, _ in self.unfinished_uploads():
            if key.startswith(prefix):
                self.abort_unfinished_upload(key, upload_id, timedelta(0))
        return names


class LocalStorage(Storage):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def location(self, key: str = "") -> str:
        return str(self.root / key)

    def _path(self, key: str) -> Path:
        return self.root / key

    def tenant_dir(self, tenant_id: str) -> Path:
        return self.root / "tenants" / tenant_id

    def local_path(self, tenant_id: str, name: str) -> Path | None:
        return self._path(self.key(tenant_id, name))

    @contextlib.contextmanager
    def _writer(self, key: str) -> Iterator[Sink]:
        final = self._path(key)
        folder = final.parent
        for each in [*reversed(folder.parents[: len(folder.relative_to(self.root).parts)]), folder]:
            each.mkdir(mode=DIR_MODE, exist_ok=True)
        temp = folder / partial_name(final.name)
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

    @contextlib.contextmanager
    def _reader(self, key: str) -> Iterator[BinaryIO]:
        with self._path(key).open("rb") as handle:
            yield handle

    def _size(self, key: str) -> int | None:
        path = self._path(key)
        return path.stat().st_size if path.is_file() else None

    def _names(self, prefix: str) -> list[str]:
        folder = self._path(prefix)
        return [p.name for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []

    def _delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def _put(self, key: str, data: bytes) -> None:
        with self._writer(key) as sink:
            sink.write(data)

    def _get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def _usage(self, prefix: str) -> int:
        folder = self._path(prefix)
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0

    def partial_exists(self, tenant_id: str, name: str) -> bool:
        return (self.tenant_dir(tenant_id) / partial_name(name)).exists()

    def remove_partial(self, tenant_id: str, name: str) -> int:
        self.key(tenant_id, name)  # refuses any name that is not one of this tenant's backups
        path = self.tenant_dir(tenant_id) / partial_name(name)
        if not path.exists():
            return 0
        path.unlink(missing_ok=True)
        return 1

    def free_bytes(self) -> int | None:
        self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        return shutil.disk_usage(self.root).free

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

    def partial_files(self) -> list[tuple[str, datetime]]:
        top = self.root / "tenants"
        found = []
        for folder in [top, *(sorted(top.iterdir()) if top.is_dir() else [])]:
            if not folder.is_dir() or folder.is_symlink():
                continue
            for path in folder.iterdir():
                if not (path.name.startswith(PARTIAL_PREFIX) and path.name.endswith(PARTIAL_SUFFIX)):
                    continue
                try:
                    info = path.lstat()
                except FileNotFoundError:
                    continue  # its write just ended
                if stat.S_ISREG(info.st_mode):
                    written = datetime.fromtimestamp(info.st_mtime, UTC)
                    found.append((path.relative_to(self.root).as_posix(), written))
        return found

    def remove_partial_file(self, key: str, older_than: timedelta) -> bool:
        parts = PurePosixPath(key).parts
        name = parts[-1] if parts else ""
        if (
            not 2 <= len(parts) <= 3
            or parts[0] != "tenants"
            or any(p in (".", "..") or "/" in p for p in parts)
            or not (name.startswith(PARTIAL_PREFIX) and name.endswith(PARTIAL_SUFFIX))
        ):
            raise InvalidInput(f"{key!r} is not a partial file of the backup folders")
        path = self.root / key
        try:
            info = path.lstat()
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(info.st_mode) or info.st_mtime > time.time() - older_than.total_seconds():
            return False  # written to again meanwhile: someone is using it
        path.unlink(missing_ok=True)
        return True


class _MultipartUpload:
    """Buffers at most one part in memory; uploads parts as they fill."""

    def __init__(self, client, bucket: str, key: str, part_size: int) -> None:
        self.client, self.bucket, self.key, self.part_size = client, bucket, key, part_size
        self.upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        self.parts: list[dict] = []
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        while len(self.buffer) >= self.part_size:
            self._upload(bytes(self.buffer[: self.part_size]))
            del self.buffer[: self.part_size]
        return len(data)

    def _upload(self, body: bytes) -> None:
        number = len(self.parts) + 1
        done = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
        )
        self.parts.append({"PartNumber": number, "ETag": done["ETag"]})

    def complete(self) -> None:
        if self.buffer or not self.parts:
            self._upload(bytes(self.buffer))
            self.buffer.clear()
        self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)


class S3Storage(Storage):
    def __init__(self, bucket: str, prefix: str, client, part_size: int) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.part_size = part_size

    def location(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextlib.contextmanager
    def _writer(self, key: str) -> Iterator[Sink]:
        upload = _MultipartUpload(self.client, self.bucket, self._key(key), self.part_size)
        try:
            yield upload
            upload.complete()
        except BaseException:
            upload.abort()  # no object and no orphaned parts are left behind
            raise

    @contextlib.contextmanager
    def _reader(self, key: str) -> Iterator[BinaryIO]:
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        try:
            yield body
        finally:
            body.close()

    def _size(self, key: str) -> int | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"]
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def _names(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        names = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            names += [item["Key"][len(full) :] for item in page.get("Contents", [])]
        return [n for n in names if "/" not in n]

    def _delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def _put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def _get(self, key: str) -> bytes | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except self.client.exceptions.NoSuchKey:
            return None
        with contextlib.closing(body):
            return body.read()

    def _usage(self, prefix: str) -> int:
        total = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            total += sum(item["Size"] for item in page.get("Contents", []))
        return total

    def remove_partial(self, tenant_id: str, name: str) -> int:
        key = self._key(self.key(tenant_id, name))
        found = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key).get("Uploads", [])
        mine = [u for u in found if u["Key"] == key]
        for upload in mine:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload["UploadId"])
        return len(mine)

    def unfinished_uploads(self) -> list[tuple[str, str, datetime]]:
        full = self._key("tenants/")
        strip = len(self._key(""))
        found = []
        for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=full):
            found += [(u["Key"][strip:], u["UploadId"], u["Initiated"]) for u in page.get("Uploads", [])]
        return found

    def abort_unfinished_upload(self, key: str, upload_id: str, older_than: timedelta) -> bool:
        if not key.startswith("tenants/"):
            raise InvalidInput(f"{key!r} is not under the tenants folder")
        full = self._key(key)
        pending = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=full).get("Uploads", [])
        upload = next((u for u in pending if u["Key"] == full and u["UploadId"] == upload_id), None)
        if upload is None or upload["Initiated"] > datetime.now(UTC) - older_than:
            return False
        self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
        return True

    def pending_uploads(self) -> list[str]:
        """Multipart uploads started and neither completed nor aborted (there should be none)."""
        found = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self._key(""))
        return [u["Key"] for u in found.get("Uploads", [])]


def open_storage(settings: Settings) -> Storage:
    """The storage TENANTS_STORAGE_URL names: a folder path, file:// or s3://bucket/prefix."""
    url = settings.storage_url
    if url.startswith("s3://"):
        import boto3
        from botocore.config import Config

        parsed = urlparse(url)
        if not parsed.netloc:
            raise InvalidInput(f"storage URL {url!r} names no bucket")
        client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )
        storage: Storage = S3Storage(parsed.netloc, parsed.path, client, settings.s3_part_size_mb * 2**20)
    else:
        storage = LocalStorage(settings.storage_root)
    storage.signing_key_file = settings.backup_signing_key_file
    return storage
