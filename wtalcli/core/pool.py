"""Named jobs run in this process (``jobs == 1``) or in a pool of worker processes, each worker
with ``cores / jobs`` torch threads and each job's log lines (stderr, file descriptor 2 included) in
its own file. ``wtal ablate`` trains its runs through it."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from wtalcli.core.errors import InputError


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send this process's stderr to ``path`` (appended) while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "a", encoding="utf-8") as f:
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _logged(fn: Callable[..., Any], args: tuple, logfile: str) -> Any:
    """In a worker: ``fn(*args)`` with its log lines in ``logfile``."""
    with _stderr_to(Path(logfile)):
        return fn(*args)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class JobPool:
    """Runs ``(name, function, args)`` jobs; ``log`` gets a line per job (``label`` of its result)
    and ``logdir`` holds the workers' log files. A worker's error stops the pool and names the job
    and its log."""

    def __init__(self, jobs: int, log, logdir: Path, label: Callable[[Any], str] = str):
        self.jobs, self.log, self.logdir, self.label = jobs, log, logdir, label
        self.pool = None
        if jobs > 1:
            import multiprocessing as mp

            threads = max(1, (os.cpu_count() or 1) // jobs)
            self.pool = ProcessPoolExecutor(
                jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker, initargs=(threads,)
            )

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def map(self, jobs: Sequence[tuple[str, Callable[..., Any], tuple]]) -> dict[str, Any]:
        """``{name: function(*args)}`` of every job (the functions and their arguments must be
        picklable when the pool has workers)."""
        results: dict[str, Any] = {}
        t0 = time.perf_counter()
        if self.pool is None:
            for i, (name, fn, args) in enumerate(jobs, 1):
                self.log(f"[{i}/{len(jobs)}] {name}")
                results[name] = fn(*args)
            return results
        futures = {}
        for name, fn, args in jobs:
            logfile = self.logdir / (name.replace(" ", "_").replace("/", "-") + ".log")
            futures[self.pool.submit(_logged, fn, args, str(logfile))] = (name, logfile)
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                name, logfile = futures[fut]
                try:
                    results[name] = fut.result()
                except Exception as exc:  # a worker's error: say which job and where its log is
                    for other in pending:
                        other.cancel()
                    raise InputError(f"run {name!r} failed: {exc}", f"see its log {logfile}") from exc
                self.log(
                    f"[{len(results)}/{len(jobs)}] {name}: {self.label(results[name])} "
                    f"({time.perf_counter() - t0:.0f} s)"
                )
        return results
