"""Lloyd k-means for the ``denoise`` stage: a chunked GEMM backend in torch (CPU and CUDA) and faiss.

One Lloyd iteration = assign every point to its nearest centroid, then move each centroid to the
mean of its points. Both backends run exactly ``iterations`` of them (no early stop), then one
more assignment pass over *all* points with the returned centroids, so ``assign`` is always the
nearest-centroid labelling of ``centroids`` (and, with ``sample``, covers the points left out of
training).

torch backend, one pass over ``x`` per iteration (the assignment and the update are fused, so a
chunk of ``x`` is read from memory once and reused from cache):

- assignment: ``argmax_k (x . c_k - |c_k|^2 / 2)``, one GEMM per chunk (argmin of the squared
  distance ``|x|^2 - 2 x.c + |c|^2``, whose ``|x|^2`` term does not depend on k);
- update, one of three rules (``update=``):
  ``"onehot"``: ``sums += one_hot(assign).T @ chunk``, one GEMM, stateless; the choice on CUDA,
  where scatter updates dominate (performance.md section 1);
  ``"index_add"``: ``sums.index_add_(0, assign, chunk)``, ``N*d`` additions instead of the one-hot
  GEMM's ``2*N*d*K`` flops (on a CPU the one-hot GEMM doubles the arithmetic of an iteration);
  ``"incremental"``: the cluster sums are kept (in float64) from one iteration to the next and
  only the rows whose cluster changed move their contribution (``index_add_`` of those rows to
  the new cluster, with ``alpha=-1`` to the old); after the first iterations few rows move, so
  the update costs almost nothing and an iteration is about one assignment GEMM. ``"auto"``:
  onehot on CUDA, incremental on CPU (the fastest there in ``bench/denoise.py``).
- inertia per iteration from the same GEMM: ``sum |x|^2 - 2 * sum max_k(...)`` with ``|x|^2``
  computed once.

Empty clusters (torch backend) are re-seeded deterministically after each update: the empty
clusters, in increasing id order, each take the point that was farthest from its assigned
centroid in that iteration's assignment (ties: lower point index first), skipping points that are
the only member of their cluster; the point's contribution moves from its old cluster's mean to
the new one (whose centroid is then that point). faiss has its own rule (it splits a large
cluster), so the two backends agree only on runs without empty clusters.

``spherical=True``: centroids are L2-normalised after every update (and at initialisation); the
assignment ``argmax x.c`` then equals the nearest unit centroid. The points are not normalised
(normalise the features first if cosine clustering is wanted).

Precision: float32 by default. ``precision="bf16"`` rounds the assignment GEMM's inputs to
bfloat16 and keeps float32 accumulation and outputs (CPU: oneDNN's bf16 mode for float32 matmul,
fast on CPUs with AMX/AVX512-BF16; CUDA: a bfloat16 copy of ``x``); centroid sums stay exact
float32/float64 except for the CUDA onehot update, which multiplies the bfloat16 copy. The
per-iteration inertia then comes from rounded scores (approximate); the final one is exact.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from wtalcli.errors import InputError, WtalError

BACKENDS = ("auto", "torch", "faiss")
DEVICES = ("auto", "cpu", "cuda")
INITS = ("k-means++", "random")
PRECISIONS = ("fp32", "bf16")
UPDATES = ("auto", "incremental", "onehot", "index_add")

# Chunk sizes (rows of x per GEMM). CPU: 2048 rows (16 MiB at d = 2048) measured best of
# 1024-8192 at THUMOS scale (fewer per-chunk calls than 1024, better cache reuse than 4096+);
# CUDA: large, the (B, K) score and one-hot tiles are small on the device.
CPU_CHUNK = 2048
CUDA_CHUNK = 131072
# Points used for (greedy) k-means++ seeding by default: a seeded uniform sample of 64 per
# centroid. Seeding costs one pass over the sample per centroid; at THUMOS scale 64/centroid took
# 0.37 s (1 thread) against 1.7 s for 256/centroid, with the same inertia after 20 iterations
# (within the spread between seeds). Seeding on all N points would cost about as much as the
# 20 Lloyd iterations.
INIT_POINTS_PER_CENTROID = 64
# What backend="auto" runs on a CPU: the fused torch backend, faster than faiss's CPU k-means
# on all points in bench/denoise.py (see BENCHMARKS.md).
CPU_AUTO_BACKEND = "torch"


@dataclass
class KMeansResult:
    """What one k-means run produced, and how it ran."""

    assign: np.ndarray  # (N,) int64, nearest centroid of every point (all N, also with ``sample``)
    centroids: np.ndarray  # (K, d) float32
    inertia_per_iter: list[float]  # sum of squared distances of the training points, per iteration,
    # to the centroids that iteration started from (faiss's convention for its ``obj``); from the
    # assignment GEMM's scores, so approximate with precision="bf16"
    inertia: float  # sum over all N points of the squared distance to the returned centroid
    backend_used: str  # "torch" | "faiss"
    device_used: str  # "cpu" | "cuda" | "cuda:1" ... : where the iterations actually ran
    n_iter: int
    n_train: int  # points the iterations ran on (N, or ``sample``)
    n_reseeded: int = 0  # empty clusters re-seeded over all iterations (torch backend)
    precision: str = "fp32"
    update: str = ""  # the torch update rule used ("incremental" | "onehot" | "index_add"); "" for faiss
    seconds: float = 0.0  # wall time of the whole call
    details: dict[str, Any] = field(default_factory=dict)


def kmeans(
    x: np.ndarray | torch.Tensor,
    k: int,
    iterations: int = 20,
    seed: int = 0,
    init: str = "k-means++",
    spherical: bool = False,
    backend: str = "auto",
    device: str = "auto",
    sample: int | None = None,
    chunk_size: int | None = None,
    init_centroids: np.ndarray | None = None,
    precision: str = "fp32",
    update: str = "auto",
    init_sample: int | None = None,
) -> KMeansResult:
    """Cluster the rows of ``x`` (N x d, float32/float16, may be a memmap) into ``k`` clusters.

    ``sample``: run the iterations on a seeded uniform sample of that many rows, then assign all
    rows. ``init_centroids`` (K x d) replaces the initialisation (for cross-backend checks).
    ``init_sample``: points used for k-means++ seeding (default ``64 * k``; all when fewer).
    Deterministic for a seed on CPU (given the same thread count).
    """
    t0 = time.perf_counter()
    _check_choice("backend", backend, BACKENDS)
    _check_choice("device", device, DEVICES)
    _check_choice("init", init, INITS)
    _check_choice("precision", precision, PRECISIONS)
    _check_choice("update", update, UPDATES)
    n, d = _shape(x)
    k = int(k)
    if k < 1:
        raise InputError(f"k-means needs at least one cluster, got K={k}", "pass --clusters 1 or more")
    if iterations < 0:
        raise InputError(f"iterations must be >= 0, got {iterations}", "pass a non-negative count")
    n_train = n if sample is None else int(sample)
    if sample is not None and n_train < 1:
        raise InputError(f"sample size must be positive, got {sample}", "pass a sample of at least K points")
    n_train = min(n_train, n)
    if n_train < k:
        raise InputError(
            f"cannot make K={k} clusters from {n_train} points",
            "use fewer clusters (--clusters) or more (or all) snippets",
        )
    if init_centroids is not None:
        init_centroids = np.asarray(init_centroids, dtype=np.float32)
        if init_centroids.shape != (k, d):
            raise InputError(
                f"init_centroids has shape {init_centroids.shape}, expected {(k, d)}",
                "pass K initial centroids of the features' dimension",
            )
    chosen = _choose_backend(backend, device)
    rng = np.random.default_rng(seed)
    train_idx = None if n_train == n else np.sort(rng.choice(n, size=n_train, replace=False))
    if chosen == "faiss":
        res = _faiss_kmeans(x, k, iterations, seed, init, spherical, device, train_idx, init_centroids, rng)
    else:
        res = _torch_kmeans(
            x,
            k,
            iterations,
            init,
            spherical,
            device,
            train_idx,
            init_centroids,
            rng,
            chunk_size,
            precision,
            update,
            init_sample,
        )
    res.seconds = time.perf_counter() - t0
    if not math.isfinite(res.inertia):
        raise InputError(
            "k-means produced a non-finite inertia: the features hold NaN or inf values",
            "the features (embeddings) must be finite: rebuild them from a finite model",
        )
    return res


# ------------------------------------------------------------------------------------ helpers


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"unknown k-means {name} {value!r}", f"use one of {', '.join(allowed)}")


def _shape(x: np.ndarray | torch.Tensor) -> tuple[int, int]:
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"k-means needs a non-empty 2-D (N x d) array, got shape {tuple(x.shape)}")
    if isinstance(x, torch.Tensor):
        ok = x.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64)
    else:
        ok = np.dtype(x.dtype) in (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64))
    if not ok:
        raise InputError(f"k-means needs floating-point features, got {x.dtype}", "store features as float32")
    return int(x.shape[0]), int(x.shape[1])


def faiss_available() -> bool:
    """True when faiss can be imported (faiss-cpu or faiss-gpu)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise WtalError(
            "the faiss k-means backend needs the faiss package, which is not installed",
            "pip install faiss-gpu (or faiss-cpu), or use --backend torch",
        ) from exc
    return faiss


