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
  where scatter updates dominate (BENCHMARKS.md, k-means);
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

Precision (``precision=``):

- ``"fp32"``: float32 GEMMs throughout.
- ``"bf16"``: the assignment GEMM's inputs are rounded to bfloat16, float32 accumulation and
  outputs (CPU: oneDNN's bf16 mode for float32 matmul, fast with AMX/AVX512-BF16; CUDA: a bfloat16
  copy of ``x``). Fast but approximate: near-ties may be assigned differently from fp32, and the
  per-iteration inertia comes from rounded scores (the final one is exact). Centroid sums stay
  float32/float64 except for the CUDA onehot update, which multiplies the bfloat16 copy.
- ``"mixed"``: *certified* bf16. The scores come from a bf16-input GEMM with float32 accumulation
  (CPU: a bfloat16 copy of the points, made once where it fits ``MIXED_COPY_MAX_BYTES``, times the
  bf16 centroids, the sums rounded to a bf16 output; larger inputs: oneDNN's bf16 mode on the
  float32 points; CUDA: the copy, float32 output); a per-point error bound (below) decides which
  points' argmax is certain to be the fp32 argmax; only the others are recomputed with the
  float32 GEMM (their rows gathered, one small GEMM per chunk). The
  assignment then equals the fp32 one except where fp32 itself is at a tie within its own
  rounding error; centroid sums are float32/float64 rows as in fp32, and the per-iteration
  inertia is computed exactly from the cluster sums. Falls back to fp32 where bf16 GEMMs are not fast (CPU without AMX/AVX512-BF16) or a
  one-time numerical probe of the bf16 GEMM fails (inputs not rounded to nearest even, or not
  accumulated in float32; e.g. oneDNN capped by ``ONEDNN_MAX_CPU_ISA``, or a CPU with
  AVX512-BF16 but no AMX, where oneDNN leaves float32 matmuls unrounded).

``details["precision_note"]`` always says which precision ran and why (the denoise stage logs it).
- ``"auto"`` (default): ``"mixed"`` on a CPU whose bf16 GEMM is fast, for ``d >= MIXED_MIN_DIM``
  (512; below, fp32 is the faster), else ``"fp32"``; ``"fp32"`` on CUDA, where the mixed path
  (bfloat16 copy of ``x``, fp32-output GEMM) is implemented but not yet measured.

The bound of the mixed mode. Let ``u = 2^-8`` (unit roundoff of bfloat16, round to nearest even),
``g(n) = n 2^-24 / (1 - n 2^-24)`` (float32 summation of n terms in any order). Per pass, the
centroids are centred on their mean ``m`` (the argmax is unchanged: ``x.m`` is common to all k);
the GEMM multiplies ``xh = bf16(x)`` by ``ch_k = bf16(c_k - m)``. With the exact rounding errors
``dx = xh - x`` (its norm computed once per row) and ``e_k = ch_k - (c_k - m)`` (in float64),

    xh.ch_a - xh.ch_j = x.(c_a - c_j) + dx.(c_a - c_j) + xh.(e_a - e_j),

