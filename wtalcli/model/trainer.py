"""The BaS-Net trainer (and, through hooks, DCC's): batches, loader, checkpoints, training loop.

Reproducibility model
---------------------
- *Which* videos and snippets step ``s`` uses is a pure function of ``(seed, s)``
  (:class:`BatchPlan`): videos come from a fresh seeded permutation per pass over the training set
  (a batch that crosses a pass boundary takes the rest of one permutation and the start of the
  next), snippets from stratified jitter with a per-step generator. So background loader threads,
  resuming, and pausing (``train(until=...)``) cannot change the data stream.
- Dropout draws from torch's RNG. The trainer keeps its own torch RNG state and swaps it in only
  while it trains (``torch.random.fork_rng``), so whatever the caller does between two
  ``train(until=...)`` calls (inference, k-means) does not perturb training, and the caller's RNG
  is left as it was.
- Checkpoints hold model, optimizer, step, the torch CPU/CUDA RNG states, the state of the auxiliary
  numpy generator :attr:`Trainer.np_rng` (offered to hooks), the config, and the state of any extra
  modules/state a hook owns. They load with ``torch.load(..., weights_only=True)``.
- On CPU a run is bitwise reproducible for a seed on one CPU instruction set and thread count,
  and stopping + resuming yields exactly the weights of an uninterrupted run (tested). Across
  instruction sets it is not: torch dispatches its CPU kernels (ATen, oneDNN) by instruction set
  (AVX2, AVX-512, AMX) and they round differently, so the same seed trains a slightly different
  model (the features do not change). :func:`wtalcli.core.devices.machine_numerics` records what a run
  used in its model's manifest. With ``deterministic=True`` the trainer also turns on
  ``torch.use_deterministic_algorithms`` (CPU) / ``cudnn.deterministic`` (CUDA) while it trains.
  On CUDA ``use_deterministic_algorithms`` is left off (it needs ``CUBLAS_WORKSPACE_CONFIG`` set
  before cuBLAS starts); this model's CUDA kernels (cuDNN convolutions with ``cudnn.deterministic``,
  cuBLAS GEMMs, topk backward = scatter of a permutation, fused Adam) are deterministic, but that
  is not verified by a test here (no GPU on the test machine). bf16 autocast and TF32 change the
  numbers, not the determinism.

Several processes (``torchrun``, :mod:`wtalcli.core.distributed`): every rank computes the same global
batch from the plan and trains on its own contiguous slice (``batch_size`` stays the global batch,
which must divide by the world size); the model and the extra modules are wrapped together in one
``DistributedDataParallel``, which averages their gradients, so per-rank means over equal slices
give the gradient of one process on the global batch. Dropout draws the global batch's mask from
the rank-identical RNG stream and applies this rank's rows (:class:`GlobalBatchDropout`), so the
units dropped are those one process would drop. Logged terms are averaged over the ranks; rank 0
alone saves checkpoints. The result equals one process's up to float rounding (tested on CPU).

Precision: ``amp="none"`` runs true fp32 (TF32 off for both cuBLAS and cuDNN, as the official code
ran on pre-Ampere GPUs) unless ``tf32=True``; ``amp="bf16"`` autocasts the model to bfloat16 while
top-k pooling, softmax and the loss stay float32.
"""

from __future__ import annotations

import collections
import contextlib
import math
import pickle
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from wtalcli.core import distributed
from wtalcli.core.errors import InputError, MismatchError, WtalError
from wtalcli.core.files import atomic_write
from wtalcli.data.schema import FeatureSet
from wtalcli.model.basnet import BaSNet, BaSOutput
from wtalcli.model.config import RESUMABLE_CHANGES, TrainConfig
from wtalcli.model.losses import basnet_loss
from wtalcli.model.sampling import batch_train_indices

CHECKPOINT_FORMAT = "wtal-basnet-trainer/1"

# independent random streams derived from the seed (SeedSequence spawn keys)
_STREAM_ORDER, _STREAM_JITTER, _STREAM_AUX = 0x0D3E, 0x7A11, 0xA0C5


# ------------------------------------------------------------------------------------- batches


