"""``wtal baseline``: train BaS-Net on a feature set's training videos, then export the model
artifact (checkpoint, training log, training-snippet embeddings) and the T-CAS artifact.

Under ``torchrun`` (``docs/distributed.md``) every rank trains on its slice of each batch, and rank 0
alone resolves the inputs, decides whether the run is already built, holds the store's lock, saves
checkpoints and publishes the artifacts; the others follow its decisions (:mod:`wtalcli.core.distributed`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from wtalcli.core import distributed
from wtalcli.core.console import log as _log
from wtalcli.core.console import progress as _progress
from wtalcli.core.errors import InputError
from wtalcli.core.store import Artifact, Plan, Store, build_or_skip
from wtalcli.data.schema import FeatureSet, check_finite_rows, rebase, write_tcas, write_videos

WORK_DIR = ".work"  # per-run scratch space that survives a crash (resumable checkpoints)

# Model/training sizes for each feature-set scale.  Real features use the official setting.
SCALE_PRESETS: dict[str, dict] = {
    "tiny": {"hidden": 64, "attn_hidden": 32, "iterations": 300, "num_segments": 64, "lr": 1e-3},
    "small": {"hidden": 256, "attn_hidden": 128, "iterations": 600, "num_segments": 128},
    "thumos": {"num_segments": 750},
    "anet": {"num_segments": 50},
}


@dataclass
class BaselineParams:
    """Everything the user can set; ``None`` means "from the scale preset"."""

    preset: str = "auto"  # auto: the synthetic preset of the feature set, else thumos
    iterations: int | None = None
    batch_size: int = 16
    lr: float | None = None  # default 1e-4 (the official value); the tiny test preset uses 1e-3
    weight_decay: float = 5e-4
    num_segments: int | None = None
    hidden: int | None = None
    attn_hidden: int | None = None
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    amp: str = "none"
    compile: bool = False
    holdout: float = 0.0  # share of training videos held out (subset "val" in the T-CAS)
    holdout_seed: int = 0
    checkpoint_every: int = 100
    extra: dict = field(default_factory=dict)


def resolve_preset(fs_art: Artifact, preset: str) -> str:
    if preset != "auto":
        if preset not in SCALE_PRESETS:
            raise InputError(f"unknown preset {preset!r}", f"use one of auto, {', '.join(SCALE_PRESETS)}")
        return preset
    synthetic = fs_art.params.get("preset") if fs_art.params.get("source") == "synthetic" else None
    return synthetic if synthetic in SCALE_PRESETS else "thumos"


def train_config(fs_art: Artifact, p: BaselineParams):
    """The :class:`TrainConfig` for these parameters (preset values filled in)."""
    from wtalcli.model.training import TrainConfig

    preset = SCALE_PRESETS[resolve_preset(fs_art, p.preset)]
    values = {
        "iterations": p.iterations,
        "num_segments": p.num_segments,
        "hidden": p.hidden,
        "attn_hidden": p.attn_hidden,
        "lr": p.lr,
    }
    cfg = {k: (v if v is not None else preset.get(k)) for k, v in values.items()}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    return TrainConfig(
        batch_size=p.batch_size,
        weight_decay=p.weight_decay,
        seed=p.seed,
        device=p.device,
        num_workers=p.num_workers,
        amp=p.amp,
        compile=p.compile,
        checkpoint_every=p.checkpoint_every,
        **cfg,
    ).validate()


def split_rows(fs: FeatureSet, holdout: float, holdout_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training rows used for fitting, and the held-out ones (``val``), by a seeded shuffle."""
    train = fs.rows_of("train")
    if not 0.0 <= holdout < 1.0:
        raise InputError(
            f"--holdout {holdout} must be in [0, 1)", "e.g. --holdout 0.1 (0: no held-out videos)"
        )
    n_val = int(round(holdout * len(train)))
    if n_val == 0:
        return train, np.zeros(0, np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([holdout_seed, 0x401D]))
    val = np.sort(rng.choice(train, n_val, replace=False))
    return np.setdiff1d(train, val), val


def model_params(cfg, p: BaselineParams, preset: str) -> dict:
    """What determines the trained weights (device and loader threads do not, on CPU)."""
    d = cfg.to_dict()
    for k in ("device", "num_workers", "checkpoint_every", "compile"):
        d.pop(k, None)
    return {"preset": preset, "train": d, "holdout": p.holdout, "holdout_seed": p.holdout_seed, **p.extra}


