"""Probe for docs/ablation.md: how far does the DCC loss fall when only the projection head learns?

Takes a finished ``wtal ablate`` workdir, the full-DCC run of one seed, and its inputs (baseline
checkpoint, pseudo-labels, confidence map); freezes the baseline and trains a fresh projection
head alone on the DCC loss (memory-bank scope, the run's tau, the baseline's lr and sampling) for
as many iterations as the run. If the head alone brings the loss close to where full DCC ends,
the contrast is mostly absorbed by the head and puts little pressure on the embedding that
localization uses. Prints the mean loss of the first 20 and the last 50 iterations, for the probe
and for the DCC run's own training log.

Usage: ``.venv/bin/python bench/dcc_head_probe.py --workdir /path/to/ablate-workdir [--seed 0]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from wtalcli.core.store import Store  # noqa: E402
from wtalcli.data.schema import FeatureSet  # noqa: E402
from wtalcli.dcc.contrast import ProjectionHead, RegionBank, dcc_loss, region_features  # noqa: E402
from wtalcli.dcc.method import Targets  # noqa: E402
from wtalcli.model.config import TrainConfig  # noqa: E402
from wtalcli.model.runner import split_rows  # noqa: E402
from wtalcli.model.trainer import BatchPlan, model_from_checkpoint, read_checkpoint  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--ablation", default=None, help="ablation artifact id (default: the newest)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    store = Store(args.workdir)
    abl = store.resolve("ablation", args.ablation, lambda m: None)
    res = pd.read_parquet(abl.path / "results.parquet")
    row = res[(res["table"] == "main") & (res["variant"] == "DCC") & (res["seed"] == args.seed)].iloc[0]
    dcc = store.get(store.root / row["model"])
    inputs = dcc.manifest["inputs"]
    base = store.get(store.root / inputs["base_model"]["id"])
    fs = FeatureSet(store.get(store.root / base.lineage["features"]).path)
    ckpt = read_checkpoint(base.path / "checkpoint.pt")
    cfg = TrainConfig.from_dict(ckpt["config"])
    model = model_from_checkpoint(ckpt).eval()
    train_rows, _ = split_rows(fs, base.params.get("holdout", 0.0), base.params.get("holdout_seed", 0))
    video_ids = [str(v) for v in fs.videos["video_id"].to_numpy()[train_rows]]
    targets = Targets(store, inputs["pseudolabels"]["id"], inputs["confidence"]["id"], video_ids)
    labels = fs.label_matrix(train_rows)
    p = dcc.params["dcc"]
    bank = RegionBank(labels, p["regions"], p["proj_dim"])
    head = ProjectionHead(cfg.hidden, p["proj_dim"])
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lengths = fs.videos["n_snippets"].to_numpy(np.int64)[train_rows]
    src = fs.videos["offset"].to_numpy(np.int64)[train_rows]
    plan = BatchPlan(lengths, cfg.batch_size, cfg.num_segments, args.seed)
    losses = []
    for step in range(cfg.iterations):
        pos = plan.positions(step)
        snip = plan.snippets(step, pos)
        x = torch.from_numpy(np.asarray(fs.features[(src[pos][:, None] + snip).reshape(-1)], np.float32))
        with torch.no_grad():
            h = model(x.view(len(pos), cfg.num_segments, -1)).h_base  # (B, T, H), frozen
        a, s = targets.gather(pos, snip, "cpu")
        regions = region_features(
            head(h), a, s, torch.from_numpy(labels[pos]), torch.from_numpy(pos), p["regions"]
        )
        loss, _ = dcc_loss(regions, bank, p["scope"], p["tau"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bank.update(regions)
        losses.append(float(loss.detach()))
    log = pd.read_parquet(dcc.path / "train_log.parquet")
    print(
        f"seed {args.seed}, tau {p['tau']}, {cfg.iterations} iterations\n"
        f"head only, frozen baseline: {np.mean(losses[:20]):.3f} -> {np.mean(losses[-50:]):.3f}\n"
        f"full DCC run {dcc.id}:   {log['dcc'].iloc[:20].mean():.3f} -> {log['dcc'].iloc[-50:].mean():.3f}"
    )


if __name__ == "__main__":
    main()
