"""Several processes, one job: ``torch.distributed`` for runs launched by ``torchrun``.

A process is part of a distributed run when ``torchrun`` (or any launcher that sets the same
variables) gave it ``WORLD_SIZE`` > 1, ``RANK`` and ``LOCAL_RANK``. Otherwise every helper here is a
no-op that returns what one process would have, so single-process code paths do not change.

- :func:`setup` joins the process group once per process (NCCL for a CUDA device, gloo otherwise);
  :func:`resolve_device` gives each process ``cuda:LOCAL_RANK``.
- Rank 0 does the work that touches the artifact store: :func:`on_main` runs a function there and
  broadcasts its result (artifact ids, "already built" decisions) or its error to every rank, so
  all ranks take the same branch and fail with the same one-line message; :func:`main_only` does
  the same for a context manager (the store's lock).
- Tensors: :func:`all_gather_rows` (rows of different counts per rank, this rank's own tensor kept
  with its autograd graph), :func:`broadcast_` (in place), :func:`mean_` (all-reduce average),
  :func:`scale_grad` (identity whose gradient is multiplied, for losses computed identically on
  every rank under DDP's gradient averaging).

``WTAL_DIST_TIMEOUT_MIN`` (default 60) bounds how long a rank waits in a collective, e.g. while
rank 0 alone writes the artifacts or a DCC refresh round.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import torch
import torch.distributed as dist

from wtalcli.core.devices import resolve_device as _resolve_device
from wtalcli.core.errors import InputError, WtalError
from wtalcli.core.launch import Dist, launched  # noqa: F401  (re-exported: the ranks of this job)

T = TypeVar("T")
TIMEOUT_ENV = "WTAL_DIST_TIMEOUT_MIN"


def current() -> Dist:
    """This process's place in a distributed run that :func:`setup` has joined (else one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Dist()
    return Dist(dist.get_rank(), dist.get_world_size(), launched().local_rank)


def resolve_device(name: str | torch.device) -> torch.device:
    """:func:`wtalcli.core.devices.resolve_device`, except that under torchrun a CUDA device is
    ``cuda:LOCAL_RANK`` (``--device auto`` or ``cuda``; ``cuda:N`` must name that GPU)."""
    device = name if isinstance(name, torch.device) else _resolve_device(name)
    ctx = launched()
    if not ctx.active or device.type != "cuda":
        return device
    named = str(name).strip().lower().startswith("cuda:")  # auto and cuda resolve to cuda:0 above
    if named and device.index != ctx.local_rank:
        raise InputError(
            f"--device {name}: under torchrun process {ctx.rank} uses cuda:{ctx.local_rank} (LOCAL_RANK)",
            "pass --device cuda (or auto) and let torchrun place one process per GPU",
        )
    if ctx.local_rank >= torch.cuda.device_count():
        raise WtalError(
            f"LOCAL_RANK={ctx.local_rank} but only {torch.cuda.device_count()} GPU(s) are visible",
            "start at most one process per GPU (torchrun --nproc-per-node)",
        )
    return torch.device("cuda", ctx.local_rank)


def setup(device: str | torch.device = "cpu") -> Dist:
    """Join the process group when launched as several processes (once per process); else one process.

    The backend is NCCL when ``device`` resolves to a GPU, gloo otherwise; rendezvous comes from the
    launcher's environment (``MASTER_ADDR``/``MASTER_PORT``).
    """
    ctx = launched()
    if not ctx.active:
        return ctx
    if not dist.is_initialized():
        dev = resolve_device(device)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        minutes = float(os.environ.get(TIMEOUT_ENV, "60"))
        dist.init_process_group(
            "nccl" if dev.type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=minutes)
        )
        atexit.register(_shutdown)
    if (dist.get_rank(), dist.get_world_size()) != (ctx.rank, ctx.world):
        raise WtalError(
            f"the process group says rank {dist.get_rank()} of {dist.get_world_size()}, "
            f"the environment rank {ctx.rank} of {ctx.world}",
            "launch every process with the same torchrun command",
        )
    return ctx


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def finish(code: int) -> NoReturn:
    """End this process of a launched job with exit status ``code``, never through interpreter
    finalization.

    Why: once DistributedDataParallel has used a gloo process group, ``destroy_process_group``
    unregisters the group but no longer stops its worker threads (DDP keeps a reference to it), so
    they are still alive when Python finalizes. A worker that drops its last reference to a
    finished collective (its tensors belong to Python objects, e.g. ``broadcast_object_list``'s)
    takes the GIL to release them; if the main thread has begun finalizing by then, Python 3.11
    ends that thread with ``pthread_exit``, whose forced unwind through a noexcept C++ destructor
    calls ``std::terminate``: "terminate called without an active exception", SIGABRT, after the
    work was done. A loaded machine, which delays the worker, makes it likely.

    So: flush the output, wait for every rank (on success: no rank closes its connections while
    another still uses them), leave the process group, and exit with ``os._exit`` while the worker
    threads are idle. Every artifact is already published atomically; there is nothing left that
    finalization would do.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(RuntimeError):
            if code == 0:
                dist.barrier()
            dist.destroy_process_group()
    os._exit(code)


def _comm_device() -> torch.device:
    """Where tensors must live for the backend's collectives (NCCL: this rank's GPU)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ------------------------------------------------------------------------------------- objects


