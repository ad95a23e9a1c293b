"""Effect on mAP of each deliberate deviation from the official BaS-Net inference (``docs/inference.md``).

On one trained baseline (default: the ``small`` synthetic preset, seed 0, trained by the
``baseline`` stage in ``--workdir``; an existing feature set and baseline there are reused, even
if written by another code version), the test videos' raw CAS is
computed once and localized under every setting, each deviation toggled alone, both away from
wtal's defaults and back from the official settings:

- ``alignment``: centre alignment (wtal) vs ``u = j/24`` (official ``interp1d`` grid);
- ``class score in OIC``: the real video score (wtal) vs the binarised one (official: 1);
- ``NMS +1``: exact tIoU (wtal) vs ``+ 1`` on lengths and intersections in seconds (official);
- ``class-0-only videos``: localized (wtal) vs dropped (the official ``if pred.any()`` on the kept
  class indices);
- ``T-CAS grid``: the model's ``T`` test samples mapped back to every snippet before upsampling
  (wtal's T-CAS artifact) vs upsampling the ``T`` samples and rescaling time (official);
- and, for reference, localizing the softmax probabilities instead of the raw CAS.

Training-side rows (``--train-seeds``; skipped with ``--train-seeds ''``), from trainers run here
with the same configuration: the training sampler (wtal's stratified jitter vs the official
``random_perturb``, re-implemented below from its algorithm) at each seed, and the checkpoint
choice: the last iteration (what wtal reports) vs the best test mAP seen every ``--eval-every``
iterations (the official loop's choice, an upper bound that selects on the test set).

Usage: ``.venv/bin/python bench/inference_deviations.py --workdir /tmp/wd [--preset small]
[--seed 0] [--train-seeds 0,1] [--eval-every 25]``
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.baseline import baseline  # noqa: E402
from wtalcli.core.console import silent  # noqa: E402
from wtalcli.core.store import Store  # noqa: E402
from wtalcli.data.feature_artifact import extract_synthetic  # noqa: E402
from wtalcli.data.schema import FeatureSet  # noqa: E402
from wtalcli.evaluation.detection import Predictions, evaluate_detection  # noqa: E402
from wtalcli.evaluation.inputs import scored_ground_truth  # noqa: E402
from wtalcli.evaluation.localization import LocalizeParams, localize_all  # noqa: E402
from wtalcli.evaluation.params import EvalParams  # noqa: E402
from wtalcli.model import trainer as trainer_module  # noqa: E402
from wtalcli.model.config import BaselineParams, TrainConfig  # noqa: E402
from wtalcli.model.inference import cas_probabilities, infer  # noqa: E402
from wtalcli.model.trainer import Trainer, model_from_checkpoint, read_checkpoint  # noqa: E402

TIOU = "thumos14"  # 0.1:0.7, the wtal evaluate default


def official_train_indices(lengths: np.ndarray, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """BaS-Net's ``random_perturb`` (training sampler): sample ``i`` is drawn uniformly from the
    integers ``[floor(i L/T), floor((i+1) L/T)]`` (both ends included; the last sample from
    ``[floor((T-1) L/T), L-1]``), or is ``floor(i L/T)`` when that range is one value; ``L == T``
    is the identity.  ``(B, T)`` int64."""
    lengths = np.asarray(lengths, dtype=np.int64)
    i = np.arange(num_segments, dtype=np.int64)[None, :]
    lo = (i * lengths[:, None]) // num_segments
    hi = np.concatenate([lo[:, 1:], lengths[:, None] - 1], axis=1)
    hi = np.maximum(hi, lo)
    pick = lo + np.floor(rng.random(lo.shape) * (hi - lo + 1)).astype(np.int64)
    pick = np.minimum(pick, hi)
    same = lengths == num_segments
    pick[same] = i[0]
    return pick


@contextlib.contextmanager
def training_sampler(name: str):
    """Swap the trainer's snippet sampler for the duration (``wtal`` or ``official``)."""
    original = trainer_module.batch_train_indices
    if name == "official":
        trainer_module.batch_train_indices = official_train_indices
    try:
        yield
    finally:
        trainer_module.batch_train_indices = original


