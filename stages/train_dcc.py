"""``wtal train-dcc``: BaS-Net + Denoised Cross-Video Contrast (method.md 3.3, defaults of section 6).

Starts from a baseline model (or from scratch), reads the pseudo-label and confidence artifacts
of that model, and adds ``beta * L_dcc`` to the BaS-Net loss.  With ``refresh_every > 0`` the
pseudo-labels and confidence maps are recomputed from the current model every that many
iterations by calling the ``pseudolabel`` and ``denoise`` stage functions; each round is written
as artifacts (``tcas``, ``embeddings``, ``pseudolabels``, ``confidence``, tagged ``round N``).
Writes the same ``model`` and ``tcas`` artifacts as ``baseline``.

Under ``torchrun`` (``docs/distributed.md``): each rank's region features are all-gathered, so every
rank computes the contrast of the whole global batch (against the whole batch and the bank) but
differentiates it only through its own regions, and updates its memory bank with the same gathered
regions in the same order, so the banks stay identical. Rank 0 fills the initial bank and
broadcasts it, runs the refresh rounds (writing their artifacts) and broadcasts the new ids.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from stages.denoise import DenoiseParams, denoise
from stages.pseudolabel import pseudolabel
from wtalcli.core import distributed
from wtalcli.core.console import log as _log
from wtalcli.core.errors import InputError, MismatchError
from wtalcli.core.store import Artifact, Store, build_or_skip
from wtalcli.data.schema import FeatureSet, load_npy, read_parquet, rebase, write_tcas
from wtalcli.dcc.contrast import (
    SCOPES,
    ProjectionHead,
    RegionBank,
    beta_at,
    dcc_loss,
    gather_regions,
    region_features,
)
from wtalcli.model.runner import (
    already_built,
    export_embeddings,
    publish,
    quiet,
    run_training,
    split_rows,
    world_summary,
)


@dataclass
class DCCParams:
    iterations: int | None = None  # default: the baseline's
    init: str = "baseline"  # baseline | scratch
    scope: str = "bank"  # video | batch | bank
    denoise: bool = True  # False: S = 1 (DCC without denoising)
    regions: int = 5
    tau: float = 0.1
    proj_dim: int = 512
    beta_start: float = 0.1
    beta_end: float = 1.0
    beta_shape: str = "exp"  # constant | linear | exp
    momentum: float = 0.0  # memory-bank update: 0 overwrites
    refresh_every: int = -1  # -1: once per pass over the training videos (capped by max_rounds); 0: never
    max_rounds: int = 10  # with refresh_every=-1: at most this many refresh rounds per run
    clusters: int = 64  # K of the refresh rounds' denoise
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    checkpoint_every: int = 100

    def validate(self) -> DCCParams:
        if self.scope not in SCOPES:
            raise InputError(f"--contrast-scope {self.scope!r} is unknown", f"use one of {', '.join(SCOPES)}")
        if self.init not in ("baseline", "scratch"):
            raise InputError(f"--init {self.init!r} is unknown", "use baseline or scratch")
        if self.regions < 1 or self.proj_dim < 1 or self.clusters < 1:
            raise InputError(
                "--regions, --proj-dim and --clusters must be >= 1", "e.g. the defaults 5, 512, 64"
            )
        if not self.tau > 0:
            raise InputError(f"--tau {self.tau} must be > 0", "e.g. --tau 0.1")
        try:
            beta_at(0, 10, self.beta_start, self.beta_end, self.beta_shape)  # raises on a bad schedule
        except ValueError as exc:
            raise InputError(
                f"bad beta schedule: {exc}", "use --beta-shape constant, linear or exp (exp needs beta > 0)"
            ) from None
        return self


def write_round_tcas(tmp, fs: FeatureSet, train_rows: np.ndarray, outputs: dict) -> dict:
    """A refresh round's T-CAS: the training videos' CAS computed with the round's embeddings."""
    res = outputs["result"]
    videos = rebase(fs.videos.iloc[train_rows])
    write_tcas(tmp, videos, res.cas, res.scores, fs.classes)
    return {"videos": int(len(videos)), "snippets": int(len(res.cas))}


class DCCState:
    """What DCC adds to a checkpoint: the memory bank and the refresh round in use."""

    def __init__(self, bank: RegionBank):
        self.bank = bank
        self.round = 0
        self.sources: dict[str, str] = {}  # pseudolabels / confidence artifact ids in use

    def state_dict(self) -> dict:
        return {"bank": self.bank.state_dict(), "round": self.round, "sources": dict(self.sources)}

    def load_state_dict(self, state: dict) -> None:
        self.bank.load_state_dict(state["bank"])
        self.round = int(state["round"])
        self.sources = dict(state["sources"])


