"""Benchmark for `wtal denoise`: k-means (K clusters, exactly --iters Lloyd iterations) + confidence map.

Gaussian-mixture data at THUMOS scale by default (150,000 x 2048 float32, K = 64, 20 iterations),
on the CPU (and CUDA when torch sees a GPU). Every k-means starts from the same initial centroids,
so the times compare the iterations; the inertia column is the same measure for every method: the
summed squared distance of all points to the nearest *returned* centroid (computed here).

Floor (BENCHMARKS.md's definition) = max(iters * 2*N*d*K / peak GEMM rate, iters * N*d*4 bytes /
copy bandwidth): the assignment GEMM is the work that cannot be avoided (the update needs only N*d
additions). Also printed: the same arithmetic at the rate a same-shape (N x d) @ (d x K) GEMM
reaches, and the "one-hot" floor that counts the update as a second GEMM (4*N*d*K per iteration).
All rates are measured in this run.

The certified mixed-precision row (``precision="mixed"``, what ``auto`` runs on a CPU with fast
bf16 GEMMs for d >= 512) also reports the share of points re-checked in float32 per iteration and whether its
assignments and centroids equal the fp32 row's (same start). ``--normalise`` L2-normalises the
Gaussian-mixture rows (the shape of the embeddings `wtal denoise` clusters); ``--embeddings F``
clusters the rows of an ``embeddings.npy`` (L2-normalised, as `wtal denoise` does) instead.

Run (from the repository root):
    .venv/bin/python bench/denoise.py                          # full size (a few minutes)
    .venv/bin/python bench/denoise.py --n 20000 --d 256 --k 16  # quick
    .venv/bin/python bench/denoise.py --threads 1 --clock cpu --no-peers --only torch,torch_mixed,torch_bf16
Peers (scikit-learn, faiss-cpu, fast_pytorch_kmeans) run in a separate venv so that the main one
keeps a single faiss build (faiss-gpu) and no scikit-learn; make it once with:
    python3 -m venv .venv-bench
    .venv-bench/bin/pip install torch==2.13.0      # first: the local CPU wheel, never a CUDA build
    .venv-bench/bin/pip install numpy scikit-learn fast-pytorch-kmeans faiss-cpu psutil
Each peer then runs as `.venv-bench/bin/python bench/denoise.py --peer NAME --data DIR` on the
same data and initial centroids (saved as .npy in a temporary folder). Without .venv-bench the
peers are skipped (with a note). Results also go to bench/out/denoise.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
PEERS = ("sklearn", "faiss_all", "faiss_default", "fast_pytorch_kmeans")
# --clock wall: elapsed seconds (the headline on a quiet machine); --clock cpu: CPU seconds of the
# process (time.process_time), robust to other jobs on a busy machine when run with --threads 1
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter


# ----------------------------------------------------------------------------- peer side
# (runs inside .venv-bench: numpy, torch and the peer library only, no wtalcli)


def run_peer(name: str, data: Path, iters: int, seed: int, threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)

    x = np.load(data / "x.npy", allow_pickle=False)
    c0 = np.load(data / "c0.npy", allow_pickle=False)
    k, d = c0.shape
    version = ""
    t0 = clock()
    if name == "sklearn":
        import sklearn
        from sklearn.cluster import KMeans

        version = sklearn.__version__
        km = KMeans(
            n_clusters=k, init=c0, n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd", random_state=seed
        )
        km.fit(x)
        cent, n_iter = km.cluster_centers_, int(km.n_iter_)
    elif name in ("faiss_all", "faiss_default"):
        import faiss

        version = faiss.__version__
        params = {"niter": iters, "seed": seed, "verbose": False}
        if name == "faiss_all":  # no subsampling: all points every iteration
            params["max_points_per_centroid"] = x.shape[0] // k + 1
        if hasattr(faiss.ClusteringParameters(), "early_stop_threshold"):
            params["early_stop_threshold"] = -1.0  # exactly `iters` iterations
        km = faiss.Kmeans(d, k, **params)
        km.train(x, init_centroids=c0)
        km.assign(x)  # the labels of all points, as the other methods give them
        cent, n_iter = km.centroids, len(km.obj)
    elif name == "fast_pytorch_kmeans":
        from importlib.metadata import version as dist_version

        from fast_pytorch_kmeans import KMeans

        version = dist_version("fast-pytorch-kmeans")
        km = KMeans(n_clusters=k, max_iter=iters, tol=-1.0, mode="euclidean")
        km.fit_predict(torch.from_numpy(x), centroids=torch.from_numpy(c0.copy()))
        cent, n_iter = km.centroids.numpy(), iters
    else:
        raise SystemExit(f"unknown peer {name!r}")
    seconds = clock() - t0
    np.save(data / f"peer_{name}.npy", np.asarray(cent, dtype=np.float32))
    print(json.dumps({"seconds": seconds, "n_iter": n_iter, "version": version}))


# ----------------------------------------------------------------------------- main side


def make_data(n: int, d: int, k: int, seed: int):
    """x (n, d) float32: k Gaussian components whose centres overlap (like real features, so the
    labels keep moving for the 20 iterations), unit noise; plus per-snippet labels for S."""
    import torch

    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * (3.0 / math.sqrt(d))
    comp = torch.randint(0, k, (n,), generator=g)
    x = torch.randn(n, d, generator=g)
    for s in range(0, n, 65536):  # in place, chunked: no second (n, d) array
        x[s : s + 65536] += centres[comp[s : s + 65536]]
    return x.numpy(), comp.numpy()


def best_of(fn, reps: int):
    best, out = math.inf, None
    for _ in range(reps):
        t0 = clock()
        out = fn()
        best = min(best, clock() - t0)
    return best, out


def ceilings(x, c0, cuda: bool = False) -> dict:
    """Measured GEMM rates (flop/s) and copy bandwidth (bytes/s, read + write)."""
    import torch

    dev = "cuda" if cuda else "cpu"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def timed(fn, reps=3):
        fn()
        sync()
        best = math.inf
        for _ in range(reps):
            t0 = clock()
            fn()
            sync()
            best = min(best, clock() - t0)
        return best

    out = {}
    m = 4096 if not cuda else 8192
    sq = torch.randn(m, m, device=dev)
    out["gemm_peak_fp32"] = 2 * m**3 / timed(lambda: torch.mm(sq, sq))
    if cuda:
        sq16 = sq.bfloat16()
        out["gemm_peak_bf16"] = 2 * m**3 / timed(lambda: torch.mm(sq16, sq16))
    xt = torch.from_numpy(x).to(dev)
    ct = torch.from_numpy(c0).to(dev).t().contiguous()
    n, d = xt.shape
    k = ct.shape[1]
    out["gemm_same_shape_fp32"] = 2 * n * d * k / timed(lambda: torch.mm(xt, ct))
    dst = torch.empty_like(xt)
    out["copy_bw"] = 2 * xt.numel() * 4 / timed(lambda: dst.copy_(xt))
    return out


def full_inertia(x, cent) -> float:
    """sum_i min_k |x_i - c_k|^2 in float64, chunked (the same measure for every method)."""
    import torch

    xt = torch.from_numpy(x)
    c = torch.from_numpy(np.asarray(cent, np.float32))
    half = 0.5 * (c * c).sum(1)
    total = 0.0
    for s in range(0, xt.shape[0], 8192):
        xb = xt[s : s + 8192]
        best = (xb @ c.t() - half).max(1).values.double()
        total += float((xb * xb).sum(1).double().sum() - 2.0 * best.sum())
    return total


def call_peer(
    name: str, data: Path, iters: int, seed: int, timeout: int, threads: int, clock_name: str
) -> dict:
    cmd = [str(PEER_PYTHON), str(Path(__file__).resolve()), "--peer", name, "--data", str(data)]
    cmd += ["--iters", str(iters), "--seed", str(seed), "--threads", str(threads), "--clock", clock_name]
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)  # scikit-learn, faiss and torch all honour it
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        return {
            "error": proc.stderr.strip().splitlines()[-1]
            if proc.stderr.strip()
            else f"exit {proc.returncode}"
        }
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    info["centroids"] = np.load(data / f"peer_{name}.npy", allow_pickle=False)
    return info


def fmt_s(v: float) -> str:
    return f"{v:8.3f}" if v < 100 else f"{v:8.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=150_000)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--reps", type=int, default=2, help="runs per own method (best is kept)")
    ap.add_argument("--peer-reps", type=int, default=1, help="runs per peer (fast_pytorch_kmeans always 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--only", default="", help="comma list of method keys to run (default: all)")
    ap.add_argument("--chunks", default="", help="also sweep the CPU chunk size, e.g. 512,1024,4096")
    ap.add_argument("--threads", type=int, default=0, help="threads for every method (default: torch's)")
    ap.add_argument("--clock", choices=tuple(CLOCKS), default="wall")
    ap.add_argument("--normalise", action="store_true", help="L2-normalise the data rows")
    ap.add_argument("--embeddings", type=Path, help="cluster this (N, d) .npy instead (L2-normalised)")
    ap.add_argument("--peer", choices=PEERS, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    if args.peer:
        run_peer(args.peer, args.data, args.iters, args.seed, args.threads or None)
        return

    sys.path.insert(0, str(ROOT))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        try:
            import faiss

            faiss.omp_set_num_threads(args.threads)
        except ImportError:
            pass
    threads = torch.get_num_threads()

    from wtalcli.dcc.confidence import confidence_map
    from wtalcli.dcc.kmeans import _kmeanspp, faiss_available, kmeans
    from wtalcli.dcc.pseudolabels import mean_threshold_labels

    n, d, k, iters = args.n, args.d, args.k, args.iters
    only = set(filter(None, args.only.split(",")))
    load0 = os.getloadavg()
    print(
        f"# denoise k-means benchmark: N={n} d={d} K={k} iters={iters}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, {threads} threads for every method, "
        f"{args.clock} clock, load average at start {load0[0]:.2f}"
    )
    t0 = time.perf_counter()
    if args.embeddings:
        x = np.load(args.embeddings, allow_pickle=False).astype(np.float32)
        n, d = x.shape
        comp = np.arange(n) % k
        args.normalise = True
        print(f"# data: {args.embeddings} ({n} x {d}), L2-normalised")
    else:
        x, comp = make_data(n, d, k, args.seed)
    if args.normalise:
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(args.seed)
    t_init, c0 = best_of(lambda: _kmeanspp(torch.from_numpy(x), k, rng, 64 * k).numpy(), 1)
    print(
        f"# data made in {time.perf_counter() - t0:.1f} s; greedy k-means++ seeding on 64*K points: {t_init:.3f} s"
    )

    ceil = ceilings(x, c0)
    gemm_flops = iters * 2.0 * n * d * k
    bytes_moved = iters * n * d * 4.0
    floor = max(gemm_flops / ceil["gemm_peak_fp32"], bytes_moved / ceil["copy_bw"])
    floor_same = gemm_flops / ceil["gemm_same_shape_fp32"]
    floor_onehot = 2 * gemm_flops / ceil["gemm_same_shape_fp32"]
    print(
        f"# CPU ceilings: fp32 GEMM peak {ceil['gemm_peak_fp32'] / 1e9:.0f} GFLOP/s (4096^3), same shape "
        f"{ceil['gemm_same_shape_fp32'] / 1e9:.0f} GFLOP/s; copy {ceil['copy_bw'] / 1e9:.1f} GB/s (read+write)"
    )
    print(
        f"# floors: {floor:.3f} s (assignment GEMM at peak; bytes/bandwidth {bytes_moved / ceil['copy_bw']:.3f} s), "
        f"{floor_same:.3f} s at the same-shape rate, {floor_onehot:.3f} s if the update is a one-hot GEMM too"
    )

    sample = min(n, 256 * k)
    fp32 = {"backend": "torch", "precision": "fp32"}
    own: dict[str, tuple[str, dict]] = {
        "torch": ("wtal torch fp32, incremental update", fp32),
        "torch_mixed": (
            "wtal torch mixed: certified bf16 + fp32 rechecks",
            {"backend": "torch", "precision": "mixed"},
        ),
        "torch_index_add": ("wtal torch fp32, full index_add update", {**fp32, "update": "index_add"}),
        "torch_onehot": ("wtal torch fp32, one-hot GEMM update", {**fp32, "update": "onehot"}),
        "torch_bf16": ("wtal torch bf16-input GEMM (oneDNN)", {"backend": "torch", "precision": "bf16"}),
        "torch_sample": (f"wtal torch fp32, {sample}-pt sample + assign all", {**fp32, "sample": sample}),
        "torch_pp": ("wtal torch fp32 incl. own k-means++ init", {**fp32, "init_centroids": None}),
    }
    if faiss_available():
        own["faiss"] = ("wtal faiss (faiss-gpu wheel), all points", {"backend": "faiss"})
        own["faiss_sample"] = (
            f"wtal faiss, {sample}-pt sample + assign all",
            {"backend": "faiss", "sample": sample},
        )
    if only:
        own = {key: v for key, v in own.items() if key in only}
    rows: list[dict] = []
    results: dict[str, dict] = {}
    for _ in range(args.reps):
        for key, (label, opts) in own.items():
            kw = {"init_centroids": c0, "device": "cpu", "iterations": iters, "seed": args.seed, **opts}
            t, res = best_of(lambda kw=kw: kmeans(x, k, **kw), 1)
            prev = results.get(key)
            if prev is None or t < prev["seconds"]:
                results[key] = {"label": label, "seconds": t, "res": res}
    for key, r in results.items():
        res = r["res"]
        rows.append(
            {
                "key": key,
                "method": r["label"],
                "device": res.device_used,
                "seconds": r["seconds"],
                "n_iter": res.n_iter,
                "inertia": full_inertia(x, res.centroids),
            }
        )

    # the certified mixed mode against fp32 from the same start
    mixed_info: dict = {}
    if "torch_mixed" in results:
        res = results["torch_mixed"]["res"]
        per_iter = res.details.get("rechecked_per_iter")
        mixed_info = {"precision_used": res.precision, "note": res.details.get("precision_note", "")}
        if per_iter is not None:
            share = [v / n for v in per_iter]
            mixed_info.update(
                rechecked_share_per_iter=share,
                rechecked_share_mean=float(np.mean(share)) if share else 0.0,
                rechecked_share_final=res.details["rechecked_final"] / n,
            )
        if "torch" in results:
            ref = results["torch"]["res"]
            mixed_info.update(
                assign_differ=int((ref.assign != res.assign).sum()),
                centroid_max_abs_diff=float(np.abs(ref.centroids - res.centroids).max()),
                inertia_rel_diff=res.inertia / ref.inertia - 1.0,
            )
        if "torch_bf16" in results and "torch" in results:
            mixed_info["bf16_assign_differ"] = int(
                (results["torch_bf16"]["res"].assign != results["torch"]["res"].assign).sum()
            )

    # chunk-size sweep (optional)
    for ch in filter(None, args.chunks.split(",")):
        t, res = best_of(
            lambda ch=ch: kmeans(x, k, init_centroids=c0, backend="torch", device="cpu", chunk_size=int(ch)),
            args.reps,
        )
        rows.append(
            {"key": f"chunk{ch}", "method": f"wtal torch fp32, chunk {ch}", "device": "cpu", "seconds": t,
             "n_iter": iters, "inertia": full_inertia(x, res.centroids)}
        )  # fmt: skip

    # peers, same data and start, each in its own .venv-bench process
    notes = []
    if not args.no_peers and PEER_PYTHON.exists():
        with tempfile.TemporaryDirectory(prefix="wtal-bench-") as tmp:
            data = Path(tmp)
            np.save(data / "x.npy", x)
            np.save(data / "c0.npy", c0)
            for name in PEERS:
                if only and name not in only:
                    continue
                reps = 1 if name == "fast_pytorch_kmeans" else args.peer_reps
                best = None
                for _ in range(reps):
                    info = call_peer(name, data, iters, args.seed, 3600, threads, args.clock)
                    if "error" in info:
                        notes.append(f"peer {name} failed: {info['error']}")
                        break
                    if best is None or info["seconds"] < best["seconds"]:
                        best = info
                if best is None:
                    continue
                label = {
                    "sklearn": f"scikit-learn {best['version']} lloyd, n_init=1, tol=0",
                    "faiss_all": f"faiss-cpu {best['version']}, all points",
                    "faiss_default": f"faiss-cpu {best['version']} default (256 pts/centroid)",
                    "fast_pytorch_kmeans": f"fast_pytorch_kmeans {best['version']}",
                }[name]
                rows.append(
                    {"key": name, "method": label, "device": "cpu", "seconds": best["seconds"],
                     "n_iter": best["n_iter"], "inertia": full_inertia(x, best["centroids"])}
                )  # fmt: skip
    elif not args.no_peers:
        notes.append(f"peers skipped: {PEER_PYTHON} not found (see this file's docstring to make it)")

    # pseudo-labels + confidence map at the same scale (random CAS of 200 videos, C = 20)
    n_vid, n_cls = 200, 20
    lengths = np.full(n_vid, n // n_vid)
    lengths[: n - lengths.sum()] += 1
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    cas = rng.random((n, n_cls + 1), dtype=np.float32)
    vlab = (rng.random((n_vid, n_cls)) < 0.15).astype(np.uint8)
    t_pl, labels = best_of(lambda: mean_threshold_labels(cas, offsets, lengths, vlab), 3)
    assign = results["torch"]["res"].assign if "torch" in results else comp
    t_s, _ = best_of(lambda: confidence_map(assign, labels, k), 3)

    # CUDA (when present): x is moved to the GPU once, so the times are the clustering alone
    cuda_rows: list[dict] = []
    if torch.cuda.is_available():
        clock = time.perf_counter  # CPU time says nothing about the GPU
        cc = ceilings(x, c0, cuda=True)
        floor32 = max(gemm_flops / cc["gemm_peak_fp32"], bytes_moved / cc["copy_bw"])
        floor16 = max(gemm_flops / cc["gemm_peak_bf16"], bytes_moved / 2 / cc["copy_bw"])
        print(
            f"# CUDA {torch.cuda.get_device_name()}: GEMM fp32 {cc['gemm_peak_fp32'] / 1e12:.1f} TFLOP/s, bf16 "
            f"{cc['gemm_peak_bf16'] / 1e12:.1f}; copy {cc['copy_bw'] / 1e12:.2f} TB/s; floors: fp32 "
            f"{floor32 * 1e3:.1f} ms, bf16 {floor16 * 1e3:.1f} ms"
        )
        xd = torch.from_numpy(x).cuda()
        cases = [
            (
                "wtal torch CUDA fp32, one-hot update (auto)",
                {"backend": "torch", "precision": "fp32"},
                floor32,
            ),
            ("wtal torch CUDA bf16, one-hot update", {"backend": "torch", "precision": "bf16"}, floor16),
            (
                "wtal torch CUDA certified mixed, one-hot update",
                {"backend": "torch", "precision": "mixed"},
                floor16,
            ),
            (
                "wtal torch CUDA fp32, incremental update",
                {"backend": "torch", "update": "incremental"},
                floor32,
            ),
            ("wtal torch CUDA fp32, index_add update", {"backend": "torch", "update": "index_add"}, floor32),
        ]
        if faiss_available():
            import faiss

            if faiss.get_num_gpus() > 0:
                cases.append(("wtal faiss GPU, all points", {"backend": "faiss"}, floor32))
        for label, opts, fl in cases:
            src = x if opts["backend"] == "faiss" else xd
            kmeans(src[: min(n, 8192)], k, iterations=2, device="cuda", **opts)  # warm-up
            t, res = best_of(lambda o=opts, s=src: kmeans(s, k, init_centroids=c0, device="cuda", **o), 3)
            cuda_rows.append(
                {"key": label, "method": label, "device": res.device_used, "seconds": t, "n_iter": res.n_iter,
                 "inertia": full_inertia(x, res.centroids), "floor": fl}
            )  # fmt: skip

    # table
    peer_times = {r["key"]: r["seconds"] for r in rows if r["key"] in PEERS}
    ref = min((r["inertia"] for r in rows), default=1.0)
    head = f"{'method':46s} {'device':6s} {'seconds':>8s} {'x floor':>7s}"
    for p in peer_times:
        head += f" {'vs ' + p[:12]:>15s}"
    head += f" {'iters':>5s} {'inertia':>13s} {'vs best':>8s}"
    print()
    print(head)
    print("-" * len(head))
    for r in rows:
        line = (
            f"{r['method'][:46]:46s} {r['device'][:6]:6s} {fmt_s(r['seconds'])} {r['seconds'] / floor:7.2f}"
        )
        for tp in peer_times.values():
            line += f" {tp / r['seconds']:14.2f}x"
        line += f" {r['n_iter']:5d} {r['inertia']:13.6e} {r['inertia'] / ref - 1:+8.2%}"
        print(line)
    for r in cuda_rows:
        print(
            f"{r['method'][:46]:46s} {r['device'][:6]:6s} {fmt_s(r['seconds'])} {r['seconds'] / r['floor']:7.2f}"
            f"{'':{16 * len(peer_times)}s} {r['n_iter']:5d} {r['inertia']:13.6e} {r['inertia'] / ref - 1:+8.2%}"
        )
    print(
        f"\npseudo-labels (mean rule, {n} x {n_cls + 1}, {n_vid} videos): {t_pl * 1e3:.1f} ms; "
        f"confidence map S ({n} x {n_cls + 1}, K={k}): {t_s * 1e3:.1f} ms"
    )
    print(
        "'x floor': seconds / CPU floor above; 'vs P': P's seconds / this row's seconds (>1: this row is faster)"
    )
    print(
        "inertia: all points to the nearest returned centroid; 'vs best': relative to the lowest in the table"
    )
    if mixed_info:
        sh = mixed_info.get("rechecked_share_per_iter")
        line = f"certified mixed mode ran as {mixed_info['precision_used']!r}"
        if mixed_info["note"]:
            line += f" ({mixed_info['note']})"
        if sh:
            line += (
                f"; re-checked in fp32: {sh[0]:.1%} of points in iteration 1, {sh[-1]:.1%} in the last, "
                f"{mixed_info['rechecked_share_mean']:.1%} on average, {mixed_info['rechecked_share_final']:.1%} "
                "in the final assignment"
            )
        if "assign_differ" in mixed_info:
            line += (
                f"; vs fp32: {mixed_info['assign_differ']} assignments differ, centroids max |diff| "
                f"{mixed_info['centroid_max_abs_diff']:.3g}, inertia {mixed_info['inertia_rel_diff']:+.2e}"
            )
        if "bf16_assign_differ" in mixed_info:
            line += f" (uncertified bf16: {mixed_info['bf16_assign_differ']} assignments differ)"
        print(line)
    for note in notes:
        print("note:", note)
    load1 = os.getloadavg()
    print(f"load average at end {load1[0]:.2f} (a busy machine inflates every row; rerun when quiet)")

    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "n": n, "d": d, "k": k, "iters": iters, "floor_s": floor, "floor_same_shape_s": floor_same,
        "floor_onehot_s": floor_onehot, "ceilings": ceil, "init_kmeanspp_s": t_init,
        "pseudolabels_s": t_pl, "confidence_s": t_s, "rows": rows + cuda_rows, "notes": notes,
        "load_start": load0[0], "load_end": load1[0], "torch": torch.__version__, "threads": threads,
        "clock": args.clock, "mixed": mixed_info, "normalise": bool(args.normalise),
        "embeddings": str(args.embeddings) if args.embeddings else None,
    }  # fmt: skip
    (out / "denoise.json").write_text(json.dumps(record, indent=1, default=float))


if __name__ == "__main__":
    main()
