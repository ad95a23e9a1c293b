"""The console: logs and progress bars on stderr; on stdout, machine output (JSON, paths) and the
listings a user asked for (tables of ``status``, ``show``, ``evaluate``; ``--json`` prints JSON)."""

from __future__ import annotations

import json
import os
import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

err = Console(stderr=True, highlight=False)
if not err.is_terminal:  # logs captured to a file: do not wrap tables at 80 columns, nor any line
    err = Console(stderr=True, highlight=False, width=160, soft_wrap=True)  # one message = one line


out = Console(highlight=False)
if not out.is_terminal:  # piped (e.g. into less or a file): do not wrap tables at 80 columns
    out = Console(highlight=False, width=160)


def show(renderable) -> None:
    """A listing on stdout (under torchrun, rank 0's only)."""
    if os.environ.get("RANK", "0") != "0":
        return
    out.print(renderable)


def log(message: str) -> None:
    """One informational line on stderr."""
    err.print(f"[dim]wtal:[/dim] {escape(message)}")


def silent(message: str) -> None:
    """The log that says nothing: the ranks other than 0 under torchrun (rank 0 speaks for the
    job), and the stages a study runs whose every artifact it lists itself."""


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(message)}")


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=err,
        transient=False,
        disable=not err.is_terminal,
    )


def emit(obj) -> None:
    """Machine output: one JSON document on stdout (under torchrun, rank 0's only)."""
    if os.environ.get("RANK", "0") != "0":
        return
    sys.stdout.write(json.dumps(obj, indent=1, default=str) + "\n")
    sys.stdout.flush()
