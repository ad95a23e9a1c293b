"""File helpers used everywhere: an atomic write (readers see the old content or the new, never a
half-written file) and a file's sha256."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from wtalcli.core.errors import InputError


def atomic_write(path: Path, writer: Callable[[BinaryIO], object]) -> None:
    """Write a file through ``writer(f)`` (``f`` a binary file object) so that readers see the old
    content or the new, never a half-written one.

    The data go to a hidden sibling ``.<name>.<pid>.<thread>.part``, are flushed to disk, then
    renamed over ``path``; on any failure the partial file is removed.  An ``OSError`` (a missing
    folder, no permission, a full disk) becomes an :class:`InputError` naming the file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        with open(tmp, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(
            f"cannot write the file ({exc.strerror or exc})",
            "check that its folder exists and is writable",
            path=path,
        ) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """:func:`atomic_write` of a bytes object."""
    atomic_write(path, lambda f: f.write(data))


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's bytes (read in blocks)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_record(path: Path) -> dict:
    """A file's provenance record for a manifest: path, size and sha256."""
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path)}