so the bf16 score difference of clusters a, j is off from the exact one by at most
``|dx| |c_a - c_j| + (|x| + |dx|) |e_a - e_j|`` (Cauchy-Schwarz), plus float32 accumulation:
``g(d+2) ((|x| + |dx|) |ch_k| + |c_k|^2/2)`` per bf16 score (products of two bf16 numbers are
exact in float32) and ``g(d+2) (|x| |c_k| + |c_k|^2/2)`` per float32 score of the reference
path; a bf16 output adds its rounding, ``u / (1 - u) |o_k|`` per score (``o_k``: the product as
output). A point whose bf16 argmax is a is *certified* when, for every j != a, its bf16 score
difference exceeds the sum of these terms: then the exact difference exceeds the float32
reference's error on both scores, so the float32 argmax is a as well. The terms form three K x K
matrices (coefficients of ``|dx|``, ``|x|`` and 1; ``|c_a - c_j|`` and ``|e_a - e_j|`` from float64
Gram matrices with their own rounding added), computed once per pass. Per chunk of rows they are
folded into one, ``|x| (rho B_dx + B_x + B_1 / min|x|)`` with ``rho = max |dx| / |x|`` over the
chunk (``|dx| ~ 0.42 u |x|`` for full-precision floats, ``<= u |x|`` always), so the test is one
gather and three (chunk x K) element-wise operations. Slack covers the rest: the matrices are
inflated by ``1 + 4 g(d+2)`` (float32 norms, the test's own rounding), ``g`` is taken at ``d + 16``
(which also covers oneDNN running a small GEMM, few rows, in plain float32), and
``2^-126``-scale terms cover subnormals flushed to zero. The bound assumes round-to-nearest-even
inputs and float32 accumulation, which the probe checks. Points that fail (and any NaN/inf
score, any all-zero row) get the float32 GEMM, on their gathered rows, as an fp32 pass computes
them. ``details["rechecked_per_iter"]`` counts them.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from wtalcli.core.errors import InputError, WtalError
from wtalcli.dcc.params import BACKENDS, DEVICES, INITS, PRECISIONS

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
# The CPU mixed mode keeps a bfloat16 copy of the points when it takes at most this much memory
# (150k x 2048: 0.6 GB): its bf16 GEMM then runs 2.6x faster than oneDNN's bf16 mode on float32
# inputs, which converts every chunk on every pass. Larger inputs use the latter (no copy).
MIXED_COPY_MAX_BYTES = 2 * 1024**3
# precision="auto" picks the mixed mode from this dimension up: its per-row work (the certificate,
# the norms, the re-checks' gathers) does not shrink with d while the GEMM time it saves does.
# bench: 40k L2-normalised points, K = 64, 1 thread: mixed / fp32 time 1.21 at d = 256, 0.93 at
# 512, 0.86 at 1024, 0.69 at 2048.
MIXED_MIN_DIM = 512
# Rounding constants of the mixed-precision bound (module docstring).
U_BF16 = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits), round to nearest even
U_FP32 = 2.0**-24  # unit roundoff of float32
TINY = 2.0**-126  # smallest normal float32: bf16 kernels may flush subnormals to zero


@dataclass
class KMeansResult:
    """What one k-means run produced, and how it ran."""

    assign: np.ndarray  # (N,) int64, nearest centroid of every point (all N, also with ``sample``)
    centroids: np.ndarray  # (K, d) float32
    inertia_per_iter: list[float]  # sum of squared distances of the training points, per iteration,
    # to the centroids that iteration started from (faiss's convention for its ``obj``); from the
    # assignment GEMM's scores (approximate with precision="bf16"), from the cluster sums with "mixed"
    inertia: float  # sum over all N points of the squared distance to the returned centroid
    backend_used: str  # "torch" | "faiss"
    device_used: str  # "cpu" | "cuda" | "cuda:1" ... : where the iterations actually ran
    n_iter: int
    n_train: int  # points the iterations ran on (N, or ``sample``)
    n_reseeded: int = 0  # empty clusters re-seeded over all iterations (torch backend)
    precision: str = "fp32"  # what ran: "fp32" | "bf16" | "mixed" ("auto" resolved; faiss: "fp32")
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
    precision: str = "auto",
    update: str = "auto",
    init_sample: int | None = None,
) -> KMeansResult:
    """Cluster the rows of ``x`` (N x d, float32/float16, may be a memmap) into ``k`` clusters.

    ``sample``: run the iterations on a seeded uniform sample of that many rows, then assign all
    rows. ``init_centroids`` (K x d) replaces the initialisation (for cross-backend checks).
    ``init_sample``: points used for k-means++ seeding (default ``64 * k``; all when fewer).
    ``precision``: ``"auto"`` (certified mixed bf16/fp32 on a CPU with fast bf16 GEMMs and
    d >= 512, else fp32), ``"fp32"``, ``"mixed"`` or ``"bf16"`` (module docstring; the torch
    backend only).
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
    other threads running meanwhile are affected too, so the passes set it around the assignment
    GEMM only (bf16 and mixed modes), never around an update or a float32 recheck."""
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


