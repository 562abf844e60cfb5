"""Archives as streams, and which pg_dump compresses with zstd itself: no servers, fast."""

from __future__ import annotations

import hashlib
import io
import os
import stat

import pytest
import zstandard

from activities.infra.archive import Progress, store, unpack
from activities.infra.pg import pg_dump_writes_zstd
from tenancy.contracts.backup import BackupManifest


def fake_pg_dump(folder, version: str, probe_says: str):
    """A pg_dump that prints a version and, to anything else, what a real one says on stderr (exit 1)."""
    script = folder / f"pg_dump_{len(list(folder.iterdir()))}"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) {version}"; exit 0; fi\n'
        f'echo "{probe_says}" >&2\nexit 1\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_zstd_in_pg_dump_is_asked_of_the_tool_not_assumed_from_its_version(tmp_path):
    no_server = 'pg_dump: error: connection to server on socket "/x/.s.PGSQL.5432" failed: No such file or directory'
    without = "pg_dump: error: invalid compression specification: this build does not support compression with ZSTD"
    assert pg_dump_writes_zstd(fake_pg_dump(tmp_path, "17.2", no_server)) is True
    assert pg_dump_writes_zstd(fake_pg_dump(tmp_path, "18.1", without)) is False  # 16+, built without zstd
    assert pg_dump_writes_zstd(fake_pg_dump(tmp_path, "15.8", no_server)) is False  # -Z takes only 0-9 before 16
    assert pg_dump_writes_zstd(tmp_path / "missing") is False


class ClosesAfterTheStart:
    """What `pg_restore --list` is to the archive: it reads the start (the table of contents) and goes."""

    def __init__(self) -> None:
        self.offered = 0  # what was decompressed for it, read or not
        self.closed = False

    def write(self, data: bytes) -> int:
        self.offered += len(data)
        self.closed = True
        return len(data)


def stored_zstd(data: bytes) -> tuple[bytes, str]:
    sink = io.BytesIO()
    sha256 = store(io.BytesIO(data), sink, "zstd", 3, [], Progress())
    return sink.getvalue(), sha256


def test_one_pass_read_back_hashes_every_stored_byte_but_decompresses_only_the_start():
    stored, sha256 = stored_zstd(os.urandom(4 << 20))  # incompressible: several chunks of stored bytes
    assert hashlib.sha256(stored).hexdigest() == sha256
    digest, progress, dest = hashlib.sha256(), Progress(), ClosesAfterTheStart()

    unpack(io.BytesIO(stored), dest, "zstd", None, progress, digest)

    assert digest.hexdigest() == sha256 and progress.bytes == len(stored)
    assert 0 < dest.offered <= 2 << 20  # of 4 MiB


def test_one_pass_read_back_of_a_damaged_stream_still_hashes_all_of_it_then_fails():
    stored, _ = stored_zstd(b"COPY rows\n" * 200_000)
    damaged = stored[:20] + bytes(64) + stored[84:]
    digest = hashlib.sha256()

    with pytest.raises(zstandard.ZstdError):
        unpack(io.BytesIO(damaged), io.BytesIO(), "zstd", None, Progress(), digest)

    # The checksum is complete, so the verification reports the mismatch, not a decompression error.
    assert digest.hexdigest() == hashlib.sha256(damaged).hexdigest()


@pytest.mark.parametrize(("compression", "stream"), [("zstd", "zstd"), ("gzip", "none"), ("none", "none")])
def test_manifests_written_before_stream_compression_unpack_as_they_were_written(compression, stream):
    older = {
        "tenant_id": "acme",
        "database_name": "tenant_acme",
        "backup_name": "tenant_acme_2026-01-15_02-00-00.dump",
        "compression": compression,
        "compression_level": 3,
        "size_bytes": 1,
        "sha256": "0" * 64,
        "server_version": "15.8",
        "tool_version": "15.8",
        "started_at": "2026-01-15T02:00:00Z",
        "finished_at": "2026-01-15T02:00:01Z",
        "row_counts": {},
        "verified": True,
    }
    assert BackupManifest.model_validate(older).stream_compression == stream
    # What a restore reads is what was written, and written again unchanged.
    again = BackupManifest.model_validate_json(BackupManifest.model_validate(older).model_dump_json())
    assert again.stream_compression == stream