class BatchPlan:
    """Which training videos (positions into the training-row list) and snippets each step uses.

    Pure function of ``(seed, step)``; thread-safe.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, num_segments: int, seed: int) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size, self.num_segments, self.seed = batch_size, num_segments, seed
        self._perms: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def _perm(self, epoch: int) -> np.ndarray:
        with self._lock:
            perm = self._perms.get(epoch)
            if perm is None:
                rng = np.random.default_rng(np.random.SeedSequence([self.seed, _STREAM_ORDER, epoch]))
                perm = rng.permutation(len(self.lengths))
                if len(self._perms) > 8:
                    self._perms.pop(min(self._perms))
                self._perms[epoch] = perm
            return perm

    def positions(self, step: int) -> np.ndarray:
        """``(B,)`` positions into the training rows for ``step`` (0-based)."""
        n = len(self.lengths)
        flat = np.arange(step * self.batch_size, (step + 1) * self.batch_size, dtype=np.int64)
        epochs, within = np.divmod(flat, n)
        out = np.empty_like(flat)
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self._perm(int(e))[within[sel]]
        return out

    def snippets(self, step: int, positions: np.ndarray) -> np.ndarray:
        """``(B, T)`` snippet indices (inside each video) for ``step``: stratified jitter."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _STREAM_JITTER, step]))
        return batch_train_indices(self.lengths[positions], self.num_segments, rng)


@dataclass
class Batch:
    """One training step's data, as handed to the model and to ``extra_loss``.

    ``x`` may share memory with a reusable loader buffer: it is valid during its step only.
    """

    step: int  # 0-based iteration index
    positions: np.ndarray  # (B,) positions into Trainer.rows (e.g. memory-bank slots)
    rows: np.ndarray  # (B,) FeatureSet video rows
    lengths: np.ndarray  # (B,) snippets per video
    snippets: np.ndarray  # (B, T) sampled snippet index inside each video (0 .. L-1)
    x: Tensor  # (B, T, D) float32 features on the training device
    y: Tensor  # (B, C) float32 multi-hot video labels on the training device


class BatchLoader:
    """Gathers each step's features from the memory-mapped array into reusable host buffers.

    One ``np.take`` per batch (a single fancy index of the flat snippet rows) into a preallocated
    (pinned, on CUDA) buffer; with ``num_workers > 0`` that many threads prepare the next steps
    while the current one trains (numpy releases the GIL while copying, page faults included).
    Buffer ``s % n_slots`` serves step ``s``; the window of prepared steps is ``n_slots - 1`` ahead,
    so a buffer is only refilled after its step has finished (CPU: the consumer has moved on; CUDA:
    its host-to-device copy event has completed).
    """

    def __init__(
        self,
        features: np.ndarray,
        offsets: np.ndarray,
        labels: np.ndarray,
        rows: np.ndarray,
        plan: BatchPlan,
        device: torch.device,
        num_workers: int,
        part: tuple[int, int] = (0, 1),
    ) -> None:
        self.features, self.offsets, self.rows, self.plan = features, offsets, rows, plan
        # (rank, world): this process takes rows [rank * b, (rank + 1) * b) of each global batch
        self.part = part
        b = plan.batch_size // part[1]
        self.device, self.labels = device, labels
        self.n_slots = num_workers + 2 if num_workers > 0 else 1
        shape = (b * plan.num_segments, features.shape[1])
        dtype = torch.float16 if features.dtype == np.float16 else torch.float32
        pin = device.type == "cuda"
        self.host = [torch.empty(shape, dtype=dtype, pin_memory=pin) for _ in range(self.n_slots)]
        self.host_np = [h.numpy() for h in self.host]
        y_shape = (b, labels.shape[1])
        self.host_y = [torch.empty(y_shape, dtype=torch.float32, pin_memory=pin) for _ in range(self.n_slots)]
        self.copied: list[torch.cuda.Event | None] = [None] * self.n_slots
        self.pool = ThreadPoolExecutor(num_workers, thread_name_prefix="wtal-load") if num_workers else None
        self.futures: dict[int, Future] = {}
        self.next_submit = 0

    def _produce(self, step: int) -> tuple[int, np.ndarray, np.ndarray]:
        pos = self.plan.positions(step)
        snippets = self.plan.snippets(step, pos)  # drawn for the whole global batch, then sliced
        if self.part[1] > 1:
            b = len(pos) // self.part[1]
            lo = self.part[0] * b
            pos, snippets = pos[lo : lo + b], snippets[lo : lo + b]
        slot = step % self.n_slots
        event = self.copied[slot]
        if event is not None:
            event.synchronize()
        flat = (self.offsets[pos][:, None] + snippets).reshape(-1)
        np.take(self.features, flat, axis=0, out=self.host_np[slot], mode="clip")
        np.take(self.labels, pos, axis=0, out=self.host_y[slot].numpy())
        return slot, pos, snippets

    def get(self, step: int) -> Batch:
        if self.pool is None:
            slot, pos, snippets = self._produce(step)
        else:
            self.next_submit = max(self.next_submit, step)
            while self.next_submit < step + self.n_slots - 1:
                self.futures[self.next_submit] = self.pool.submit(self._produce, self.next_submit)
                self.next_submit += 1
            slot, pos, snippets = self.futures.pop(step).result()
        b, t = snippets.shape
        x, y = self.host[slot].view(b, t, -1), self.host_y[slot]
        if self.device.type == "cuda":  # from pinned memory: asynchronous, no stall on the stream
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self.copied[slot] = event
        return Batch(step, pos, self.rows[pos], self.plan.lengths[pos], snippets, x.float(), y)

    def close(self) -> None:
        if self.pool is not None:
            for fut in self.futures.values():
                fut.cancel()
            self.pool.shutdown(wait=True)
            self.futures.clear()


