"""Snippet-wise pseudo-labels from a T-CAS (method.md 3.1), vectorised over all videos.

The input is the raw suppression-branch CAS (the last convolution's output, as stored in a T-CAS
artifact). Per video and per channel c (C action classes + background, last), it is min-max
normalised over the video's time as BaS-Net's ``minmax_norm`` does it (``min`` and ``max`` passed
through ReLU, a non-positive range replaced by 1), then clipped to [0, 1] so that negative
stretches count as 0 (method.md: "negative stretches clip to 0"); a *rule* then turns it into 0/1
labels. BaS-Net itself never reads a normalised value below 0 (every activation threshold zeroes
it), so the clip only matters for the rule: the mean of a channel with negative activations is
the mean of ``relu(x) / relu(max)``, not of ``x / relu(max)``, and a channel whose activations are
all <= 0 gets no label at all (without the clip its above-average half would be labelled).
The rule of the paper is ``"mean"``: ``A[c, t] = 1 if cas[c, t] > mean_t cas[c, :]`` (strictly
greater, so a constant channel is all 0). For a video whose labels apply (training videos), action
channels of classes not in its video-level label are 0; the background channel is never masked.

All per-video reductions are segment reductions (``np.minimum/maximum/add.reduceat``) over the
videos' row ranges; there is no loop over videos or snippets.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType

import numpy as np

from wtalcli.core.errors import InputError

# A rule maps (normalised CAS of all covered rows, (L, C+1) float64, videos tiling the rows in
# order; the start row of each video, (V,) int64; each video's length, (V,) int64) to the
# per-video, per-channel threshold (V, C+1): a row is labelled 1 where its value is > threshold.
Rule = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _mean_rule(norm: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Threshold = the video's mean over time of each channel (DCC's mean thresholding)."""
    return np.add.reduceat(norm, starts, axis=0) / lengths[:, None]


RULES: MappingProxyType[str, Rule] = MappingProxyType({"mean": _mean_rule})


def minmax_normalise(cas: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """BaS-Net's per-video min-max normalisation of rows tiled by videos starting at ``starts``,
    clipped to [0, 1] (negative activations -> 0).

    ``cas``: (L, C+1) raw activations, every video non-empty and the videos contiguous in order.
    Returns float64.
    """
    x = np.asarray(cas, dtype=np.float64)
    lengths = np.diff(np.append(starts, x.shape[0]))
    lo = np.maximum(np.minimum.reduceat(x, starts, axis=0), 0.0)  # (V, C+1), relu(min)
    hi = np.maximum(np.maximum.reduceat(x, starts, axis=0), 0.0)  # (V, C+1), relu(max)
    delta = hi - lo
    delta[delta <= 0] = 1.0
    out = (x - np.repeat(lo, lengths, axis=0)) / np.repeat(delta, lengths, axis=0)
    return np.clip(out, 0.0, 1.0, out=out)


def mean_threshold_labels(
    cas: np.ndarray,
    offsets: np.ndarray,
    n_snippets: np.ndarray,
    video_labels: np.ndarray,
    rule: str = "mean",
    apply_labels: np.ndarray | None = None,
    source: str = "T-CAS",
) -> np.ndarray:
    """Pseudo-labels ``A`` (N x (C+1), uint8) for every snippet of every video.

    ``cas``: (N, C+1) raw class activations, background last. ``offsets``/``n_snippets``: (V,) first
    row and row count of each video in ``cas`` (non-overlapping; rows of no video get 0).
    ``video_labels``: (V, C) multi-hot. ``apply_labels``: (V,) bool, where False the video's labels
    do not mask its action channels (e.g. test videos); default True for all videos.
    ``rule``: a key of :data:`RULES`. ``source`` names the input in error messages.
    """
    if rule not in RULES:
        raise InputError(f"unknown pseudo-label rule {rule!r}", f"use one of {', '.join(RULES)}")
    cas = np.asarray(cas)
    if cas.ndim != 2 or cas.shape[1] < 2:
        raise InputError(
            f"{source}: CAS must be (snippets x (C+1)), got shape {cas.shape}", "rebuild the T-CAS"
        )
    n, cp1 = cas.shape
    labels = np.asarray(video_labels)
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)
    lengths = np.asarray(n_snippets, dtype=np.int64).reshape(-1)
    v = offsets.shape[0]
    if labels.ndim != 2 or labels.shape != (v, cp1 - 1):
        raise InputError(
            f"{source}: video labels have shape {labels.shape}, expected ({v}, {cp1 - 1}) "
            f"for {v} videos and a CAS with {cp1 - 1} classes + background",
            "use the class list of the T-CAS artifact",
        )
    if lengths.shape[0] != v:
        raise InputError(
            f"{source}: {v} offsets but {lengths.shape[0]} snippet counts", "pass one of each per video"
        )
    if apply_labels is None:
        apply = np.ones(v, dtype=bool)
    else:
        apply = np.asarray(apply_labels, dtype=bool).reshape(-1)
        if apply.shape[0] != v:
            raise InputError(f"{source}: apply_labels has {apply.shape[0]} entries for {v} videos")
    if (lengths < 0).any() or (offsets < 0).any() or (offsets + lengths > n).any():
        bad = int(np.flatnonzero((lengths < 0) | (offsets < 0) | (offsets + lengths > n))[0])
        raise InputError(
            f"{source}: video #{bad} spans rows {offsets[bad]}..{offsets[bad] + lengths[bad]} "
            f"outside the CAS's {n} rows",
            "rebuild the T-CAS (its videos table and cas.npy disagree)",
        )
    if not np.isfinite(cas).all():
        row = int(np.flatnonzero(~np.isfinite(cas).all(axis=1))[0])
        raise InputError(
            f"{source}: non-finite CAS value in row {row}", "rebuild the T-CAS from a finite model"
        )

    out = np.zeros((n, cp1), dtype=np.uint8)
    keep = np.flatnonzero(lengths > 0)
    if keep.size == 0:
        return out
    order = keep[np.argsort(offsets[keep], kind="stable")]
    st, ln = offsets[order], lengths[order]
    if (st[1:] < st[:-1] + ln[:-1]).any():
        raise InputError(f"{source}: two videos share CAS rows", "rebuild the T-CAS (overlapping offsets)")
    # gather the covered rows into one contiguous block, videos in offset order
    cstarts = np.concatenate(([0], np.cumsum(ln)[:-1]))  # start of each video in the block
    rows = np.arange(int(ln.sum()), dtype=np.int64) + np.repeat(st - cstarts, ln)
    norm = minmax_normalise(cas[rows], cstarts)  # (L, C+1)
    thr = RULES[rule](norm, cstarts, ln)  # (V', C+1)
    lab = norm > np.repeat(thr, ln, axis=0)
    # action channels of classes outside a (training) video's label are 0
    mask = np.ones((order.size, cp1), dtype=bool)
    mask[:, :-1] = np.where(apply[order, None], labels[order] > 0, True)
    lab &= np.repeat(mask, ln, axis=0)
    out[rows] = lab
    return out
