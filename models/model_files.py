"""Writing model and index files safely: atomic replacement and verification markers.

* `write_atomic` writes through a temporary file in the same folder, fsyncs it, renames it over
  the target and fsyncs the folder: readers see the old file or the new one, never a part.
* A verification marker records the SHA-256, size and modification time of a file that was
  hashed once, so later starts trust it without re-hashing hundreds of MB; any change of size
  or mtime (a rewrite, a truncation) invalidates it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "DEFAULT_CACHE_DIR",
    "MARKER_NAME",
    "copy_atomic",
    "fsync_dir",
    "marker_matches",
    "write_atomic",
    "write_bytes_atomic",
    "write_marker",
]

DEFAULT_CACHE_DIR = Path("~/.cache/palabre/models")
"""Default root where bundled models are assembled (Whisper ``base`` goes to ``<root>/base``)."""
MARKER_NAME = ".verified.json"


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Create or replace `path` with what `write` puts in the open binary file it is given."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes_atomic(path: Path, data: bytes | memoryview) -> None:
    """`write_atomic` of a bytes-like value."""

    def write(out: BinaryIO) -> None:
        out.write(data)

    write_atomic(path, write)


def copy_atomic(source: Path, dest: Path) -> None:
    """Copy `source` over `dest` atomically."""

    def copy(out: BinaryIO) -> None:
        with source.open("rb") as f:
            shutil.copyfileobj(f, out)

    write_atomic(dest, copy)


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def marker_matches(file: Path, sha256: str, size: int | None = None) -> bool:
    """Whether `file` is unchanged since `write_marker` recorded it with this SHA-256 (and size)."""
    try:
        marker = json.loads((file.parent / MARKER_NAME).read_text())
        stat = file.stat()
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("sha256") == sha256
        and marker.get("size") == stat.st_size
        and (size is None or stat.st_size == size)
        and marker.get("mtime_ns") == stat.st_mtime_ns
    )


def write_marker(file: Path, sha256: str) -> None:
    """Record that `file` (just verified) has this SHA-256, with its current size and mtime."""
    stat = file.stat()
    record = {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    write_bytes_atomic(file.parent / MARKER_NAME, json.dumps(record).encode())
