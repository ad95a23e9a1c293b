"""``wtal baseline``: train BaS-Net on a feature set's training videos, then export the model
artifact (checkpoint, training log, training-snippet embeddings) and the T-CAS artifact.

Under ``torchrun`` (``docs/distributed.md``) every rank trains on its slice of each batch, and rank 0
alone resolves the inputs, decides whether the run is already built, holds the store's lock, saves
checkpoints and publishes the artifacts; the others follow its decisions (:mod:`wtalcli.core.distributed`).
"""

from __future__ import annotations

from wtalcli.core import distributed
from wtalcli.core.console import log as _log
from wtalcli.core.console import silent
from wtalcli.core.params import key_dict, record_dict
from wtalcli.core.store import Artifact, Store
from wtalcli.data.schema import FeatureSet, check_finite_rows
from wtalcli.model.config import BaselineParams, TrainConfig, resolve_preset
from wtalcli.model.runner import TrainingRun, plan_run, resolve_holdout, resolve_select_every, split_rows


def model_params(
    cfg: TrainConfig, p: BaselineParams, preset: str, holdout: float, select_every: int
) -> tuple[dict, dict]:
    """The run's recorded parameters (the resolved training configuration, held-out share and
    selection period) and the part of them that determines the trained weights (the cache key)."""
    split = {"holdout": holdout, "holdout_seed": p.holdout_seed, "select_every": select_every}
    return (
        {"preset": preset, "train": record_dict(cfg), **split},
        {"preset": preset, "train": key_dict(cfg), **split},
    )


def baseline(
    store: Store,
    features: str | None = None,
    params: BaselineParams | None = None,
    resume: bool = True,
    force: bool = False,
    log=_log,
) -> tuple[Artifact, Artifact]:
    """Train BaS-Net; returns the ``model`` and ``tcas`` artifacts."""
    p = params or BaselineParams()
    ctx = distributed.setup(p.device)  # one process unless launched by torchrun
    if not ctx.is_main:
        log = silent
    fs_art = distributed.on_main(lambda: store.resolve("features", features, log))
    fs = FeatureSet(fs_art.path)
    preset = resolve_preset(fs_art.params, p.preset)
    cfg = p.train_config(preset)
    holdout = resolve_holdout(p.holdout, fs)
    if p.holdout is None and holdout == 0:
        log("the training videos have no temporal annotations: training on all of them, last iteration")
    train_rows, val_rows = split_rows(fs, holdout, p.holdout_seed)
    select_every = resolve_select_every(p.select_every, len(val_rows))
    mparams, mkey = model_params(cfg, p, preset, holdout, select_every)
    model_plan, tcas_plan = plan_run(store, "baseline", mparams, mkey, {"features": fs_art}, p.seed)
    run = TrainingRun(store, model_plan, tcas_plan, fs, cfg, train_rows, val_rows, select_every)
    if not force and (done := run.built(log)):
        return done
    device = distributed.resolve_device(p.device)
    # a damaged set fails here, not as a NaN loss
    distributed.on_main(lambda: check_finite_rows(fs.features, fs.path / "features.npy"))
    log(
        f"training BaS-Net ({preset} preset: T={cfg.num_segments}, hidden={cfg.hidden}, "
        f"{cfg.iterations} iterations, batch {cfg.batch_size}) on {len(train_rows)} videos, device {device}"
        + (f" x {ctx.world} processes" if ctx.active else "")
    )
    model_art, tcas_art = run.train_and_publish(resume, force, log, lambda: {"preset": preset})
    sanity = tcas_art.manifest["summary"]["sanity_test"]
    if sanity["pairs"]:
        log(
            f"sanity: true-class activation higher inside actions than outside in "
            f"{100 * sanity['fraction_inside_higher']:.1f}% of {sanity['pairs']} test (video, class) pairs"
        )
    return model_art, tcas_art
