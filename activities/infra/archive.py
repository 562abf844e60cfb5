"""Reading and writing backup archives as streams: checksums, age encryption, zstd, and pg_restore's view of
them. Shared by backup, restore and drills. Fixed-size chunks: memory stays flat whatever the tenant's size."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Protocol

import pyrage
import zstandard
from temporalio.exceptions import ApplicationError

from activities.infra.subprocesses import kill_group
from tenancy.errors import BACKUP_REJECTED, InvalidInput, fail

CHUNK = 1 << 20
# zstd's worker threads: one per core, at most 4: each holds buffers of its own (about 4 MB more per thread at
# level 1, 15 MB at level 3), so memory would otherwise grow with the worker's cores times its backups in flight.
ZSTD_THREADS = min(os.cpu_count() or 1, 4)


class Writer(Protocol):
    def write(self, data: bytes, /) -> int: ...


@dataclass
class Progress:
    bytes: int = 0


class HashingWriter:
    """Writes through to the sink while counting and hashing exactly the stored bytes."""

    def __init__(self, sink, progress: Progress) -> None:
        self.sink = sink
        self.progress = progress
        self.hasher = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.sink.write(data)
        self.progress.bytes += len(data)
        return len(data)

    # pyrage writes through the io protocol
    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass


class _Closeless:
    """A writer zstd may 'close' without closing what is beneath it."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def write(self, data: bytes) -> int:
        return self.inner.write(data)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass


def store(source: IO[bytes], sink, compression: str, level: int, recipients: list[str], progress: Progress) -> str:
    """pg_dump's output → (zstd) → (age, to the recipients) → storage; returns the sha256 of the stored bytes.

    `compression` is what this copy adds: "zstd" wraps the archive in a zstd stream; anything else stores the bytes
    as pg_dump wrote them (gzip, or zstd by pg_dump itself, happen inside the archive)."""
    _widen_pipe(source)
    writer = HashingWriter(sink, progress)
    if compression == "zstd":
        # Compression on zstd's own threads (its GIL-free C loop): this thread only moves bytes, so pg_dump rarely
        # waits for it.
        compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, threads=ZSTD_THREADS)
        if not recipients:
            # The stubs ask for IO[bytes]; zstandard only calls write() on the output.
            compressor.copy_stream(source, writer, read_size=CHUNK, write_size=CHUNK)  # type: ignore[arg-type]
            return writer.hasher.hexdigest()
        source = compressor.stream_reader(source, read_size=CHUNK)
    if recipients:
        keys = [pyrage.x25519.Recipient.from_str(r) for r in recipients]
        pyrage.encrypt_io(source, writer, keys)
    else:
        while chunk := source.read(CHUNK):
            writer.write(chunk)
    return writer.hasher.hexdigest()


def _widen_pipe(source) -> None:
    """A pipe of 1 MiB instead of 64 KiB (Linux): pg_dump writes on while a chunk is compressed or stored."""
    # Not a pipe, not Linux, or above the per-user limit: the default pipe works, a little slower.
    with contextlib.suppress(AttributeError, OSError, ValueError):
        fcntl.fcntl(source.fileno(), fcntl.F_SETPIPE_SZ, CHUNK)


def hash_stream(reader: BinaryIO, progress: Progress, hasher=None) -> str:
    hasher = hasher if hasher is not None else hashlib.sha256()
    while chunk := reader.read(CHUNK):
        hasher.update(chunk)
        progress.bytes += len(chunk)
    return hasher.hexdigest()


def load_identities(identity_file: Path | None, backup_name: str) -> list:
    """The age identities to read an encrypted backup; a clear error when there are none or they are unreadable."""
    if identity_file is None:
        raise fail(BACKUP_REJECTED, f"backup {backup_name!r} is encrypted: set TENANTS_AGE_IDENTITY_FILE to read it")
    try:
        lines = [line.strip() for line in Path(identity_file).read_text().splitlines()]
        return [pyrage.x25519.Identity.from_str(line) for line in lines if line.startswith("AGE-SECRET-KEY-")]
    except (OSError, pyrage.IdentityError) as exc:
        raise fail(BACKUP_REJECTED, f"cannot read the age identity file {identity_file}: {exc}") from None