@dataclass
class TestOutputs:
    cas: list[np.ndarray]  # raw CAS mapped back to each video's snippets (the T-CAS artifact)
    samples: list[np.ndarray]  # raw CAS at the T test samples
    scores: np.ndarray  # (V, C+1)
    lengths: np.ndarray  # (V,) snippets


class Evaluator:
    def __init__(self, fs_art, fs: FeatureSet):
        self.fs = fs
        self.rows = fs.rows_of("test")
        self.ids = [str(v) for v in fs.videos["video_id"].to_numpy()[self.rows]]
        self.grids = [fs.grid(int(r)) for r in self.rows]
        self.gt = scored_ground_truth(None, fs_art, EvalParams(subset="test"))

    def outputs(self, model, num_segments: int) -> TestOutputs:
        res = infer(model, self.fs, self.rows, num_segments, "cpu", batch=16, with_samples=True)
        lengths = self.fs.videos["n_snippets"].to_numpy(np.int64)[self.rows]
        cas = [res.cas[o : o + n] for o, n in zip(res.offsets, lengths, strict=True)]
        return TestOutputs(cas, list(res.samples), res.scores, lengths)

    def mean_ap(self, out: TestOutputs, params: LocalizeParams, grid: str = "snippets", probs: bool = False):
        """(average mAP, mAP per tIoU) of one inference setting."""
        res = self.result(out, params, grid, probs)[1]
        return res.average_map, res.map_per_tiou

    def result(self, out: TestOutputs, params: LocalizeParams, grid: str = "snippets", probs: bool = False):
        """(detections, evaluation) of one inference setting."""
        if grid == "snippets":
            cas, spans = out.cas, None
        else:
            cas, spans = out.samples, [int(n) for n in out.lengths]
        if probs:
            cas = [cas_probabilities(x) for x in cas]
        det = localize_all(cas, out.scores, self.grids, params, spans=spans)
        preds = Predictions.from_arrays(
            [self.ids[v] for v in det.video],
            [self.fs.classes[c] for c in det.label],
            det.score,
            det.t_start,
            det.t_end,
        )
        return det, evaluate_detection(self.gt, preds, TIOU)


# the deviations, as (name, wtal setting, official setting): LocalizeParams overrides or the grid
DEVIATIONS = (
    ("alignment", ("center", "basnet")),
    ("oic_class_score", ("real", "binary")),
    ("nms_plus_one", (False, True)),
    ("drop_class0_only", (False, True)),
    ("grid", ("snippets", "samples")),
)
LABELS = {
    "alignment": "alignment: centre (wtal) / u = j/24 (official)",
    "oic_class_score": "class score in OIC: real (wtal) / binarised = constant gamma (official)",
    "nms_plus_one": "NMS: exact tIoU (wtal) / +1 s on lengths (official)",
    "drop_class0_only": "class-0-only videos: localized (wtal) / dropped by `if pred.any()` (official)",
    "grid": "T-CAS: T samples mapped back to snippets, then upsampled (wtal) / T samples upsampled (official)",
}


def setting(which: dict[str, object]) -> tuple[LocalizeParams, str]:
    grid = str(which.get("grid", "snippets"))
    params = LocalizeParams(**{k: v for k, v in which.items() if k != "grid"})
    return params, grid


