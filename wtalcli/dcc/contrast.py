"""Denoised Cross-Video Contrast: projection head, denoised region features, the region memory
bank, contrast pairs, and the InfoNCE loss (``docs/method.md`` §6; the contrast weight's schedule is
:mod:`wtalcli.dcc.schedule`).

Shapes: B videos in a batch, T sampled snippets, H embedding width, P projection width (``--proj-dim``),
C action classes (pseudo-label/confidence channels are C+1, the last one background, which the
contrast does not use), M regions per video.

Region features.  For class c of a video, the denoised action feature of snippet t is
``F[t] = A[c,t] S[c,t] X[t]`` and the background feature ``F_bg[t] = (1 - A[c,t]) S[c,t] X[t]``
(``background="video"`` also drops the snippets pseudo-labelled as one of the video's other
labelled classes from the background). A region pools them over its snippets, in one of two ways
(``pooling``):

- ``mean``: the plain average of ``F`` over the region's snippets, zeros included, as the paper
  writes it; S and the share of confident snippets scale the region feature (a region with one
  confident action snippet is short), and the dot products of the loss see that scale;
- ``weighted``: ``sum_t w_t X_t / sum_t w_t`` (weights ``A S`` or ``(1-A) S``), then
  L2-normalised: a cosine similarity; S cancels wherever it is constant inside a region.

Either way a region whose weight is 0 is skipped. Only classes in the video's label are used.

Memory bank.  One slot per (training video, labelled class, region, action|background), so the
bank spans the whole training set.  A video's slots are overwritten (or moved by momentum) with
its detached region features whenever it passes through training.

Loss.  For each action region ``r`` of class c in the batch: positives are the action regions of
class c of the same video (other regions) and of other videos; negatives are the background regions
of the same and other videos, and the action regions of other classes of other videos.
``L = -log(sum_pos exp(r.p/tau) / sum_{pos+neg} exp(r.n/tau))``, averaged over the anchors that
have at least one positive. Its uniform value, what ``L`` is when every logit is equal (features that say
nothing), is the mean over the same anchors of ``log((#pos + #neg) / #pos)``; the loss logs it
beside ``L`` (``dcc_uniform``), so a training log says how far below chance the contrast is.
``scope`` limits where pairs come from: ``video`` (same video only), ``batch`` (the mini-batch),
``bank`` (the batch plus the bank's slots of every other video).

Several processes (``torchrun``): :func:`gather_regions` collects every rank's regions in rank order,
which is the order one process lists them for the whole global batch (ranks hold consecutive
slices); the loss and the bank update then see the global batch, ``batch`` scope included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wtalcli.core import distributed
from wtalcli.dcc.params import BACKGROUNDS, HEADS, POOLINGS, SCOPES

ACT, BG = 0, 1


class ProjectionHead(nn.Module):
    """The projection X = g(h), L2-normalised per snippet (training only).

    ``linear``: one ``Linear(H, P)`` ("projected once more"); ``mlp``: ``Linear(H, P) - ReLU -
    Linear(P, P)``; ``none``: X = h itself (P = H), no parameters."""

    def __init__(self, in_dim: int, proj_dim: int, kind: str = "linear"):
        super().__init__()
        if kind not in HEADS:
            raise ValueError(f"head must be one of {HEADS}")
        self.kind = kind
        if kind == "linear":
            self.net: nn.Module = nn.Linear(in_dim, proj_dim)
        elif kind == "mlp":
            self.net = nn.Sequential(nn.Linear(in_dim, proj_dim), nn.ReLU(), nn.Linear(proj_dim, proj_dim))
        else:
            self.net = nn.Identity()
        self.out_dim = in_dim if kind == "none" else proj_dim

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # h: (B, T, H) -> (B, T, P), unit norm along P
        return F.normalize(self.net(h), dim=-1)


def region_matrix(t: int, m: int, device=None) -> torch.Tensor:
    """``(T, M)`` one-hot assignment of T snippets to M equal consecutive regions."""
    region = torch.div(torch.arange(t, device=device) * m, t, rounding_mode="floor")
    return F.one_hot(region, m).float()


@dataclass
class Regions:
    """Region features of a batch, restricted to each video's labelled classes.

    Flattened over (video, class, region, kind); ``feat`` keeps the autograd graph."""

    feat: torch.Tensor  # (R, P) unit-norm region features
    video: torch.Tensor  # (R,) training-video index (bank row space)
    cls: torch.Tensor  # (R,) class index
    region: torch.Tensor  # (R,) region index in [0, M)
    kind: torch.Tensor  # (R,) ACT or BG
    valid: torch.Tensor  # (R,) bool: the region had non-zero weight


def region_features(
    x: torch.Tensor,  # (B, T, P) projected snippet features
    pseudo: torch.Tensor,  # (B, T, C+1) pseudo-labels in {0, 1}
    conf: torch.Tensor,  # (B, T, C+1) confidence S in [0, 1] (ones to disable denoising)
    labels: torch.Tensor,  # (B, C) multi-hot video-level labels
    videos: torch.Tensor,  # (B,) training-video indices
    n_regions: int,
    pooling: str = "mean",
    background: str = "class",
) -> Regions:
    """Pooled region features of the labelled (video, class) pairs only, in (video, class, kind,
    region) order: the pooling works on L pairs (about one per video) rather than B x C."""
    if pooling not in POOLINGS or background not in BACKGROUNDS:
        raise ValueError(f"pooling must be one of {POOLINGS}, background one of {BACKGROUNDS}")
    t = x.shape[1]
    lab = labels.bool()
    bi, ci = lab.nonzero(as_tuple=True)  # (L,) labelled pairs, row-major (video, class)
    n = len(bi)
    a = pseudo.detach()[bi, :, ci].float()  # (L, T): constants of the loss
    s = conf.detach()[bi, :, ci].float()  # (L, T)
    not_act = 1.0 - a
    if background == "video":  # also not one of the video's other labelled classes
        other = pseudo.detach()[..., :-1].float() * lab[:, None, :]  # (B, T, C) labelled classes only
        others = other[bi].sum(-1) - a  # (L, T): labelled classes other than c marking the snippet
        not_act = not_act * (others <= 0)
    w = torch.stack([a * s, not_act * s], dim=1)  # (L, 2, T): action, background weights
    rm = region_matrix(t, n_regions, x.device)  # (T, M)
    wr = (w.unsqueeze(2) * rm.T).reshape(n, 2 * n_regions, t)  # (L, 2*M, T)
    sums = torch.bmm(wr, x[bi])  # (L, 2*M, P)
    mass = wr.sum(-1)  # (L, 2*M)
    if pooling == "weighted":
        feat = F.normalize(sums / mass.clamp_min(1e-12).unsqueeze(-1), dim=-1)  # (L, 2*M, P)
    else:  # the plain average over the region's snippets (zeros included)
        feat = sums / rm.sum(0).clamp_min(1.0).repeat(2)[None, :, None]  # (L, 2*M, P)
    dev = x.device
    return Regions(
        feat=feat.reshape(n * 2 * n_regions, -1),
        video=videos[bi].repeat_interleave(2 * n_regions),
        cls=ci.repeat_interleave(2 * n_regions),
        region=torch.arange(n_regions, device=dev).repeat(2 * n),
        kind=torch.tensor([ACT, BG], device=dev).repeat_interleave(n_regions).repeat(n),
        valid=mass.reshape(-1) > 0,
    )


def gather_regions(local: Regions) -> Regions:
    """The regions of every rank's slice of the global batch, in rank order (several processes).

    Only this rank's features keep their autograd graph; the other ranks' are detached copies.
    One process: ``local`` itself.
    """
    if not distributed.current().active:
        return local
    meta = torch.stack(
        [local.video, local.cls, local.region, local.kind, local.valid.long()], dim=1
    )  # (R, 5)
    meta = torch.cat(distributed.all_gather_rows(meta))  # (R_global, 5)
    return Regions(
        feat=torch.cat(distributed.all_gather_rows(local.feat)),  # (R_global, P)
        video=meta[:, 0],
        cls=meta[:, 1],
        region=meta[:, 2],
        kind=meta[:, 3],
        valid=meta[:, 4].bool(),
    )


class RegionBank:
    """Region features of every training video (detached), one slot per
    (video, labelled class, region, kind)."""

    def __init__(
        self, labels: np.ndarray, n_regions: int, dim: int, momentum: float = 0.0, unit: bool = True
    ):
        # labels: (V, C) multi-hot of the training videos, in bank row order; unit: the region
        # features are unit vectors (weighted pooling), so a momentum mix is renormalised
        v_idx, c_idx = np.nonzero(labels)
        self.n_videos, self.n_classes = labels.shape
        self.n_regions, self.dim, self.momentum, self.unit = n_regions, dim, float(momentum), unit
        n = len(v_idx)
        # slot order: (video, class) pairs x kind x region
        self.video = torch.from_numpy(np.repeat(v_idx, 2 * n_regions)).long()
        self.cls = torch.from_numpy(np.repeat(c_idx, 2 * n_regions)).long()
        self.kind = torch.tensor(np.tile(np.repeat([ACT, BG], n_regions), n)).long()
        self.region = torch.tensor(np.tile(np.arange(n_regions), 2 * n)).long()
        self.feat = torch.zeros(len(self.video), dim)
        self.valid = torch.zeros(len(self.video), dtype=torch.bool)
        pair = -np.ones(labels.shape, np.int64)
        pair[v_idx, c_idx] = np.arange(n)
        self._pair = torch.from_numpy(pair)
        self.class_onehot = F.one_hot(self.cls, self.n_classes).float()  # (slots, C)

    def __len__(self) -> int:
        return len(self.video)

    def slots(
        self, video: torch.Tensor, cls: torch.Tensor, kind: torch.Tensor, region: torch.Tensor
    ) -> torch.Tensor:
        pair = self._pair[video.cpu(), cls.cpu()]
        if (pair < 0).any():
            raise ValueError("region of a class outside the video's label")
        return pair * 2 * self.n_regions + kind.cpu() * self.n_regions + region.cpu()

    @torch.no_grad()
    def update(self, regions: Regions) -> None:
        """Overwrite (or, with momentum, move) the slots of the batch's videos."""
        slot = self.slots(regions.video, regions.cls, regions.kind, regions.region)
        new = regions.feat.detach().float().cpu()
        if self.momentum > 0:
            old_ok = self.valid[slot]
            mixed = self.momentum * self.feat[slot] + (1 - self.momentum) * new
            if self.unit:
                mixed = F.normalize(mixed, dim=-1)
            new = torch.where(old_ok.unsqueeze(-1), mixed, new)
        self.feat[slot] = new
        self.valid[slot] = regions.valid.cpu()

    def state_dict(self) -> dict:
        return {"feat": self.feat.clone(), "valid": self.valid.clone()}

    def load_state_dict(self, state: dict) -> None:
        if state["feat"].shape != self.feat.shape:
            raise ValueError(f"memory bank shape {tuple(state['feat'].shape)} != {tuple(self.feat.shape)}")
        self.feat.copy_(state["feat"])
        self.valid.copy_(state["valid"])


