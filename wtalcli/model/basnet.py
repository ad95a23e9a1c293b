"""BaS-Net (Lee et al., AAAI 2020), as the official ``Pilhyeon/BaSNet-pytorch`` code builds it.

Layers keep the official layout (``Conv1d`` everywhere, same shapes), so the state dict of an
official checkpoint maps onto this one by renaming keys. Two implementation choices, neither of
which changes the mathematics:

- the base and suppression branches share the CAS module, so after its first layer (run per branch,
  see ``forward``) they run as *one* forward on the concatenation along the batch (bigger GEMMs,
  fewer kernel launches); dropout masks are then drawn once for ``2B`` sequences instead of twice
  for ``B`` (same distribution);
- top-k pooling uses ``torch.topk`` (the official sorts then slices, citing an old topk slowdown)
  and is computed in float32 even under bf16 autocast, like the softmax after it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BaSOutput(NamedTuple):
    """What :class:`BaSNet` returns; ``B`` videos, ``T`` samples, ``C`` classes (+1 background)."""

    w: Tensor  # (B, T) foreground attention in (0, 1) (filtering module)
    cas_base: Tensor  # (B, T, C+1) class activation logits of the base branch (on X)
    cas_supp: Tensor  # (B, T, C+1) class activation logits of the suppression branch (on w*X)
    p_base: Tensor  # (B, C+1) float32 softmax of the top-k mean of cas_base
    p_supp: Tensor  # (B, C+1) float32 softmax of the top-k mean of cas_supp
    h_base: Tensor  # (B, T, hidden) embedding (before dropout) of the base branch; a strided view
    h_supp: Tensor  # (B, T, hidden) embedding (before dropout) of the suppression branch

    @property
    def h(self) -> Tensor:
        """The embedding used by ``denoise`` and DCC: the base branch's.

        The base branch sees the unfiltered features, so every snippet (action or background) gets
        an embedding shaped only by the features and the shared CAS layers; the suppression branch's
        embedding of a background snippet is the embedding of an attenuated (near-zero) input, which
        squeezes all background toward one point and would make clustering see the attention
        rather than the content.
        """
        return self.h_base


class BaSNet(nn.Module):
    """Filtering module + CAS module shared by a base and a suppression branch.

    ``in_dim`` = feature dimension D, ``n_classes`` = C action classes (the model outputs C+1).
    ``hidden`` is 2048 in the paper; small presets use a narrower CAS module for CPU runs.
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        hidden: int = 2048,
        attn_hidden: int = 512,
        dropout: float = 0.7,
        topk_div: int = 8,
    ) -> None:
        super().__init__()
        if min(in_dim, n_classes, hidden, attn_hidden, topk_div) < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"invalid BaSNet sizes in_dim={in_dim} n_classes={n_classes} hidden={hidden} "
                f"attn_hidden={attn_hidden} topk_div={topk_div} dropout={dropout}"
            )
        self.in_dim, self.n_classes, self.hidden = in_dim, n_classes, hidden
        self.attn_hidden, self.topk_div = attn_hidden, topk_div
        # filtering module: Conv1x1 D->attn_hidden, LeakyReLU, Conv1x1 attn_hidden->1, sigmoid
        self.filter_1 = nn.Conv1d(in_dim, attn_hidden, kernel_size=1)
        self.filter_2 = nn.Conv1d(attn_hidden, 1, kernel_size=1)
        # CAS module: two k=3 convolutions + LeakyReLU -> embedding h; dropout; Conv1x1 without bias
        self.cas_1 = nn.Conv1d(in_dim, hidden, kernel_size=3, padding=1)
        self.cas_2 = nn.Conv1d(hidden, hidden, kernel_size=3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv1d(hidden, n_classes + 1, kernel_size=1, bias=False)

    def topk(self, num_segments: int) -> int:
        """``k`` of the top-k MIL pooling for sequences of ``num_segments`` samples."""
        return max(1, num_segments // self.topk_div)

    def forward(self, x: Tensor) -> BaSOutput:
        """``x``: ``(B, T, D)`` features at the sampled positions."""
        if x.dim() != 3 or x.shape[-1] != self.in_dim:
            raise ValueError(f"BaSNet expects (B, T, {self.in_dim}) input, got {tuple(x.shape)}")
        b, t, _ = x.shape
        xc = x.transpose(1, 2)  # (B, D, T)
        w = torch.sigmoid(self.filter_2(F.leaky_relu(self.filter_1(xc), 0.01)))  # (B, 1, T)
        # first CAS layer per branch: the base branch's input (the raw features) needs no gradient,
        # so running the two halves separately skips that input-gradient GEMM in backward
        h1 = torch.cat([self.cas_1(xc), self.cas_1(xc * w)], dim=0)  # (2B, hidden, T): base, suppression
        h = F.leaky_relu(self.cas_2(F.leaky_relu(h1, 0.01)), 0.01)  # (2B, hidden, T)
        cas = self.classifier(self.dropout(h)).transpose(1, 2)  # (2B, T, C+1)
        k = self.topk(t)
        video = torch.softmax(cas.float().topk(k, dim=1).values.mean(dim=1), dim=-1)  # (2B, C+1)
        return BaSOutput(
            w=w[:, 0, :],
            cas_base=cas[:b],
            cas_supp=cas[b:],
            p_base=video[:b],
            p_supp=video[b:],
            # slice the channels-first tensor, then transpose: a gradient reaching h_base (DCC's head)
            # then flows back into a channels-first buffer (a transposed slice would make autograd
            # build a (2B, T, hidden)-contiguous one, and every layer below would run on strides)
            h_base=h[:b].transpose(1, 2),  # (B, T, hidden)
            h_supp=h[b:].transpose(1, 2),
        )


def count_train_flops(
    batch: int, num_segments: int, in_dim: int, n_classes: int, hidden: int = 2048, attn_hidden: int = 512
) -> dict[str, float]:
    """Multiply-add FLOPs (2 per MAC) of one BaS-Net forward + backward; elementwise ops ignored.

    Backward = weight gradients (one GEMM per layer, as costly as its forward) + input gradients of
    every layer whose input needs one: the filter's first layer and the base branch's first CAS
    layer read the raw features, which need no gradient (the suppression branch's first layer does:
    its input ``w*X`` depends on the filter). The common "3 x forward" estimate overcounts by these
    two GEMMs.
    """
    n = 2.0 * batch * num_segments
    filter_1 = n * in_dim * attn_hidden
    filter_2 = n * attn_hidden
    cas_1 = n * 3 * in_dim * hidden  # per branch
    cas_2 = n * 3 * hidden * hidden
    cls = n * hidden * (n_classes + 1)
    forward = filter_1 + filter_2 + 2 * (cas_1 + cas_2 + cls)
    backward = 2 * forward - filter_1 - cas_1
    return {"forward": forward, "backward": backward, "total": forward + backward}
