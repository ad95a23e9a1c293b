"""DCC as a training objective: its parameters, the snippet targets it reads, the loss it adds to
BaS-Net's, its memory banks, its refresh rounds and its diagnostics. No artifact I/O:
:mod:`wtalcli.dcc.training` plugs :class:`DCC` into the trainer and writes the refresh rounds;
tests drive it on arrays.

One training step (:meth:`DCC.extra_loss`): gather the pseudo-labels ``A`` and confidence ``S`` of
the batch's sampled snippets; project the chosen branch's embedding (``head``); pool denoised region
features (``pooling``, ``background``); InfoNCE against the batch and the bank (``scope``,
``tau``); update the bank; return ``beta(step) * L_dcc``. Every ``refresh_every`` steps the targets
are recomputed from the current model (the ``refresh`` callback: inference over the training
videos, mean-threshold pseudo-labels, k-means confidence, written as artifacts by
:mod:`wtalcli.dcc.training`) with the *same* pseudo-label and denoise parameters as the targets the
run started from.

Diagnostics: ``targets="oracle"`` replaces ``A`` by the ground-truth snippet labels of the
training videos and ``S`` by 1 (a bound on what the contrast itself can do; never a method);
``grad_every`` measures, on the CAS layers both losses share, ``beta * |grad L_dcc| / |grad L_base|``
and the cosine between the two gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from wtalcli.core import distributed
from wtalcli.core.errors import InputError
from wtalcli.data.schema import FeatureSet, label_matrix
from wtalcli.dcc.contrast import (
    ProjectionHead,
    RegionBank,
    Regions,
    dcc_loss,
    gather_regions,
    region_features,
)
from wtalcli.dcc.schedule import beta_at
from wtalcli.dcc.train_params import DCCParams
from wtalcli.model.basnet import BaSNet, BaSOutput
from wtalcli.model.losses import basnet_loss
from wtalcli.model.sampling import batch_eval_indices

# ------------------------------------------------------------------------------ targets


class Targets:
    """Pseudo-labels ``A`` (N, C+1) and confidence ``S`` (same shape, or None for S = 1) of the
    training snippets, rows of video ``v`` starting at ``offsets[v]`` (training-row order)."""

    def __init__(self, labels: np.ndarray, conf: np.ndarray | None, offsets: np.ndarray):
        self.labels = np.asarray(labels, dtype=np.uint8)
        self.conf = None if conf is None else np.asarray(conf, dtype=np.float32)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        if self.conf is not None and self.conf.shape != self.labels.shape:
            raise InputError(
                f"confidence map {self.conf.shape} and pseudo-labels {self.labels.shape} differ in shape",
                "rerun wtal denoise on these pseudo-labels",
            )

    def gather(self, positions: np.ndarray, snippets: np.ndarray, device) -> tuple[Tensor, Tensor]:
        """``(B, T, C+1)`` A and S at the sampled snippets of the batch's training positions."""
        rows = self.offsets[positions][:, None] + snippets  # (B, T) rows of the training-snippet arrays
        a = torch.from_numpy(self.labels[rows]).to(device)
        if self.conf is None:
            return a, torch.ones(a.shape, device=device)
        return a, torch.from_numpy(self.conf[rows]).to(device)