def export_tcas(
    model, fs: FeatureSet, cfg, device, tmp: Path, train_rows: np.ndarray, val_rows: np.ndarray
) -> dict:
    """Write the T-CAS of every video (``val`` marks held-out training videos)."""
    from wtalcli.model.training import infer

    rows = np.arange(len(fs.videos))
    videos = rebase(fs.videos.iloc[rows])
    if len(val_rows):
        videos.loc[np.isin(rows, val_rows), "subset"] = "val"
    res = infer(model, fs, rows, cfg.num_segments, device, batch=cfg.batch_size, amp=cfg.amp)
    write_tcas(tmp, videos, res.cas, res.scores, fs.classes)
    return {"videos": int(len(videos)), "snippets": int(len(res.cas))}


def export_embeddings(
    model, fs: FeatureSet, cfg, device, tmp: Path, train_rows: np.ndarray, outputs: dict | None = None
) -> dict:
    """Base-branch embeddings ``h`` of the training snippets (float16), with their videos table;
    ``outputs["result"]`` receives the same pass's CAS and scores when ``outputs`` is given."""
    from wtalcli.model.training import infer

    videos = rebase(fs.videos.iloc[train_rows])
    n = int(videos["n_snippets"].sum())
    h = np.lib.format.open_memmap(
        tmp / "embeddings.npy", mode="w+", dtype=np.float16, shape=(n, model.hidden)
    )
    res = infer(model, fs, train_rows, cfg.num_segments, device, batch=cfg.batch_size, amp=cfg.amp, h_out=h)
    if outputs is not None:
        outputs["result"] = res
    h.flush()
    del h
    write_videos(tmp, videos)
    return {"embedding_snippets": n, "embedding_dim": int(model.hidden)}


class StepLog:
    """Collects the loss terms of every iteration, for the Parquet training log."""

    def __init__(self, previous: pd.DataFrame | None = None):
        self.rows: list[dict] = [] if previous is None else previous.to_dict("records")

    def __call__(self, step: int, terms: dict) -> None:
        self.rows = (
            [r for r in self.rows if r["step"] < step]
            if self.rows and self.rows[-1]["step"] >= step
            else self.rows
        )
        self.rows.append({"step": step, **terms})

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def quiet(message: str) -> None:
    """The log of the ranks other than 0: rank 0 speaks for the job."""


@contextlib.contextmanager
def training_progress(total: int, start: int, show: bool = True):
    """A Rich progress bar (stderr) updated with the loss terms; yields ``on_step``."""
    if not show:
        yield lambda step, terms: None
        return
    with _progress() as bar:
        task = bar.add_task("training", total=total, completed=start, info="")

        def on_step(step: int, terms: dict) -> None:
            if step % 10 == 0 or step == total:
                info = " ".join(f"{k}={v:.3g}" for k, v in terms.items() if k != "total")
                bar.update(task, completed=step, info=info)

        yield on_step


def run_training(
    store: Store,
    plan: Plan,
    fs: FeatureSet,
    cfg,
    train_rows: np.ndarray,
    resume: bool,
    log,
    trainer_kwargs: dict | None = None,
    before_train=None,
    after_resume=None,
):
    """Train (resuming from the plan's scratch checkpoint when one exists); returns the trainer
    and the step log.  The scratch directory is ``<workdir>/.work/<artifact id>/``.

    Under torchrun rank 0 decides whether to resume (every rank then loads the same checkpoint),
    keeps the step log and shows the progress bar; the trainer saves checkpoints on rank 0 only."""
    from wtalcli.model.training import Trainer

    ctx = distributed.current()
    work = store.root / WORK_DIR / plan.id
    distributed.on_main(lambda: work.mkdir(parents=True, exist_ok=True))
    ckpt, log_path = work / "checkpoint.pt", work / "train_log.parquet"
    steps = StepLog()

    def on_step(step: int, terms: dict) -> None:
        steps(step, terms)
        bar_step(step, terms)

    trainer = Trainer(fs, cfg, train_rows, on_step=on_step, checkpoint_path=ckpt, **(trainer_kwargs or {}))
    if before_train is not None:
        before_train(trainer)
    found = distributed.on_main(ckpt.exists)
    if found and resume:
        trainer.load_checkpoint(ckpt)
        if ctx.is_main and log_path.exists():
            steps = StepLog(pd.read_parquet(log_path))
            steps.rows = [r for r in steps.rows if r["step"] <= trainer.step]
        log(f"resuming from iteration {trainer.step} ({ckpt})")
        if after_resume is not None:
            after_resume(trainer)
    elif found:
        log("found an interrupted run; starting over (--no-resume)")

    original_save = trainer.save_checkpoint

    def save_with_log(path):  # the log travels with the checkpoint, so a resume keeps it
        # log first, each file atomically: a kill at any moment leaves a log covering the checkpoint
        part = log_path.with_name(log_path.name + ".part")
        steps.frame().to_parquet(part)
        os.replace(part, log_path)
        original_save(path)

    trainer.save_checkpoint = save_with_log
    with training_progress(cfg.iterations, trainer.step, show=ctx.is_main) as bar_step:
        trainer.train()
    return trainer, steps, work