def _mm_bf16(a: torch.Tensor, b: torch.Tensor, out_dtype_ok: bool) -> torch.Tensor:
    """``a @ b`` for bfloat16 inputs with float32 accumulation, as the mixed mode's bound needs:
    a float32 result where torch offers ``out_dtype`` (CUDA), else the bfloat16 result (CPU:
    float32 accumulation rounded once to bf16 at the end, a rounding the bound accounts for)."""
    if out_dtype_ok:
        return torch.mm(a, b, out_dtype=torch.float32)
    return torch.mm(a, b)


def _gamma(n: int) -> float:
    """Bound on the relative error of a float32 sum of n terms, in any order (Higham's gamma_n)."""
    return n * U_FP32 / (1.0 - n * U_FP32)


def _cpu_bf16_isa() -> str:
    """The bf16 GEMM instructions this CPU has that oneDNN uses ("AMX-BF16", "AVX512-BF16"), or ''.
    Without them oneDNN emulates bf16 and the mixed mode would be slower than fp32. This reads the
    CPU's flags; whether oneDNN actually rounds to bf16 here (``ONEDNN_MAX_CPU_ISA`` may cap it,
    some CPUs with AVX512-BF16 alone leave float32 matmuls unrounded) is the probe's question."""
    cpu = getattr(torch, "cpu", None)
    for name, isa in (("_is_amx_tile_supported", "AMX-BF16"), ("_is_avx512_bf16_supported", "AVX512-BF16")):
        fn = getattr(cpu, name, None)
        try:
            if fn is not None and bool(fn()):
                return isa
        except (RuntimeError, AttributeError):
            continue
    return ""


@functools.cache
def _bf16_probe(device: str, copy: bool) -> str:
    """'' when the bf16-input GEMM the mixed mode uses on ``device`` behaves as its bound assumes,
    else why not. CPU without ``copy``: oneDNN's bf16 mode on float32 inputs (float32 output);
    ``copy``: bfloat16 inputs, float32 output where ``out_dtype`` exists, else bfloat16 output.
    Deterministic, once per process and device."""
    dev = torch.device(device)
    out_ok = copy and _has_out_dtype_mm(dev)

    def gemm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = a.to(dev), b.to(dev)
        if copy:
            return _mm_bf16(a.to(torch.bfloat16), b.to(torch.bfloat16), out_ok).float()
        with _cpu_matmul_precision(True):
            return torch.addmm(torch.zeros(b.shape[1], device=dev), a, b)

    return _check_bf16_gemm(gemm, out16=copy and not out_ok)


def _check_bf16_gemm(gemm: Any, out16: bool = False) -> str:
    """'' when ``gemm(a, b)`` (float32 in, float32 out) behaves as bf16 inputs rounded to nearest
    even, float32 accumulation and, with ``out16``, the sum rounded to nearest even bf16 at the
    end; else why not (``_bf16_probe``)."""
    # 64-row blocks of crafted rows times ones (and the transpose, for the other operand); each
    # sum is exact in float32. Round to nearest even gives 1 + 2^-7 (above the midpoint), 1 (tie,
    # to even), 1 + 2^-6 (tie, to even); 512 x (1 + 2^-7) = 516 only with float32 accumulation
    # (bf16 partial sums lose it past 256); 2049 and 2072 ones test the output rounding (bf16:
    # 2048, and 2080, the even neighbour of the midpoint 2072). oneDNN computes small float32
    # GEMMs (few rows and columns) in plain float32, hence 64 x 64 outputs.
    width = 2304
    a = torch.zeros(64, width)
    a[0, :256] = 1 + 2**-8 + 2**-10
    a[1, :256] = 1 + 2**-8
    a[2, :256] = 1 + 3 * 2**-8
    a[3, :512] = 1 + 2**-7
    a[4, :2049] = 1.0
    a[5, :2072] = 1.0
    exact = [258.0, 256.0, 260.0, 516.0, 2049.0, 2072.0]
    want = torch.tensor([2048.0, 2080.0] if out16 else [2049.0, 2072.0], dtype=torch.float64)
    want = torch.cat([torch.tensor(exact[:4], dtype=torch.float64), want])
    got = gemm(a, torch.ones(width, 64)).cpu().double()[:6]
    got_b = gemm(torch.ones(64, width), a.t().contiguous()).cpu().double()[:, :6]  # the other operand
    if not (torch.equal(got, want[:, None].expand(6, 64)) and torch.equal(got_b, want.expand(64, 6))):
        if float(got[0, 0]) == 257.25:
            cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
            return "the float32 matmul is not rounded to bfloat16 (oneDNN's bf16 mode has no effect here" + (
                f"; ONEDNN_MAX_CPU_ISA={cap})" if cap else ")"
            )
        return "the bf16 GEMM does not round to nearest even or does not accumulate in float32"
    # random inputs: within float32 accumulation (and the output rounding) of the exact product
    # of the bf16-rounded inputs
    g = torch.Generator().manual_seed(0)
    ra, rb = torch.randn(64, 1024, generator=g), torch.randn(1024, 64, generator=g)
    ha, hb = ra.bfloat16().double(), rb.bfloat16().double()
    out = gemm(ra, rb).cpu().double()
    tol = _gamma(1026) * (ha.abs() @ hb.abs()) + (U_BF16 * out.abs() if out16 else 0.0)
    if not bool(((out - ha @ hb).abs() <= tol).all()):
        return "the bf16 GEMM's error exceeds float32 accumulation of bf16-rounded inputs"
    return ""