def training_offsets(fs: FeatureSet, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and lengths of the ``rows`` videos in an array holding just them, in order."""
    n = fs.videos["n_snippets"].to_numpy(np.int64)[rows]
    return np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64), n


def oracle_targets(fs: FeatureSet, rows: np.ndarray) -> Targets:
    """The ground-truth snippet labels of the training videos as targets, S = 1 (a diagnostic)."""
    from wtalcli.data.schema import SnippetTable, rebase
    from wtalcli.evaluation.diagnostics import snippet_truth

    if len(fs.annotations) == 0:
        raise InputError(
            "--targets oracle needs annotations", "use a feature set with ground truth", path=fs.path
        )
    table = SnippetTable(rebase(fs.videos.iloc[rows]))
    truth = snippet_truth(table, fs.annotations, fs.classes)  # (N, C)
    y = label_matrix(table.videos["labels"], fs.classes, bool)  # (V, C)
    off, n = training_offsets(fs, rows)
    truth &= np.repeat(y, n, axis=0)  # a video's ground truth of a class it is not labelled with is unused
    labels = np.concatenate([truth, ~truth.any(1, keepdims=True)], axis=1).astype(np.uint8)
    return Targets(labels, None, off)


# ------------------------------------------------------------------------------ the objective


class DCC:
    """The DCC hooks of :class:`wtalcli.model.trainer.Trainer`: ``extra_loss``, ``modules`` (the
    projection head) and ``state`` (the memory banks, the refresh round, the targets' sources).

    ``refresh(step, model)`` returns the next round's :class:`Targets` (the caller decides how they
    are computed and whether they are written); ``None`` disables refresh rounds.
    """

    def __init__(
        self,
        p: DCCParams,
        labels: np.ndarray,  # (V, C) multi-hot of the training videos, in training-row order
        hidden: int,
        targets: Targets,
        iterations: int,
        refresh_every: int = 0,
        refresh: Callable[[int, BaSNet], Targets] | None = None,
        attn_l1: float = 1e-4,
    ):
        self.p, self.labels, self.iterations = p, np.asarray(labels), iterations
        self.refresh_every = refresh_every if refresh is not None else 0
        self.refresh = refresh
        self.targets = targets
        self.attn_l1 = attn_l1
        with torch.random.fork_rng(devices=[]):  # the head's weights follow the seed, not the global RNG
            torch.random.default_generator.manual_seed(
                int(np.random.SeedSequence([p.seed, 0x4EAD]).generate_state(1)[0])
            )
            self.head = ProjectionHead(hidden, p.proj_dim, p.head)
        unit = p.pooling == "weighted"
        self.banks = {
            b: RegionBank(self.labels, p.regions, self.head.out_dim, p.momentum, unit) for b in p.branches()
        }
        self.round = 0
        # the schedule is 0 at every step (the same-length control): see extra_loss
        self.weightless = p.beta_end == 0 and (p.beta_shape == "constant" or p.beta_start == 0)
        self.sources: dict[str, str] = {}  # e.g. the pseudo-label / confidence artifact ids in use
        self.model: BaSNet | None = None  # set by attach()

    # -- trainer hooks --------------------------------------------------------------------

    @property
    def modules(self) -> dict[str, nn.Module]:
        return {"head": self.head}

    def attach(self, model: BaSNet) -> None:
        self.model = model

    def state_dict(self) -> dict:
        return {
            "banks": {b: bank.state_dict() for b, bank in self.banks.items()},
            "round": self.round,
            "sources": dict(self.sources),
        }

    def load_state_dict(self, state: dict) -> None:
        for b, bank in self.banks.items():
            bank.load_state_dict(state["banks"][b])
        self.round = int(state["round"])
        self.sources = dict(state["sources"])

    def due(self, step: int) -> bool:
        """A refresh round is due at ``step`` (steps ``k * refresh_every``, k >= 1, each once)."""
        r = self.refresh_every
        return bool(r) and step > 0 and step % r == 0 and self.round < step // r

    def extra_loss(self, step: int, batch, out: BaSOutput) -> tuple[Tensor, dict[str, float]]:
        """``beta(step) * L_dcc`` of the batch, and the logged terms."""
        if self.due(step):
            assert self.model is not None and self.refresh is not None
            self.round += 1
            self.targets = self.refresh(step, self.model)
        beta = beta_at(step, self.iterations, self.p.beta_start, self.p.beta_end, self.p.beta_shape)
        diagnostic = bool(self.p.grad_every) and step % self.p.grad_every == 0
        if self.weightless and not diagnostic and not distributed.current().active:
            # a contrast weighted 0 throughout (the same-length control) cannot change the model:
            # it is computed on the diagnostic steps only (under torchrun always, as DDP expects
            # every parameter of the joint module to take part in each step)
            return out.h_base.new_zeros(()), {"beta": 0.0}
        device = out.h_base.device
        a, s = self.targets.gather(batch.positions, batch.snippets, device)
        positions = torch.from_numpy(batch.positions).to(device)
        losses, uniform, anchors = [], [], 0.0
        for branch, bank in self.banks.items():
            h = out.h_base if branch == "base" else out.h_supp  # (B, T, H)
            regions = self.regions(h, a, s, batch.y, positions)
            loss, terms = dcc_loss(regions, bank, self.p.scope, self.p.tau)
            bank.update(regions)
            losses.append(loss)
            uniform.append(terms["dcc_uniform"])
            anchors += terms["anchors"]
        loss = torch.stack(losses).mean()
        terms = {
            "dcc": float(loss.detach()),
            "dcc_uniform": float(np.mean(uniform)),  # the loss with every logit equal (dcc_loss)
            "beta": beta,
            "anchors": anchors,
        }
        if diagnostic:
            terms.update(self.gradient_share(out, batch.y, loss, beta))
        return beta * loss, terms

    def regions(self, h: Tensor, a: Tensor, s: Tensor, y: Tensor, positions: Tensor) -> Regions:
        """The batch's region features of one branch's embedding ``h`` (B, T, H); under torchrun,
        every rank's regions (this rank's keep their graph, scaled so that DDP's average of the
        ranks' gradients is the gradient of the global batch)."""
        regions = region_features(
            self.head(h), a, s, y, positions, self.p.regions, self.p.pooling, self.p.background
        )
        ctx = distributed.current()
        if ctx.active:
            from dataclasses import replace

            regions = gather_regions(replace(regions, feat=distributed.scale_grad(regions.feat, ctx.world)))
        return regions

    def gradient_share(self, out: BaSOutput, y: Tensor, loss: Tensor, beta: float) -> dict[str, float]:
        """``beta |g_dcc| / |g_base|`` and ``cos(g_dcc, g_base)`` on the CAS layers both losses
        share (the graph is kept for the step's own backward pass)."""
        assert self.model is not None
        shared = [q for m in (self.model.cas_1, self.model.cas_2) for q in m.parameters()]
        base, _ = basnet_loss(out, y, self.attn_l1)
        g_base = torch.autograd.grad(base, shared, retain_graph=True, allow_unused=True)
        g_dcc = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
        gb = torch.cat(
            [
                (g if g is not None else torch.zeros_like(q)).reshape(-1)
                for g, q in zip(g_base, shared, strict=True)
            ]
        )
        gd = torch.cat(
            [
                (g if g is not None else torch.zeros_like(q)).reshape(-1)
                for g, q in zip(g_dcc, shared, strict=True)
            ]
        )
        nb, nd = float(gb.norm()), float(gd.norm())
        cos = float(gb @ gd) / (nb * nd) if nb > 0 and nd > 0 else float("nan")
        return {"grad_ratio": beta * nd / nb if nb > 0 else float("nan"), "grad_cos": cos}

    @torch.no_grad()
    def fill_banks(
        self, model: BaSNet, fs: FeatureSet, rows: np.ndarray, num_segments: int, batch: int, device
    ) -> None:
        """Every training video's region features from the starting model, so the banks span the
        whole training set from the first iteration (test sampling, eval mode)."""
        was, was_head = model.training, self.head.training
        model.eval()
        self.head.eval()
        lengths = fs.videos["n_snippets"].to_numpy(np.int64)[rows]
        src = fs.videos["offset"].to_numpy(np.int64)[rows]
        try:
            for start in range(0, len(rows), batch):
                pos = np.arange(start, min(start + batch, len(rows)))
                snip = batch_eval_indices(lengths[pos], num_segments)
                xb = torch.from_numpy(
                    np.asarray(fs.features[(src[pos][:, None] + snip).reshape(-1)], np.float32)
                )
                out = model(xb.view(len(pos), num_segments, -1).to(device))
                a, s = self.targets.gather(pos, snip, device)
                y = torch.from_numpy(self.labels[pos].astype(np.float32)).to(device)
                p_t = torch.from_numpy(pos).to(device)
                for branch, bank in self.banks.items():
                    h = out.h_base if branch == "base" else out.h_supp
                    bank.update(
                        region_features(
                            self.head(h), a, s, y, p_t, self.p.regions, self.p.pooling, self.p.background
                        )
                    )
        finally:
            model.train(was)
            self.head.train(was_head)

    def broadcast_banks(self) -> None:
        """Rank 0's banks on every rank (one bank, whatever each GPU's rounding)."""
        for bank in self.banks.values():
            distributed.broadcast_(bank.feat, bank.valid)
