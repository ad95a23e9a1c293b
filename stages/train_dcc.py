"""``wtal train-dcc``: BaS-Net + Denoised Cross-Video Contrast (:mod:`wtalcli.dcc.method`).

Starts from a baseline model (or from scratch), reads the pseudo-label and confidence artifacts
of that model, and adds ``beta * L_dcc`` to the BaS-Net loss. Refresh rounds recompute the
pseudo-labels and confidence from the current model with the same ``pseudolabel`` and ``denoise``
parameters as the input artifacts (read from their manifests), through the same stage functions;
each round is written as artifacts (``tcas``, ``embeddings``, ``pseudolabels``, ``confidence``,
tagged ``round N``). Writes the same ``model`` and ``tcas`` artifacts as ``baseline``.

Under ``torchrun`` (``docs/distributed.md``): each rank's region features are all-gathered, so every
rank computes the contrast of the whole global batch (against the whole batch and the bank) but
differentiates it only through its own regions, and updates its memory bank with the same gathered
regions in the same order, so the banks stay identical. Rank 0 fills the initial bank and
broadcasts it, runs the refresh rounds (writing their artifacts) and broadcasts the new ids.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from stages.denoise import denoise
from stages.pseudolabel import pseudolabel
from wtalcli.core import distributed, rounds
from wtalcli.core.console import log as _log
from wtalcli.core.errors import InputError, MismatchError
from wtalcli.core.params import from_dict, key_dict, record_dict
from wtalcli.core.store import Artifact, Store, build_or_skip
from wtalcli.data.schema import FeatureSet, load_npy, read_parquet, rebase, write_tcas
from wtalcli.dcc.method import DCC, Targets, oracle_targets
from wtalcli.dcc.params import DCCParams, DenoiseParams, PseudolabelParams
from wtalcli.model.config import TrainConfig
from wtalcli.model.runner import (
    Selection,
    already_built,
    export_embeddings,
    publish,
    quiet,
    run_training,
    split_rows,
    world_summary,
)
from wtalcli.model.trainer import read_checkpoint

__all__ = ["DCCParams", "train_dcc"]


def load_targets(store: Store, pl_id: str, conf_id: str | None, video_ids: list[str]) -> Targets:
    """The targets held by a pseudo-label artifact and, unless None, its confidence artifact."""
    pl = store.get(store.root / pl_id)
    videos = read_parquet(pl.path / "videos.parquet", "pseudo-label videos table")
    if list(videos["video_id"]) != video_ids:
        raise MismatchError(
            f"{pl.id} covers other training videos than this run", "make the pseudo-labels from this model"
        )
    labels = np.asarray(load_npy(pl.path / "labels.npy", "pseudo-labels", mmap=False))
    conf = None
    if conf_id is not None:
        art = store.get(store.root / conf_id)
        conf = np.asarray(load_npy(art.path / "confidence.npy", "confidence map", mmap=False), np.float32)
    return Targets(labels, conf, videos["offset"].to_numpy(np.int64))


def round_params(
    pl_art: Artifact | None, conf_art: Artifact | None
) -> tuple[PseudolabelParams, DenoiseParams | None]:
    """The pseudo-label and denoise parameters of the artifacts a run starts from: its refresh
    rounds use exactly these."""
    pl = from_dict(PseudolabelParams, pl_art.params, pl_art.id) if pl_art is not None else PseudolabelParams()
    dn = from_dict(DenoiseParams, conf_art.params, conf_art.id) if conf_art is not None else None
    return pl, dn


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


def refresh_period(p: DCCParams, n_train: int, batch_size: int, iterations: int) -> int:
    """Iterations between refresh rounds (0: none)."""
    if p.targets == "oracle":
        return 0  # the ground truth does not change
    if p.refresh_every >= 0:
        return p.refresh_every
    per_pass = math.ceil(n_train / batch_size)  # once per pass, but at most max_rounds rounds
    return max(per_pass, math.ceil(iterations / max(1, p.max_rounds + 1))) if p.max_rounds else 0


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
        log = quiet
    if ctx.active and p.grad_every:
        raise InputError("--grad-every is a one-process diagnostic", "run it without torchrun")
    base, pl_art, conf_art = distributed.on_main(
        lambda: _resolve_inputs(store, model, pseudolabels, confidence, p, log)
    )
    fs_art = store.get(store.root / base.lineage["features"])
    fs = FeatureSet(fs_art.path)
    ckpt = read_checkpoint(base.path / "checkpoint.pt")
    base_cfg = TrainConfig.from_dict(ckpt["config"])
    cfg = TrainConfig.from_dict(
        {
            **base_cfg.to_dict(),
            "iterations": p.iterations or base_cfg.iterations,
            "seed": p.seed,
            "device": p.device,
            "num_workers": p.num_workers,
            "checkpoint_every": p.checkpoint_every,
        }
    )
    holdout, holdout_seed = base.params.get("holdout", 0.0), base.params.get("holdout_seed", 0)
    train_rows, val_rows = split_rows(fs, holdout, holdout_seed)
    refresh = refresh_period(p, len(train_rows), cfg.batch_size, cfg.iterations)
    pl_params, dn_params = round_params(pl_art, conf_art)
    split = {"holdout": holdout, "holdout_seed": holdout_seed, "refresh_every": refresh}
    mparams = {"dcc": record_dict(p), "train": record_dict(cfg), **split}
    mkey = {"dcc": key_dict(p), "train": key_dict(cfg), **split}
    inputs = {"base_model": base, "features": fs_art}
    if pl_art is not None:
        inputs["pseudolabels"] = pl_art
    if conf_art is not None:
        inputs["confidence"] = conf_art
    plan_args = {"inputs": inputs, "seed": p.seed, "key_params": mkey}
    model_plan = store.plan("model", "train-dcc", mparams, lineage={"model": "self"}, **plan_args)
    tcas_plan = store.plan("tcas", "train-dcc", mparams, lineage={"model": model_plan.id}, **plan_args)
    if not force and (done := distributed.on_main(lambda: already_built(store, model_plan, tcas_plan, log))):
        return done
    device = distributed.resolve_device(p.device)
    video_ids = [str(v) for v in fs.videos["video_id"].to_numpy()[train_rows]]

    def start_targets() -> Targets:
        if p.targets == "oracle":
            return oracle_targets(fs, train_rows)
        return load_targets(store, pl_art.id, conf_art.id if conf_art is not None else None, video_ids)

    def refresh_round(step: int, net) -> Targets:
        """New targets from the current model; rank 0 computes and writes them, the others read the
        ids it broadcasts (and take its RNG state, in case the round drew from it)."""
        ids = distributed.on_main(lambda: build_round(step, net))
        distributed.sync_rng(device)
        dcc.sources = {"pseudolabels": ids[0], "confidence": ids[1] or ""}
        return load_targets(store, ids[0], ids[1], video_ids)

    def build_round(step: int, net) -> tuple[str, str | None]:
        tag = rounds.tag(dcc.round)
        lineage = {"features": fs_art.id, "model": rounds.model_ref(model_plan.id, dcc.round)}
        rparams = {"step": step, "run": model_plan.id}
        rp = {"inputs": {"features": fs_art}, "seed": p.seed, "lineage": lineage, "tag": tag}
        tplan = store.plan("tcas", "train-dcc", rparams, **rp)
        eplan = store.plan("embeddings", "train-dcc", rparams, **rp)
        was = net.training
        # one inference pass over the training videos gives both the embeddings and the T-CAS the
        # pseudo-labels need (a round's T-CAS covers the training videos only)
        outputs: dict = {}
        e_art = build_or_skip(
            store,
            eplan,
            True,
            log,
            lambda tmp: export_embeddings(net, fs, cfg, device, tmp, train_rows, outputs),
        )
        t_art = build_or_skip(
            store, tplan, True, log, lambda tmp: _write_round_tcas(tmp, fs, train_rows, outputs)
        )
        net.train(was)
        new_pl = pseudolabel(store, t_art.id, pl_params, force=True, log=log, tag=tag)
        if dn_params is None:
            return new_pl.id, None
        new_conf = denoise(store, new_pl.id, e_art.id, dn_params, force=True, log=log, tag=tag)
        return new_pl.id, new_conf.id

    dcc = DCC(
        p,
        fs.label_matrix(train_rows),
        cfg.hidden,
        start_targets(),
        cfg.iterations,
        refresh_every=refresh,
        refresh=refresh_round,
        attn_l1=cfg.attn_l1,
    )
    if pl_art is not None:
        dcc.sources = {"pseudolabels": pl_art.id, "confidence": conf_art.id if conf_art is not None else ""}

    def before_train(trainer) -> None:
        dcc.attach(trainer.model)
        if p.init == "baseline":
            trainer.model.load_state_dict(ckpt["model"])
        distributed.on_main(
            lambda: dcc.fill_banks(trainer.model, fs, train_rows, cfg.num_segments, cfg.batch_size, device)
        )
        dcc.broadcast_banks()

    def after_resume(trainer) -> None:  # the banks came back with the checkpoint; so did the round
        if dcc.sources.get("pseudolabels"):
            dcc.targets = load_targets(
                store, dcc.sources["pseudolabels"], dcc.sources.get("confidence") or None, video_ids
            )

    select = Selection(p.select_every, val_rows) if p.select_every else None
    log(
        f"training DCC ({cfg.iterations} iterations, targets {p.targets}, scope {p.scope}, M={p.regions}, "
        f"pooling {p.pooling}, head {p.head}, branch {p.branch}, tau={p.tau}, beta {p.beta_start}->"
        f"{p.beta_end} {p.beta_shape}, denoise {'on' if p.denoise else 'off'}, refresh every "
        f"{refresh or 'never'}) from {base.id if p.init == 'baseline' else 'scratch'}"
    )
    with distributed.main_only(lambda: store.lock(f"run-{model_plan.id}")):
        if not force and (
            done := distributed.on_main(
                lambda: already_built(store, model_plan, tcas_plan, log, "just built by another process")
            )
        ):
            return done
        trainer, steps, work = run_training(
            store,
            model_plan,
            fs,
            cfg,
            train_rows,
            resume,
            log,
            trainer_kwargs={"extra_loss": dcc.extra_loss, "extra_modules": dcc.modules, "extra_state": dcc},
            before_train=before_train,
            after_resume=after_resume,
            select=select,
        )
        model_art, tcas_art = distributed.on_main(
            lambda: publish(
                store,
                model_plan,
                tcas_plan,
                trainer,
                steps,
                work,
                fs,
                cfg,
                device,
                train_rows,
                val_rows,
                log,
                world_summary({"rounds": dcc.round}),
                select,
            )
        )
    return model_art, tcas_art


def _write_round_tcas(tmp: Path, fs: FeatureSet, train_rows: np.ndarray, outputs: dict) -> dict:
    """A refresh round's T-CAS: the training videos' CAS computed with the round's embeddings."""
    res = outputs["result"]
    videos = rebase(fs.videos.iloc[train_rows])
    write_tcas(tmp, videos, res.cas, res.scores, fs.classes)
    return {"videos": int(len(videos)), "snippets": int(len(res.cas))}
