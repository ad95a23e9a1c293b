"""The shared training runner: train (resuming from a scratch checkpoint), then publish the run as
its ``model`` artifact (checkpoint, training log, training-snippet embeddings) and its ``tcas``
artifact. ``baseline`` and ``train-dcc`` both go through it.

Under ``torchrun`` every rank trains on its slice of each batch; rank 0 alone decides whether to
resume, keeps the step log, saves checkpoints and publishes (:mod:`wtalcli.core.distributed`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from wtalcli.core import distributed
from wtalcli.core.console import progress as _progress
from wtalcli.core.devices import machine_numerics
from wtalcli.core.errors import InputError
from wtalcli.core.files import atomic_write, atomic_write_bytes
from wtalcli.core.store import Artifact, Plan, Store, build_or_skip
from wtalcli.data.schema import FeatureSet, rebase, write_tcas, write_videos
from wtalcli.model.config import HOLDOUT, TrainConfig
from wtalcli.model.inference import infer
from wtalcli.model.trainer import Trainer, save_checkpoint

WORK_DIR = ".work"  # per-run scratch space that survives a crash (resumable checkpoints)


def split_rows(fs: FeatureSet, holdout: float, holdout_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training rows used for fitting, and the held-out ones (``val``): a seeded draw of
    ``round(holdout * n_train)`` videos among the training videos that carry temporal annotations
    (the only ones a held-out score can use; all of them on fully annotated data), refused before
    any training when there are none."""
    train = fs.rows_of("train")
    if not 0.0 <= holdout < 1.0:
        raise InputError(
            f"--holdout {holdout} must be in [0, 1)", "e.g. --holdout 0.1 (0: no held-out videos)"
        )
    n_val = int(round(holdout * len(train)))
    if n_val == 0:
        return train, np.zeros(0, np.int64)
    annotated = train[np.isin(fs.videos["video_id"].to_numpy()[train], fs.annotations["video_id"].to_numpy())]
    if len(annotated) == 0:
        raise InputError(
            f"--holdout {holdout}: no training video has temporal annotations to score held-out videos with",
            "use --holdout 0 (train on every video, keep the last iteration)",
        )
    rng = np.random.default_rng(np.random.SeedSequence([holdout_seed, 0x401D]))
    val = np.sort(rng.choice(annotated, min(n_val, len(annotated)), replace=False))
    return np.setdiff1d(train, val), val


def export_tcas(
    model, fs: FeatureSet, cfg, device, tmp: Path, train_rows: np.ndarray, val_rows: np.ndarray
) -> dict:
    """Write the T-CAS of every video (``val`` marks held-out training videos)."""

    rows = np.arange(len(fs.videos))
    videos = rebase(fs.videos.iloc[rows])
    if len(val_rows):
        videos.loc[np.isin(rows, val_rows), "subset"] = "val"
    res = infer(model, fs, rows, cfg.num_segments, device, batch=cfg.batch_size, amp=cfg.amp)
    write_tcas(tmp, videos, res.cas, res.scores, fs.classes)
    summary = {"videos": int(len(videos)), "snippets": int(len(res.cas))}
    summary.update(embedding_diagnostics(model, fs, cfg, device))
    return summary


def embedding_diagnostics(model, fs: FeatureSet, cfg, device) -> dict:
    """The diagnostics of a model on the test videos, as the T-CAS summary records them (none
    without test videos or ground truth): ``embedding_test``, the base-branch embedding's geometry
    (:func:`wtalcli.evaluation.diagnostics.embedding_geometry`), and ``separation_test``, the
    per-class separation of action from background by the T-CAS, the embedding and linear probes
    (:func:`wtalcli.evaluation.separation.separation_on_test`)."""
    from wtalcli.data.schema import SnippetTable
    from wtalcli.evaluation.diagnostics import embedding_geometry, snippet_truth
    from wtalcli.evaluation.separation import separation_on_test

    rows = fs.rows_of("test")
    if len(rows) == 0 or len(fs.annotations) == 0:
        return {}
    res = infer(model, fs, rows, cfg.num_segments, device, batch=cfg.batch_size, amp=cfg.amp, with_h=True)
    table = SnippetTable(rebase(fs.videos.iloc[rows]))
    truth = snippet_truth(table, fs.annotations, fs.classes)
    video = np.repeat(np.arange(len(rows)), table.videos["n_snippets"].to_numpy())
    return {
        "embedding_test": embedding_geometry(res.h, truth, video),
        "separation_test": separation_on_test(fs, rows, res.cas, res.h),
    }


