"""Export files on disk or in S3: a tar written and read as a stream (nothing holds a whole archive in memory).
Blocking: the activities call these in a thread.

Written like backups: locally under a hidden partial name of the attempt's own (0600, created exclusively),
fsynced and renamed, never over an existing file; in S3 as a multipart upload completed at the end and aborted on
any error.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

from activities.infra.archive import Progress
from activities.infra.storage import FILE_MODE, Sink, _MultipartUpload
from tenancy.errors import InvalidInput
from tenancy.naming import partial_name
from tenancy.settings import Settings
from tenancy.transfer import DATABASE_DIR, MAX_DOCUMENT_BYTES, SUMS, SUMS_SIG, TENANT_JSON, sums_text

CHUNK = 1 << 20


def _s3_client(settings: Settings):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}),
    )


def _bucket_key(location: str) -> tuple[str, str]:
    parsed = urlparse(location)
    return parsed.netloc, parsed.path.lstrip("/")


@contextlib.contextmanager
def open_output(settings: Settings, location: str) -> Iterator[Sink]:
    """Where an export is written; it appears only when complete. An existing file is never replaced."""
    if location.startswith("s3://"):
        if output_exists(settings, location):
            raise InvalidInput(f"{location} exists: not overwritten")
        client = _s3_client(settings)
        bucket, key = _bucket_key(location)
        upload = _MultipartUpload(client, bucket, key, settings.s3_part_size_mb * 2**20)
        try:
            yield upload
            upload.complete()
        except BaseException:
            upload.abort()
            raise
        return
    final = Path(location)
    if not final.parent.is_dir():
        raise InvalidInput(f"folder {final.parent} does not exist on the worker's host")
    if final.exists():
        raise InvalidInput(f"{final} exists: not overwritten")
    # A name of this attempt's own, created new and never through a link: a symlink planted at a predictable
    # name cannot redirect the write, and two exports to one path never share a temp file.
    temp = final.parent / partial_name(f"{final.name}.{secrets.token_hex(8)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # link() refuses an existing name (a file that appeared meanwhile is not replaced); then the temp goes.
        os.link(temp, final)
    finally:
        temp.unlink(missing_ok=True)


def output_exists(settings: Settings, location: str) -> bool:
    """Whether something is already at an export's location (a file, or an S3 object)."""
    if location.startswith("s3://"):
        client = _s3_client(settings)
        bucket, key = _bucket_key(location)
        try:
            client.head_object(Bucket=bucket, Key=key)
        except client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True
    return Path(location).exists()


