"""Benchmark one BaS-Net training iteration (BENCHMARKS.md): seconds per iteration, peak
memory, and the ratio to the FLOP floor, with data loading included.

Every case trains through :class:`wtalcli.model.trainer.Trainer` on a feature set written to a temporary
directory (random features, THUMOS-like video lengths), so each timed iteration includes sampling,
the gather from the memory-mapped ``features.npy`` (in the page cache after writing), the
host-to-device copy, forward, backward and the Adam step. Each case runs in its own subprocess so
that its peak memory (CPU: peak RSS minus the RSS before the trainer was built; GPU:
``torch.cuda.max_memory_allocated``) is its own.

Floor = FLOPs of forward + backward (:func:`wtalcli.model.basnet.count_train_flops`, exact GEMM count,
checked against torch's FLOP counter in the tests) / GEMM rate measured in the same subprocess on the
model's dominant GEMM shape (``(B*T) x (3*hidden) @ (3*hidden) x hidden``), best of several tries.
The data-loading column times the loader alone (inline gather of one batch). On a CPU shared with
other work, wall times swing by 2x or more; the "CPU time" ratio (this process's CPU seconds per
iteration against the GEMM's FLOP per CPU second) is the steadier figure there.

Cases:
- CPU (always): the small configuration (B 16, T 320, D 256, hidden 256, attn 128, C 20) in fp32
  with inline loading and with 1 loader thread, in bf16 autocast, and with torch.compile; then the
  THUMOS shape (B 16, T 750, D 2048, hidden 2048, C 20) for a couple of iterations.
- GPU (when CUDA works): the THUMOS shape in fp32 (TF32 off), TF32, bf16 autocast, bf16 + compile.

Usage: ``.venv/bin/python bench/train.py [--quick] [--skip-thumos-cpu] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from wtalcli.data.schema import FeatureSet, write_feature_set  # noqa: E402
from wtalcli.model.basnet import count_train_flops  # noqa: E402
from wtalcli.model.config import TrainConfig  # noqa: E402
from wtalcli.model.trainer import BatchLoader, Trainer, numerics  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    device: str
    dim: int
    hidden: int
    attn_hidden: int
    num_segments: int
    batch: int = 16
    classes: int = 20
    amp: str = "none"
    tf32: bool = False
    compile: bool = False
    workers: int = 0
    threads: int = 0  # torch intra-op threads (0: torch's default)
    warmup: int = 2
    iters: int = 10


def cases(quick: bool, thumos_cpu: bool, cuda: bool) -> list[Case]:
    k = 2 if quick else 1
    small = dict(device="cpu", dim=256, hidden=256, attn_hidden=128, num_segments=320)
    out = [
        Case("cpu small fp32", **small, warmup=2, iters=10 // k),
        Case("cpu small fp32, 1 loader thread", **small, workers=1, warmup=2, iters=10 // k),
        Case("cpu small fp32, 1 torch thread", **small, threads=1, warmup=2, iters=10 // k),
        Case("cpu small bf16 autocast", **small, amp="bf16", warmup=2, iters=6 // k),
        Case("cpu small fp32 + compile", **small, compile=True, warmup=3, iters=10 // k),
    ]
    if thumos_cpu:
        out.append(Case("cpu THUMOS fp32", "cpu", 2048, 2048, 512, 750, warmup=1, iters=2 if quick else 3))
    if cuda:
        g = dict(device="cuda", dim=2048, hidden=2048, attn_hidden=512, num_segments=750, workers=2)
        out += [
            Case("gpu THUMOS fp32 (TF32 off)", **g, warmup=3, iters=20 // k),
            Case("gpu THUMOS TF32", **g, tf32=True, warmup=3, iters=30 // k),
            Case("gpu THUMOS bf16 autocast", **g, amp="bf16", warmup=3, iters=50 // k),
            Case("gpu THUMOS bf16 + compile", **g, amp="bf16", compile=True, warmup=5, iters=50 // k),
            Case(
                "gpu THUMOS bf16, inline loading", **{**g, "workers": 0}, amp="bf16", warmup=3, iters=50 // k
            ),
        ]
    return out


def make_feature_set(path: Path, dim: int, n_videos: int, seed: int = 0) -> None:
    """Random features with THUMOS-like lengths (mean ~330 snippets, long tail), 20 classes."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(280), 0.6, n_videos), 40, 2000).astype(int)
    classes = [f"class{i:02d}" for i in range(20)]
    videos = pd.DataFrame(
        {
            "video_id": [f"vid{i:04d}" for i in range(n_videos)],
            "subset": "train",
            "n_snippets": lengths,
            "duration_s": lengths * 0.64,
            "fps": 25.0,
            "stride": 16,
            "clip_len": 16,
            "labels": [
                [classes[i % 20]] + ([classes[(i * 7 + 3) % 20]] if i % 3 == 0 else [])
                for i in range(n_videos)
            ],
        }
    )
    feats = (rng.standard_normal((int(n), dim), dtype=np.float32) for n in lengths)
    write_feature_set(path, videos, feats, classes)