def export_embeddings(
    model, fs: FeatureSet, cfg, device, tmp: Path, train_rows: np.ndarray, outputs: dict | None = None
) -> dict:
    """Base-branch embeddings ``h`` of the training snippets (float16), with their videos table;
    ``outputs["result"]`` receives the same pass's CAS and scores when ``outputs`` is given."""

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


# --select-every's default where there are held-out videos (every arm of docs/ablation.md's studies)
SELECT_EVERY = 50


def resolve_holdout(holdout: float | None, fs: FeatureSet) -> float:
    """The share of training videos a baseline holds out: ``holdout`` when given, else
    :data:`~wtalcli.model.config.HOLDOUT` when the training videos carry temporal annotations to
    score held-out videos with, and 0 when they carry video labels only (the training length cannot
    be chosen there: the last iteration is kept)."""
    if holdout is not None:
        return float(holdout)
    train_ids = fs.videos["video_id"].to_numpy()[fs.rows_of("train")]
    return HOLDOUT if bool(fs.annotations["video_id"].isin(train_ids).any()) else 0.0


def resolve_select_every(select_every: int | None, n_heldout: int) -> int:
    """The selection period a run uses: ``select_every`` when given, else (``None``)
    :data:`SELECT_EVERY` when there are held-out videos and 0 (the last iteration) without."""
    if select_every is not None:
        return int(select_every)
    return SELECT_EVERY if n_heldout else 0


@dataclass
class Selection:
    """Choose the training length on held-out training videos: every ``every`` iterations the
    model's T-CAS of the ``val_rows`` videos is localized and scored (mAP averaged over ``tiou``),
    and the best iteration's weights are the run's result. Ties keep the earlier iteration.

    ``score_start``: the starting weights (iteration 0, e.g. the baseline a ``train-dcc`` run starts
    from) are a candidate too, so the run never returns a model that scores below its start on the
    held-out videos; :attr:`kept_start` says when the start won."""

    every: int
    val_rows: np.ndarray
    tiou: str = "thumos14"
    score_start: bool = False
    curve: list = field(default_factory=list)  # [(iteration, held-out avg mAP)]
    best_step: int | None = None
    best_map: float = -1.0

    @property
    def start_map(self) -> float | None:
        return next((m for s, m in self.curve if s == 0), None) if self.score_start else None

    @property
    def kept_start(self) -> bool:
        return self.score_start and self.best_step == 0

    def to_dict(self) -> dict:
        return {"curve": self.curve, "best_step": self.best_step, "best_map": self.best_map}

    def load(self, d: dict) -> None:
        self.curve = [tuple(x) for x in d["curve"]]
        self.best_step, self.best_map = d["best_step"], float(d["best_map"])

    def summary(self) -> dict:
        """What the model's manifest records of the selection."""
        out = {
            "every": self.every,
            "tiou": self.tiou,
            "heldout_videos": int(len(self.val_rows)),
            "selected_iteration": self.best_step,
            "heldout_map": self.best_map,
            "curve": [list(x) for x in self.curve],
        }
        if self.score_start:
            out.update(start_heldout_map=self.start_map, kept_start=self.kept_start)
        return out


