"""Benchmark ``wtalcli.evaluation.localization.localize_all`` at THUMOS14 test scale (BENCHMARKS.md).

Synthetic T-CAS: 212 videos x (20 classes + background) x T = 750 snippets of raw activations
(smooth random logits, as the model's last convolution gives them) with 2-8 planted action
segments of 1-3 classes per video.
Two settings:

- ``all classes kept``: every class score >= 0.25, so 212 x 20 series x 10 activation thresholds
  are localized (the worst case, and the target of <= 2 s on this 2-core machine);
- ``realistic``: only the planted classes pass the class threshold (1-3 per video).

Compared with a straightforward implementation in the same run: dense x24 upsampling, one
boolean mask and ``np.split`` per threshold, a Python loop over proposals for the outer-inner
score (on the curve zeroed below the threshold), and the usual one-at-a-time greedy NMS loop (BaS-Net's structure without its quirks) on
``--reference-videos`` videos, extrapolated to all videos (labelled as such).  The two must give
the same detections.

Usage: ``.venv/bin/python bench/localize.py [--videos 212] [--reference-videos 12] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wtalcli.data.timegrid import TimeGrid  # noqa: E402
from wtalcli.evaluation.localization import LocalizeParams, localize_all, minmax_norm, upsample_dense  # noqa: E402


def synthetic_cas(n_videos: int, n_classes: int, T: int, seed: int):
    """Raw CAS (T, C+1) per video and scores for the two settings."""
    rng = np.random.default_rng(seed)
    kernel = np.exp(-0.5 * (np.arange(-12, 13) / 4.0) ** 2)
    kernel /= kernel.sum()
    cas, planted = [], []
    for _ in range(n_videos):
        noise = rng.normal(0, 2.0, (T + 24, n_classes + 1))
        logits = np.stack(
            [np.convolve(noise[:, c], kernel, mode="valid") for c in range(n_classes + 1)], axis=1
        )
        logits[:, -1] += 1.0  # background
        classes = rng.choice(n_classes, rng.integers(1, 4), replace=False)
        for c in classes:
            for _ in range(rng.integers(2, 9)):
                s = rng.integers(0, T - 5)
                e = min(T, s + rng.integers(5, 60))
                logits[s:e, c] += 4.0
                logits[s:e, -1] -= 2.0
        cas.append(logits.astype(np.float32))
        planted.append(classes)
    all_kept = [np.concatenate([rng.uniform(0.3, 1.0, n_classes), [0.1]]) for _ in range(n_videos)]
    realistic = []
    for classes in planted:
        sc = rng.uniform(0.0, 0.2, n_classes + 1)
        sc[classes] = rng.uniform(0.3, 1.0, len(classes))
        realistic.append(sc)
    return cas, all_kept, realistic


def reference_localize(cas, scores, grid: TimeGrid, p: LocalizeParams) -> list[tuple]:
    """The straightforward way: dense upsampling, loops; returns sorted (video, class, s, e, score)."""
    out = []
    p = p.resolved()
    s_up = p.upsample
    for vi, (x, sc) in enumerate(zip(cas, scores, strict=True)):
        keep = np.flatnonzero(sc[:-1] >= p.class_threshold)
        if len(keep) == 0:
            continue
        up = upsample_dense(minmax_norm(x[:, keep]), s_up, p.alignment)  # (T*24, k)
        n = up.shape[0]
        for col, c in enumerate(keep):
            props = []
            for j, th in enumerate(p.act_thresholds):
                z = np.where(up[:, col] >= th, up[:, col], 0.0)  # zeroed below the threshold
                idx = np.flatnonzero(z > 0)
                if len(idx) == 0:
                    continue
                for run in np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1):
                    a, b = int(run[0]), int(run[-1]) + 1
                    length = b - a
                    o_s = max(0, int(np.floor(a - p.oic_lambda * length)))
                    o_e = min(n - 1, int(np.floor(b - 1 + p.oic_lambda * length)))
                    outer = list(range(o_s, a)) + list(range(b, o_e + 1))
                    outer_mean = z[outer].mean() if outer else 0.0
                    score = z[a:b].mean() - outer_mean + p.oic_gamma * sc[c]
                    props.append((score, j, a, b))
            props.sort(key=lambda q: (-q[0], q[1], q[2]))
            kept: list[tuple] = []
            remaining = props
            while remaining:
                best = remaining[0]
                kept.append(best)
                rest = []
                for q in remaining[1:]:
                    inter = max(0, min(best[3], q[3]) - max(best[2], q[2]))
                    union = (best[3] - best[2]) + (q[3] - q[2]) - inter
                    if inter / union < p.nms_tiou:
                        rest.append(q)
                remaining = rest
            for score, _, a, b in kept:
                out.append(
                    (
                        vi,
                        int(c),
                        float(grid.index_to_seconds(a / s_up)),
                        float(grid.index_to_seconds(b / s_up)),
                        score,
                    )
                )
    return sorted(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=212)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--T", type=int, default=750)
    ap.add_argument("--reference-videos", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    cas, all_kept, realistic = synthetic_cas(args.videos, args.classes, args.T, args.seed)
    grid = TimeGrid(25.0, 16, 16)
    params = LocalizeParams()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python "
        f"{platform.python_version()}, numpy {np.__version__}; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{args.videos} videos x {args.classes} classes (+bg) x T={args.T}, upsample x{params.upsample}, "
        f"{len(params.act_thresholds)} activation thresholds, NMS {params.nms_tiou}"
    )
    print()
    print("| setting | series | detections | fast best (s) | fast CPU (s) | reference (s) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, scores in (("all classes kept", all_kept), ("realistic", realistic)):
        wall, cpu = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            det = localize_all(cas, scores, grid, params)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        n_series = sum(int((sc[:-1] >= params.class_threshold).sum()) for sc in scores)
        n_ref = min(args.reference_videos, args.videos)
        t0 = time.perf_counter()
        ref = reference_localize(cas[:n_ref], scores[:n_ref], grid, params)
        t_ref = (time.perf_counter() - t0) * args.videos / n_ref
        mine = sorted(
            (int(v), int(c), float(s), float(e), float(sc))
            for v, c, s, e, sc in zip(det.video, det.label, det.t_start, det.t_end, det.score, strict=True)
            if v < n_ref
        )
        if len(mine) != len(ref) or any(
            a[:4] != b[:4] or abs(a[4] - b[4]) > 1e-9 for a, b in zip(mine, ref, strict=True)
        ):
            raise SystemExit(f"MISMATCH against the reference ({name})")
        label = "measured" if n_ref == args.videos else f"extrapolated from {n_ref} videos"
        print(
            f"| {name} | {n_series} | {len(det)} | {min(wall):.3f} | {min(cpu):.3f} | {t_ref:.1f} ({label}) | "
            f"{t_ref / min(wall):.0f}x |"
        )
    print()
    print("target (task): all classes kept, 212 x 20 x 10 thresholds at T = 750, <= 2 s on 2 cores")


if __name__ == "__main__":
    main()
