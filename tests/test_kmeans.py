"""k-means backends: planted clusters, backend agreement, spherical mode, empty clusters, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wtalcli.errors import InputError, WtalError
from wtalcli.kmeans import _Pass, faiss_available, kmeans


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