def heldout_map(model, fs: FeatureSet, rows: np.ndarray, cfg, device, tiou: str) -> float:
    """Average mAP of the ``rows`` videos (held-out training videos) under ``model``."""
    from wtalcli.evaluation.scoring import score_tcas

    res = infer(model, fs, rows, cfg.num_segments, device, batch=cfg.batch_size, amp=cfg.amp)
    videos = rebase(fs.videos.iloc[rows])
    return float(score_tcas(res.cas, res.scores, videos, fs.classes, fs.annotations, tiou).average_map)


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
    select: Selection | None = None,
):
    """Train (resuming from the plan's scratch checkpoint when one exists); returns the trainer,
    the step log and the scratch directory ``<workdir>/.work/<artifact id>/``. With ``select``, the
    trainer ends holding the selected iteration's weights (:class:`Selection`).

    Under torchrun rank 0 decides whether to resume (every rank then loads the same checkpoint),
    keeps the step log, shows the progress bar and scores the held-out videos; the trainer saves
    checkpoints on rank 0 only."""

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
    if select is None:
        with training_progress(cfg.iterations, trainer.step, show=ctx.is_main) as bar_step:
            trainer.train()
        return trainer, steps, work

    if select.every < 1 or len(select.val_rows) == 0:
        raise InputError(
            "--select-every needs held-out training videos and a positive period",
            "train the baseline with --holdout 0.2 (train-dcc uses its baseline's held-out videos)",
        )
    sel_path, best_path = work / "selection.json", work / "best.pt"
    if trainer.step > 0 and distributed.on_main(sel_path.exists):  # resumed: the curve so far
        select.load(distributed.on_main(lambda: json.loads(sel_path.read_text())))

    def score(step: int) -> None:
        value = heldout_map(trainer.model, fs, select.val_rows, cfg, trainer.device, select.tiou)
        select.curve.append((step, value))
        if value > select.best_map:
            select.best_step, select.best_map = step, value
            atomic_write(best_path, lambda f: torch.save(trainer.model.state_dict(), f))
        atomic_write_bytes(sel_path, json.dumps(select.to_dict()).encode())

    if select.score_start and trainer.step == 0 and ctx.is_main and not select.curve:
        score(0)  # the start is a candidate: a run never ends below the model it started from
    due = trainer.step > 0 and (trainer.step % select.every == 0 or trainer.step == cfg.iterations)
    if ctx.is_main and due and not any(s == trainer.step for s, _ in select.curve):
        score(trainer.step)  # resumed from a checkpoint saved before its scoring was recorded
    with training_progress(cfg.iterations, trainer.step, show=ctx.is_main) as bar_step:
        while trainer.step < cfg.iterations:
            target = min(cfg.iterations, (trainer.step // select.every + 1) * select.every)
            trainer.train(until=target)
            if ctx.is_main and not any(s == trainer.step for s, _ in select.curve):
                score(trainer.step)
    if ctx.is_main and select.best_step is not None and select.best_step != trainer.step:
        trainer.model.load_state_dict(torch.load(best_path, map_location=trainer.device, weights_only=True))
    best = distributed.broadcast_object((select.best_step, select.best_map, select.curve))
    select.best_step, select.best_map, select.curve = best[0], best[1], [tuple(x) for x in best[2]]
    log(
        f"selected iteration {select.best_step} of {cfg.iterations} on {len(select.val_rows)} held-out videos "
        f"(avg mAP {100 * select.best_map:.2f})"
    )
    if select.kept_start:
        later = max((m for s, m in select.curve if s > 0), default=float("nan"))
        log(
            f"warning: no iteration scored above the start on the held-out videos (start "
            f"{100 * select.best_map:.2f}, best later {100 * later:.2f} avg mAP): the published model is the "
            "start's weights"
        )
    return trainer, steps, work


def world_summary(summary: dict) -> dict:
    """``summary`` plus the number of processes, when there were several (one-process manifests
    stay as they were)."""
    world = distributed.current().world
    return {**summary, "world_size": world} if world > 1 else summary


def plan_run(
    store: Store, stage: str, params: dict, key: dict, inputs: dict[str, Artifact], seed: int
) -> tuple[Plan, Plan]:
    """The ``model`` and ``tcas`` plans of a training stage's run (the T-CAS names the model in
    its lineage)."""
    common = {"inputs": inputs, "seed": seed, "key_params": key}
    model_plan = store.plan("model", stage, params, lineage={"model": "self"}, **common)
    tcas_plan = store.plan("tcas", stage, params, lineage={"model": model_plan.id}, **common)
    return model_plan, tcas_plan


@dataclass
class TrainingRun:
    """One run of a training stage (``baseline``, ``train-dcc``): its two plans, what it trains on
    and how the training length is chosen (``select_every`` > 0: on the ``val_rows`` held-out
    videos, :class:`Selection`, the start included with ``score_start``)."""

    store: Store
    model_plan: Plan
    tcas_plan: Plan
    fs: FeatureSet
    cfg: TrainConfig
    train_rows: np.ndarray
    val_rows: np.ndarray
    select_every: int = 0
    score_start: bool = False  # the starting weights are a selection candidate (train-dcc from a model)

    def built(self, log, why: str = "up to date (same inputs, parameters and code)"):
        """The run's two artifacts if both exist (the stage then has nothing to do); decided by rank 0."""

        def find() -> tuple[Artifact, Artifact] | None:
            model, tcas = self.store.existing(self.model_plan), self.store.existing(self.tcas_plan)
            if model is None or tcas is None:
                return None
            log(f"{model.id} and {tcas.id} are {why}: skipped; --force redoes them")
            return model, tcas

        return distributed.on_main(find)

    def train_and_publish(
        self, resume: bool, force: bool, log, summary: Callable[[], dict], **hooks
    ) -> tuple[Artifact, Artifact]:
        """Under the store's lock for this run: skip it if another process just built it, else
        train (resuming; ``hooks``: :func:`run_training`'s ``trainer_kwargs``, ``before_train``,
        ``after_resume``) and publish the ``model`` and ``tcas`` artifacts; ``summary()`` adds to the
        model's summary once training is done."""
        with distributed.main_only(lambda: self.store.lock(f"run-{self.model_plan.id}")):
            if not force and (done := self.built(log, "just built by another process")):
                return done
            select = (
                Selection(self.select_every, self.val_rows, score_start=self.score_start)
                if self.select_every
                else None
            )
            trainer, steps, work = run_training(
                self.store,
                self.model_plan,
                self.fs,
                self.cfg,
                self.train_rows,
                resume,
                log,
                select=select,
                **hooks,
            )
            device = distributed.resolve_device(self.cfg.device)
            return distributed.on_main(
                lambda: _publish(self, trainer, steps, work, device, log, world_summary(summary()), select)
            )


def _publish(
    run: TrainingRun,
    trainer,
    steps: StepLog,
    work: Path,
    device,
    log,
    summary_extra: dict,
    select: Selection | None,
) -> tuple[Artifact, Artifact]:
    """Publish a finished training run as its ``model`` artifact (checkpoint, training log,
    training-snippet embeddings) and its ``tcas`` artifact (with the inside/outside sanity figure);
    shared by ``baseline`` and ``train-dcc``."""
    from wtalcli.data.schema import TCAS
    from wtalcli.evaluation.diagnostics import inside_outside

    store, fs, cfg, model = run.store, run.fs, run.cfg, trainer.model

    def write_model(tmp: Path) -> dict:
        if select is None:
            shutil.copyfile(work / "checkpoint.pt", tmp / "checkpoint.pt")
        else:  # the trainer's last state, with the selected iteration's weights as the model
            state = trainer.state_dict()
            state["model"] = model.state_dict()
            state["selected"] = {"step": select.best_step, "curve": [list(x) for x in select.curve]}
            save_checkpoint(state, tmp / "checkpoint.pt")
        steps.frame().to_parquet(tmp / "train_log.parquet")
        summary = export_embeddings(model, fs, cfg, device, tmp, run.train_rows)
        last = steps.rows[-1] if steps.rows else {}
        summary.update({"iterations": trainer.step, "final_loss": last.get("total"), **summary_extra})
        summary["numerics"] = machine_numerics(device)
        if select is not None:
            summary["selection"] = select.summary()
        return summary

    def write_tcas_art(tmp: Path) -> dict:
        summary = export_tcas(model, fs, cfg, device, tmp, run.train_rows, run.val_rows)
        t = TCAS(tmp)
        summary["sanity_test"] = inside_outside(t, t.cas, fs.annotations, fs.classes, "test")
        return summary

    out = (
        build_or_skip(store, run.model_plan, True, log, write_model),
        build_or_skip(store, run.tcas_plan, True, log, write_tcas_art),
    )
    shutil.rmtree(work, ignore_errors=True)  # under the caller's lock: a waiting run may resume from it
    return out
