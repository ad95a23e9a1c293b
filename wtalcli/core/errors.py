"""Errors that reach the user as one line: what went wrong, and how to fix it."""

from __future__ import annotations

from pathlib import Path


class WtalError(Exception):
    """A problem with the user's input or environment (exit code 1, no traceback).

    ``message`` says what is wrong (naming the file), ``fix`` says what to do about it.
    """

    exit_code = 1

    def __init__(self, message: str, fix: str | None = None, path: str | Path | None = None):
        self.message = message
        self.fix = fix
        self.path = Path(path) if path is not None else None
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = f"{self.path}: " if self.path is not None and str(self.path) not in self.message else ""
        text = f"{where}{self.message}"
        if self.fix:
            text += f" (fix: {self.fix})"
        return " ".join(text.split())


class InputError(WtalError):
    """A malformed, missing or inconsistent input file."""


class UsageError(WtalError):
    """Options that do not fit together or a value outside its range (exit code 2, like the
    command line's own parsing errors)."""

    exit_code = 2


class MissingArtifactError(WtalError):
    """An input artifact that does not exist yet; the fix names the command that makes it."""


class MismatchError(WtalError):
    """Input artifacts that do not belong together (e.g. built from different feature sets)."""


class LockedError(WtalError):
    """Another process holds the lock for the same work."""