def gemm_rate(
    device: torch.device, m: int, k: int, n: int, dtype: torch.dtype, tf32: bool, tries: int
) -> tuple[float, float]:
    """Best measured rate of an (m x k) @ (k x n) product: (FLOP per wall second, FLOP per CPU second
    of this process; the second is less sensitive to other processes competing for the cores)."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    reps = 3 if device.type == "cuda" else 1
    best_wall = best_cpu = float("inf")
    with numerics(device, tf32=tf32, deterministic=False):
        for _ in range(tries):
            sync(device)
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(reps):
                a @ b
            sync(device)
            best_wall = min(best_wall, (time.perf_counter() - t0) / reps)
            best_cpu = min(best_cpu, (time.process_time() - c0) / reps)
    flops = 2.0 * m * k * n
    return flops / best_wall, flops / max(best_cpu, 1e-9)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_case(case: Case, fs_path: Path) -> dict:
    """Train warmup + iters iterations and measure (runs inside the subprocess)."""
    if case.threads:
        torch.set_num_threads(case.threads)
    fs = FeatureSet(fs_path)
    cfg = TrainConfig(
        iterations=case.warmup + case.iters,
        batch_size=case.batch,
        num_segments=case.num_segments,
        hidden=case.hidden,
        attn_hidden=case.attn_hidden,
        device=case.device,
        num_workers=case.workers,
        amp=case.amp,
        tf32=case.tf32,
        compile=case.compile,
        deterministic=False,
        seed=0,
    )
    device = torch.device(case.device)
    rss0 = rss_bytes()
    trainer = Trainer(fs, cfg)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    trainer.train(until=case.warmup)  # returns after the last step's numbers are read: synchronised
    t1, c1 = time.perf_counter(), time.process_time()
    trainer.train()
    t2, c2 = time.perf_counter(), time.process_time()
    per_iter, cpu_per_iter = (t2 - t1) / case.iters, (c2 - c1) / case.iters
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0

    # the loader alone: inline gather + (on GPU) copy of a batch
    loader = BatchLoader(fs.features, trainer.offsets, trainer.labels, trainer.rows, trainer.plan, device, 0)
    ts = []
    for s in range(case.warmup + case.iters, case.warmup + case.iters + 5):
        a = time.perf_counter()
        loader.get(s)
        sync(device)
        ts.append(time.perf_counter() - a)
    loader.close()

    flops = count_train_flops(
        case.batch, case.num_segments, case.dim, case.classes, case.hidden, case.attn_hidden
    )
    gemm_dtype = torch.bfloat16 if case.amp == "bf16" else torch.float32
    rate, cpu_rate = gemm_rate(
        device, case.batch * case.num_segments, 3 * case.hidden, case.hidden, gemm_dtype, case.tf32,
        tries=8 if device.type == "cuda" else 4,
    )  # fmt: skip
    return {
        "case": case.name,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu x{torch.get_num_threads()}",
        "s_per_iter": per_iter,
        "warmup_s": t1 - t0,
        "load_ms": 1e3 * float(np.median(ts)),
        "peak_gib": peak / 2**30,
        "tflop_per_iter": flops["total"] / 1e12,
        "gemm_tflops": rate / 1e12,
        "floor_s": flops["total"] / rate,
        "x_floor": per_iter / (flops["total"] / rate),
        # CPU only: the same ratio in CPU seconds (this process's threads), robust to contention
        "cpu_s_per_iter": cpu_per_iter,
        "x_floor_cpu_time": cpu_per_iter / (flops["total"] / cpu_rate) if device.type == "cpu" else None,
    }


def child_main(args: argparse.Namespace) -> None:
    spec = json.loads(args.case)
    result = run_case(Case(**spec), Path(args.fs))
    print("RESULT " + json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="half the timed iterations")
    p.add_argument("--skip-thumos-cpu", action="store_true", help="skip the THUMOS shape on CPU (~1-2 min)")
    p.add_argument("--only", default=None, help="run only cases whose name contains this text")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--fs", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        child_main(args)
        return

    cuda = torch.cuda.is_available()
    todo = cases(args.quick, not args.skip_thumos_cpu, cuda)
    if args.only:
        todo = [c for c in todo if args.only in c.name]
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  python {platform.python_version()}  "
        f"torch {torch.__version__}  {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}  "
        f"cuda {'yes: ' + torch.cuda.get_device_name(0) if cuda else 'no'}  load avg {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="wtal-bench-train-") as tmp:
        sets: dict[int, Path] = {}
        for case in todo:
            if case.dim not in sets:
                sets[case.dim] = Path(tmp) / f"fs{case.dim}"
                make_feature_set(sets[case.dim], case.dim, n_videos=64)
            spec = json.dumps(case.__dict__)
            cmd = [sys.executable, __file__, "--case", spec, "--fs", str(sets[case.dim])]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                print(f"{case.name}: failed ({err[:200]})", flush=True)
                results.append({"case": case.name, "error": err})
                continue
            r = json.loads(lines[-1][len("RESULT ") :])
            results.append(r)
            print(
                f"{r['case']:<34} {r['s_per_iter'] * 1e3:10.1f} ms/it  load {r['load_ms']:7.1f} ms  "
                f"peak {r['peak_gib']:6.2f} GiB  {r['tflop_per_iter']:.3f} TFLOP  "
                f"GEMM {r['gemm_tflops'] * 1e3:8.1f} GFLOP/s  floor {r['floor_s'] * 1e3:9.1f} ms  "
                f"x{r['x_floor']:.2f}"
                + (f"  (CPU time x{r['x_floor_cpu_time']:.2f})" if r["x_floor_cpu_time"] else ""),
                flush=True,
            )
    print(f"# load avg at the end {os.getloadavg()[0]:.1f}")
    print()
    print(
        "| case | device | ms / iteration | data loading alone, ms / batch | peak GiB | TFLOP / it "
        "| GEMM GFLOP/s | x floor (wall) | x floor (CPU time) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['case']} | - | failed: {r['error'][:80]} | | | | | | |")
            continue
        print(
            f"| {r['case']} | {r['device']} | {r['s_per_iter'] * 1e3:.1f} | {r['load_ms']:.1f} | {r['peak_gib']:.2f} "
            f"| {r['tflop_per_iter']:.3f} | {r['gemm_tflops'] * 1e3:.0f} | {r['x_floor']:.2f} "
            f"| {'-' if r['x_floor_cpu_time'] is None else format(r['x_floor_cpu_time'], '.2f')} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