def inference_table(ev: Evaluator, out: TestOutputs) -> list[str]:
    ours = {name: pair[0] for name, pair in DEVIATIONS}
    official = {name: pair[1] for name, pair in DEVIATIONS}
    base, base_t = ev.mean_ap(out, *setting(ours))
    off, off_t = ev.mean_ap(out, *setting(official))
    lines = [
        "| setting | avg mAP 0.1:0.7 (%) | mAP@0.5 (%) | change (points) |",
        "|---|---|---|---|",
        f"| wtal defaults (all {len(DEVIATIONS)} as wtal) | {100 * base:.2f} | {100 * base_t[4]:.2f} | |",
        f"| official (all {len(DEVIATIONS)} as BaS-Net) | {100 * off:.2f} | {100 * off_t[4]:.2f} | "
        f"{100 * (off - base):+.2f} vs wtal |",
    ]
    for name, pair in DEVIATIONS:
        a, a_t = ev.mean_ap(out, *setting({**ours, name: pair[1]}))
        lines.append(
            f"| wtal, only {LABELS[name].split(':')[0]} official | {100 * a:.2f} | {100 * a_t[4]:.2f} | "
            f"{100 * (a - base):+.2f} vs wtal |"
        )
    for name, pair in DEVIATIONS:
        a, a_t = ev.mean_ap(out, *setting({**official, name: pair[0]}))
        lines.append(
            f"| official, only {LABELS[name].split(':')[0]} as wtal | {100 * a:.2f} | {100 * a_t[4]:.2f} | "
            f"{100 * (a - off):+.2f} vs official |"
        )
    p, p_t = ev.mean_ap(out, *setting(ours), probs=True)
    lines.append(
        f"| wtal defaults on softmax probabilities instead of the raw CAS | {100 * p:.2f} | {100 * p_t[4]:.2f} | "
        f"{100 * (p - base):+.2f} vs wtal |"
    )
    return lines


def class0_lines(ev: Evaluator, out: TestOutputs) -> list[str]:
    """What the official ``if pred.any()`` drops on this model: the test videos whose only kept class
    is class 0, their detections under wtal's defaults, and class 0's AP with and without them."""
    params = LocalizeParams()
    alone = [
        v
        for v in range(len(out.scores))
        if np.flatnonzero(out.scores[v][:-1] >= params.class_threshold).tolist() == [0]
    ]
    det, kept = ev.result(out, params)
    _, dropped = ev.result(out, LocalizeParams(drop_class0_only=True))
    c0 = kept.classes.index(ev.fs.classes[0])
    n_det = int(np.isin(det.video, alone).sum())
    return [
        f"class-0-only test videos: {len(alone)} of {len(out.scores)}, {n_det} detections under wtal's defaults; "
        f"class 0 ({ev.fs.classes[0]}) AP avg 0.1:0.7: {100 * kept.ap[c0].mean():.2f} localized, "
        f"{100 * dropped.ap[c0].mean():.2f} dropped; avg mAP {100 * kept.average_map:.2f} -> "
        f"{100 * dropped.average_map:.2f} ({100 * (dropped.average_map - kept.average_map):+.2f})"
    ]


def train_with_evals(ev: Evaluator, cfg: TrainConfig, sampler: str, eval_every: int):
    """Train from scratch, evaluating the test mAP (wtal and official inference) every
    ``eval_every`` iterations; returns the trainer and ``[(step, wtal mAP, official mAP)]``."""
    ours = setting({name: pair[0] for name, pair in DEVIATIONS})
    official = setting({name: pair[1] for name, pair in DEVIATIONS})
    curve = []
    with training_sampler(sampler):
        trainer = Trainer(ev.fs, cfg, ev.fs.rows_of("train"))
        steps = list(range(eval_every, cfg.iterations, eval_every)) + [cfg.iterations]
        for step in steps:
            trainer.train(until=step)
            out = ev.outputs(trainer.model, cfg.num_segments)
            curve.append((step, ev.mean_ap(out, *ours)[0], ev.mean_ap(out, *official)[0]))
    return trainer, curve


def find_features(store: Store, preset: str, seed: int):
    """An existing synthetic feature set of this preset, seed and generator configuration (the
    data do not depend on the code version that wrote them), else a new one."""
    from wtalcli.data import synthetic

    config = synthetic.config_dict(synthetic.resolve_config(preset))
    for art in reversed(store.artifacts("features")):
        p = art.params
        if (
            p.get("source") == "synthetic"
            and p.get("preset") == preset
            and p.get("dtype") == "float32"
            and p.get("config") == config
            and art.manifest.get("seed") == seed
        ):
            return art
    return extract_synthetic(store, preset, seed=seed, log=silent)