class Targets:
    """Pseudo-labels and confidence of the training snippets, gathered at a batch's samples."""

    def __init__(self, store: Store, pl_id: str, conf_id: str | None, video_ids: list[str]):
        pl = store.get(store.root / pl_id)
        videos = read_parquet(pl.path / "videos.parquet", "pseudo-label videos table")
        if list(videos["video_id"]) != video_ids:
            raise MismatchError(
                f"{pl.id} covers other training videos than this run",
                "make the pseudo-labels from this model",
            )
        self.offsets = videos["offset"].to_numpy(np.int64)
        self.labels = np.asarray(load_npy(pl.path / "labels.npy", "pseudo-labels", mmap=False))
        self.conf = None
        if conf_id is not None:
            conf = store.get(store.root / conf_id)
            self.conf = np.asarray(load_npy(conf.path / "confidence.npy", "confidence map", mmap=False))
            if self.conf.shape != self.labels.shape:
                raise MismatchError(f"{conf.id} and {pl.id} differ in shape", "rerun wtal denoise")

    def gather(
        self, positions: np.ndarray, snippets: np.ndarray, device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.offsets[positions][:, None] + snippets  # (B, T) rows of the training-snippet arrays
        a = torch.from_numpy(self.labels[rows]).to(device)
        s = (
            torch.ones(a.shape, device=device)
            if self.conf is None
            else torch.from_numpy(self.conf[rows].astype(np.float32)).to(device)
        )
        return a, s


def _resolve_inputs(
    store: Store, model: str | None, pseudolabels: str | None, confidence: str | None, need_conf: bool, log
):
    base = store.resolve("model", model, log)
    lineage = {"model": base.id}
    pl = store.resolve("pseudolabels", pseudolabels, log, lineage=lineage)
    if not need_conf:
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
    from wtalcli.model.config import TrainConfig
    from wtalcli.model.trainer import read_checkpoint

    p = (params or DCCParams()).validate()
    ctx = distributed.setup(p.device)
    if not ctx.is_main:
        log = quiet
    base, pl_art, conf_art = distributed.on_main(
        lambda: _resolve_inputs(store, model, pseudolabels, confidence, p.denoise, log)
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
    if p.refresh_every >= 0:
        refresh = p.refresh_every
    else:  # once per pass over the training videos, but no more than max_rounds rounds
        per_pass = math.ceil(len(train_rows) / cfg.batch_size)
        refresh = max(per_pass, math.ceil(cfg.iterations / max(1, p.max_rounds + 1)))
    d = asdict(p)
    for k in ("device", "num_workers", "checkpoint_every"):
        d.pop(k)
    d["refresh_every"] = refresh
    skip = ("device", "num_workers", "checkpoint_every", "compile")
    train = {k: v for k, v in cfg.to_dict().items() if k not in skip}
    mparams = {"dcc": d, "train": train, "holdout": holdout, "holdout_seed": holdout_seed}
    inputs = {"base_model": base, "pseudolabels": pl_art, "features": fs_art}
    if conf_art is not None:
        inputs["confidence"] = conf_art
    model_plan = store.plan("model", "train-dcc", mparams, inputs, seed=p.seed, lineage={"model": "self"})
    tcas_plan = store.plan(
        "tcas", "train-dcc", mparams, inputs, seed=p.seed, lineage={"model": model_plan.id}
    )
    if not force and (done := distributed.on_main(lambda: already_built(store, model_plan, tcas_plan, log))):
        return done
    device = distributed.resolve_device(p.device)
    video_ids = [str(v) for v in fs.videos["video_id"].to_numpy()[train_rows]]
    labels = fs.label_matrix(train_rows)
    bank = RegionBank(labels, p.regions, p.proj_dim, p.momentum)
    state = DCCState(bank)
    with torch.random.fork_rng(devices=[]):  # the head's initial weights follow --seed, not the global RNG
        torch.random.default_generator.manual_seed(
            int(np.random.SeedSequence([p.seed, 0x4EAD]).generate_state(1)[0])
        )
        head = ProjectionHead(cfg.hidden, p.proj_dim)
    targets: dict[str, Targets] = {}

    def load_targets(pl_id: str, conf_id: str | None) -> None:
        targets["now"] = Targets(store, pl_id, conf_id, video_ids)
        state.sources = {"pseudolabels": pl_id, "confidence": conf_id or ""}

    load_targets(pl_art.id, conf_art.id if conf_art is not None else None)
    trainer_ref: dict = {}

    def refresh_round(step: int) -> None:
        """Recompute pseudo-labels and confidence from the current model (numbered artifacts); on
        rank 0 only, the others wait for the new ids (and take rank 0's RNG state, in case the
        round drew from it)."""
        state.round += 1
        new_pl, new_conf = distributed.on_main(lambda: build_round(step))
        distributed.sync_rng(device)
        load_targets(new_pl, new_conf)

    def build_round(step: int) -> tuple[str, str]:
        trainer = trainer_ref["t"]
        tag = f"round {state.round}"
        lineage = {"features": fs_art.id, "model": f"{model_plan.id}@{state.round}"}
        rparams = {"round": state.round, "step": step, "run": model_plan.id}
        tplan = store.plan("tcas", "train-dcc", rparams, {"features": fs_art}, seed=p.seed, lineage=lineage)
        eplan = store.plan(
            "embeddings", "train-dcc", rparams, {"features": fs_art}, seed=p.seed, lineage=lineage
        )
        was = trainer.model.training
        # one inference pass over the training videos gives both the embeddings and the T-CAS the
        # pseudo-labels need (a round's T-CAS covers the training videos only)
        outputs: dict = {}
        e_art = build_or_skip(
            store,
            eplan,
            True,
            log,
            lambda tmp: export_embeddings(trainer.model, fs, cfg, device, tmp, train_rows, outputs),
        )
        t_art = build_or_skip(
            store,
            tplan,
            True,
            log,
            lambda tmp: write_round_tcas(tmp, fs, train_rows, outputs),
        )
        trainer.model.train(was)
        new_pl = pseudolabel(store, t_art.id, force=True, log=log, tag=tag)
        new_conf = denoise(
            store,
            new_pl.id,
            e_art.id,
            DenoiseParams(clusters=p.clusters, seed=p.seed + state.round, device=p.device),
            force=True,
            log=log,
            tag=tag,
        )
        return new_pl.id, new_conf.id

    def extra_loss(step: int, batch, out):
        if refresh and step > 0 and step % refresh == 0 and state.round < step // refresh:
            refresh_round(step)
        a, s = targets["now"].gather(batch.positions, batch.snippets, device)
        x = head(out.h_base)  # (B, T, P)
        regions = region_features(x, a, s, batch.y, torch.from_numpy(batch.positions).to(device), p.regions)
        if ctx.active:
            # every rank computes the loss of the whole global batch but differentiates it through
            # its own regions only; DDP averages the ranks' gradients, hence the factor world
            regions = gather_regions(replace(regions, feat=distributed.scale_grad(regions.feat, ctx.world)))
        loss, terms = dcc_loss(regions, bank, p.scope, p.tau)
        bank.update(regions)
        beta = beta_at(step, cfg.iterations, p.beta_start, p.beta_end, p.beta_shape)
        return beta * loss, {"dcc": terms["dcc"], "beta": beta, "anchors": terms["anchors"]}

    def before_train(trainer) -> None:
        trainer_ref["t"] = trainer
        if p.init == "baseline":
            trainer.model.load_state_dict(ckpt["model"])
        distributed.on_main(lambda: fill_bank(trainer.model))
        distributed.broadcast_(bank.feat, bank.valid)  # one bank, whatever each GPU's rounding

    def after_resume(trainer) -> None:  # the bank came back with the checkpoint; so did the round
        if state.sources:
            load_targets(state.sources["pseudolabels"], state.sources["confidence"] or None)

    @torch.no_grad()
    def fill_bank(model) -> None:
        """Every training video's region features from the starting model, so the bank spans the
        whole training set from the first iteration."""
        from wtalcli.model.sampling import batch_eval_indices

        was = model.training
        model.eval()
        head.eval()
        lengths = fs.videos["n_snippets"].to_numpy(np.int64)[train_rows]
        src = fs.videos["offset"].to_numpy(np.int64)[train_rows]
        for start in range(0, len(train_rows), cfg.batch_size):
            pos = np.arange(start, min(start + cfg.batch_size, len(train_rows)))
            snip = batch_eval_indices(lengths[pos], cfg.num_segments)
            xb = torch.from_numpy(np.asarray(fs.features[(src[pos][:, None] + snip).reshape(-1)], np.float32))
            xb = xb.view(len(pos), cfg.num_segments, -1).to(device)
            out = model(xb)
            a, s = targets["now"].gather(pos, snip, device)
            y = torch.from_numpy(labels[pos]).to(device)
            bank.update(
                region_features(head(out.h_base), a, s, y, torch.from_numpy(pos).to(device), p.regions)
            )
        model.train(was)
        head.train(was)

    log(
        f"training DCC ({cfg.iterations} iterations, scope {p.scope}, M={p.regions}, tau={p.tau}, "
        f"beta {p.beta_start}->{p.beta_end} {p.beta_shape}, denoise {'on' if p.denoise else 'off'}, "
        f"refresh every {refresh or 'never'}) from {base.id if p.init == 'baseline' else 'scratch'}"
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
            trainer_kwargs={"extra_loss": extra_loss, "extra_modules": {"head": head}, "extra_state": state},
            before_train=before_train,
            after_resume=after_resume,
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
                world_summary({"rounds": state.round}),
            )
        )
    return model_art, tcas_art