def _mixed_unavailable(dev: torch.device) -> str:
    """'' when the certified mixed mode can run (fast) on ``dev``, else why not."""
    if dev.type == "cpu":
        mm = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
        if mm is None or not hasattr(mm, "fp32_precision") or not torch.backends.mkldnn.is_available():
            return "this torch build has no oneDNN bf16 mode for float32 matmul"
        if not _cpu_bf16_isa():
            return "this CPU has no fast bf16 GEMM (AMX-BF16 or AVX512-BF16)"
        return _bf16_probe("cpu", True) or _bf16_probe("cpu", False)  # with and without the copy
    if not _has_out_dtype_mm(dev):
        return "this torch has no float32-output bf16 GEMM (torch.mm out_dtype) on this device"
    return _bf16_probe(str(dev), True)


def _resolve_precision(precision: str, dev: torch.device, d: int) -> tuple[str, str]:
    """The precision the torch backend runs (fp32 | bf16 | mixed), and one line saying why (the
    denoise stage logs it and keeps it in its manifest)."""
    if precision in ("fp32", "bf16"):
        return precision, f"{precision}, as requested"
    if precision == "auto" and dev.type == "cuda":
        return "fp32", "auto: fp32 on CUDA (the mixed path is implemented there, not yet measured)"
    if precision == "auto" and d < MIXED_MIN_DIM:
        return "fp32", f"auto: fp32 is the faster at d = {d} < {MIXED_MIN_DIM}"
    why = _mixed_unavailable(dev)
    if why:
        return "fp32", f"{precision}: fp32, not mixed: {why}"
    where = _cpu_bf16_isa() if dev.type == "cpu" else str(dev)
    return "mixed", f"{precision}: mixed (certified bf16 GEMM; the bf16 probe passed on {where})"


def _pair_dist_upper(v: torch.Tensor) -> torch.Tensor:
    """(K, K) float64 upper bounds on the distances between the rows of ``v`` (K, d) float64, from
    the Gram matrix (one small GEMM): the computed ``|a|^2 + |b|^2 - 2 a.b`` is within
    ``(d + 4) 2^-53 (|a|^2 + |b|^2)``-scale of the exact square (float64 dot products, any order),
    which is added before the square root."""
    d = v.shape[1]
    sq = (v * v).sum(1)  # (K,)
    both = sq[:, None] + sq[None, :]
    d2 = both - 2.0 * (v @ v.t())
    return (d2 + 4.0 * (d + 4) * 2.0**-53 * both).clamp_(min=0.0).sqrt_()


