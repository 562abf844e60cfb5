"""Reading and writing backup archives as streams: checksums, age encryption, zstd, and pg_restore's view of
them. Shared by backup, restore and drills. Fixed-size chunks: memory stays flat whatever the tenant's size."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyrage
import zstandard
from temporalio.exceptions import ApplicationError

from activities.infra.subprocesses import kill_group
from tenancy.errors import BACKUP_REJECTED, InvalidInput, fail

CHUNK = 1 << 20


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


def store(source: BinaryIO, sink, compression: str, level: int, recipients: list[str], progress: Progress) -> str:
    """pg_dump's output → (zstd) → (age, to the recipients) → storage; returns the sha256 of the stored bytes."""
    writer = HashingWriter(sink, progress)
    stream: BinaryIO = source
    if compression == "zstd":
        stream = zstandard.ZstdCompressor(level=level, write_checksum=True).stream_reader(source, read_size=CHUNK)
    if recipients:
        keys = [pyrage.x25519.Recipient.from_str(r) for r in recipients]
        pyrage.encrypt_io(stream, writer, keys)
    else:
        while chunk := stream.read(CHUNK):
            writer.write(chunk)
    return writer.hasher.hexdigest()


def hash_stream(reader: BinaryIO, progress: Progress) -> str:
    hasher = hashlib.sha256()
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


def unpack(reader: BinaryIO, dest, compression: str, identities: list | None, progress: Progress) -> None:
    """Stored bytes → (age decrypt) → (zstd decompress) → dest: the archive pg_restore reads."""
    target = _Closeless(dest)
    if compression == "zstd":
        target = zstandard.ZstdDecompressor().stream_writer(_Closeless(dest), write_size=CHUNK, closefd=False)

    class Counting:
        def read(self, n: int = -1) -> bytes:
            data = reader.read(n if n and n > 0 else CHUNK)
            progress.bytes += len(data)
            return data

        def readinto(self, buffer) -> int:
            data = self.read(len(buffer))
            buffer[: len(data)] = data
            return len(data)

        def readable(self) -> bool:
            return True

    try:
        if identities is not None:
            try:
                pyrage.decrypt_io(Counting(), target, identities)
            except pyrage.DecryptError as exc:
                raise fail(BACKUP_REJECTED, f"cannot decrypt the backup with the configured identity: {exc}") from None
        else:
            source = Counting()
            while chunk := source.read(CHUNK):
                target.write(chunk)
    finally:
        if compression == "zstd":
            target.flush()


def list_archive(pg_restore: Path, feed: Callable[[BinaryIO], None]) -> tuple[int, str, list[str]]:
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
