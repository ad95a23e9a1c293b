"""k-means backends: planted clusters, backend agreement, spherical mode, empty clusters, determinism."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from wtalcli.core.errors import InputError, WtalError
from wtalcli.dcc import kmeans as km
from wtalcli.dcc.kmeans import _Pass, faiss_available, kmeans


@pytest.fixture(autouse=True)
def one_thread():
    """The problems here are tiny: one thread keeps them fast even on a busy 2-core machine
    (OpenMP barriers of many small ops stall when the cores are oversubscribed)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    faiss_before = None
    if faiss_available():
        import faiss

        faiss_before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(before)
    if faiss_before is not None:
        import faiss

        faiss.omp_set_num_threads(faiss_before)


needs_faiss = pytest.mark.skipif(
    not faiss_available(), reason="faiss is not installed (pip install faiss-gpu or faiss-cpu to run these)"
)


def planted(
    n: int = 1500, d: int = 24, k: int = 6, spread: float = 6.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """k well-separated Gaussian blobs: centre distance ~ spread*sqrt(2d), noise radius ~ sqrt(d)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * spread
    truth = rng.permutation(np.arange(n) % k)
    x = centres[truth] + rng.normal(size=(n, d))
    return x.astype(np.float32), truth


def overlapping(n: int = 3000, d: int = 16, k: int = 8, seed: int = 1) -> np.ndarray:
    """Blobs that overlap, so 20 iterations keep moving the centroids (a real test of agreement)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 1.2
    return (centres[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float32)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when the labelings a and b define the same partition (cluster ids may differ)."""
    pairs = np.unique(np.stack([a, b], 1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def direct_inertia(x: np.ndarray, assign: np.ndarray, c: np.ndarray) -> float:
    return float(((x.astype(np.float64) - c.astype(np.float64)[assign]) ** 2).sum())


def nearest(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    d2 = ((x.astype(np.float64)[:, None, :] - c.astype(np.float64)[None]) ** 2).sum(-1)
    return d2.argmin(1)


# ------------------------------------------------------------------------- torch backend


@pytest.mark.parametrize(
    "options",
    [
        {"update": "incremental"},
        {"update": "index_add"},
        {"update": "onehot"},
        {"chunk_size": 97},  # chunks that do not divide N
        {"sample": 400},
        {"precision": "bf16"},
        {"precision": "mixed"},
        {"precision": "fp32"},
    ],
)
def test_planted_clusters_recovered(options: dict) -> None:
    x, truth = planted()
    res = kmeans(x, 6, backend="torch", device="cpu", **options)
    assert same_partition(res.assign, truth)
    assert res.backend_used == "torch" and res.device_used == "cpu"
    assert res.assign.dtype == np.int64 and res.assign.shape == (len(x),)
    assert res.centroids.dtype == np.float32 and res.centroids.shape == (6, x.shape[1])
    assert res.n_iter == 20 and len(res.inertia_per_iter) == 20
    assert res.inertia == pytest.approx(direct_inertia(x, res.assign, res.centroids), rel=1e-4)


def test_assignment_is_nearest_returned_centroid_and_inertia_descends() -> None:
    x = overlapping()
    res = kmeans(x, 8, iterations=12, backend="torch", device="cpu", init="random")
    np.testing.assert_array_equal(res.assign, nearest(x, res.centroids))
    hist = np.array(res.inertia_per_iter)
    assert len(hist) == 12
    assert (np.diff(hist) <= 1e-5 * hist[0]).all()  # Lloyd never increases the objective
    assert res.inertia <= hist[-1] * (1 + 1e-6)
    assert res.inertia == pytest.approx(direct_inertia(x, res.assign, res.centroids), rel=1e-5)


def test_update_rules_agree() -> None:
    x = overlapping()
    init = x[:8].copy()
    a = kmeans(x, 8, init_centroids=init, update="index_add", backend="torch", device="cpu")
    for rule in ("onehot", "incremental"):
        b = kmeans(x, 8, init_centroids=init, update=rule, backend="torch", device="cpu")
        assert b.update == rule
        assert (a.assign == b.assign).mean() > 0.999
        np.testing.assert_allclose(a.centroids, b.centroids, atol=1e-4)
        np.testing.assert_allclose(a.inertia_per_iter, b.inertia_per_iter, rtol=1e-5)
    # the incremental rule moves fewer and fewer rows as the iterations settle
    moved = b.details["changed_per_iter"]
    assert moved[0] == len(x) and moved[-1] < moved[1] < len(x)


@pytest.mark.parametrize("update", ["onehot", "index_add"])
def test_bf16_copy_code_path(update: str) -> None:
    """The CUDA bf16 path (a bfloat16 copy of x, float32 results) run on the CPU."""
    x = torch.from_numpy(overlapping())
    c = x[:8].clone()
    ref = _Pass(x, 8, 1000, "fp32", update)
    ref.run(c, with_update=True)
    p = _Pass(x, 8, 1000, "bf16", update, bf16_copy=True)
    assert p.x16 is not None and p.x16.dtype == torch.bfloat16
    p.run(c, with_update=True)
    assert (p.assign == ref.assign).float().mean() > 0.99  # bf16 scores flip only near-ties
    assert torch.equal(p.counts, torch.bincount(p.assign, minlength=8))
    exact = torch.zeros(8, x.shape[1], dtype=torch.float64).index_add_(0, p.assign, x.double())
    if update == "index_add":  # float32 rows: exact up to float32 summation
        np.testing.assert_allclose(p.sums.numpy(), exact.numpy(), rtol=1e-5, atol=1e-3)
    else:  # the one-hot GEMM sums bf16-rounded rows (~375 rows of |x| ~ 1.5 per cluster, each off
        # by <= 2^-9 relative: about sqrt(375) * 1.5 * 2^-9 ~ 0.06 per coordinate) and, without
        # torch's out_dtype (CPU), rounds the sum itself to bf16 (<= 2^-9 relative)
        np.testing.assert_allclose(p.sums.numpy(), exact.numpy(), rtol=2**-8, atol=0.25)


# ------------------------------------------------------------------------- certified mixed precision


def mixed_runs_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the mixed mode run on this CPU whatever it has: the probe's answer injected as ''. Where
    oneDNN's bf16 mode has no effect the no-copy route's GEMM is then plain float32 (smaller errors
    than the bound assumes) and the copy route's bf16 GEMM is emulated: either way the certified
    assignment must equal fp32's, so the mixed code path is exercised on every machine."""
    monkeypatch.setattr(km, "_mixed_unavailable", lambda dev: "")


# oneDNN's own bf16 numerics (rounding, float32 accumulation) need a CPU where its bf16 mode acts
needs_fast_bf16 = pytest.mark.skipif(
    bool(km._mixed_unavailable(torch.device("cpu"))),
    reason="no fast bf16 GEMM on this CPU (AMX-BF16 / AVX512-BF16): the mixed mode runs as fp32 here",
)
# both ways the mixed mode computes its bf16 scores: oneDNN on float32 inputs (CPU), and the
# CUDA code path (a bfloat16 copy, float32 accumulation) run on the CPU, which needs no bf16 CPU
ROUTES = [pytest.param(False, marks=needs_fast_bf16, id="onednn"), pytest.param(True, id="copy")]


def near_ties(n: int = 2400, d: int = 96, k: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Centroids, and points almost equidistant from two of them: the midpoint of a random pair,
    plus noise orthogonal to their difference, plus an offset along it of about 2^-10 of its length
    (score margins near the bf16 error, so the bf16 argmax is often wrong, the fp32 one rarely in
    doubt). A few points sit exactly at a midpoint (ties for fp32 itself)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(k, d)).astype(np.float32)
    a, b = rng.integers(0, k, n), rng.integers(0, k, n)
    b = np.where(a == b, (b + 1) % k, b)
    diff = c[a] - c[b]
    unit = diff / np.linalg.norm(diff, axis=1, keepdims=True)
    noise = rng.normal(size=(n, d)) * 0.5
    noise -= (noise * unit).sum(1, keepdims=True) * unit  # orthogonal to c_a - c_b
    scale = np.abs(rng.normal(size=(n, 1))) * 2.0**-10 * rng.choice([-1.0, 1.0], size=(n, 1))
    x = (c[a] + c[b]) / 2 + noise + scale * np.linalg.norm(diff, axis=1, keepdims=True) * unit
    x[:8] = (c[a[:8]] + c[b[:8]]) / 2
    return x.astype(np.float32), c


def fp32_ties(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Rows whose exact top-1/top-2 margin is within float32's own error bound (the float32
    argmax there depends on rounding: "genuine fp32 ties")."""
    xd, cd = x.astype(np.float64), c.astype(np.float64)
    s = xd @ cd.T - 0.5 * (cd * cd).sum(1)
    top = np.sort(s, axis=1)[:, -2:]
    d = x.shape[1]
    g = (d + 2) * 2.0**-24 / (1 - (d + 2) * 2.0**-24)
    err = g * (np.linalg.norm(xd, axis=1) * np.linalg.norm(cd, axis=1).max() + 0.5 * (cd * cd).sum(1).max())
    return top[:, 1] - top[:, 0] <= 2 * err


@pytest.mark.parametrize("copy", ROUTES)
def test_mixed_pass_equals_fp32_on_near_ties(copy: bool) -> None:
    x, c = near_ties()
    xt, ct = torch.from_numpy(x), torch.from_numpy(c)
    ref = _Pass(xt, 16, 1000, "fp32", "index_add")
    ref.run(ct, with_update=True)
    mix = _Pass(xt, 16, 1000, "mixed", "index_add", bf16_copy=copy)
    assert mix.mixed and (mix.x16 is not None) == copy
    mix.run(ct, with_update=True)
    raw = _Pass(xt, 16, 1000, "bf16", "index_add", bf16_copy=copy)
    raw.run(ct, with_update=True)
    ties = fp32_ties(x, c)
    assert ties.sum() <= 0.02 * len(x)  # the planted exact midpoints, and few others
    wrong_bf16 = (raw.assign != ref.assign).numpy() & ~ties
    assert wrong_bf16.sum() > 50  # the data has teeth: plain bf16 gets these wrong
    assert mix.n_rechecked >= wrong_bf16.sum()  # ... and the certificate catches all of them
    assert mix.n_rechecked < len(x)  # while certifying part of the rows
    same = (mix.assign == ref.assign).numpy()
    assert same[~ties].all()
    assert same.all()  # ties too, in practice: the rows are re-checked with the same float32 GEMM
    assert torch.equal(mix.counts, ref.counts)
    np.testing.assert_allclose(mix.sums.numpy(), ref.sums.numpy(), rtol=1e-6, atol=1e-5)
    assert mix.inertia_from_sums() == pytest.approx(ref.inertia(), rel=1e-6)


def adversarial(d: int = 256, rows: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Two centroids and rows that make the bf16 error reach the bound's Cauchy-Schwarz terms:
    every coordinate of x and of c - m sits just below a rounding midpoint (error ~2^-8 relative,
    the most round to nearest allows), with signs along c_a - c_j, so dx and e_a - e_j are parallel
    to c_a - c_j and to x."""
    rng = np.random.default_rng(1)
    v = rng.choice([-1.0, 1.0], size=d)  # the direction c_a - c_j
    near = 1 + 2**-8 - 2**-20  # rounds down to 1: error 2^-8 - 2^-20
    m = np.full(d, 4.0)
    c = np.stack([m + v * near / 2, m - v * near / 2])  # c - m = +-v*near/2, exact in float32
    mags = rng.uniform(0.5, 2.0, size=(rows, 1)).round(3)
    x = v * near * mags
    x[rows // 2 :] *= -1
    x[:, : d // 2] *= rng.choice([1.0, 1.0 + 2**-7], size=(rows, d // 2))  # vary half the roundings
    return x.astype(np.float32), c.astype(np.float32)


@pytest.mark.parametrize("copy", ROUTES)
@pytest.mark.parametrize("case", ["adversarial", "random"])
def test_mixed_error_bound_holds(copy: bool, case: str) -> None:
    """|bf16 score difference - exact difference| <= the certificate's bound, for every row and pair,
    also on rows built to make the error as large as the bound allows."""
    if case == "adversarial":
        x, c = adversarial()
    else:
        rng = np.random.default_rng(2)
        x = (rng.normal(size=(300, 200)) * rng.uniform(0.01, 100, size=(300, 1))).astype(np.float32)
        c = (rng.normal(size=(40, 200)) * rng.uniform(0.1, 10, size=(40, 1)) + 3).astype(np.float32)
    xt, ct = torch.from_numpy(x), torch.from_numpy(c)
    k = len(c)
    p = _Pass(xt, k, 4096, "mixed", "index_add", bf16_copy=copy)
    neg_half = -0.5 * (ct * ct).sum(1)
    m = ct.mean(0)
    cm = ct - m
    cm16 = cm.to(torch.bfloat16)
    b_dx, b_x, b_1 = km._mixed_bounds(ct, m, cm16, neg_half)
    out_err = torch.zeros(len(x), k, dtype=torch.float64)  # output rounding of a bf16-output GEMM
    if copy:
        assert p.out16 and p.x16 is not None
        o16 = torch.mm(p.x16, cm16.t().contiguous())
        sc = o16.float() + neg_half
        out_err = km.U_BF16 / (1 - km.U_BF16) * o16.double().abs()
    else:
        with km._cpu_matmul_precision(True):
            sc = torch.addmm(neg_half, xt, cm.t().contiguous())
    exact = xt.double() @ (ct.double() - m.double()).t() + neg_half.double()  # shifted by x.m, as sc
    err = (sc.double()[:, :, None] - sc.double()[:, None, :]) - (exact[:, :, None] - exact[:, None, :])
    dx, xn = p.dx.double(), p.xn.double()
    bound = (
        dx[:, None, None] * b_dx.double()
        + xn[:, None, None] * b_x.double()
        + b_1.double()
        + out_err[:, :, None]
        + out_err[:, None, :]
    )  # (N, K, K): bound of pair (a, j)
    off = ~torch.eye(k, dtype=torch.bool)
    assert bool((err.abs()[:, off] <= bound[:, off]).all())
    assert bool((b_1.diagonal() == -math.inf).all())
    assert bool((dx <= km.U_BF16 * xn + math.sqrt(x.shape[1]) * km.TINY).all())
    # the chunk-wise form the pass tests, |x| (rho B_dx + B_x + B_1 / min|x|), is at least the
    # bound (to float32 rounding of rho, which the bound's inflation covers)
    rho, inv = float((p.dx / p.xn).max()), 1.0 / float(p.xn.min())
    folded = xn[:, None, None] * (rho * b_dx.double() + b_x.double() + inv * b_1.double())
    folded += out_err[:, :, None] + out_err[:, None, :]
    assert bool((folded[:, off] >= bound[:, off] * (1 - 1e-6)).all())
    if case == "adversarial":  # the bound is tight there: the error reaches most of it (the
        # output rounding of the copy route is not pushed to its worst case by these rows)
        assert float((err.abs()[:, off] / bound[:, off]).max()) > (0.75 if copy else 0.9)


@pytest.mark.parametrize("copy_budget", [None, 0], ids=["bf16-copy", "no-copy"])
def test_mixed_kmeans_equals_fp32_and_reports_rechecks(
    copy_budget: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    mixed_runs_anywhere(monkeypatch)
    if copy_budget is not None:  # inputs too large for a bf16 copy: oneDNN's bf16 mode instead
        monkeypatch.setattr(km, "MIXED_COPY_MAX_BYTES", copy_budget)
    x, c = near_ties(n=2000, d=64, k=16, seed=3)
    x[[5, 1500]] = 0.0  # all-zero rows: never certified, recomputed in fp32
    for opts in ({}, {"spherical": True}, {"sample": 900}, {"update": "onehot"}):
        ref = kmeans(x, 16, iterations=8, init_centroids=c, precision="fp32", device="cpu", **opts)
        mix = kmeans(x, 16, iterations=8, init_centroids=c, precision="mixed", device="cpu", **opts)
        assert mix.precision == "mixed" and ref.precision == "fp32"
        np.testing.assert_array_equal(mix.assign, ref.assign)
        np.testing.assert_array_equal(mix.centroids, ref.centroids)
        np.testing.assert_allclose(mix.inertia_per_iter, ref.inertia_per_iter, rtol=1e-6)
        assert mix.inertia == pytest.approx(ref.inertia, rel=1e-6)
        rc = mix.details["rechecked_per_iter"]
        assert len(rc) == 8 and all(0 <= r <= mix.n_train for r in rc) and sum(rc) > 0
        assert 0 <= mix.details["rechecked_final"] <= len(x)
    # auto: mixed from MIXED_MIN_DIM dimensions up, fp32 below (where fp32 is the faster)
    auto = kmeans(x, 16, iterations=2, init_centroids=c, device="cpu")
    assert auto.precision == "fp32" and auto.details["precision_requested"] == "auto"
    assert "d = 64" in auto.details["precision_note"]
    wide = np.random.default_rng(4).normal(size=(300, km.MIXED_MIN_DIM)).astype(np.float32)
    assert kmeans(wide, 4, iterations=2, device="cpu").precision == "mixed"


def test_mixed_empty_cluster_rule_matches_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """The farthest-point re-seeding needs fp32 distances: a mixed run recomputes them."""
    mixed_runs_anywhere(monkeypatch)
    x = overlapping(n=600)
    init = np.concatenate([x[:6], np.full((2, x.shape[1]), 1e3, np.float32)])  # 2 clusters start empty
    ref = kmeans(x, 8, iterations=3, init_centroids=init, precision="fp32", device="cpu")
    mix = kmeans(x, 8, iterations=3, init_centroids=init, precision="mixed", device="cpu")
    assert mix.precision == "mixed" and ref.n_reseeded == mix.n_reseeded == 2
    np.testing.assert_array_equal(mix.assign, ref.assign)
    np.testing.assert_array_equal(mix.centroids, ref.centroids)


NOT_ROUNDED = "the float32 matmul is not rounded to bfloat16 (oneDNN's bf16 mode has no effect here)"


@pytest.mark.parametrize(
    ("isa", "probe", "expect"),
    [
        ("", "", "no fast bf16"),  # AVX2 only: never probed
        ("AVX512-BF16", NOT_ROUNDED, "not rounded"),  # e.g. AVX512-BF16 without AMX, or a capped oneDNN
        ("AMX-BF16", "the bf16 GEMM does not round to nearest even", "nearest even"),
        ("AMX-BF16", "", None),  # the probe passes: mixed
        ("AVX512-BF16", "", None),
    ],
)
def test_precision_decision_on_either_side_of_the_probe(
    isa: str, probe: str, expect: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both sides of every hardware branch, on any CPU: the CPU's flags and the probe's answer
    injected; whichever path runs, the assignment equals fp32's and the note says which ran and why."""
    monkeypatch.setattr(km, "_cpu_bf16_isa", lambda: isa)
    monkeypatch.setattr(km, "_bf16_probe", lambda device, copy: probe)
    x = np.random.default_rng(5).normal(size=(400, km.MIXED_MIN_DIM)).astype(np.float32)
    ref = kmeans(x, 8, iterations=3, precision="fp32", device="cpu")
    assert ref.precision == "fp32" and ref.details["precision_note"] == "fp32, as requested"
    for precision in ("auto", "mixed"):
        res = kmeans(x, 8, iterations=3, precision=precision, device="cpu")
        note = res.details["precision_note"]
        assert note.startswith(f"{precision}: ")
        if expect is None:
            assert res.precision == "mixed" and isa in note and "probe passed" in note
            assert len(res.details["rechecked_per_iter"]) == 3
        else:
            assert res.precision == "fp32" and "not mixed" in note and expect in note
            assert "rechecked_per_iter" not in res.details
        np.testing.assert_array_equal(res.assign, ref.assign)
        np.testing.assert_array_equal(res.centroids, ref.centroids)
    # below MIXED_MIN_DIM, auto keeps fp32 whatever the hardware says
    small = kmeans(x[:, :64], 8, iterations=1, device="cpu")
    assert small.precision == "fp32" and "d = 64" in small.details["precision_note"]
    assert kmeans(x, 8, iterations=1, precision="bf16", device="cpu").precision == "bf16"


def test_precision_requests_are_checked() -> None:
    # CUDA: auto stays fp32 (the mixed path there is not measured yet)
    used, why = km._resolve_precision("auto", torch.device("cuda"), 2048)
    assert used == "fp32" and "CUDA" in why
    with pytest.raises(InputError, match="precision"):
        kmeans(np.zeros((10, 4), np.float32), 2, precision="fp16")


def test_bf16_probe_checks_rounding_and_accumulation() -> None:
    km._bf16_probe.cache_clear()
    assert km._bf16_probe("cpu", True) == ""  # the copy route, emulated on the CPU: the exact model

    def rne(a: torch.Tensor) -> torch.Tensor:
        return a.to(torch.bfloat16).float()

    def trunc(a: torch.Tensor) -> torch.Tensor:
        return (a.contiguous().view(torch.int32) & ~0xFFFF).view(torch.float32)

    assert km._check_bf16_gemm(lambda a, b: rne(a) @ rne(b)) == ""
    assert "not rounded" in km._check_bf16_gemm(lambda a, b: a @ b)  # plain float32: no speed-up
    assert "nearest even" in km._check_bf16_gemm(lambda a, b: trunc(a) @ trunc(b))
    assert "nearest even" in km._check_bf16_gemm(lambda a, b: rne(a) @ trunc(b))  # either operand

    def bf16_out(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a.bfloat16() @ b.bfloat16()).float()  # torch's CPU bf16 GEMM: fp32 sums, bf16 out

    assert "float32" in km._check_bf16_gemm(bf16_out)  # refused where a float32 output is assumed
    assert km._check_bf16_gemm(bf16_out, out16=True) == ""  # accepted where its rounding is counted
    assert km._check_bf16_gemm(lambda a, b: rne(a) @ rne(b), out16=True) != ""  # not rounded at the end

    def bf16_sums(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # accumulates in bf16
        p = a.bfloat16()[:, :, None] * b.bfloat16()[None, :, :]  # (M, L, N) exact products
        acc = torch.zeros(a.shape[0], b.shape[1], dtype=torch.bfloat16)
        for i in range(0, a.shape[1], 256):
            acc += p[:, i : i + 256].float().sum(1).bfloat16()
        return acc.float()

    assert "float32" in km._check_bf16_gemm(bf16_sums, out16=True)


def test_this_cpus_decision_follows_its_probe() -> None:
    """On whatever CPU runs the suite: the real probe gives one of its known answers, and the
    precision auto resolves to follows from it and from the CPU's flags (no assumption about which
    CPU this is: AVX2 only, AVX-512 with or without BF16, AMX, or oneDNN capped by ONEDNN_MAX_CPU_ISA)."""
    km._bf16_probe.cache_clear()
    answers = {km._bf16_probe("cpu", copy) for copy in (True, False)}
    known = ("", "not rounded to bfloat16", "round to nearest even", "exceeds float32 accumulation")
    assert all(any(k in a for k in known if k) or a == "" for a in answers), answers
    used, why = km._resolve_precision("auto", torch.device("cpu"), km.MIXED_MIN_DIM)
    unavailable = km._mixed_unavailable(torch.device("cpu"))
    if km._cpu_bf16_isa() and answers == {""}:
        assert used == "mixed" and unavailable == "" and km._cpu_bf16_isa() in why
    else:
        assert used == "fp32" and unavailable and unavailable in why


def test_deterministic_for_a_seed() -> None:
    x = overlapping()
    a = kmeans(x, 8, seed=5, backend="torch", device="cpu")
    b = kmeans(x, 8, seed=5, backend="torch", device="cpu")
    np.testing.assert_array_equal(a.assign, b.assign)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert a.inertia_per_iter == b.inertia_per_iter


def test_random_init_picks_distinct_data_points() -> None:
    x = overlapping()
    res = kmeans(x, 8, iterations=0, init="random", seed=3, backend="torch", device="cpu")
    rows = {tuple(r) for r in x}
    assert all(tuple(c) in rows for c in res.centroids)
    assert len({tuple(c) for c in res.centroids}) == 8


def test_kmeanspp_seeds_every_planted_cluster() -> None:
    # separation^2 ~ 2 * 16 * 10^2 = 3200 against ~32 inside a blob: D^2 sampling (greedy, with
    # 2 + ln K candidates) misses a blob with probability ~1e-4 per draw here
    x, truth = planted(k=10, d=16, spread=10.0)
    for seed in range(4):
        res = kmeans(x, 10, iterations=0, seed=seed, backend="torch", device="cpu")
        assert res.n_iter == 0 and res.inertia_per_iter == []
        assert same_partition(res.assign, truth), f"seed {seed}"


def test_spherical_mode() -> None:
    x, truth = planted(d=16)
    res = kmeans(x, 6, spherical=True, backend="torch", device="cpu")
    np.testing.assert_allclose(np.linalg.norm(res.centroids, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(res.assign, (x @ res.centroids.T).argmax(1))  # max cosine
    assert same_partition(res.assign, truth)
    # inertia is the squared distance to the unit centroids
    assert res.inertia == pytest.approx(direct_inertia(x, res.assign, res.centroids), rel=1e-4)


def test_empty_clusters_reseeded_with_farthest_points() -> None:
    # 4 points on a line; centroids 1 and 2 start far away, so iteration 1 empties them.
    x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [10.0, 0.0]], dtype=np.float32)
    init = np.array([[0.0, 0.0], [1000.0, 0.0], [2000.0, 0.0]], dtype=np.float32)
    res = kmeans(x, 3, iterations=1, init_centroids=init, backend="torch", device="cpu")
    # iteration 1 puts everyone in cluster 0 (centroid 0). Farthest first: 10 (d^2 = 100) goes to
    # cluster 1, then 5 (d^2 = 25) to cluster 2; cluster 0 keeps 0 and 0.1 -> mean 0.05.
    assert res.n_reseeded == 2
    np.testing.assert_allclose(res.centroids, [[0.05, 0.0], [10.0, 0.0], [5.0, 0.0]], atol=1e-6)
    np.testing.assert_array_equal(res.assign, [0, 0, 2, 1])
    assert res.inertia_per_iter == pytest.approx([0 + 0.01 + 25 + 100], rel=1e-5)
    assert res.inertia == pytest.approx(0.05**2 * 2, abs=1e-6)


def test_empty_cluster_never_takes_a_singletons_only_point() -> None:
    # cluster 1 holds only the point 100; cluster 2 is empty. The farthest point overall is 100
    # (distance 0 to its own centroid is not far) -> the rule takes 3 (farthest in cluster 0).
    x = np.array([[0.0], [1.0], [3.0], [100.0]], dtype=np.float32)
    init = np.array([[0.0], [100.0], [-1000.0]], dtype=np.float32)
    res = kmeans(x, 3, iterations=1, init_centroids=init, backend="torch", device="cpu")
    assert res.n_reseeded == 1
    np.testing.assert_allclose(res.centroids, [[0.5], [100.0], [3.0]], atol=1e-6)


def test_ties_go_to_the_lower_cluster_id() -> None:
    x = overlapping(n=400)
    init = np.repeat(x[:1], 3, axis=0)  # three identical centroids: every score ties
    res = kmeans(x, 3, iterations=0, init_centroids=init, backend="torch", device="cpu")
    assert (res.assign == 0).all()
    # after one iteration clusters 1 and 2 were empty and took the two farthest points
    one = kmeans(x, 3, iterations=1, init_centroids=init, backend="torch", device="cpu")
    assert one.n_reseeded == 2
    far = np.argsort(-((x - x[0]) ** 2).sum(1), kind="stable")[:2]
    np.testing.assert_allclose(one.centroids[1:], x[far], rtol=1e-6)


def test_sample_then_assign_all() -> None:
    x, truth = planted(n=3000)
    res = kmeans(x, 6, sample=300, backend="torch", device="cpu")
    assert res.n_train == 300 and res.assign.shape == (3000,)
    assert same_partition(res.assign, truth)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_accepts_read_only_memmap(tmp_path: Path, dtype: type) -> None:
    x, truth = planted()
    path = tmp_path / "features.npy"
    np.save(path, x.astype(dtype))
    mm = np.load(path, mmap_mode="r", allow_pickle=False)
    res = kmeans(mm, 6, backend="torch", device="cpu")
    assert same_partition(res.assign, truth)


def test_torch_tensor_input_matches_numpy() -> None:
    x = overlapping()
    a = kmeans(x, 8, backend="torch", device="cpu")
    b = kmeans(torch.from_numpy(x), 8, backend="torch", device="cpu")
    np.testing.assert_array_equal(a.assign, b.assign)


def test_rejects_bad_requests() -> None:
    x, _ = planted(n=50)
    with pytest.raises(InputError, match="K=60"):
        kmeans(x, 60)
    with pytest.raises(InputError, match="backend"):
        kmeans(x, 4, backend="sklearn")
    with pytest.raises(InputError, match="init_centroids"):
        kmeans(x, 4, init_centroids=np.zeros((3, x.shape[1])))
    with pytest.raises(InputError, match="NaN"):
        bad = x.copy()
        bad[7, 2] = np.nan
        kmeans(bad, 4, backend="torch", device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(WtalError, match="CUDA"):
            kmeans(x, 4, backend="torch", device="cuda")


# ------------------------------------------------------------------------- faiss backend


@needs_faiss
@pytest.mark.parametrize("spherical", [False, True])
def test_torch_and_faiss_agree_from_the_same_start(spherical: bool) -> None:
    x = overlapping()
    init = x[np.random.default_rng(0).choice(len(x), 8, replace=False)].copy()
    t = kmeans(x, 8, init_centroids=init, spherical=spherical, backend="torch", device="cpu")
    f = kmeans(x, 8, init_centroids=init, spherical=spherical, backend="faiss", device="cpu")
    assert f.backend_used == "faiss" and t.n_reseeded == 0
    # identical up to near-ties that float rounding may break differently
    assert (t.assign == f.assign).mean() > 0.999
    np.testing.assert_allclose(t.centroids, f.centroids, atol=2e-3)
    np.testing.assert_allclose(t.inertia_per_iter, f.inertia_per_iter, rtol=1e-4)
    assert t.inertia == pytest.approx(f.inertia, rel=1e-4)


@needs_faiss
def test_faiss_planted_clusters_and_sample() -> None:
    x, truth = planted(n=3000)
    # one start point per blob: this checks faiss's iterations and our sampling / full assignment,
    # not its (plain, non-greedy) k-means++, which misses a blob now and then
    init = x[[int(np.flatnonzero(truth == c)[0]) for c in range(6)]]
    full = kmeans(x, 6, backend="faiss", device="cpu", init_centroids=init)
    assert same_partition(full.assign, truth) and full.n_train == 3000
    assert full.inertia == pytest.approx(direct_inertia(x, full.assign, full.centroids), rel=1e-4)
    part = kmeans(x, 6, backend="faiss", device="cpu", sample=600, init_centroids=init, seed=2)
    assert part.n_train == 600 and part.assign.shape == (3000,)
    assert same_partition(part.assign, truth)


@needs_faiss
def test_faiss_reports_where_it_ran() -> None:
    import faiss

    x, _ = planted(n=200)
    res = kmeans(x, 6, backend="faiss", iterations=2)
    assert res.device_used == ("cuda" if faiss.get_num_gpus() > 0 else "cpu")
    if faiss.get_num_gpus() == 0:
        with pytest.raises(WtalError, match="no GPU"):
            kmeans(x, 6, backend="faiss", device="cuda")