def check_age_keys(recipients: list[str], identity_file: Path | None) -> None:
    """A worker that encrypts to recipients and holds an identity must be able to read what it writes: an identity
    that decrypts to none of the recipients means every backup it verifies would be unreadable. Refuse to start."""
    if not recipients or identity_file is None:
        return
    try:
        identities = load_identities(identity_file, "")
    except ApplicationError as exc:
        raise InvalidInput(str(exc)) from None
    public = {str(i.to_public()) for i in identities}
    if not public & {r.strip() for r in recipients}:
        raise InvalidInput(
            f"TENANTS_AGE_IDENTITY_FILE ({identity_file}) holds no identity for any of TENANTS_AGE_RECIPIENTS: "
            "backups would be encrypted to keys this deployment cannot read"
        )


def unpack(reader: BinaryIO, dest, compression: str, identities: list | None, progress: Progress, digest=None) -> None:
    """Stored bytes → (age decrypt) → (zstd decompress) → dest: the archive pg_restore reads.

    `compression` is the stream's (DumpResult.stream_compression), not the archive's. Once dest is closed
    (`pg_restore --list` has read the table of contents and gone) nothing more is decompressed. With `digest`
    (a hashlib object), every stored byte is read and hashed, even past a closed dest or an error, which is raised
    after: a read-back that checks the checksum and lets pg_restore read the archive in one pass.
    """
    inner: _Closeless | zstandard.ZstdDecompressionWriter = _Closeless(dest)
    if compression == "zstd":
        # The stubs ask for IO[bytes]; zstandard only calls write() on what it writes to.
        inner = zstandard.ZstdDecompressor().stream_writer(
            _Closeless(dest),  # type: ignore[arg-type]
            write_size=CHUNK,
            closefd=False,
        )
    failed: list[BaseException] = []

    class Target:
        def write(self, data: bytes) -> int:
            if not failed and not getattr(dest, "closed", False):
                try:
                    inner.write(data)
                except zstandard.ZstdError as exc:
                    if digest is None:
                        raise
                    failed.append(exc)
            return len(data)

        def writable(self) -> bool:
            return True

        def flush(self) -> None:
            pass

    class Counting:
        def read(self, n: int = -1) -> bytes:
            data = reader.read(n if n and n > 0 else CHUNK)
            progress.bytes += len(data)
            if digest is not None:
                digest.update(data)
            return data

        def readinto(self, buffer) -> int:
            data = self.read(len(buffer))
            buffer[: len(data)] = data
            return len(data)

        def readable(self) -> bool:
            return True

    source, target = Counting(), Target()
    if identities is not None:
        try:
            pyrage.decrypt_io(source, target, identities)
        except pyrage.DecryptError as exc:
            failed.append(fail(BACKUP_REJECTED, f"cannot decrypt the backup with the configured identity: {exc}"))
            if digest is None:
                raise failed[0] from None
    while chunk := source.read(CHUNK):  # all of it without identities; with them, whatever age left unread
        target.write(chunk)
    if failed:
        raise failed[0]
    if compression == "zstd" and not getattr(dest, "closed", False):
        inner.flush()


def list_archive(pg_restore: Path, feed: Callable[[Writer], None]) -> tuple[int, str, list[str]]:
    """Run `pg_restore --list` on an archive that `feed` writes into its stdin; return code, stderr, lines."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [str(pg_restore), "--list"], stdin=subprocess.PIPE, stdout=out, stderr=err, start_new_session=True
        )
        assert proc.stdin is not None
        stdin = proc.stdin

        class Forgiving:
            """pg_restore stops reading once it has the table of contents: the rest is dropped, not an error
            (an error raised inside decryption would read as a wrong key)."""

            closed = False

            def write(self, data: bytes) -> int:
                if not self.closed:
                    try:
                        stdin.write(data)
                    except (BrokenPipeError, OSError):
                        self.closed = True
                return len(data)

            def writable(self) -> bool:
                return True

            def flush(self) -> None:
                pass

        try:
            feed(Forgiving())
        except zstandard.ZstdError as exc:
            kill_group(proc)
            return 1, f"zstd: {exc}", []
        except BaseException:
            kill_group(proc)
            raise
        finally:
            with contextlib.suppress(BrokenPipeError, OSError):
                proc.stdin.close()
        code = proc.wait()
        out.seek(0)
        err.seek(0)
        return code, err.read().decode(errors="replace"), out.read().decode(errors="replace").splitlines()