def already_built(
    store: Store,
    model_plan: Plan,
    tcas_plan: Plan,
    log,
    why: str = "up to date (same inputs, parameters and code)",
) -> tuple[Artifact, Artifact] | None:
    """The run's two artifacts if both exist (a training stage then has nothing to do)."""
    model, tcas = store.existing(model_plan), store.existing(tcas_plan)
    if model is None or tcas is None:
        return None
    log(f"{model.id} and {tcas.id} are {why}: skipped; --force redoes them")
    return model, tcas


def world_summary(summary: dict) -> dict:
    """``summary`` plus the number of processes, when there were several (one-process manifests
    stay as they were)."""
    world = distributed.current().world
    return {**summary, "world_size": world} if world > 1 else summary


def publish(
    store: Store,
    model_plan: Plan,
    tcas_plan: Plan,
    trainer,
    steps: StepLog,
    work: Path,
    fs: FeatureSet,
    cfg,
    device,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    log,
    summary_extra: dict,
) -> tuple[Artifact, Artifact]:
    """Publish a finished training run as its ``model`` artifact (checkpoint, training log,
    training-snippet embeddings) and its ``tcas`` artifact (with the inside/outside sanity figure);
    shared by ``baseline`` and ``train-dcc``."""
    from wtalcli.data.schema import TCAS
    from wtalcli.evaluation.diagnostics import inside_outside

    model = trainer.model

    def write_model(tmp: Path) -> dict:
        shutil.copyfile(work / "checkpoint.pt", tmp / "checkpoint.pt")
        steps.frame().to_parquet(tmp / "train_log.parquet")
        summary = export_embeddings(model, fs, cfg, device, tmp, train_rows)
        last = steps.rows[-1] if steps.rows else {}
        summary.update({"iterations": trainer.step, "final_loss": last.get("total"), **summary_extra})
        return summary

    def write_tcas_art(tmp: Path) -> dict:
        summary = export_tcas(model, fs, cfg, device, tmp, train_rows, val_rows)
        t = TCAS(tmp)
        summary["sanity_test"] = inside_outside(t, t.cas, fs.annotations, fs.classes, "test")
        return summary

    out = (
        build_or_skip(store, model_plan, True, log, write_model),
        build_or_skip(store, tcas_plan, True, log, write_tcas_art),
    )
    shutil.rmtree(work, ignore_errors=True)  # under the caller's lock: a waiting run may resume from it
    return out


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
        log = quiet
    fs_art = distributed.on_main(lambda: store.resolve("features", features, log))
    fs = FeatureSet(fs_art.path)
    preset = resolve_preset(fs_art, p.preset)
    cfg = train_config(fs_art, p)
    train_rows, val_rows = split_rows(fs, p.holdout, p.holdout_seed)
    mparams = model_params(cfg, p, preset)
    model_plan = store.plan(
        "model", "baseline", mparams, {"features": fs_art}, seed=p.seed, lineage={"model": "self"}
    )
    tcas_plan = store.plan(
        "tcas", "baseline", mparams, {"features": fs_art}, seed=p.seed, lineage={"model": model_plan.id}
    )
    if not force and (done := distributed.on_main(lambda: already_built(store, model_plan, tcas_plan, log))):
        return done
    device = distributed.resolve_device(p.device)
    # a damaged set fails here, not as a NaN loss
    distributed.on_main(lambda: check_finite_rows(fs.features, fs.path / "features.npy"))
    log(
        f"training BaS-Net ({preset} preset: T={cfg.num_segments}, hidden={cfg.hidden}, "
        f"{cfg.iterations} iterations, batch {cfg.batch_size}) on {len(train_rows)} videos, device {device}"
        + (f" x {ctx.world} processes" if ctx.active else "")
    )
    with distributed.main_only(lambda: store.lock(f"run-{model_plan.id}")):
        if not force and (
            done := distributed.on_main(
                lambda: already_built(store, model_plan, tcas_plan, log, "just built by another process")
            )
        ):
            return done
        trainer, steps, work = run_training(store, model_plan, fs, cfg, train_rows, resume, log)
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
                world_summary({"preset": preset}),
            )
        )
    sanity = tcas_art.manifest["summary"]["sanity_test"]
    if sanity["pairs"]:
        log(
            f"sanity: true-class activation higher inside actions than outside in "
            f"{100 * sanity['fraction_inside_higher']:.1f}% of {sanity['pairs']} test (video, class) pairs"
        )
    return model_art, tcas_art
