"""``wtal train-dcc``: BaS-Net + Denoised Cross-Video Contrast (:mod:`wtalcli.dcc.method`).

Starts from a baseline model (or from scratch), reads the pseudo-label and confidence artifacts
of that model, and adds ``beta * L_dcc`` to the BaS-Net loss. Refresh rounds recompute the
pseudo-labels and confidence from the current model with the same ``pseudolabel`` and ``denoise``
parameters as the input artifacts (read from their manifests), through the same builders as those
stages; each round is written as artifacts (``tcas``, ``embeddings``, ``pseudolabels``,
``confidence``, tagged ``round N``). Writes the same ``model`` and ``tcas`` artifacts as ``baseline``.
This module resolves the inputs and plans the run; :mod:`wtalcli.dcc.training` trains it.

Under ``torchrun`` (``docs/distributed.md``): each rank's region features are all-gathered, so every
rank computes the contrast of the whole global batch (against the whole batch and the bank) but
differentiates it only through its own regions, and updates its memory bank with the same gathered
regions in the same order, so the banks stay identical. Rank 0 fills the initial bank and
broadcasts it, runs the refresh rounds (writing their artifacts) and broadcasts the new ids.
"""

from __future__ import annotations

from dataclasses import replace

from wtalcli.core import distributed
from wtalcli.core.console import log as _log
from wtalcli.core.console import silent
from wtalcli.core.errors import InputError, MismatchError
from wtalcli.core.params import key_dict, record_dict
from wtalcli.core.store import Artifact, Store
from wtalcli.data.schema import FeatureSet
from wtalcli.dcc.train_params import DCCParams
from wtalcli.dcc.training import dcc_train_config, refresh_period, train_with_dcc
from wtalcli.model.config import TrainConfig
from wtalcli.model.runner import TrainingRun, plan_run, resolve_select_every, split_rows
from wtalcli.model.trainer import read_checkpoint


def _resolve_inputs(store: Store, model, pseudolabels, confidence, p: DCCParams, log):
    base = store.resolve("model", model, log)
    if base.stage != "baseline":
        log(f"note: {base.id} was made by {base.stage}, not baseline")
    if p.targets == "oracle":
        return base, None, None
    lineage = {"model": base.id}
    pl = store.resolve("pseudolabels", pseudolabels, log, lineage=lineage)
    if not p.denoise:
        return base, pl, None
    conf = store.resolve("confidence", confidence, log, lineage=lineage)
    if conf.manifest["inputs"]["pseudolabels"]["id"] != pl.id:
        raise MismatchError(
            f"{conf.id} was computed from {conf.manifest['inputs']['pseudolabels']['id']}, not {pl.id}",
            "pass matching --pseudolabels and --confidence (see `wtal status`)",
        )
    return base, pl, conf


def train_dcc(
    store: Store,
    model: str | None = None,
    pseudolabels: str | None = None,
    confidence: str | None = None,
    params: DCCParams | None = None,
    resume: bool = True,
    force: bool = False,
    log=_log,
) -> tuple[Artifact, Artifact]:
    """Train with DCC; returns the ``model`` and ``tcas`` artifacts."""
    p = (params or DCCParams()).validate()
    ctx = distributed.setup(p.device)
    if not ctx.is_main:
        log = silent
    if ctx.active and p.grad_every:
        raise InputError("--grad-every is a one-process diagnostic", "run it without torchrun")
    base, pl_art, conf_art = distributed.on_main(
        lambda: _resolve_inputs(store, model, pseudolabels, confidence, p, log)
    )
    fs_art = store.get(store.root / base.lineage["features"])
    fs = FeatureSet(fs_art.path)
    ckpt = read_checkpoint(base.path / "checkpoint.pt")
    cfg = dcc_train_config(TrainConfig.from_dict(ckpt["config"]), p)
    holdout, holdout_seed = base.params.get("holdout", 0.0), base.params.get("holdout_seed", 0)
    train_rows, val_rows = split_rows(fs, holdout, holdout_seed)
    p = replace(p, select_every=resolve_select_every(p.select_every, len(val_rows)))
    refresh = refresh_period(p, len(train_rows), cfg.batch_size, cfg.iterations)
    split = {"holdout": holdout, "holdout_seed": holdout_seed, "refresh_every": refresh}
    mparams = {"dcc": record_dict(p), "train": record_dict(cfg), **split}
    mkey = {"dcc": key_dict(p), "train": key_dict(cfg), **split}
    inputs = {"base_model": base, "features": fs_art}
    if pl_art is not None:
        inputs["pseudolabels"] = pl_art
    if conf_art is not None:
        inputs["confidence"] = conf_art
    model_plan, tcas_plan = plan_run(store, "train-dcc", mparams, mkey, inputs, p.seed)
    # from a model, its own weights are a selection candidate: never a worse model than the start
    run = TrainingRun(
        store, model_plan, tcas_plan, fs, cfg, train_rows, val_rows, p.select_every, p.init == "baseline"
    )
    if not force and (done := run.built(log)):
        return done
    return train_with_dcc(run, p, fs_art, base, ckpt, pl_art, conf_art, refresh, resume, force, log)