def barrier() -> None:
    if current().active:
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` as rank ``src`` has it, on every rank (picklable, small: ids, flags, states)."""
    if not current().active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order."""
    if not current().active:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@dataclass(frozen=True)
class _Failure:
    """An error raised on rank 0, as sent to the other ranks."""

    kind: type
    message: str
    fix: str | None = None
    path: Any = None

    @classmethod
    def of(cls, exc: BaseException) -> _Failure:
        if isinstance(exc, WtalError):
            return cls(type(exc), exc.message, exc.fix, exc.path)
        return cls(type(exc), f"{type(exc).__name__}: {exc}")

    def exception(self) -> Exception:
        if issubclass(self.kind, WtalError):
            return self.kind(self.message, self.fix, self.path)
        return WtalError(f"rank 0 failed ({self.message})", "see rank 0's error above")


def on_main(fn: Callable[[], T]) -> T:
    """``fn()`` run on rank 0 only, its result broadcast to every rank (one process: just ``fn()``).

    The other ranks wait. When ``fn`` raises on rank 0 it re-raises there and the other ranks raise
    the same :class:`WtalError` (or a WtalError naming rank 0's failure), so no rank is left waiting.
    """
    ctx = current()
    if not ctx.active:
        return fn()
    if ctx.is_main:
        try:
            result = fn()
        except BaseException as exc:
            broadcast_object(("error", _Failure.of(exc)))
            raise
        broadcast_object(("ok", result))
        return result
    status, payload = broadcast_object(None)
    if status == "error":
        raise payload.exception()
    return payload


@contextlib.contextmanager
def main_only(enter: Callable[[], contextlib.AbstractContextManager]) -> Iterator[None]:
    """Hold the context manager ``enter()`` (e.g. the store's lock) on rank 0 only, for the duration
    of the block on every rank; a failure to enter it (a :class:`~wtalcli.core.errors.LockedError`)
    is raised on every rank."""
    ctx = current()
    if not ctx.active:
        with enter():
            yield
        return
    with contextlib.ExitStack() as stack:

        def hold() -> None:
            stack.enter_context(enter())

        on_main(hold)
        yield


# ------------------------------------------------------------------------------------- tensors


def all_gather_rows(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``t`` (first dimensions may differ, the rest must agree), in rank order.

    This rank's entry is ``t`` itself, autograd graph included; the others are detached copies on
    ``t``'s device.
    """
    ctx = current()
    if not ctx.active:
        return [t]
    comm = _comm_device()
    n = torch.tensor([t.shape[0]], dtype=torch.int64, device=comm)
    counts = [torch.empty_like(n) for _ in range(ctx.world)]
    dist.all_gather(counts, n)
    sizes = [int(c.item()) for c in counts]
    rows = max(sizes)
    padded = torch.zeros((rows, *t.shape[1:]), dtype=t.dtype, device=comm)
    padded[: t.shape[0]] = t.detach()
    parts = [torch.empty_like(padded) for _ in range(ctx.world)]
    dist.all_gather(parts, padded)
    return [t if r == ctx.rank else parts[r][: sizes[r]].to(t.device) for r in range(ctx.world)]


def broadcast_(*tensors: torch.Tensor, src: int = 0) -> None:
    """Overwrite ``tensors`` in place with rank ``src``'s values (any device; bool allowed)."""
    if not current().active:
        return
    comm = _comm_device()
    for t in tensors:
        buf = t.detach().to(comm, torch.uint8 if t.dtype == torch.bool else t.dtype).contiguous()
        dist.broadcast(buf, src=src)
        with torch.no_grad():
            t.copy_(buf.to(t.device, t.dtype))


def mean_(t: torch.Tensor) -> torch.Tensor:
    """All-reduce average of ``t`` over the ranks, in place (on the backend's device); returns ``t``."""
    ctx = current()
    if ctx.active:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(ctx.world)
    return t


def sync_rng(device: torch.device) -> None:
    """Give every rank rank 0's torch RNG state (CPU, and ``device``'s when it is a GPU)."""
    if not current().active:
        return
    cpu = broadcast_object(torch.get_rng_state())
    torch.set_rng_state(cpu)
    if device.type == "cuda":
        torch.cuda.set_rng_state(broadcast_object(torch.cuda.get_rng_state(device)), device)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.factor, None


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` unchanged forward; its gradient multiplied by ``factor`` backward.

    Under DDP, which averages gradients over the ranks, a loss that every rank computes in full
    (e.g. over the all-gathered batch) but differentiates only through its own rows needs
    ``factor = world size`` on those rows to give the gradient of one process.
    """
    if factor == 1:
        return x
    return _ScaleGrad.apply(x, factor)
