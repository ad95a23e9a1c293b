"""Training with DCC (``wtal train-dcc``), from a baseline's artifacts to the run's: the targets
read from the pseudo-label and confidence artifacts, the refresh rounds written as artifacts (tagged
``round N``, :mod:`wtalcli.core.rounds`) through the same builders as ``wtal pseudolabel`` and
``wtal denoise``, with the same parameters as the artifacts the run started from, and the run
itself through the shared runner (:class:`wtalcli.model.runner.TrainingRun`).

Under ``torchrun`` (``docs/distributed.md``): rank 0 fills the initial bank and broadcasts it, runs
the refresh rounds (writing their artifacts) and broadcasts the new ids; the other ranks read them.
"""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import numpy as np

from wtalcli.core import distributed, rounds
from wtalcli.core.errors import MismatchError
from wtalcli.core.params import from_dict
from wtalcli.core.store import Artifact, Store, build_or_skip
from wtalcli.data.schema import FeatureSet, load_npy, read_parquet, rebase, write_tcas
from wtalcli.dcc.confidence_artifact import build_confidence
from wtalcli.dcc.method import DCC, Targets, oracle_targets
from wtalcli.dcc.params import DenoiseParams, PseudolabelParams
from wtalcli.dcc.pseudolabel_artifact import build_pseudolabels
from wtalcli.dcc.train_params import DCCParams
from wtalcli.model.config import TrainConfig
from wtalcli.model.runner import TrainingRun, export_embeddings


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


def refresh_period(p: DCCParams, n_train: int, batch_size: int, iterations: int) -> int:
    """Iterations between refresh rounds (0: none)."""
    if p.targets == "oracle":
        return 0  # the ground truth does not change
    if p.refresh_every >= 0:
        return p.refresh_every
    per_pass = math.ceil(n_train / batch_size)  # once per pass, but at most max_rounds rounds
    return max(per_pass, math.ceil(iterations / max(1, p.max_rounds + 1))) if p.max_rounds else 0


def dcc_train_config(base: TrainConfig, p: DCCParams) -> TrainConfig:
    """The baseline's training configuration with the :class:`TrainConfig` fields ``train-dcc``
    sets (the length, default: the baseline's; the seed; how the run goes)."""
    train = {f.name for f in fields(TrainConfig)}
    given = {f.name: getattr(p, f.name) for f in fields(p) if f.name in train}
    given["iterations"] = p.iterations or base.iterations
    return TrainConfig.from_dict({**base.to_dict(), **given})


def train_with_dcc(
    run: TrainingRun,
    p: DCCParams,
    fs_art: Artifact,
    base: Artifact,
    ckpt: dict,
    pl_art: Artifact | None,
    conf_art: Artifact | None,
    refresh: int,
    resume: bool,
    force: bool,
    log,
) -> tuple[Artifact, Artifact]:
    """Train ``run`` with DCC from the baseline ``base`` (its checkpoint ``ckpt``), starting from the
    targets of ``pl_art`` and ``conf_art`` (none for oracle targets) and refreshing them every
    ``refresh`` iterations; returns the published ``model`` and ``tcas`` artifacts."""
    store, fs, cfg, train_rows, model_plan = run.store, run.fs, run.cfg, run.train_rows, run.model_plan
    pl_params, dn_params = round_params(pl_art, conf_art)
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
        new_pl = build_pseudolabels(store, t_art, pl_params, True, log, tag)
        if dn_params is None:
            return new_pl.id, None
        return new_pl.id, build_confidence(store, new_pl, e_art, dn_params, True, log, tag).id

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

    log(
        f"training DCC ({cfg.iterations} iterations, targets {p.targets}, scope {p.scope}, M={p.regions}, "
        f"pooling {p.pooling}, head {p.head}, branch {p.branch}, tau={p.tau}, beta {p.beta_start}->"
        f"{p.beta_end} {p.beta_shape}, denoise {'on' if p.denoise else 'off'}, refresh every "
        f"{refresh or 'never'}) from {base.id if p.init == 'baseline' else 'scratch'}"
    )
    return run.train_and_publish(
        resume,
        force,
        log,
        lambda: {"rounds": dcc.round},
        trainer_kwargs={"extra_loss": dcc.extra_loss, "extra_modules": dcc.modules, "extra_state": dcc},
        before_train=before_train,
        after_resume=after_resume,
    )


def _write_round_tcas(tmp: Path, fs: FeatureSet, train_rows: np.ndarray, outputs: dict) -> dict:
    """A refresh round's T-CAS: the training videos' CAS computed with the round's embeddings."""
    res = outputs["result"]
    videos = rebase(fs.videos.iloc[train_rows])
    write_tcas(tmp, videos, res.cas, res.scores, fs.classes)
    return {"videos": int(len(videos)), "snippets": int(len(res.cas))}