def find_model(store: Store, fs_id: str, preset: str, seed: int):
    for art in reversed(store.artifacts("model")):
        if (
            art.stage == "baseline"
            and art.lineage.get("features") == fs_id
            and art.params.get("preset") == preset
            and art.params.get("train", {}).get("seed") == seed
            and art.params.get("holdout", 0.0) == 0.0
        ):
            return art
    return None


def git_commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--workdir", required=True, help="store holding (or receiving) the feature set and baseline"
    )
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seed", type=int, default=0, help="data and baseline seed")
    ap.add_argument("--train-seeds", default="0,1", help="seeds of the training-side rows ('' skips them)")
    ap.add_argument("--eval-every", type=int, default=25, help="test evaluations for the best-on-test bound")
    args = ap.parse_args()
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))

    t0 = time.perf_counter()
    store = Store(args.workdir)
    fs_art = find_features(store, args.preset, args.seed)
    model_art = find_model(store, fs_art.id, args.preset, args.seed)
    if model_art is None:
        model_art, _ = baseline(
            store,
            fs_art.id,
            BaselineParams(preset=args.preset, seed=args.seed, device="cpu", holdout=0.0),
            log=silent,
        )
    ckpt = read_checkpoint(model_art.path / "checkpoint.pt")
    cfg = TrainConfig.from_dict(ckpt["config"])
    model = model_from_checkpoint(ckpt)
    fs = FeatureSet(fs_art.path)
    ev = Evaluator(fs_art, fs)
    out = ev.outputs(model, cfg.num_segments)

    print(
        f"date {datetime.date.today().isoformat()}; commit {git_commit()}; machine "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python "
        f"{platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}"
    )
    print(
        f"feature set {fs_art.id} ({args.preset}, seed {args.seed}): {len(ev.rows)} test videos; model "
        f"{model_art.id} ({cfg.iterations} iterations, T = {cfg.num_segments}, seed {cfg.seed}); "
        f"mAP at tIoU 0.1:0.7 on the test videos"
    )
    print()
    print("Inference settings on one model (the same T-CAS):")
    print()
    for line in inference_table(ev, out):
        print(line)
    print()
    for line in class0_lines(ev, out):
        print(line)

    seeds = [int(s) for s in args.train_seeds.split(",") if s.strip()]
    if seeds:
        print()
        print(
            f"Training side (trainers run here, {cfg.iterations} iterations, test mAP every "
            f"{args.eval_every}; best-on-test selects on the test set: an upper bound, not a result):"
        )
        print()
        print(
            "| training sampler | seed | last iteration: wtal inference | last: official inference | "
            "best-on-test: wtal inference (iteration) | best-on-test: official inference (iteration) |"
        )
        print("|---|---|---|---|---|---|")
        for seed in seeds:
            for sampler in ("wtal", "official"):
                run_cfg = TrainConfig.from_dict({**cfg.to_dict(), "seed": seed, "device": "cpu"})
                trainer, curve = train_with_evals(ev, run_cfg, sampler, args.eval_every)
                last = curve[-1]
                bw = max(curve, key=lambda c: c[1])
                bo = max(curve, key=lambda c: c[2])
                note = ""
                if sampler == "wtal" and seed == cfg.seed:
                    same = all(
                        torch.equal(a, b)
                        for a, b in zip(
                            trainer.model.state_dict().values(), model.state_dict().values(), strict=True
                        )
                    )
                    note = (
                        " (weights identical to the baseline stage's model)"
                        if same
                        else " (differs from it!)"
                    )
                print(
                    f"| {sampler}{note} | {seed} | {100 * last[1]:.2f} | {100 * last[2]:.2f} | "
                    f"{100 * bw[1]:.2f} ({bw[0]}) | {100 * bo[2]:.2f} ({bo[0]}) |"
                )
                sys.stdout.flush()
    print()
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
