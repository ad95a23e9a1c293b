"""Realised statistics, generation speed and probe figures of the synthetic presets.

For each preset (``tiny``, ``small``; ``thumos`` with ``--thumos``, it is 2048-d and ~1 GB) and
each seed: generation time and its ratio to a floor measured in the same run (drawing the same
number of Gaussian samples the generator must draw: the rest is the signal, the AR(1) recursion
and the expansion to D dimensions), the layout statistics next to THUMOS14's
(``statistics of the packaged THUMOS14 ground truth, wtalcli/data/datasets/basnet_thumos14/gt.json.xz``), and the probes of :mod:`probes` (``bench/probes.py``): the video-level linear
probe, the fully supervised snippet probe (localization ceiling), the weak-CAS check (does a
video-label linear learner score actions above background?) and the hidden-direction projections.

``--sweep`` adds the context self-check on ``small``: the weak-CAS AUC as the scene strength inside
actions goes from below to above its background strength.

The failure-mode table gives, per preset and seed, the probe of each failure mode weakly-supervised
localization papers describe (background context, incomplete evidence, near-duplicate classes,
per-video appearance shift); ``--off PRESET`` adds that preset (seed 0) with each failure mode's
knobs switched off in turn, the reference that shows what each probe reads without its failure
mode.

The premise table (:func:`probes.part_probe`) asks whether one snippet's features tell the rest
of an action instance (outside its core) and the core from the background, with a linear probe and
a one-hidden-layer probe (``--premise-hidden`` units; 0: linear only), class-agnostic and
class-conditional: the figures behind the ``entangled`` preset, whose non-core evidence is there
but not linearly readable. ``--premise-off PRESET`` adds that preset (seed 0) with its
rest-of-instance pattern switched off.

Usage: ``.venv/bin/python bench/synthetic_probes.py [--presets tiny,small,realistic,entangled] [--seeds 3]
[--thumos] [--sweep] [--off realistic] [--premise-off entangled] [--premise-hidden 256] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import probes  # noqa: E402
import torch  # noqa: E402

from wtalcli.data.synthetic import PRESETS, generate, resolve_config  # noqa: E402

# THUMOS14 (statistics of the packaged THUMOS14 ground truth, wtalcli/data/datasets/basnet_thumos14/gt.json.xz): validation (our train) and test
THUMOS = {
    "train": {
        "videos": 200,
        "duration_mean_s": 209.0,
        "duration_median_s": 150.5,
        "instances_per_video": 15.0,
        "instance_mean_s": 4.04,
        "instance_median_s": 2.90,
        "coverage_mean": 0.304,
        "multi_class_share": 27 / 200,
    },
    "test": {
        "videos": 212,
        "duration_mean_s": 216.8,
        "duration_median_s": 161.7,
        "instances_per_video": 15.8,
        "instance_mean_s": 4.48,
        "instance_median_s": 3.20,
        "coverage_mean": 0.323,
        "multi_class_share": 34 / 212,
    },
}
STAT_KEYS = list(THUMOS["train"])

# each failure mode switched off (``--off``): the knobs that create it set to their neutral value
FAILURE_MODES_OFF: dict[str, dict[str, object]] = {
    "no background context": {"context_bg": 0.0},
    "complete evidence": {"evidence_rest": 1.0},
    "distinct pairs": {"pair_similarity": 0.0, "pair_shares_context": False},
    "no style shift": {"style_shift": 0.0},
}


def floor_seconds(n_samples: int) -> float:
    """Time to draw ``n_samples`` float32 Gaussian samples (best of 3): the generator must draw at
    least this many (the latent noise, plus the output floor noise when ``floor_std > 0``)."""
    rng = np.random.default_rng(0)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        left = n_samples
        while left > 0:
            k = min(left, 1 << 24)
            rng.standard_normal(k, dtype=np.float32)
            left -= k
        best = min(best, time.perf_counter() - t)
    return best


# the entangled preset's rest-of-instance evidence switched off (``--premise-off``)
PREMISE_OFF: dict[str, dict[str, object]] = {"no rest pattern": {"pattern_rest": 0.0}}


def run_preset(name: str, seed: int, overrides: dict | None = None, premise_hidden: int = 256) -> dict:
    cfg = resolve_config(name, overrides or {})
    t = time.perf_counter()
    data = generate(cfg, seed)
    gen_s = time.perf_counter() - t
    n = data.features.shape[0]
    floor = floor_seconds(n * cfg.latent_dim + (n * cfg.feature_dim if cfg.floor_std > 0 else 0))
    out: dict = {
        "preset": name,
        "seed": seed,
        "overrides": overrides or {},
        "snippets": int(n),
        "dim": int(data.features.shape[1]),
        "gb": data.features.nbytes / 1e9,
        "generate_s": gen_s,
        "floor_s": floor,
        "stats": probes.dataset_stats(data.videos, data.annotations),
    }
    for key, fn in (
        ("video", probes.video_probe),
        ("snippet", probes.snippet_probe),
        ("weak_cas", probes.weak_cas_check),
        ("background", probes.background_probe),
        ("incompleteness", probes.incompleteness_probe),
        ("style", probes.style_probe),
        ("part", lambda d: probes.part_probe(d, hidden=premise_hidden)),
    ):
        t = time.perf_counter()
        out[key] = fn(data)
        out[key]["seconds"] = time.perf_counter() - t
    out["oracle"] = probes.oracle_projections(data)
    return out


def fmt(x: float, nd: int = 3) -> str:
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def print_stats(results: list[dict]) -> None:
    print("\n## Layout statistics (mean over seeds; THUMOS14: the packaged ground truth)\n")
    head = ["preset", "subset"] + STAT_KEYS
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for sub in ("train", "test"):
        print(
            "| THUMOS14 | "
            + sub
            + " | "
            + " | ".join(fmt(float(THUMOS[sub][k]), 2) for k in STAT_KEYS)
            + " |"
        )
    for name in dict.fromkeys(r["preset"] for r in results if not r["overrides"]):
        rs = [r for r in results if r["preset"] == name and not r["overrides"]]
        for sub in ("train", "test"):
            vals = [np.mean([r["stats"][sub][k] for r in rs]) for k in STAT_KEYS]
            print(f"| {name} | {sub} | " + " | ".join(fmt(float(v), 2) for v in vals) + " |")


def print_probes(results: list[dict]) -> None:
    print("\n## Generation and probes (one row per preset and seed)\n")
    head = [
        "preset",
        "seed",
        "overrides",
        "snippets x D",
        "gen s",
        "x floor",
        "video top1 (chance)",
        "video mAP",
        "snip fg AUC",
        "snip fg bAcc",
        "snip class acc",
        "core / rest",
        "weak-CAS AUC",
        "ctx bg / fg",
        "probe s",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in results:
        v, s, w, o = r["video"], r["snippet"], r["weak_cas"], r["oracle"]
        row = [
            r["preset"],
            str(r["seed"]),
            ",".join(f"{k}={x}" for k, x in r["overrides"].items()) or "-",
            f"{r['snippets']} x {r['dim']}",
            fmt(r["generate_s"], 2),
            fmt(r["generate_s"] / r["floor_s"], 1),
            f"{v['top1']:.3f} ({v['top1_chance']:.3f})",
            fmt(v["map"]),
            fmt(s["fg_auc"]),
            fmt(s["fg_bacc"]),
            fmt(s["class_acc"]),
            f"{s['class_acc_core']:.3f} / {s['class_acc_rest']:.3f}",
            f"{w['auc_mean']:.3f} ({w['share_above_half']:.2f} > .5)",
            f"{o['ctx_bg']:.2f} / {o['ctx_fg']:.2f}",
            fmt(v["seconds"] + s["seconds"] + w["seconds"], 1),
        ]
        print("| " + " | ".join(row) + " |")


def print_failure_modes(results: list[dict]) -> None:
    print("\n## Failure modes (one row per preset, seed and override)\n")
    head = [
        "preset",
        "seed",
        "overrides",
        "(a) background-only video top-1 (chance)",
        "(b) half-peak coverage / core share",
        "(b) AUC core vs rest / rest vs bg",
        "(c) to partner / to one other (lift)",
        "(c) pair / all class acc",
        "(d) same-video top-1 (chance)",
        "(d) style share",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in results:
        b, i, s, y = r["background"], r["incompleteness"], r["snippet"], r["style"]
        pair = (
            f"{s['pair_confusion']:.3f} / {s['other_confusion']:.3f} ({s['pair_confusion_lift']:.1f}x)"
            if "pair_confusion" in s
            else "-"
        )
        row = [
            r["preset"],
            str(r["seed"]),
            ",".join(f"{k}={x}" for k, x in r["overrides"].items()) or "-",
            f"{b['top1']:.3f} ({b['top1_chance']:.3f})",
            f"{i['half_peak_coverage']:.2f} / {i['core_share']:.2f}",
            f"{i['auc_core_vs_rest']:.3f} / {i['auc_rest_vs_bg']:.3f}",
            pair,
            f"{s['pair_acc']:.3f} / {s['class_acc']:.3f}" if "pair_acc" in s else "-",
            f"{y['same_video_top1']:.3f} ({y['top1_chance']:.3f})",
            fmt(y["style_share"], 3),
        ]
        print("| " + " | ".join(row) + " |")


def print_premise(results: list[dict]) -> None:
    print("\n## Premise: part of an action vs background from one snippet (probes.part_probe)\n")
    head = [
        "preset",
        "seed",
        "overrides",
        "rest: linear agnostic / class",
        "rest: MLP agnostic / class",
        "core: linear agnostic / class",
        "core: MLP agnostic / class",
        "probe s",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in results:
        p = r["part"]

        def pair(model: str, part: str, p=p) -> str:
            a = p.get(f"{model}_{part}_agnostic_auc")
            return "-" if a is None else f"{a:.3f} / {p[f'{model}_{part}_class_auc']:.3f}"

        row = [
            r["preset"],
            str(r["seed"]),
            ",".join(f"{k}={x}" for k, x in r["overrides"].items()) or "-",
            pair("linear", "rest"),
            pair("mlp", "rest"),
            pair("linear", "core"),
            pair("mlp", "core"),
            fmt(p["seconds"], 0),
        ]
        print("| " + " | ".join(row) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per preset")
    ap.add_argument(
        "--thumos", action="store_true", help="also the 2048-d THUMOS-scale preset (about 1.1 GB)"
    )
    ap.add_argument("--sweep", action="store_true", help="context self-check sweep on small")
    ap.add_argument("--presets", default="tiny,small", help="comma-separated presets")
    ap.add_argument("--off", default="", help="a preset to rerun (seed 0) with each failure mode off")
    ap.add_argument("--premise-off", default="", help="a preset to rerun (seed 0) without its rest pattern")
    ap.add_argument(
        "--premise-hidden", type=int, default=256, help="hidden units of the nonlinear part probe (0: none)"
    )
    ap.add_argument("--json", type=Path, help="write all results here")
    args = ap.parse_args()
    names = [p for p in args.presets.split(",") if p] + (["thumos"] if args.thumos else [])
    for p in names + [x for x in (args.off, args.premise_off) if x]:
        if p not in PRESETS:
            ap.error(f"unknown preset {p!r}; use {sorted(PRESETS)}")
    print(
        f"# synthetic presets: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} (probes single-threaded), numpy {np.__version__}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    results = []
    for name in names:
        for seed in range(args.seeds):
            results.append(run_preset(name, seed, premise_hidden=args.premise_hidden))
            print(f"  done {name} seed {seed}", file=sys.stderr, flush=True)
    if args.sweep:
        bg = PRESETS["small"].context_bg
        for fg in (0.5 * bg, bg, PRESETS["small"].context_fg):
            results.append(run_preset("small", 0, {"context_fg": fg}, args.premise_hidden))
            print(f"  done sweep context_fg={fg}", file=sys.stderr, flush=True)
    if args.off:
        for label, overrides in FAILURE_MODES_OFF.items():
            results.append(run_preset(args.off, 0, overrides, args.premise_hidden))
            print(f"  done {args.off} with {label}", file=sys.stderr, flush=True)
    if args.premise_off:
        for label, overrides in PREMISE_OFF.items():
            results.append(run_preset(args.premise_off, 0, overrides, args.premise_hidden))
            print(f"  done {args.premise_off} with {label}", file=sys.stderr, flush=True)
    print_stats(results)
    print_probes(results)
    print_failure_modes(results)
    print_premise(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