@contextlib.contextmanager
def open_input(settings: Settings, location: str) -> Iterator[BinaryIO]:
    if location.startswith("s3://"):
        client = _s3_client(settings)
        bucket, key = _bucket_key(location)
        try:
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
        except client.exceptions.NoSuchKey:
            raise InvalidInput(f"{location} does not exist") from None
        try:
            yield body
        finally:
            body.close()
        return
    try:
        handle = open(location, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise InvalidInput(f"{location} does not exist on the worker's host") from None
    except IsADirectoryError:
        raise InvalidInput(f"{location} is a folder, not an export file") from None
    with handle:
        yield handle


@dataclass
class Transfer(Progress):
    """Progress of a copy running in a thread, and its stop: set when the activity is cancelled, the copy stops
    at its next chunk (raising, so a partial output is abandoned, never completed behind the cancellation)."""

    stop: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        if self.stop.is_set():
            raise OSError("stopped: the activity was cancelled")


class _Hashing:
    """Counts and hashes the bytes that pass, reading or writing."""

    def __init__(self, inner, progress: Progress) -> None:
        self.inner = inner
        self.progress = progress
        self.hasher = hashlib.sha256()
        self.size = 0

    def _saw(self, data: bytes) -> None:
        if isinstance(self.progress, Transfer):
            self.progress.check()
        self.hasher.update(data)
        self.size += len(data)
        self.progress.bytes += len(data)

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self._saw(data)
        return data

    def write(self, data: bytes) -> int:
        self._saw(data)
        self.inner.write(data)
        return len(data)


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = int(time.time())
    return info


@dataclass
class Written:
    size: int
    sha256: str
    sums: dict[str, str]


def write_export(
    sink: Sink,
    tenant_json: bytes,
    manifest_name: str,
    manifest: bytes,
    archive_name: str,
    archive: BinaryIO,
    archive_size: int,
    progress: Progress,
    sign: Callable[[bytes], bytes] | None = None,
) -> Written:
    """The tar, as a stream: tenant.json, the manifest, the archive (read from `archive`, `archive_size` bytes),
    SHA256SUMS of those three, and SHA256SUMS.sig (`sign(SHA256SUMS)`) when `sign` is given. Returns the whole
    file's size and sha256, and the members' checksums."""
    out = _Hashing(sink, Progress())
    sums: dict[str, str] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for name, data in ((TENANT_JSON, tenant_json), (manifest_name, manifest)):
            tar.addfile(_info(name, len(data)), io.BytesIO(data))
            sums[name] = hashlib.sha256(data).hexdigest()
        reader = _Hashing(archive, progress)
        tar.addfile(_info(archive_name, archive_size), reader)
        if reader.size != archive_size:
            raise OSError(f"the archive ended after {reader.size} of {archive_size} bytes")
        sums[archive_name] = reader.hasher.hexdigest()
        listing = sums_text(sums).encode()
        tar.addfile(_info(SUMS, len(listing)), io.BytesIO(listing))
        if sign is not None:
            signature = sign(listing)
            tar.addfile(_info(SUMS_SIG, len(signature)), io.BytesIO(signature))
    return Written(size=out.size, sha256=out.hasher.hexdigest(), sums=sums)


@dataclass
class ExportContents:
    """What reading an export found: each member's sha256 and size, the small members' bytes."""

    sums: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    documents: dict[str, bytes] = field(default_factory=dict)
    archive_name: str | None = None
    file_sha256: str = ""
    file_size: int = 0


def _is_document(name: str) -> bool:
    return name in (TENANT_JSON, SUMS, SUMS_SIG) or (name.startswith(f"{DATABASE_DIR}/") and name.endswith(".json"))


def read_export(
    reader: BinaryIO,
    progress: Progress,
    archive_sink: Callable[[str], contextlib.AbstractContextManager[Sink]] | None = None,
    archive_sha256: str | None = None,
) -> ExportContents:
    """One pass over an export: every member hashed; tenant.json, the manifest and SHA256SUMS kept (bounded);
    the archive member streamed into `archive_sink(member name)` when given, and that write abandoned unless the
    archive's sha256 is `archive_sha256`. Refuses anything but regular files
    of the export's names, once each. Checks nothing else: tenancy.transfer does, on what this returns."""
    whole = _Hashing(reader, progress)
    found = ExportContents()
    try:
        tar = tarfile.open(fileobj=whole, mode="r|")  # type: ignore[call-overload]  # noqa: SIM115 - closed below
    except tarfile.TarError as exc:
        raise InvalidInput(f"not an export file (a tar): {exc}") from None
    try:
        with tar:
            for member in tar:
                name = member.name
                if name in found.sums or not member.isfile() or ".." in name.split("/"):
                    raise InvalidInput(f"the export holds an unexpected member {name!r}")
                if not (_is_document(name) or (name.startswith(f"{DATABASE_DIR}/") and name.count("/") == 1)):
                    raise InvalidInput(f"the export holds an unexpected member {name!r}")
                stream = tar.extractfile(member)
                assert stream is not None
                hasher = hashlib.sha256()
                if _is_document(name):
                    if member.size > MAX_DOCUMENT_BYTES:
                        raise InvalidInput(f"the export's {name} is {member.size} bytes: not a document")
                    data = stream.read()
                    hasher.update(data)
                    found.documents[name] = data
                else:
                    if found.archive_name is not None:
                        raise InvalidInput(f"the export holds a second archive {name!r}")
                    found.archive_name = name
                    with archive_sink(name) if archive_sink else contextlib.nullcontext() as sink:
                        while chunk := stream.read(CHUNK):
                            hasher.update(chunk)
                            if sink is not None:
                                sink.write(chunk)
                        if archive_sha256 is not None and hasher.hexdigest() != archive_sha256:
                            raise InvalidInput(
                                f"the export's archive changed since it was checked (sha256 {hasher.hexdigest()[:12]}… "
                                f"vs {archive_sha256[:12]}…): not imported"
                            )
                found.sums[name] = hasher.hexdigest()
                found.sizes[name] = member.size
    except (tarfile.TarError, EOFError) as exc:
        raise InvalidInput(f"the export file is truncated or not a tar: {exc}") from None
    while whole.read(CHUNK):  # the tar's end blocks and padding count in the file's hash too
        pass
    found.file_sha256, found.file_size = whole.hasher.hexdigest(), whole.size
    return found
