"""File helpers used everywhere: an atomic write (readers see the old content or the new, never a
half-written file) and a file's sha256."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from wtalcli.core.errors import InputError


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a file through ``write(binary file)`` so that readers see the old content or the new,
    never a half-written one (a temporary file beside it, flushed to disk, then renamed)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a missing folder, no permission, a full disk: the user's to fix
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
    """:func:`atomic_write` of ``data``."""
    atomic_write(path, lambda f: f.write(data))


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
