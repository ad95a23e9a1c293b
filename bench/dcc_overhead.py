"""Benchmark: the cost of a DCC iteration against a baseline iteration (target: at most 1.3x,
refresh rounds amortised), through the real stage functions on a synthetic preset, and the FLOP
count of both at any shape (``--flops``: the THUMOS shape's figure where no GPU is at hand).

Both trainings run the same number of iterations on the same feature set, in one process, one
after the other; each is timed end to end by the stage (training loop, checkpoints and the final
T-CAS/embedding export for both; DCC adds the bank fill, the projection head, region pooling, the
loss and every refresh round it does: T-CAS + embeddings of all training videos, pseudo-labels,
k-means, confidence map). Reported per iteration, in wall and in process CPU seconds (the steadier
figure on a shared machine), and the ratio DCC / baseline. A torch-profiler breakdown of a few DCC
steps shows where the extra time goes.

Usage: ``.venv/bin/python bench/dcc_overhead.py [--preset small] [--iterations 120] [--threads 1]
[--repeats 1] [--head linear] [--proj-dim 256] [--max-rounds 5] [--branch base] [--pooling mean]``;
``--flops`` prints the FLOP counts only. With ``--iterations`` below the preset's, the refresh period
is the one the full run would use, so the rounds are amortised the same way. ``--repeats N`` trains N
baseline/DCC pairs, baseline first in even repeats and DCC first in odd ones, and reports each
pair's ratios and their median: on a VM whose speed drifts by 10-20% between back-to-back runs, one
pair is not enough to tell 1.25x from 1.35x.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import wtalcli.model.runner as runner  # noqa: E402
from stages.baseline import baseline  # noqa: E402
from stages.denoise import denoise  # noqa: E402
from stages.pseudolabel import pseudolabel  # noqa: E402
from stages.train_dcc import train_dcc  # noqa: E402
from wtalcli.core.console import silent  # noqa: E402
from wtalcli.core.store import Store  # noqa: E402
from wtalcli.data.feature_artifact import extract_synthetic  # noqa: E402
from wtalcli.data.schema import FeatureSet  # noqa: E402
from wtalcli.dcc.params import DenoiseParams  # noqa: E402
from wtalcli.dcc.train_params import DCCParams  # noqa: E402
from wtalcli.dcc.training import refresh_period  # noqa: E402
from wtalcli.model.config import (
    PRESETS,  # noqa: E402
    BaselineParams,  # noqa: E402
)


class StepClock:
    """Records (wall, CPU) at every logged training step of the stage functions (the stages log
    each step through :class:`wtalcli.model.runner.StepLog`), so per-iteration costs are read off the
    step-to-step deltas: the median is the steady-state iteration, the mean includes the refresh
    rounds (a refresh happens inside the step that triggers it)."""

    def __init__(self):
        self.marks: list[tuple[float, float]] = []
        original = runner.StepLog.__call__
        clock = self

        def call(self_, step, terms):
            clock.marks.append((time.perf_counter(), time.process_time()))
            return original(self_, step, terms)

        runner.StepLog.__call__ = call

    def take(self) -> dict:
        m = np.asarray(self.marks)
        self.marks = []
        d = np.diff(m, axis=0) * 1000  # (steps-1, 2) ms
        return {
            "median_ms": {"wall": float(np.median(d[:, 0])), "cpu": float(np.median(d[:, 1]))},
            "mean_ms": {"wall": float(d[:, 0].mean()), "cpu": float(d[:, 1].mean())},
            "steps": int(len(d)),
        }


class PartClock:
    """CPU seconds spent in the refresh rounds (the ``refresh`` callable of every :class:`DCC` built
    after it, wrapped) and in their parts, by wrapping the functions
    ``wtalcli.dcc.training`` calls in a round: the inference pass with the embedding artifact
    (``export_embeddings``), the round's T-CAS artifact, the pseudo-label artifact and the
    confidence artifact, and inside the latter the k-means + confidence computation
    (``denoise_confidence``)."""

    PARTS = {
        "inference + embeddings": ("wtalcli.dcc.training", "export_embeddings"),
        "T-CAS artifact": ("wtalcli.dcc.training", "_write_round_tcas"),
        "pseudo-label stage": ("wtalcli.dcc.training", "build_pseudolabels"),
        "denoise stage": ("wtalcli.dcc.training", "build_confidence"),
        "  of which k-means + confidence": ("wtalcli.dcc.confidence_artifact", "denoise_confidence"),
    }

    def __init__(self):
        import importlib

        import wtalcli.dcc.method as method

        self.cpu = dict.fromkeys(self.PARTS, 0.0)
        self.round = 0.0  # the whole rounds: the ``refresh`` callable DCC is built with
        for name, (mod, attr) in self.PARTS.items():
            module = importlib.import_module(mod)
            setattr(module, attr, self._wrap(name, getattr(module, attr)))
        init, clock = method.DCC.__init__, self

        def patched(dcc, *a, **k):
            init(dcc, *a, **k)
            if dcc.refresh is not None:
                dcc.refresh = clock._wrap(None, dcc.refresh)

        method.DCC.__init__ = patched

    def _wrap(self, name, fn):
        def call(*a, **k):
            c0 = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                if name is None:
                    self.round += time.process_time() - c0
                else:
                    self.cpu[name] += time.process_time() - c0

        return call

    def take(self) -> tuple[float, dict]:
        """(CPU seconds in whole rounds, per part) since the last take."""
        out = (self.round, dict(self.cpu))
        self.round, self.cpu = 0.0, dict.fromkeys(self.PARTS, 0.0)
        return out


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="small")
    ap.add_argument("--iterations", type=int, default=120)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile-steps", type=int, default=10)
    ap.add_argument(
        "--steps-only",
        choices=("small", "thumos"),
        help="only time isolated train steps at that shape (small: B16 T128 D256 H256; thumos: "
        "B16 T750 D2048 H2048), baseline vs DCC, alternating",
    )
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="baseline/DCC pairs, in alternating order (the median of their ratios is reported)",
    )
    ap.add_argument("--head", default="linear", choices=("linear", "mlp", "none"))
    ap.add_argument("--branch", default="base", choices=("base", "suppression", "both"))
    ap.add_argument("--pooling", default="mean", choices=("mean", "weighted"))
    ap.add_argument("--proj-dim", type=int, default=DCCParams().proj_dim, help="projection width")
    ap.add_argument(
        "--max-rounds", type=int, default=DCCParams().max_rounds, help="refresh rounds of a full-length run"
    )
    ap.add_argument(
        "--flops", action="store_true", help="print the FLOP counts at the small and THUMOS shapes"
    )
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "out" / "dcc_overhead.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.flops:
        for name, shape in SHAPES.items():
            f = dcc_flops(*shape, head=args.head, branch=args.branch, proj=args.proj_dim)
            print(
                f"# {name} shape (B, T, D, H, filter, C = {shape}), head {args.head} ({args.proj_dim}), "
                f"branch {args.branch}: "
                f"BaS-Net step {f['basnet'] / 1e9:.2f} GFLOP, DCC adds {f['dcc'] / 1e9:.3f} GFLOP "
                f"(head {f['head'] / 1e9:.3f}, pooling {f['pooling'] / 1e9:.3f}, loss {f['loss'] / 1e9:.3f}) "
                f"-> {f['ratio']:.3f}x"
            )
            r = refresh_flops(*shape, *RUNS[name], max_rounds=args.max_rounds)
            print(
                f"  refresh round ({RUNS[name][0]} training videos, {RUNS[name][1]:,} snippets, K = 64, 20 "
                f"Lloyd iterations): inference {r['inference'] / 1e9:.1f} + k-means {r['kmeans'] / 1e9:.1f} "
                f"GFLOP, one per {r['period']} iterations = {r['per_iteration'] / 1e9:.3f} GFLOP per iteration "
                f"-> refresh rounds amortised {(f['basnet'] + f['dcc'] + r['per_iteration']) / f['basnet']:.3f}x"
            )
        return
    if args.steps_only:
        r = step_costs(
            *SHAPES[args.steps_only],
            reps=args.reps,
            train_videos=200,
            head_kind=args.head,
            proj=args.proj_dim,
        )
        print(
            f"# {args.steps_only} shape, {args.threads} thread(s), median of {r['reps']} alternating steps, "
            f"load {os.getloadavg()[0]:.2f}: baseline {r['baseline_ms']:.0f} ms CPU, DCC "
            f"{r['dcc_ms']:.0f} ms CPU -> {r['dcc_ms'] / r['baseline_ms']:.3f}x"
        )
        return
    full = PRESETS[args.preset]["iterations"]
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp))
        fs = extract_synthetic(store, args.preset, seed=0, log=silent)
        n_train = len(FeatureSet(fs.path).rows_of("train"))
        # the pretrained starting point (not timed) and its targets
        base_full, tc = baseline(
            store, fs.id, BaselineParams(iterations=args.iterations, seed=1, holdout=0.0), log=silent
        )
        pl = pseudolabel(store, tc.id, log=silent)
        conf = denoise(store, pl.id, base_full.id, DenoiseParams(seed=0), log=silent)
        # the refresh period of a full-length run (once per pass, at most --max-rounds rounds)
        refresh = refresh_period(DCCParams(max_rounds=args.max_rounds), n_train, 16, full)
        clock, parts = StepClock(), PartClock()

        def run_baseline(r: int) -> dict:
            (_, w, c) = timed(
                lambda: baseline(
                    store,
                    fs.id,
                    BaselineParams(iterations=args.iterations, seed=2 + r, holdout=0.0),
                    log=silent,
                )
            )
            return {"wall": w, "cpu": c, "steps": clock.take()}

        def run_dcc(r: int) -> dict:
            dp = DCCParams(
                iterations=args.iterations,
                seed=2 + r,
                refresh_every=refresh,
                head=args.head,
                branch=args.branch,
                pooling=args.pooling,
                proj_dim=args.proj_dim,
            )
            (dm, w, c) = timed(lambda: train_dcc(store, base_full.id, pl.id, conf.id, dp, log=silent))
            steps = clock.take()
            round_cpu, round_parts = parts.take()
            rounds = store.get(dm[0].path).manifest["summary"].get("rounds") or 0
            return {
                "wall": w,
                "cpu": c,
                "steps": steps,
                "rounds": rounds,
                "round_cpu": round_cpu,
                "parts": round_parts,
            }

        # repeats alternate the order (baseline first, then DCC first), so a drift of the machine's
        # speed during the benchmark falls on both; each repeat's ratios come from its own pair
        pairs = []
        for r in range(args.repeats):
            if r % 2 == 0:
                b = run_baseline(r)
                d = run_dcc(r)
            else:
                d = run_dcc(r)
                b = run_baseline(r)
            pairs.append((b, d))
        prof = (
            profile_dcc(store, base_full.id, pl.id, conf.id, args.profile_steps) if args.profile_steps else []
        )
    n = args.iterations

    def ratios(b: dict, d: dict) -> dict:
        bs, ds = b["steps"], d["steps"]
        return {
            "baseline_ms_per_it": {k: 1000 * b[k] / n for k in ("wall", "cpu")},
            "dcc_ms_per_it": {k: 1000 * d[k] / n for k in ("wall", "cpu")},
            "ratio": {k: d[k] / b[k] for k in ("wall", "cpu")},
            "steps": {"baseline": bs, "dcc": ds},
            "ratio_steady": {k: ds["median_ms"][k] / bs["median_ms"][k] for k in ("wall", "cpu")},
            "ratio_amortised": {k: ds["mean_ms"][k] / bs["mean_ms"][k] for k in ("wall", "cpu")},
        }

    per = [ratios(b, d) for b, d in pairs]
    rounds = sum(d["rounds"] for _, d in pairs)
    round_cpu = sum(d["round_cpu"] for _, d in pairs)
    round_parts = {k: sum(d["parts"][k] for _, d in pairs) for k in PartClock.PARTS}
    med = {
        key: {k: float(np.median([x[key][k] for x in per])) for k in ("wall", "cpu")}
        for key in ("ratio", "ratio_steady", "ratio_amortised")
    }
    res = {
        "preset": args.preset,
        "iterations": n,
        "repeats": args.repeats,
        "refresh_every": refresh,
        "refresh_rounds": pairs[0][1]["rounds"],
        "dcc": {
            "head": args.head,
            "proj_dim": args.proj_dim,
            "branch": args.branch,
            "pooling": args.pooling,
            "max_rounds": args.max_rounds,
        },
        "threads": args.threads,
        "per_repeat": per,
        "median": med,
        "refresh_round_cpu_s": round_cpu / rounds if rounds else None,
        "refresh_round_parts_cpu_s": {k: v / rounds for k, v in round_parts.items()} if rounds else None,
        "load_average": [load0, os.getloadavg()[0]],
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "profile_top": prof,
    }
    print(
        f"# {args.preset} preset, {n} iterations each, {args.repeats} repeat(s), {args.threads} torch "
        f"thread(s), proj {args.proj_dim}, refresh every {refresh} ({res['refresh_rounds']} rounds), load "
        f"{load0:.2f} -> {os.getloadavg()[0]:.2f}"
    )
    for r, x in enumerate(per):
        bs, ds = x["steps"]["baseline"], x["steps"]["dcc"]
        print(
            f"repeat {r} ({'baseline first' if r % 2 == 0 else 'DCC first'}): baseline "
            f"{x['baseline_ms_per_it']['cpu']:.1f} ms/it CPU, DCC {x['dcc_ms_per_it']['cpu']:.1f}; "
            f"steady (median step) {bs['median_ms']['cpu']:.1f} / {ds['median_ms']['cpu']:.1f} ms -> "
            f"{x['ratio_steady']['cpu']:.2f}x; refresh rounds amortised (mean step) {bs['mean_ms']['cpu']:.1f} / "
            f"{ds['mean_ms']['cpu']:.1f} ms -> {x['ratio_amortised']['cpu']:.2f}x; whole stage {x['ratio']['cpu']:.2f}x"
        )
    print(
        f"median over repeats, CPU: steady {med['ratio_steady']['cpu']:.2f}x, refresh rounds amortised "
        f"{med['ratio_amortised']['cpu']:.2f}x, whole stage (bank fill, exports, checkpoints) "
        f"{med['ratio']['cpu']:.2f}x (wall: {med['ratio_steady']['wall']:.2f}x / "
        f"{med['ratio_amortised']['wall']:.2f}x / {med['ratio']['wall']:.2f}x)"
    )
    if rounds:
        print(f"a refresh round: {res['refresh_round_cpu_s']:.2f} s CPU, of which")
        for k, v in res["refresh_round_parts_cpu_s"].items():
            print(f"  {k:<34} {v:6.2f} s")
    print("profile of DCC steps (self CPU time, top ops):")
    for row in prof:
        print(f"  {row['name']:<40} {row['ms']:8.1f} ms")
    args.json.parent.mkdir(exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))


SHAPES = {"small": (16, 128, 256, 256, 128, 20), "thumos": (16, 750, 2048, 2048, 512, 20)}
# training videos, their snippets, iterations: the small preset as `wtal run` trains it (200 videos,
# 32,384 snippets, 600 iterations); THUMOS14's 200 validation videos at the 150k-snippet scale of the
# k-means benchmark, 1,500 iterations (the official BaS-Net setting)
RUNS = {"small": (200, 32_384, 600), "thumos": (200, 150_000, 1500)}


def refresh_flops(
    b: int,
    t: int,
    d: int,
    hidden: int,
    attn: int,
    c: int,
    videos: int,
    snippets: int,
    iterations: int,
    k: int = 64,
    lloyd: int = 20,
    max_rounds: int = DCCParams().max_rounds,
) -> dict:
    """FLOPs of one refresh round: a forward pass over every training video (T test samples each)
    and the k-means assignment GEMMs (2 N H K per Lloyd iteration; the update's additions ignored),
    and the round's share per iteration at the stage's refresh period."""
    from wtalcli.model.basnet import count_train_flops

    inference = videos * count_train_flops(1, t, d, c, hidden, attn)["forward"]
    kmeans = 2.0 * snippets * hidden * k * lloyd
    period = refresh_period(DCCParams(max_rounds=max_rounds), videos, b, iterations)
    return {
        "inference": inference,
        "kmeans": kmeans,
        "period": period,
        "per_iteration": (inference + kmeans) / period if period else 0.0,
    }


def dcc_flops(
    b: int,
    t: int,
    d: int,
    hidden: int,
    attn: int,
    c: int,
    head: str = "linear",
    branch: str = "base",
    proj: int = DCCParams().proj_dim,
    regions: int = 5,
    train_videos: int = 200,
    labels_per_video: float = 1.1,
) -> dict:
    """Multiply-add FLOPs (2 per MAC) of one BaS-Net step and of what DCC adds to it: the
    projection head (forward, weight and input gradients), region pooling (forward and the gradient
    to the projected snippets) and the InfoNCE logits against the batch and a full memory bank
    (forward and backward); elementwise work ignored, as in ``count_train_flops``."""
    from wtalcli.model.basnet import count_train_flops

    base = count_train_flops(b, t, d, c, hidden, attn)["total"]
    p = hidden if head == "none" else proj
    n = b * t
    head_f = {"linear": 6 * n * hidden * proj, "mlp": 6 * n * (hidden * proj + proj * proj), "none": 0}[head]
    pairs = b * labels_per_video  # labelled (video, class) pairs in a batch
    pooling = 2 * 2 * pairs * 2 * regions * t * p  # forward + gradient to x
    anchors = pairs * regions
    candidates = train_videos * labels_per_video * 2 * regions
    loss = 2 * 2 * anchors * candidates * p  # logits forward + backward
    extra = (head_f + pooling + loss) * (2 if branch == "both" else 1)
    return {
        "basnet": base,
        "head": head_f,
        "pooling": pooling,
        "loss": loss,
        "dcc": extra,
        "ratio": (base + extra) / base,
    }


def step_costs(
    b: int,
    t: int,
    d: int,
    hidden: int,
    attn: int,
    c: int,
    reps: int,
    train_videos: int,
    head_kind: str = "linear",
    proj: int = DCCParams().proj_dim,
) -> dict:
    """One BaS-Net training step (forward, loss, backward, Adam) with and without the DCC terms
    (projection head, region pooling, InfoNCE against a full memory bank, bank update) at the given
    shape, on random inputs, alternating the two so that load drift hits both; median CPU ms."""
    from wtalcli.dcc.contrast import ProjectionHead, RegionBank, dcc_loss, region_features
    from wtalcli.model.basnet import BaSNet
    from wtalcli.model.losses import basnet_loss

    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    labels = np.zeros((train_videos, c), np.float32)
    labels[np.arange(train_videos), rng.integers(0, c, train_videos)] = 1
    labels[rng.random(train_videos) < 0.2, 0] = 1  # some multi-label videos
    head = ProjectionHead(hidden, proj, head_kind)
    bank = RegionBank(labels, 5, head.out_dim)
    bank.feat = torch.nn.functional.normalize(torch.randn(len(bank), head.out_dim, generator=g), dim=-1)
    bank.valid[:] = True
    model = BaSNet(d, c, hidden=hidden, attn_hidden=attn)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=1e-4)
    x = torch.randn(b, t, d, generator=g)
    pos = rng.choice(train_videos, b, replace=False)
    y = torch.from_numpy(labels[pos])
    a = (torch.rand(b, t, c + 1, generator=g) > 0.5).float()
    s = torch.rand(b, t, c + 1, generator=g)

    def step(dcc: bool) -> float:
        c0 = time.process_time()
        opt.zero_grad(set_to_none=True)
        out = model(x)
        total, _ = basnet_loss(out, y)
        if dcc:
            regions = region_features(head(out.h_base), a, s, y, torch.from_numpy(pos), 5)
            loss, _ = dcc_loss(regions, bank, "bank", 0.1)
            total = total + loss
        total.backward()
        opt.step()
        if dcc:
            bank.update(regions)
        return 1000 * (time.process_time() - c0)

    step(False), step(True)  # warm-up
    base, dcc = [], []
    for _ in range(reps):
        base.append(step(False))
        dcc.append(step(True))
    return {"baseline_ms": float(np.median(base)), "dcc_ms": float(np.median(dcc)), "reps": reps}


def profile_dcc(store: Store, model: str, pl: str, conf: str, steps: int) -> list[dict]:
    """Self CPU time per op over ``steps`` DCC iterations (torch profiler)."""
    from torch.profiler import ProfilerActivity, profile

    dp = DCCParams(iterations=steps, seed=3, refresh_every=0)
    with profile(activities=[ProfilerActivity.CPU]) as p:
        train_dcc(store, model, pl, conf, dp, log=silent)
    rows = sorted(p.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    return [{"name": e.key, "ms": e.self_cpu_time_total / 1000} for e in rows]


if __name__ == "__main__":
    main()
