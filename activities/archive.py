"""Reading backup archives: checksums, pg_restore's view of them, zstd decompression. Shared by backup and restore."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from activities.subprocesses import kill_group

CHUNK = 1 << 20  # 1 MiB: memory stays flat whatever the size of the tenant


@dataclass
class Progress:
    bytes: int = 0


def hash_file(path: Path, progress: Progress) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
            progress.bytes += len(chunk)
    return hasher.hexdigest()


def list_archive(pg_restore: Path, path: Path, compression: str) -> tuple[int, str, list[str]]:
    """Run `pg_restore --list` on the archive (decompressing zstd into its stdin); return code, stderr, lines."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        if compression == "zstd":
            proc = subprocess.Popen(
                [str(pg_restore), "--list"], stdin=subprocess.PIPE, stdout=out, stderr=err, start_new_session=True
            )
            assert proc.stdin is not None
            try:
                with path.open("rb") as handle, zstandard.ZstdDecompressor().stream_reader(handle) as reader:
                    while chunk := reader.read(CHUNK):
                        proc.stdin.write(chunk)
            except BrokenPipeError:
                pass  # pg_restore stops reading once it has the table of contents
            except zstandard.ZstdError as exc:
                kill_group(proc)
                return 1, f"zstd: {exc}", []
            finally:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
        else:
            proc = subprocess.Popen(
                [str(pg_restore), "--list", str(path)], stdout=out, stderr=err, start_new_session=True
            )
        code = proc.wait()
        out.seek(0)
        err.seek(0)
        return code, err.read().decode(errors="replace"), out.read().decode(errors="replace").splitlines()


def decompress_zstd(source: Path, target: BinaryIO, progress: Progress) -> None:
    """Decompress a .dump.zst archive into `target` in fixed-size chunks."""
    with source.open("rb") as handle, zstandard.ZstdDecompressor().stream_reader(handle) as reader:
        while chunk := reader.read(CHUNK):
            target.write(chunk)
            progress.bytes += len(chunk)