def _choose_backend(backend: str, device: str) -> str:
    if backend != "auto":
        return backend
    if device != "cpu" and torch.cuda.is_available():
        return "torch"
    if device == "cuda":
        return "torch"  # raises the clear "no CUDA" error in _torch_device
    return CPU_AUTO_BACKEND


def _torch_device(device: str) -> torch.device:
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise WtalError(
                "k-means on CUDA was asked for, but torch sees no CUDA device", "use --device cpu"
            )
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _to_tensor(x: np.ndarray | torch.Tensor, idx: np.ndarray | None, dev: torch.device) -> torch.Tensor:
    """Rows ``idx`` (all if None) of ``x`` as a contiguous float32 tensor on ``dev``; no copy when
    ``x`` already is one (a read-only memmap is wrapped, never written)."""
    if isinstance(x, torch.Tensor):
        t = x if idx is None else x[torch.from_numpy(idx).to(x.device)]
    else:
        a = x if idx is None else x[idx]
        if a.dtype != np.float32 or not a.flags.c_contiguous:
            a = np.ascontiguousarray(a, dtype=np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # non-writable memmap: only ever read
            t = torch.from_numpy(a)
    return t.to(device=dev, dtype=torch.float32).contiguous()


@contextlib.contextmanager
def _cpu_matmul_precision(bf16: bool) -> Iterator[None]:
    """Within the block, CPU float32 matmuls round their inputs to bfloat16 (oneDNN) if asked;
    the previous setting is restored afterwards. The setting is torch's, process-wide: matmuls of
    other threads running meanwhile are affected too (only with ``precision="bf16"``)."""
    mm = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    if not bf16 or mm is None or not hasattr(mm, "fp32_precision"):
        yield
        return
    old = mm.fp32_precision
    mm.fp32_precision = "bf16"
    try:
        yield
    finally:
        mm.fp32_precision = old


def _has_out_dtype_mm(dev: torch.device) -> bool:
    """Whether ``torch.mm(bf16, bf16, out_dtype=float32)`` works on ``dev`` (probed once per run)."""
    a = torch.ones(2, 2, dtype=torch.bfloat16, device=dev)
    try:
        return torch.mm(a, a, out_dtype=torch.float32).dtype == torch.float32
    except (RuntimeError, TypeError, NotImplementedError):
        return False


def _mm_f32(a: torch.Tensor, b: torch.Tensor, out_dtype_ok: bool) -> torch.Tensor:
    """``a @ b`` with a float32 result for bfloat16 inputs: float32 accumulation and output where
    torch offers ``out_dtype``, else the bfloat16 product converted."""
    if out_dtype_ok:
        return torch.mm(a, b, out_dtype=torch.float32)
    return torch.mm(a, b).float()


# ------------------------------------------------------------------------------------ torch


@torch.no_grad()
def _kmeanspp(x: torch.Tensor, k: int, rng: np.random.Generator, n_points: int) -> torch.Tensor:
    """Greedy k-means++ over a seeded uniform sample of ``n_points`` rows of ``x``.

    Each new centre: draw ``2 + int(ln k)`` candidates with probability proportional to the
    squared distance to the nearest centre chosen so far (D^2 sampling), keep the candidate that
    lowers the summed squared distance most. All candidates' distances come from one small GEMM,
    which reads the sample once, like plain k-means++'s single distance pass.
    """
    n = x.shape[0]
    m = min(n, n_points)
    pool = x if m == n else x[torch.from_numpy(np.sort(rng.choice(n, size=m, replace=False))).to(x.device)]
    sq = (pool * pool).sum(1)  # (m,)
    n_trials = 2 + int(math.log(k))
    first = int(rng.integers(m))
    chosen = [first]
    d2 = (sq - 2.0 * torch.mv(pool, pool[first]) + sq[first]).clamp_(min=0.0)  # (m,)
    for _ in range(1, k):
        w = d2.double()
        cum = torch.cumsum(w, 0)
        total = float(cum[-1])
        if total <= 0.0:  # every point coincides with a chosen centre: pick uniformly
            rest = np.setdiff1d(np.arange(m), np.asarray(chosen))
            j = int(rng.choice(rest))
            chosen.append(j)
            d2 = torch.minimum(d2, (sq - 2.0 * torch.mv(pool, pool[j]) + sq[j]).clamp_(min=0.0))
            continue
        r = torch.from_numpy(rng.random(n_trials) * total).to(w.device)
        cand = torch.searchsorted(cum, r, right=True).clamp_(max=m - 1)  # (L,)
        cd2 = (sq[:, None] - 2.0 * (pool @ pool[cand].t()) + sq[cand][None, :]).clamp_(min=0.0)  # (m, L)
        cd2 = torch.minimum(cd2, d2[:, None])
        best = int(torch.argmin(cd2.double().sum(0)))  # first of equal potentials
        chosen.append(int(cand[best]))
        d2 = cd2[:, best].contiguous()
    return pool[torch.tensor(chosen, device=x.device)].clone()


def _normalise_rows(c: torch.Tensor, fallback: torch.Tensor | None = None) -> torch.Tensor:
    norm = c.norm(dim=1, keepdim=True)
    out = c / norm.clamp(min=1e-12)
    if fallback is not None:
        zero = norm.squeeze(1) == 0
        if bool(zero.any()):
            out[zero] = fallback[zero]
    return out


def _first_argmax(
    sc: torch.Tensor, best: torch.Tensor, out: torch.Tensor, rank_w: torch.Tensor, mask: torch.Tensor
) -> None:
    """``best, out = sc.max(1)`` (the first index among equal maxima), about 2x faster on CPU than
    ``torch.max(dim=1)`` for (B, K=64): max values, then the first column equal to them."""
    torch.amax(sc, 1, out=best)  # (B,)
    torch.eq(sc, best.unsqueeze(1), out=mask)  # (B, K) 1.0 where the row's maximum is
    mask.mul_(rank_w)  # column j -> K - j, so the first maximum has the largest weight
    k = sc.shape[1]
    out.copy_(k - mask.amax(1))
    out.clamp_(max=k - 1)  # a row of NaN scores has no maximum: keep the index valid


class _Pass:
    """Fused assignment (+ update) passes over the rows of one matrix, with the cluster sums.

    Invariant after a pass with ``with_update``: ``sums[k]`` (float64) and ``counts[k]`` are the
    sum and number of the rows whose ``assign`` is k. Each pass accumulates a float32 ``delta``
    that is added in float64, so the sums carried across iterations do not drift.
    """

    def __init__(
        self, x: torch.Tensor, k: int, chunk: int, precision: str, update: str, bf16_copy: bool | None = None
    ):
        self.x = x  # (N, d) float32
        self.n, self.d = x.shape
        self.k = k
        self.chunk = chunk
        self.dev = x.device
        self.cuda = self.dev.type == "cuda"
        self.bf16 = precision == "bf16"
        self.update = update
        # bfloat16 copy of x for the CUDA GEMMs; on CPU oneDNN rounds float32 inputs itself
        # (``bf16_copy`` forces either way: the tests run the CUDA code path on the CPU)
        use_copy = self.cuda if bf16_copy is None else bf16_copy
        self.x16 = x.to(torch.bfloat16) if (self.bf16 and use_copy) else None
        self.out_dtype_ok = self.x16 is not None and _has_out_dtype_mm(self.dev)
        b = min(chunk, self.n)
        self.scores = torch.empty(b, k, device=self.dev)  # (B, K)
        self.a_new = torch.empty(b, dtype=torch.int64, device=self.dev)  # (B,)
        self.mask = torch.empty(b, k, device=self.dev)  # (B, K) scratch for the argmax
        self.rank_w = torch.arange(k, 0, -1, dtype=torch.float32, device=self.dev)  # K, K-1, ..., 1
        self.assign = torch.full((self.n,), -1, dtype=torch.int64, device=self.dev)  # (N,)
        self.best = torch.empty(self.n, device=self.dev)  # max_k (x.c_k - |c_k|^2/2) per row
        self.sq = torch.empty(self.n, device=self.dev)  # (N,) |x|^2, computed once
        for s in range(0, self.n, chunk):  # a reduction per chunk: no (N, d) temporary
            torch.linalg.vector_norm(x[s : s + chunk], dim=1, out=self.sq[s : s + chunk])
        self.sq.square_()
        self.sq_total = float(self.sq.sum(dtype=torch.float64))
        self.sums = torch.zeros(k, self.d, dtype=torch.float64, device=self.dev)  # (K, d)
        self.counts = torch.zeros(k, dtype=torch.int64, device=self.dev)  # (K,)
        self.has_members = False  # sums/counts describe ``assign`` (incremental updates apply)
        self.n_changed = 0  # rows whose cluster changed in the last pass

    def run(self, c: torch.Tensor, with_update: bool) -> None:
        """Assign all rows to ``c`` (K x d); with_update: bring ``sums``/``counts`` up to date."""
        k, dev = self.k, self.dev
        neg_half = -0.5 * (c * c).sum(1)  # (K,)
        ct = c.t().contiguous()  # (d, K)
        ct16 = ct.to(torch.bfloat16) if self.x16 is not None else None
        incremental = with_update and self.update == "incremental" and self.has_members
        delta = torch.zeros(k, self.d, device=dev) if with_update else None  # (K, d) float32
        dcount = torch.zeros(k, dtype=torch.int64, device=dev) if with_update else None
        onehot = None
        if with_update and self.update == "onehot":
            oh_dtype = torch.bfloat16 if self.x16 is not None else torch.float32
            onehot = torch.empty(min(self.chunk, self.n), k, device=dev, dtype=oh_dtype)
        changed = 0
        with _cpu_matmul_precision(self.bf16 and self.x16 is None and not self.cuda):
            for s in range(0, self.n, self.chunk):
                e = min(s + self.chunk, self.n)
                xb = self.x[s:e]  # (B, d) view, no copy
                sc = self.scores[: e - s]
                if ct16 is not None:
                    torch.add(_mm_f32(self.x16[s:e], ct16, self.out_dtype_ok), neg_half, out=sc)
                else:
                    torch.addmm(neg_half, xb, ct, out=sc)  # (B, K) = x.c - |c|^2/2
                a = self.a_new[: e - s]
                _first_argmax(sc, self.best[s:e], a, self.rank_w, self.mask[: e - s])
                old = self.assign[s:e]
                if incremental:
                    # only rows that changed cluster move their contribution
                    moved = torch.nonzero(a != old).squeeze(1)
                    if moved.numel():
                        rows = xb.index_select(0, moved)
                        a_to, a_from = a.index_select(0, moved), old.index_select(0, moved)
                        delta.index_add_(0, a_to, rows)
                        delta.index_add_(0, a_from, rows, alpha=-1)
                        dcount += torch.bincount(a_to, minlength=k) - torch.bincount(a_from, minlength=k)
                        changed += moved.numel()
                elif onehot is not None:
                    oh = onehot[: e - s]
                    oh.zero_()
                    oh.scatter_(1, a.unsqueeze(1), 1.0)
                    if self.x16 is not None:
                        delta.add_(_mm_f32(oh.t(), self.x16[s:e], self.out_dtype_ok))
                    else:
                        delta.addmm_(oh.t(), xb)  # (K, B) @ (B, d)
                    dcount += torch.bincount(a, minlength=k)
                elif with_update:
                    delta.index_add_(0, a, xb)
                    dcount += torch.bincount(a, minlength=k)
                old.copy_(a)
        if not with_update:
            self.has_members = False
            return
        if incremental:
            self.sums += delta.double()
            self.counts += dcount
        else:
            self.sums = delta.double()
            self.counts = dcount
        self.has_members = True
        self.n_changed = changed if incremental else self.n

    def inertia(self) -> float:
        # |x - c|^2 = |x|^2 - 2 (x.c - |c|^2/2); spherical centroids have |c| = 1, same formula
        return max(self.sq_total - 2.0 * float(self.best.sum(dtype=torch.float64)), 0.0)


def _reseed_empty(p: _Pass) -> int:
    """Fill empty clusters with the farthest points (the rule is in the module docstring).

    Moves each chosen row's contribution in ``p.sums``/``p.counts``/``p.assign`` to the empty
    cluster, whose mean is then that row. Returns the number of clusters re-seeded.
    """
    empty = torch.nonzero(p.counts == 0).flatten().tolist()
    if not empty:
        return 0
    dist = (p.sq - 2.0 * p.best).cpu().numpy()  # squared distance of every row to its centroid
    order = np.lexsort((np.arange(p.n), -dist))  # farthest first, then lower index
    cnt = p.counts.cpu().numpy().copy()
    assign = p.assign.cpu().numpy()
    done = 0
    it = iter(order)
    for cluster in empty:
        for i in it:
            old = int(assign[i])
            if cnt[old] > 1:
                break
        else:  # fewer movable rows than empty clusters: the rest stay empty (keep their centroid)
            break
        cnt[old] -= 1
        cnt[cluster] = 1
        row = p.x[int(i)].double()
        p.sums[old] -= row
        p.counts[old] -= 1
        p.sums[cluster] = row
        p.counts[cluster] = 1
        p.assign[int(i)] = cluster
        done += 1
    return done


@torch.no_grad()
def _torch_kmeans(
    x: np.ndarray | torch.Tensor,
    k: int,
    iterations: int,
    init: str,
    spherical: bool,
    device: str,
    train_idx: np.ndarray | None,
    init_centroids: np.ndarray | None,
    rng: np.random.Generator,
    chunk_size: int | None,
    precision: str,
    update: str,
    init_sample: int | None,
) -> KMeansResult:
    dev = _torch_device(device)
    cuda = dev.type == "cuda"
    chunk = int(chunk_size) if chunk_size else (CUDA_CHUNK if cuda else CPU_CHUNK)
    if chunk < 1:
        raise InputError(f"chunk_size must be positive, got {chunk_size}")
    upd = update if update != "auto" else ("onehot" if cuda else "incremental")
    xt = _to_tensor(x, train_idx, dev)  # (n_train, d) float32
    k_train = xt.shape[0]

    if init_centroids is not None:
        c = torch.from_numpy(init_centroids).to(dev)
    elif init == "random":
        c = xt[torch.from_numpy(np.sort(rng.choice(k_train, size=k, replace=False))).to(dev)].clone()
    else:
        c = _kmeanspp(xt, k, rng, init_sample or INIT_POINTS_PER_CENTROID * k)
    if spherical:
        c = _normalise_rows(c)

    p = _Pass(xt, k, chunk, precision, upd)
    inertia_hist: list[float] = []
    n_reseeded = 0
    changed: list[int] = []
    for _ in range(iterations):
        p.run(c, with_update=True)
        inertia_hist.append(p.inertia())
        changed.append(p.n_changed)
        n_reseeded += _reseed_empty(p)
        new_c = (p.sums / p.counts.clamp(min=1).unsqueeze(1).double()).float()
        still_empty = p.counts == 0
        if bool(still_empty.any()):
            new_c[still_empty] = c[still_empty]
        c = _normalise_rows(new_c, fallback=c) if spherical else new_c

    # final assignment of all N points with the returned centroids
    full = p if train_idx is None else _Pass(_to_tensor(x, None, dev), k, chunk, precision, upd)
    # bf16 scores make max_k(...) approximate: take the final inertia from exact sums,
    # sum |x - c_a|^2 = sum |x|^2 - 2 sum_k c_k . S_k + sum_k n_k |c_k|^2 (S_k, n_k: cluster sums)
    exact = precision == "bf16"
    full.run(c, with_update=exact)
    if exact:
        cd = c.double()
        cross = float((cd * full.sums).sum())
        norms = float((full.counts.double() * (cd**2).sum(1)).sum())
        final_inertia = max(full.sq_total - 2.0 * cross + norms, 0.0)
    else:
        final_inertia = full.inertia()
    details = {"chunk_size": chunk, "changed_per_iter": changed}
    if cuda:
        torch.cuda.synchronize(dev)
    return KMeansResult(
        assign=full.assign.cpu().numpy().astype(np.int64, copy=False),
        centroids=c.float().cpu().numpy(),
        inertia_per_iter=inertia_hist,
        inertia=final_inertia,
        backend_used="torch",
        device_used=str(dev) if cuda else "cpu",
        n_iter=iterations,
        n_train=k_train,
        n_reseeded=n_reseeded,
        precision=precision,
        update=upd,
        details=details,
    )


# ------------------------------------------------------------------------------------ faiss


def _faiss_kmeans(
    x: np.ndarray | torch.Tensor,
    k: int,
    iterations: int,
    seed: int,
    init: str,
    spherical: bool,
    device: str,
    train_idx: np.ndarray | None,
    init_centroids: np.ndarray | None,
    rng: np.random.Generator,
) -> KMeansResult:
    faiss = _import_faiss()
    ngpu = int(faiss.get_num_gpus())
    # faiss.Kmeans(gpu=True) silently runs on the CPU when faiss sees no GPU: decide ourselves.
    if device == "cuda" and ngpu == 0:
        raise WtalError(
            "faiss k-means on CUDA was asked for, but faiss sees no GPU (faiss-cpu, or no device)",
            "install faiss-gpu on a GPU machine, or use --device cpu",
        )
    use_gpu = device != "cpu" and ngpu > 0
    xa = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
    xall = np.ascontiguousarray(xa, dtype=np.float32)
    xtrain = xall if train_idx is None else np.ascontiguousarray(xall[train_idx])
    n_train, d = xtrain.shape
    params: dict[str, Any] = {
        "niter": iterations,
        "seed": int(seed) % (2**31),
        "spherical": spherical,
        "verbose": False,
        # never let faiss subsample the training set behind our back (we sample ourselves)
        "max_points_per_centroid": max(n_train // k + 1, 256),
        "min_points_per_centroid": 1,
    }
    if hasattr(faiss.ClusteringParameters(), "early_stop_threshold"):
        params["early_stop_threshold"] = -1.0  # faiss >= 1.14 stops once the objective repeats
    if init == "k-means++" and init_centroids is None:
        if not hasattr(faiss, "ClusteringInitMethod_KMEANS_PLUS_PLUS"):
            raise WtalError(
                f"faiss {getattr(faiss, '__version__', '?')} has no k-means++ initialisation",
                "use --init random with faiss, or the torch backend",
            )
        params["init_method"] = faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS
    if use_gpu:
        params["gpu"] = ngpu
    km = faiss.Kmeans(d, k, **params)
    if iterations == 0:
        cent = (
            init_centroids
            if init_centroids is not None
            else xtrain[np.sort(rng.choice(n_train, k, replace=False))]
        )
        km.centroids = np.ascontiguousarray(cent, dtype=np.float32)
        obj: list[float] = []
    else:
        km.train(xtrain, init_centroids=init_centroids)
        obj = [float(v) for v in km.obj]
    dist, labels = km.assign(xall)
    sq_train = None
    if spherical:
        # faiss's objective is then the summed inner product; turn it into squared distances
        # to the unit centroids: |x - c|^2 = |x|^2 - 2 x.c + 1
        sq_train = float(np.einsum("ij,ij->", xtrain, xtrain, dtype=np.float64))
        obj = [sq_train - 2.0 * v + n_train for v in obj]
        sq_all = sq_train if train_idx is None else float(np.einsum("ij,ij->", xall, xall, dtype=np.float64))
        inertia = sq_all - 2.0 * float(dist.sum(dtype=np.float64)) + xall.shape[0]
    else:
        inertia = float(dist.sum(dtype=np.float64))
    return KMeansResult(
        assign=labels.astype(np.int64, copy=False),
        centroids=np.asarray(km.centroids, dtype=np.float32).reshape(k, d),
        inertia_per_iter=obj,
        inertia=max(inertia, 0.0),
        backend_used="faiss",
        device_used="cuda" if use_gpu else "cpu",
        n_iter=iterations,
        n_train=n_train,
        precision="fp32",
        update="",
        details={"faiss_version": getattr(faiss, "__version__", "?"), "faiss_gpus": ngpu},
    )