# ------------------------------------------------------------------------------------- trainer


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


ExtraLoss = Callable[[int, Batch, BaSOutput], tuple[Tensor, Mapping[str, Tensor | float]]]
OnStep = Callable[[int, dict[str, float]], None]


@contextlib.contextmanager
def numerics(device: torch.device, tf32: bool = False, deterministic: bool = True) -> Iterator[None]:
    """Precision/determinism switches for the duration of a call, restored afterwards."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )
    try:
        if device.type == "cuda":
            torch.backends.cudnn.deterministic = deterministic
            torch.backends.cudnn.benchmark = not deterministic
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        elif deterministic:
            torch.use_deterministic_algorithms(True)
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[4], saved[5]


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16")


def _canonical(obj: Any) -> Any:
    """A copy of nested dicts/lists/tuples with every string interned (tensors kept as they are).

    Pickle memoises by object identity, so a state holding a loaded checkpoint's strings (e.g.
    the optimizer's ``"step"`` keys after a resume) would save to other bytes than the same state
    built by the code; interned, equal states save to equal bytes."""
    if isinstance(obj, str):
        return sys.intern(obj)
    if type(obj) in (dict, collections.OrderedDict):
        out = type(obj)((_canonical(k), _canonical(v)) for k, v in obj.items())
        meta = getattr(obj, "_metadata", None)  # module state dicts carry their version info here
        if meta is not None:
            out._metadata = _canonical(meta)
        return out
    if isinstance(obj, list | tuple) and type(obj) in (list, tuple):
        return type(obj)(_canonical(v) for v in obj)
    return obj


def save_checkpoint(obj: Any, path: Path) -> None:
    """Save a checkpoint dict atomically, from a canonical copy (equal states, equal bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(_canonical(obj), f))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a trainer checkpoint safely (``weights_only=True``) onto the CPU, checking its format."""
    path = Path(path)
    if not path.exists():
        raise InputError("missing training checkpoint", "train first, or drop --resume", path=path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"unreadable training checkpoint ({first})", "delete it and train again", path=path
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(
            "not a wtal training checkpoint", "point --resume at a trainer checkpoint", path=path
        )
    return ckpt


def model_from_checkpoint(ckpt: Mapping[str, Any], device: torch.device | str = "cpu") -> BaSNet:
    """Rebuild the trained :class:`BaSNet` (eval mode) from a checkpoint dict."""
    cfg = TrainConfig.from_dict(ckpt["config"])
    meta = ckpt["model_meta"]
    model = BaSNet(meta["in_dim"], meta["n_classes"], cfg.hidden, cfg.attn_hidden, cfg.dropout, cfg.topk_div)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


class GlobalBatchDropout(nn.Module):
    """BaS-Net's dropout on one rank's slice of the global batch (several processes only).

    Draws the noise of the whole global batch from the torch RNG stream, which is the same on every
    rank, the way ``F.dropout`` does in one process (CPU: ``bernoulli_`` then ``div_``; CUDA: the
    fused ``native_dropout`` kernel, equal up to rounding under bf16), and multiplies this rank's
    rows in: the units dropped are those one process would drop, and the stream advances as it
    would. Costs one global-batch mask per step on every rank. :class:`BaSNet` applies dropout to
    its base and suppression branches concatenated along the batch (base rows, then suppression
    rows), so the global mask is laid out the same way and each half is sliced.
    """

    def __init__(self, p: float, rank: int, world: int) -> None:
        super().__init__()
        self.p, self.rank, self.world = float(p), rank, world

    def forward(self, h: Tensor) -> Tensor:
        # h: (2b, hidden, T), this rank's b base rows then its b suppression rows -> same shape
        if not self.training or self.p == 0.0 or h.numel() == 0:
            return h
        b = h.shape[0] // 2
        g = b * self.world  # the global batch
        shape = (2 * g, *h.shape[1:])  # (2G, hidden, T)
        if h.is_cuda:
            ones = torch.ones(shape, dtype=h.dtype, device=h.device)
            noise = torch.native_dropout(ones, self.p, True)[0]
        else:
            noise = torch.empty(shape, dtype=h.dtype, device=h.device).bernoulli_(1 - self.p).div_(1 - self.p)
        lo = self.rank * b
        return h * torch.cat([noise[lo : lo + b], noise[g + lo : g + lo + b]])


class _Joint(nn.Module):
    """The model and the extra modules as one module, so one DDP reducer averages all their
    gradients. Its forward is the model's; the extra modules run in the loss hook, inside the same
    backward pass (so they must take part in every step's loss)."""

    def __init__(self, model: nn.Module, extra: nn.Module) -> None:
        super().__init__()
        self.model, self.extra = model, extra

    def forward(self, x: Tensor) -> BaSOutput:
        return self.model(x)


class Trainer:
    """Trains BaS-Net on a FeatureSet's training rows; hooks let DCC add its loss and state.

    - ``extra_loss(step, batch, out) -> (loss, terms)`` is added to the BaS-Net loss (any weighting,
      e.g. a beta schedule, is the hook's business); ``terms`` join the logged terms.
    - ``extra_modules`` (e.g. DCC's projection head) are trained by the same optimizer and saved in
      checkpoints; ``extra_state`` (e.g. a memory bank; anything with ``state_dict`` /
      ``load_state_dict`` whose values ``weights_only`` can load) is saved and restored too.
    - ``on_step(step, terms)`` is called after each iteration with ``step`` = iterations completed
      (1-based) and float terms ``base, supp, norm, [hook terms], total``; on CUDA it is called one
      iteration late so that reading the numbers never stalls the GPU.
    """

    def __init__(
        self,
        fs: FeatureSet,
        config: TrainConfig,
        rows: np.ndarray | None = None,
        *,
        extra_loss: ExtraLoss | None = None,
        extra_modules: Mapping[str, nn.Module] | None = None,
        extra_state: Stateful | None = None,
        on_step: OnStep | None = None,
        checkpoint_path: str | Path | None = None,
    ) -> None:
        self.config = config.validate()
        world = distributed.launched().world  # 1 unless launched by torchrun
        if config.batch_size % world:
            raise InputError(
                f"batch size {config.batch_size} does not split over {world} processes",
                f"use a --batch-size that is a multiple of {world} (it is the global batch)",
            )
        self.device = distributed.resolve_device(config.device)
        self.dist = distributed.setup(self.device)
        self.fs = fs
        self.rows = fs.rows_of("train") if rows is None else np.asarray(rows, dtype=np.int64)
        if len(self.rows) == 0:
            raise InputError("the feature set has no training videos", "import a train split", path=fs.path)
        self.extra_loss, self.extra_state, self.on_step = extra_loss, extra_state, on_step
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.video_ids = [str(v) for v in fs.videos["video_id"].to_numpy()[self.rows]]
        self.lengths = fs.videos["n_snippets"].to_numpy(np.int64)[self.rows]
        self.offsets = fs.videos["offset"].to_numpy(np.int64)[self.rows]
        self.labels = fs.label_matrix(self.rows)
        self.plan = BatchPlan(self.lengths, config.batch_size, config.num_segments, config.seed)

        self._rng_devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=self._rng_devices):
            torch.random.default_generator.manual_seed(config.seed)  # restored on exit
            self.model = BaSNet(
                fs.dim, fs.n_classes, config.hidden, config.attn_hidden, config.dropout, config.topk_div
            )
            self._torch_cpu_state = torch.get_rng_state()
            self._torch_cuda_state = None
            if self.device.type == "cuda":
                with torch.cuda.device(self.device):
                    torch.cuda.manual_seed(config.seed)
                self._torch_cuda_state = torch.cuda.get_rng_state(self.device)
        if self.dist.active:
            self.model.dropout = GlobalBatchDropout(config.dropout, self.dist.rank, self.dist.world)
        self.model.to(self.device)
        self.extra_modules = nn.ModuleDict(dict(extra_modules or {})).to(self.device)
        params = list(self.model.parameters()) + list(self.extra_modules.parameters())
        self.optimizer = torch.optim.Adam(
            params,
            lr=config.lr,
            betas=(0.9, 0.999),
            weight_decay=config.weight_decay,
            fused=True if self.device.type == "cuda" else None,
        )
        self.np_rng = np.random.default_rng(np.random.SeedSequence([config.seed, _STREAM_AUX]))
        self.step = 0
        self._forward: nn.Module | None = None

    # ----------------------------------------------------------------------------- training

    def _forward_module(self) -> nn.Module:
        if self._forward is None:
            module: nn.Module = self.model
            if self.dist.active:  # built at the first train(), after any weights were loaded
                module = nn.parallel.DistributedDataParallel(
                    _Joint(self.model, self.extra_modules),
                    device_ids=[self.device.index] if self.device.type == "cuda" else None,
                )
            self._forward = torch.compile(module) if self.config.compile else module
        return self._forward

    def _train_step(self, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        self.model.train()
        self.extra_modules.train()
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.config.amp):
            out = model(batch.x)
            total, terms = basnet_loss(out, batch.y, self.config.attn_l1)
            terms = dict(terms)
            if self.extra_loss is not None:
                extra_total, extra_terms = self.extra_loss(batch.step, batch, out)
                clash = set(extra_terms) & (set(terms) | {"total"})
                if clash:
                    raise ValueError(f"extra_loss term names {sorted(clash)} clash with the BaS-Net terms")
                total = total + extra_total
                for name, value in extra_terms.items():
                    terms[name] = value.detach() if isinstance(value, Tensor) else torch.tensor(float(value))
        terms["total"] = total.detach()
        total.backward()
        self.optimizer.step()
        if self.dist.active:  # log the global batch's terms (each rank's are means over its slice)
            names = list(terms)
            values = torch.stack([terms[k].float().reshape(()).to(self.device) for k in names])
            distributed.mean_(values)
            terms = {k: values[i] for i, k in enumerate(names)}
        return terms

    def _stage(self, step: int, terms: dict[str, Tensor]) -> tuple[int, dict[str, Any], Any]:
        """Start copying the step's terms to the host without waiting for the device."""
        on_device = [k for k, v in terms.items() if v.device.type == "cuda"]
        staged: dict[str, Any] = {k: v for k, v in terms.items() if k not in on_device}
        event = None
        if on_device:
            values = torch.stack([terms[k].float().reshape(()) for k in on_device])
            host = torch.empty(values.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(values, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            staged.update({k: host[i] for i, k in enumerate(on_device)})
        return step, {k: staged[k] for k in terms}, event

    def _report(self, staged: tuple[int, dict[str, Any], Any]) -> None:
        step, values, event = staged
        if event is not None:
            event.synchronize()
        terms = {k: float(v) for k, v in values.items()}
        bad = [k for k, v in terms.items() if not math.isfinite(v)]
        if bad:
            raise WtalError(
                f"training diverged: loss term {bad[0]!r} is {terms[bad[0]]} at iteration {step}",
                "lower the learning rate or check the features for extreme values",
            )
        if self.on_step is not None:
            self.on_step(step, terms)

    def train(self, until: int | None = None) -> int:
        """Train until ``until`` (default: ``config.iterations``) iterations are done; return the step.

        Saves a checkpoint every ``checkpoint_every`` iterations and on return (when a
        ``checkpoint_path`` was given and any iteration ran).
        """
        target = self.config.iterations if until is None else min(int(until), self.config.iterations)
        if self.step >= target:
            return self.step
        cfg = self.config
        loader = BatchLoader(
            self.fs.features,
            self.offsets,
            self.labels,
            self.rows,
            self.plan,
            self.device,
            cfg.num_workers,
            part=(self.dist.rank, self.dist.world),
        )
        model = self._forward_module()
        with (
            numerics(self.device, cfg.tf32, cfg.deterministic),
            torch.random.fork_rng(devices=self._rng_devices),
        ):
            torch.set_rng_state(self._torch_cpu_state)
            if self._torch_cuda_state is not None:
                torch.cuda.set_rng_state(self._torch_cuda_state, self.device)
            pending = None
            try:
                while self.step < target:
                    batch = loader.get(self.step)
                    terms = self._train_step(model, batch)
                    self.step += 1
                    if pending is not None:
                        self._report(pending)
                    pending = self._stage(self.step, terms)
                    if self.device.type != "cuda":
                        self._report(pending)
                        pending = None
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < target:
                        if pending is not None:
                            self._report(pending)
                            pending = None
                        self._capture_rng()
                        self._save_if_configured()
                if pending is not None:
                    self._report(pending)
            finally:
                self._capture_rng()
                loader.close()
        self._save_if_configured()
        return self.step

    def _capture_rng(self) -> None:
        self._torch_cpu_state = torch.get_rng_state()
        if self._torch_cuda_state is not None:
            self._torch_cuda_state = torch.cuda.get_rng_state(self.device)

    def _save_if_configured(self) -> None:
        if self.checkpoint_path is not None and self.dist.is_main:  # ranks hold the same state
            self.save_checkpoint(self.checkpoint_path)

    # ----------------------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint: every piece of state needed to continue bit-identically."""
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "rng": {
                "torch_cpu": self._torch_cpu_state.clone(),
                "torch_cuda": None if self._torch_cuda_state is None else self._torch_cuda_state.clone(),
                "numpy_aux": self.np_rng.bit_generator.state,
            },
            "config": self.config.to_dict(),
            "model_meta": {
                "in_dim": self.fs.dim,
                "n_classes": self.fs.n_classes,
                "classes": list(self.fs.classes),
            },
            "train_videos": list(self.video_ids),
            "extra_modules": self.extra_modules.state_dict(),
            "extra_state": None if self.extra_state is None else self.extra_state.state_dict(),
        }

    def save_checkpoint(self, path: str | Path) -> None:
        save_checkpoint(self.state_dict(), Path(path))

    def load_state_dict(self, ckpt: Mapping[str, Any], source: str | Path = "checkpoint") -> None:
        """Restore a checkpoint made with a compatible config, data and hooks (else MismatchError)."""
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise InputError(
                "not a wtal training checkpoint", "point --resume at a trainer checkpoint", path=source
            )
        saved = TrainConfig.from_dict(ckpt["config"], source=source).to_dict()
        for name, value in self.config.to_dict().items():
            if name not in RESUMABLE_CHANGES and saved[name] != value:
                raise MismatchError(
                    f"checkpoint was trained with {name}={saved[name]!r}, this run asks for {value!r}",
                    f"use {name}={saved[name]!r} to resume, or train from scratch",
                    path=source,
                )
        meta = ckpt["model_meta"]
        if (meta["in_dim"], list(meta["classes"])) != (self.fs.dim, list(self.fs.classes)):
            raise MismatchError(
                "checkpoint belongs to a feature set with other dimensions or classes",
                "resume on the feature set it was trained on",
                path=source,
            )
        if list(ckpt["train_videos"]) != self.video_ids:
            raise MismatchError(
                "checkpoint was trained on a different list of training videos",
                "resume on the same feature set and split",
                path=source,
            )
        if (ckpt["extra_state"] is None) != (self.extra_state is None) or set(
            self.extra_modules.state_dict()
        ) != set(ckpt["extra_modules"]):
            raise MismatchError(
                "checkpoint and this run disagree on the extra (DCC) modules/state",
                "resume with the stage that wrote the checkpoint",
                path=source,
            )
        self.model.load_state_dict(ckpt["model"])
        self.extra_modules.load_state_dict(ckpt["extra_modules"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.extra_state is not None:
            self.extra_state.load_state_dict(ckpt["extra_state"])
        self.step = int(ckpt["step"])
        rng = ckpt["rng"]
        self._torch_cpu_state = rng["torch_cpu"].clone()
        if self._torch_cuda_state is not None:
            if rng["torch_cuda"] is not None:
                self._torch_cuda_state = rng["torch_cuda"].clone()
            else:  # resumed on a GPU from a CPU run: derive a CUDA stream from the seed and the step
                with torch.random.fork_rng(devices=self._rng_devices), torch.cuda.device(self.device):
                    torch.cuda.manual_seed(self.config.seed * 1_000_003 + self.step)
                    self._torch_cuda_state = torch.cuda.get_rng_state(self.device)
        self.np_rng.bit_generator.state = rng["numpy_aux"]

    def load_checkpoint(self, path: str | Path) -> None:
        """``--resume``: continue from ``path`` (its step) to the configured iterations."""
        self.load_state_dict(read_checkpoint(path), source=path)
