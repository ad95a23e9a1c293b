"""The BaS-Net training loss.

Semantics checked against the official code (``Pilhyeon/BaSNet-pytorch``, ``train.py``,
``BaS_Net_loss``): ``nn.BCELoss()`` (mean over batch x (C+1), log clamped at -100) on the softmax
video scores, targets ``[y; 1]`` and ``[y; 0]`` each divided by their own sum, and
``loss_norm = mean_b ||w_b||_1`` (``torch.norm(p=1)`` over time), added with weight ``alpha = 1e-4``.

One divergence: a video with no action label makes the official suppression target ``[0; 0] / 0``
(NaN). Here that denominator is clamped to 1, so such a video's suppression target is all zeros.
"""

from __future__ import annotations

import torch
from torch import Tensor

from wtalcli.model.basnet import BaSOutput


def bce_on_probabilities(p: Tensor, target: Tensor) -> Tensor:
    """Mean binary cross-entropy of probabilities ``p`` against soft ``target`` (same shape).

    Matches ``torch.nn.BCELoss()`` (each log clamped at -100), written out because autocast refuses
    ``binary_cross_entropy``; always evaluated in float32.
    """
    p, target = p.float(), target.float()
    log_p = torch.log(p).clamp_min(-100.0)
    log_not_p = torch.log1p(-p).clamp_min(-100.0)
    return -(target * log_p + (1.0 - target) * log_not_p).mean()


def basnet_targets(y: Tensor) -> tuple[Tensor, Tensor]:
    """``y (B, C)`` multi-hot -> base target ``[y;1]/(|y|+1)`` and suppression target ``[y;0]/|y|``."""
    y = y.float()
    ones = torch.ones_like(y[:, :1])
    base = torch.cat([y, ones], dim=1)
    supp = torch.cat([y, torch.zeros_like(ones)], dim=1)
    base = base / base.sum(dim=1, keepdim=True)
    supp = supp / supp.sum(dim=1, keepdim=True).clamp_min(1.0)
    return base, supp


def basnet_loss(out: BaSOutput, y: Tensor, attn_l1: float = 1e-4) -> tuple[Tensor, dict[str, Tensor]]:
    """``BCE(p, [y;1]/(|y|+1)) + BCE(p', [y;0]/|y|) + attn_l1 * mean_b ||w_b||_1``.

    Returns ``(total, {"base", "supp", "norm"})``; the terms are detached, ``norm`` unweighted
    (as the official code logs it).
    """
    if y.dim() != 2 or y.shape[1] + 1 != out.p_base.shape[1] or y.shape[0] != out.p_base.shape[0]:
        raise ValueError(f"labels of shape {tuple(y.shape)} do not fit scores {tuple(out.p_base.shape)}")
    t_base, t_supp = basnet_targets(y)
    loss_base = bce_on_probabilities(out.p_base, t_base)
    loss_supp = bce_on_probabilities(out.p_supp, t_supp)
    loss_norm = out.w.float().abs().sum(dim=1).mean()  # w in (0, 1), so |w| = w
    total = loss_base + loss_supp + attn_l1 * loss_norm
    return total, {"base": loss_base.detach(), "supp": loss_supp.detach(), "norm": loss_norm.detach()}