def _mixed_bounds(
    c: torch.Tensor, m: torch.Tensor, cm16: torch.Tensor, neg_half: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(K, K) float32 ``B_dx``, ``B_x``, ``B_1`` of the mixed mode's certificate (module docstring):
    the bf16 score difference of clusters a, j is within ``|dx| B_dx[a, j] + |x| B_x[a, j] +
    B_1[a, j]`` of the exact one, and that margin also covers the float32 reference's error.
    ``c``: (K, d) float32 centroids, ``m``: the centre, ``cm16``: bf16(c - m) as the GEMM uses it,
    ``neg_half``: -|c|^2/2 as added to the scores. Diagonal: 0, 0, -inf (j = a never blocks)."""
    k, d = c.shape
    cd = c.double()
    exact = cd - m.double()  # c_k - m (exact in float64 up to a 2^-53 relative rounding)
    err = cm16.double() - exact  # e_k: bf16 rounding of the centred centroid, fp32 subtraction included
    dc = _pair_dist_upper(exact)  # >= |c_a - c_j|
    de = _pair_dist_upper(err) + 2.0 * math.sqrt(d) * TINY  # >= |e_a - e_j|; subnormals flushed
    g = _gamma(d + 16)
    # nch >= |bf16(c - m)| and >= |fl32(c - m)|: the bound also holds where oneDNN runs a small
    # GEMM (few rows) in plain float32 (the float32 rounding of c - m is within the g slack)
    nch = (exact.norm(dim=1) + err.norm(dim=1)) * (1.0 + U_FP32)
    nc, nh = cd.norm(dim=1), neg_half.double().abs()

    def pair(v: torch.Tensor) -> torch.Tensor:
        return v[:, None] + v[None, :]

    b_dx = dc + de + g * pair(nch)  # |dx| (c_a - c_j) and |dx| (e_a - e_j); |xh| <= |x| + |dx|
    b_x = de + g * (pair(nch) + pair(nc))  # |x| (e_a - e_j); accumulation of both paths
    b_1 = 2.0 * g * pair(nh) + 4.0 * (d + 2) * TINY  # the -|c|^2/2 terms; flushed products
    out = torch.cat([b_dx, b_x, b_1], dim=1) * (1.0 + 4.0 * _gamma(d + 2))
    diag = torch.arange(k, device=c.device)
    out[diag, diag] = 0.0
    out[diag, k + diag] = 0.0
    out[diag, 2 * k + diag] = -math.inf
    out = out.float()
    return out[:, :k], out[:, k : 2 * k], out[:, 2 * k :]


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


def _bf16_rounding_norms(
    x: torch.Tensor, keep: bool, rows: int = 256
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(N,) ``|x_i|`` and (N,) ``|bf16(x_i) - x_i|`` per row (round to nearest even, as torch and
    oneDNN convert) in one read of ``x``, and with ``keep`` the (N, d) bfloat16 copy of ``x``.
    Reused (rows, d) buffers stay in cache (fresh chunk-sized temporaries would cost page
    faults)."""
    n, d = x.shape
    if x.device.type != "cpu":
        rows = max(rows, 32768)  # fewer kernel launches; cache reuse is the CPU's concern
    norm = torch.empty(n, device=x.device)
    err = torch.empty(n, device=x.device)
    x16 = torch.empty(n, d, dtype=torch.bfloat16, device=x.device) if keep else None
    b = min(rows, n)
    h = None if keep else torch.empty(b, d, dtype=torch.bfloat16, device=x.device)
    diff = torch.empty(b, d, device=x.device)
    for s in range(0, n, rows):
        e = min(s + rows, n)
        xs = x[s:e]
        torch.linalg.vector_norm(xs, dim=1, out=norm[s:e])
        xh = x16[s:e] if x16 is not None else h[: e - s]
        xh.copy_(xs)
        df = diff[: e - s]
        df.copy_(xh)
        df.sub_(xs)
        torch.linalg.vector_norm(df, dim=1, out=err[s:e])
    return norm, err, x16


class _Pass:
    """Fused assignment (+ update) passes over the rows of one matrix, with the cluster sums.

    Invariant after a pass with ``with_update``: ``sums[k]`` (float64) and ``counts[k]`` are the
    sum and number of the rows whose ``assign`` is k. Each pass accumulates a float32 ``delta``
    that is added in float64, so the sums carried across iterations do not drift.
    ``best`` (max_k score per row) is valid after fp32 and bf16 passes; a mixed pass leaves its
    centred bf16 scores there (``exact_best`` recomputes it in float32 when needed).
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
        self.mixed = precision == "mixed"
        self.update = update
        # bfloat16 copy of x: for the CUDA GEMMs, and for the CPU mixed mode where it fits
        # MIXED_COPY_MAX_BYTES (a bf16 GEMM reads it 2.6x faster than oneDNN converts float32
        # inputs); else oneDNN rounds float32 inputs itself. ``bf16_copy`` forces either way.
        if bf16_copy is not None:
            use_copy = bf16_copy
        elif self.cuda:
            use_copy = True
        else:
            use_copy = self.mixed and self.n * self.d * 2 <= MIXED_COPY_MAX_BYTES
        self.x16 = None
        if self.bf16 and use_copy:
            self.x16 = x.to(torch.bfloat16)
        use_copy = use_copy and (self.bf16 or self.mixed)
        self.out_dtype_ok = use_copy and _has_out_dtype_mm(self.dev)
        # mixed with a bf16-output GEMM (CPU): the certificate adds the output's rounding
        self.out16 = self.mixed and use_copy and not self.out_dtype_ok
        b = min(chunk, self.n)
        self.scores = torch.empty(b, k, device=self.dev)  # (B, K)
        self.a_new = torch.empty(b, dtype=torch.int64, device=self.dev)  # (B,)
        self.mask = torch.empty(b, k, device=self.dev)  # (B, K) scratch for the argmax
        self.rank_w = torch.arange(k, 0, -1, dtype=torch.float32, device=self.dev)  # K, K-1, ..., 1
        self.assign = torch.full((self.n,), -1, dtype=torch.int64, device=self.dev)  # (N,)
        self.best = torch.empty(self.n, device=self.dev)  # max_k (x.c_k - |c_k|^2/2) per row
        if self.mixed:
            # (N,) |x| and |bf16(x) - x| (+ subnormals flushed to zero), once: the latter is about
            # 0.42 u |x| for rows of full-precision floats, 2.4x tighter than the a-priori u |x|
            self.xn, self.dx, self.x16 = _bf16_rounding_norms(x, keep=use_copy)
            self.dx.add_(math.sqrt(self.d) * TINY)
            self.o16 = torch.empty(b, k, dtype=torch.bfloat16, device=self.dev) if self.out16 else None
            self.sq = self.xn.clone()
        else:
            self.sq = torch.empty(self.n, device=self.dev)  # (N,) |x|^2, computed once
            for s in range(0, self.n, chunk):  # a reduction per chunk: no (N, d) temporary
                torch.linalg.vector_norm(x[s : s + chunk], dim=1, out=self.sq[s : s + chunk])
        self.sq.square_()
        self.sq_total = float(self.sq.sum(dtype=torch.float64))
        self.sums = torch.zeros(k, self.d, dtype=torch.float64, device=self.dev)  # (K, d)
        self.counts = torch.zeros(k, dtype=torch.int64, device=self.dev)  # (K,)
        self.has_members = False  # sums/counts describe ``assign`` (incremental updates apply)
        self.n_changed = 0  # rows whose cluster changed in the last pass
        self.n_rechecked = 0  # mixed: rows whose argmax the last pass recomputed in float32
        self.last_c: torch.Tensor | None = None  # the centroids of the last pass

    def run(self, c: torch.Tensor, with_update: bool) -> None:
        """Assign all rows to ``c`` (K x d); with_update: bring ``sums``/``counts`` up to date."""
        k, dev = self.k, self.dev
        self.last_c = c
        neg_half = -0.5 * (c * c).sum(1)  # (K,)
        ct = c.t().contiguous()  # (d, K)
        bound = None
        if self.mixed:
            # centred centroids (the argmax is unchanged; the rounding error shrinks with |c - m|)
            m = c.mean(0)
            cm = c - m
            cm16 = cm.to(torch.bfloat16)
            bound = _mixed_bounds(c, m, cm16, neg_half)
            gt = cm16.t().contiguous() if self.x16 is not None else cm.t().contiguous()
        elif self.x16 is not None:
            gt = ct.to(torch.bfloat16)
        else:
            gt = ct
        round_cpu = (self.bf16 or self.mixed) and self.x16 is None and not self.cuda
        incremental = with_update and self.update == "incremental" and self.has_members
        delta = torch.zeros(k, self.d, device=dev) if with_update else None  # (K, d) float32
        dcount = torch.zeros(k, dtype=torch.int64, device=dev) if with_update else None
        onehot = None
        oh16 = self.bf16 and self.x16 is not None  # the bf16 mode's one-hot GEMM multiplies the copy
        if with_update and self.update == "onehot":
            onehot = torch.empty(
                min(self.chunk, self.n), k, device=dev, dtype=torch.bfloat16 if oh16 else torch.float32
            )
        changed = rechecked = 0
        for s in range(0, self.n, self.chunk):
            e = min(s + self.chunk, self.n)
            xb = self.x[s:e]  # (B, d) view, no copy
            sc = self.scores[: e - s]
            o16 = None
            if self.out16:  # bf16 output, kept for its rounding term
                o16 = self.o16[: e - s]
                torch.mm(self.x16[s:e], gt, out=o16)
                torch.add(o16, neg_half, out=sc)
            elif self.x16 is not None:
                mm = _mm_bf16 if self.mixed else _mm_f32
                torch.add(mm(self.x16[s:e], gt, self.out_dtype_ok), neg_half, out=sc)
            else:
                with _cpu_matmul_precision(round_cpu):
                    torch.addmm(neg_half, xb, gt, out=sc)  # (B, K) = x.c - |c|^2/2
            a = self.a_new[: e - s]
            _first_argmax(sc, self.best[s:e], a, self.rank_w, self.mask[: e - s])
            if bound is not None:
                rechecked += self._certify(xb, s, e, a, bound, neg_half, ct, o16)
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
                if oh16:
                    delta.add_(_mm_f32(oh.t(), self.x16[s:e], self.out_dtype_ok))
                else:
                    delta.addmm_(oh.t(), xb)  # (K, B) @ (B, d)
                dcount += torch.bincount(a, minlength=k)
            elif with_update:
                delta.index_add_(0, a, xb)
                dcount += torch.bincount(a, minlength=k)
            old.copy_(a)
        self.n_rechecked = rechecked
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

    def _certify(
        self,
        xb: torch.Tensor,
        s: int,
        e: int,
        a: torch.Tensor,
        bound: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        neg_half: torch.Tensor,
        ct: torch.Tensor,
        o16: torch.Tensor | None = None,
    ) -> int:
        """Mixed pass: keep the bf16 argmax ``a`` of the rows whose certificate holds, recompute
        the others with the float32 GEMM (as an fp32 pass computes them). Returns how many.

        Per chunk, the pairwise bound ``|dx| B_dx + |x| B_x + B_1`` is bounded by
        ``|x| (rho B_dx + B_x + B_1 / min|x|)``, rho = max |dx| / |x| over the chunk's rows, so
        the test is one gather and three element-wise (B, K) operations. With a bf16-output
        GEMM (``o16``: the (B, K) products before the bias), each score also carries its output
        rounding, at most ``u / (1 - u) |o16|``."""
        b_dx, b_x, b_1 = bound  # (K, K) each
        sc = self.scores[: e - s]
        xn = self.xn[s:e]
        # over the rows with x != 0 (an all-zero row gets NaN below: not certified, recomputed)
        xpos = torch.where(xn > 0.0, xn, math.inf)
        rho = float((self.dx[s:e] / xpos).max())
        inv = 1.0 / float(xpos.min())  # 0 when every row is zero
        if math.isfinite(rho) and math.isfinite(inv):
            coef = torch.add(b_x, b_dx, alpha=rho).add_(b_1, alpha=inv)
        else:  # inf/NaN norms: nothing certified
            coef = torch.full_like(b_x, math.inf)
        coef.fill_diagonal_(-math.inf)  # j = a never blocks
        thr = self.mask[: e - s]  # (B, K) scratch, free after the argmax
        torch.index_select(coef, 0, a, out=thr)
        thr.mul_(xn.unsqueeze(1)).add_(sc)  # s_j + bound(a, j); -inf at j = a
        lim = self.best[s:e]
        if o16 is not None:
            ao = o16.abs()  # (B, K) bf16, exact
            kappa = U_BF16 / (1.0 - U_BF16) * (1.0 + 2.0**-20)
            thr.add_(ao, alpha=kappa)
            lim = lim - kappa * ao.gather(1, a.unsqueeze(1)).squeeze(1).float()
        bad = torch.nonzero(~(thr.amax(1) < lim)).squeeze(1)  # not certified (NaN: not)
        nb = int(bad.numel())
        if nb:
            idx = bad if nb > 1 else bad.repeat(2)  # one row would take another kernel (gemv)
            sc32 = torch.addmm(neg_half, xb.index_select(0, idx), ct)  # float32, as an fp32 pass
            m = idx.numel()
            b32 = torch.empty(m, device=self.dev)
            a32 = torch.empty(m, dtype=torch.int64, device=self.dev)
            _first_argmax(sc32, b32, a32, self.rank_w, torch.empty(m, self.k, device=self.dev))
            a.index_copy_(0, bad, a32[:nb])
        return nb

    def exact_best(self) -> None:
        """After a mixed pass: ``best`` as an fp32 pass over the same centroids leaves it (for
        the empty-cluster rule, which picks the farthest points)."""
        c = self.last_c
        neg_half = -0.5 * (c * c).sum(1)
        ct = c.t().contiguous()
        for s in range(0, self.n, self.chunk):
            e = min(s + self.chunk, self.n)
            sc = self.scores[: e - s]
            torch.addmm(neg_half, self.x[s:e], ct, out=sc)
            torch.amax(sc, 1, out=self.best[s:e])

    def inertia(self) -> float:
        """Summed squared distance of the rows to their centroids in the last pass."""
        if self.mixed:
            return self.inertia_from_sums()
        # |x - c|^2 = |x|^2 - 2 (x.c - |c|^2/2); spherical centroids have |c| = 1, same formula
        return max(self.sq_total - 2.0 * float(self.best.sum(dtype=torch.float64)), 0.0)

    def inertia_from_sums(self) -> float:
        """The same from the cluster sums (exact, whatever the scores' precision), after a pass
        with ``with_update``: sum |x - c_a|^2 = sum |x|^2 - 2 sum_k c_k . S_k + sum_k n_k |c_k|^2."""
        cd = self.last_c.double()
        cross = float((cd * self.sums).sum())
        norms = float((self.counts.double() * (cd**2).sum(1)).sum())
        return max(self.sq_total - 2.0 * cross + norms, 0.0)


def _reseed_empty(p: _Pass) -> int:
    """Fill empty clusters with the farthest points (the rule is in the module docstring).

    Moves each chosen row's contribution in ``p.sums``/``p.counts``/``p.assign`` to the empty
    cluster, whose mean is then that row. Returns the number of clusters re-seeded.
    """
    empty = torch.nonzero(p.counts == 0).flatten().tolist()
    if not empty:
        return 0
    if p.mixed:
        p.exact_best()
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

    used, note = _resolve_precision(precision, dev, xt.shape[1])
    p = _Pass(xt, k, chunk, used, upd)
    inertia_hist: list[float] = []
    n_reseeded = 0
    changed: list[int] = []
    rechecked: list[int] = []
    for _ in range(iterations):
        p.run(c, with_update=True)
        inertia_hist.append(p.inertia())
        changed.append(p.n_changed)
        rechecked.append(p.n_rechecked)
        n_reseeded += _reseed_empty(p)
        new_c = (p.sums / p.counts.clamp(min=1).unsqueeze(1).double()).float()
        still_empty = p.counts == 0
        if bool(still_empty.any()):
            new_c[still_empty] = c[still_empty]
        c = _normalise_rows(new_c, fallback=c) if spherical else new_c

    # final assignment of all N points with the returned centroids
    full = p if train_idx is None else _Pass(_to_tensor(x, None, dev), k, chunk, used, upd)
    # bf16/mixed scores make max_k(...) approximate: take the final inertia from the exact sums
    exact = used in ("bf16", "mixed")
    full.run(c, with_update=exact)
    final_inertia = full.inertia_from_sums() if exact else full.inertia()
    details: dict[str, Any] = {
        "chunk_size": chunk,
        "changed_per_iter": changed,
        "precision_requested": precision,
    }
    if used == "mixed":
        details["rechecked_per_iter"] = rechecked
        details["rechecked_final"] = full.n_rechecked
    details["precision_note"] = note
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
        precision=used,
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