def pair_masks(
    a_video: torch.Tensor,
    a_cls: torch.Tensor,
    a_region: torch.Tensor,
    c_video: torch.Tensor,
    c_cls: torch.Tensor,
    c_region: torch.Tensor,
    c_kind: torch.Tensor,
    scope: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative masks ``(anchors, candidates)`` for action-region anchors."""
    same_video = a_video[:, None] == c_video[None, :]
    same_cls = a_cls[:, None] == c_cls[None, :]
    itself = same_video & same_cls & (a_region[:, None] == c_region[None, :]) & (c_kind[None, :] == ACT)
    act = (c_kind == ACT)[None, :]
    bg = (c_kind == BG)[None, :]
    pos = act & same_cls & ~itself
    neg = bg | (act & ~same_cls & ~same_video)
    if scope == "video":
        pos, neg = pos & same_video, neg & same_video
    return pos, neg


def dcc_loss(
    regions: Regions,
    bank: RegionBank | None,
    scope: str,
    tau: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """InfoNCE over action-region anchors of the batch at temperature ``tau``; returns
    ``(loss, terms)``. (``scope`` and ``tau`` have their defaults in :class:`DCCParams` only.)
    ``terms["dcc_uniform"]``: the loss's value with every logit equal, from the same anchors'
    candidate counts (the module docstring).

    The batch's candidates get explicit pair masks (:func:`pair_masks`). The bank's are never
    gathered: a usable bank slot (valid, of a video outside the batch) is always allowed, and a
    positive exactly when it is an action region of the anchor's class, so the anchor's sums over the
    bank are one product of its exponentiated logits with per-class indicator columns."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}")
    ok = regions.valid
    anchors = ok & (regions.kind == ACT)
    zero = regions.feat.sum() * 0.0
    if not anchors.any():
        return zero, {"dcc": 0.0, "dcc_uniform": 0.0, "anchors": 0.0, "positives": 0.0, "negatives": 0.0}
    a_video, a_cls = regions.video[anchors], regions.cls[anchors]
    pos, neg = pair_masks(
        a_video,
        a_cls,
        regions.region[anchors],
        regions.video[ok],
        regions.cls[ok],
        regions.region[ok],
        regions.kind[ok],
        scope,
    )  # (A, Rb) over the batch's valid regions
    n_pos, n_neg = pos.sum(1), neg.sum(1)  # (A,)
    slots = None
    if scope == "bank" and bank is not None:
        dev = regions.feat.device
        in_batch = torch.zeros(bank.n_videos, dtype=torch.bool)
        in_batch[regions.video.cpu()] = True
        use = bank.valid & ~in_batch[bank.video]  # (S,) usable slots
        act = (use & (bank.kind == ACT)).float()  # (S,) usable action slots
        # (S, C+1): column c marks the usable action slots of class c, the last every usable slot
        slots = torch.cat([bank.class_onehot * act[:, None], use.float()[:, None]], dim=1).to(dev)
        per_class = slots.sum(0).round().long()  # (C+1,) counts
        bank_pos = per_class[a_cls]  # (A,)
        n_pos, n_neg = n_pos + bank_pos, n_neg + per_class[-1] - bank_pos
    has_pos = n_pos > 0
    if not has_pos.any():
        return zero, {
            "dcc": 0.0,
            "dcc_uniform": 0.0,
            "anchors": 0.0,
            "positives": 0.0,
            "negatives": float(n_neg.sum()),
        }
    a = regions.feat[anchors][has_pos] / tau  # (A', P)
    pos, allowed, a_cls = pos[has_pos], (pos | neg)[has_pos], a_cls[has_pos]
    logits = a @ regions.feat[ok].T  # (A', Rb)
    shift = logits.detach().amax(1)  # every logit is finite, so this bounds them all
    bank_logits = None
    if slots is not None:
        # a copy: the bank is updated in place before this step's backward pass reads it
        bank_logits = a @ bank.feat.to(dev, a.dtype, copy=True).T  # (A', S)
        shift = torch.maximum(shift, bank_logits.detach().amax(1))
    e = torch.exp(logits - shift[:, None])  # (A', Rb), at most 1
    sum_all, sum_pos = (e * allowed).sum(1), (e * pos).sum(1)
    if bank_logits is not None:
        with torch.autocast(dev.type, enabled=False):  # sums over thousands of slots: float32
            sums = torch.exp(bank_logits.float() - shift[:, None].float()) @ slots  # (A', C+1)
        sum_pos = sum_pos + sums.gather(1, a_cls[:, None]).squeeze(1)
        sum_all = sum_all + sums[:, -1]
    if bool((sum_pos > 0).all()):
        per_anchor = sum_all.log() - sum_pos.log()
    else:  # positives that underflow after the shift (tau below ~0.02): the general form
        if bank_logits is not None:
            logits = torch.cat([logits, bank_logits], dim=1)
            s_use = slots[:, -1].bool()[None, :].expand(len(a_cls), -1)
            pos = torch.cat([pos, slots[:, :-1].T[a_cls].bool()], dim=1)
            allowed = torch.cat([allowed, s_use], dim=1)
        per_anchor = _info_nce(logits, pos, allowed)
    loss = per_anchor.mean()
    kept_pos, kept_neg = n_pos[has_pos].double(), n_neg[has_pos].double()
    uniform = ((kept_pos + kept_neg).log() - kept_pos.log()).mean()  # every logit equal
    return loss, {
        "dcc": float(loss.detach()),
        "dcc_uniform": float(uniform),
        "anchors": float(has_pos.sum()),
        "positives": float(n_pos[has_pos].float().mean()),
        "negatives": float(n_neg[has_pos].float().mean()),
    }


def _info_nce(logits: torch.Tensor, pos: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """``log sum_allowed exp(l) - log sum_pos exp(l)`` per row (``pos`` within ``allowed``).

    One exponential of the (A, N) logits, shifted by each row's largest allowed logit, serves both
    sums. If any row's positives lie so far below that maximum that their sum underflows (only
    possible for tau below ~0.02 on unit features), all rows are computed with two log-sum-exps
    instead, which never underflow."""
    shift = logits.masked_fill(~allowed, float("-inf")).amax(1, keepdim=True).detach()
    e = torch.exp((logits - shift).masked_fill(~allowed, float("-inf")))  # (A, N), 0 where not allowed
    sum_all = e.sum(1)
    sum_pos = (e * pos).sum(1)
    if bool((sum_pos > 0).all()):
        return sum_all.log() - sum_pos.log()
    ninf = torch.finfo(logits.dtype).min
    lse_pos = torch.logsumexp(logits.masked_fill(~pos, ninf), dim=1)
    lse_all = torch.logsumexp(logits.masked_fill(~allowed, ninf), dim=1)
    return lse_all - lse_pos
