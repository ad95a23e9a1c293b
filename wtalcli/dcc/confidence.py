"""The confidence map S of DCC's pseudo-label denoising (docs/method.md §5), from per-cluster counts.

For snippet t in cluster k(t) and channel c:

    S[t, c] = #{ j : k(j) = k(t), A[j, c] = A[t, c] } / #{ j : k(j) = k(t) }

the share of t's cluster (t included) that agrees with t's pseudo-label. With
``P[k, c] = #{j in k : A[j, c] = 1}`` and ``n[k] = |k|``, ``S[t, c] = P[k(t), c] / n[k(t)]`` where
``A[t, c] = 1`` and ``(n[k(t)] - P[k(t), c]) / n[k(t)]`` where ``A[t, c] = 0``; P and n are bincounts,
so the cost is O(N (C+1)) with no loop over snippets or clusters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from wtalcli.core.errors import InputError
from wtalcli.data.schema import BACKGROUND
from wtalcli.dcc.params import CONFIDENCE_SCOPES, DenoiseParams

if TYPE_CHECKING:
    from wtalcli.dcc.kmeans import KMeansResult


def _check_labels(labels: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(labels)
    if a.ndim != 2:
        raise InputError(f"{what} must be (snippets x channels), got shape {a.shape}")
    if a.dtype != np.bool_ and not ((a == 0) | (a == 1)).all():
        raise InputError(f"{what} must hold only 0 and 1", "rebuild them with wtal pseudolabel")
    return a.astype(bool, copy=False)


def cluster_positive_counts(
    assign: np.ndarray, labels: np.ndarray, k: int, voters: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``P`` (K, C+1): voting snippets per cluster with label 1 per channel; ``n`` (K, C+1): voting
    snippets per cluster and channel. ``voters`` (N, C+1) bool says which snippets vote on each
    channel (default: all of them)."""
    a = np.asarray(assign, dtype=np.int64).reshape(-1)
    lab = _check_labels(labels, "pseudo-labels")
    if lab.shape[0] != a.shape[0]:
        raise InputError(
            f"{a.shape[0]} cluster assignments for {lab.shape[0]} pseudo-labelled snippets",
            "cluster the same snippets that were pseudo-labelled (rerun wtal denoise)",
        )
    if a.size and (a.min() < 0 or a.max() >= k):
        raise InputError(
            f"cluster ids must lie in [0, {k}), found {a.min()}..{a.max()}", "pass the K used to cluster"
        )
    cp1 = lab.shape[1]
    if voters is None:
        rows, cols = np.nonzero(lab)
        pos = np.bincount(a[rows] * cp1 + cols, minlength=k * cp1).reshape(k, cp1)
        size = np.repeat(np.bincount(a, minlength=k)[:, None], cp1, axis=1)
        return pos, size
    v = np.asarray(voters, dtype=bool)
    if v.shape != lab.shape:
        raise InputError(f"voter mask of shape {v.shape} for pseudo-labels {lab.shape}")
    rows, cols = np.nonzero(lab & v)
    pos = np.bincount(a[rows] * cp1 + cols, minlength=k * cp1).reshape(k, cp1)
    rows, cols = np.nonzero(v)
    size = np.bincount(a[rows] * cp1 + cols, minlength=k * cp1).reshape(k, cp1)
    return pos, size


def confidence_map(
    assign: np.ndarray, labels: np.ndarray, k: int, voters: np.ndarray | None = None
) -> np.ndarray:
    """S (N, C+1) float32 in [0, 1]: the share of each snippet's cluster agreeing with its label.

    ``assign``: (N,) cluster ids in [0, k); ``labels``: (N, C+1) 0/1 pseudo-labels; ``voters``:
    (N, C+1) bool, the snippets whose labels count for each channel (default: all). A snippet that
    votes is in its own count, so its S is > 0; a channel with no voter in a cluster gives 0 there.
    """
    pos, size = cluster_positive_counts(assign, labels, k, voters)
    a = np.asarray(assign, dtype=np.int64).reshape(-1)
    lab = np.asarray(labels).astype(bool, copy=False)
    if a.size == 0:
        return np.zeros(lab.shape, dtype=np.float32)
    share_pos = (pos / np.maximum(size, 1)).astype(np.float32)  # (K, C+1)
    share_neg = ((size - pos) / np.maximum(size, 1)).astype(np.float32)
    return np.where(lab, share_pos[a], share_neg[a])


def confidence_voters(
    offsets: np.ndarray, n_snippets: np.ndarray, video_labels: np.ndarray, n_rows: int, scope: str
) -> np.ndarray | None:
    """Who votes on each channel under ``scope`` (:data:`CONFIDENCE_SCOPES`): ``all`` -> None
    (everyone); ``labelled`` -> (N, C+1), class c's channel by the snippets of videos labelled c,
    the background channel by every snippet."""
    if scope not in CONFIDENCE_SCOPES:
        raise InputError(f"unknown confidence scope {scope!r}", f"use one of {', '.join(CONFIDENCE_SCOPES)}")
    if scope == "all":
        return None
    m = video_class_mask(offsets, n_snippets, video_labels, n_rows)
    return np.concatenate([m, np.ones((n_rows, 1), dtype=bool)], axis=1)


def denoise_confidence(
    x: np.ndarray,
    labels: np.ndarray,
    voters: np.ndarray | None,
    p: DenoiseParams,
) -> tuple[KMeansResult, np.ndarray]:
    """k-means on the (already normalised) embeddings ``x`` (N, d) of every training snippet, then
    the confidence map of ``labels`` (N, C+1): DCC's denoising, without any artifact I/O."""
    from wtalcli.dcc.kmeans import kmeans

    if p.clusters < 1:
        raise InputError(f"--clusters {p.clusters} must be >= 1", "e.g. --clusters 64")
    if p.clusters > len(x):
        raise InputError(
            f"--clusters {p.clusters} exceeds the {len(x)} training snippets", "use fewer clusters"
        )
    km = kmeans(
        x,
        p.clusters,
        p.iterations,
        seed=p.seed,
        init=p.init,
        spherical=p.spherical,
        backend=p.backend,
        device=p.device,
        sample=p.sample,
        precision=p.precision,
    )
    return km, confidence_map(km.assign, labels, p.clusters, voters)


def video_class_mask(
    offsets: np.ndarray,
    n_snippets: np.ndarray,
    video_labels: np.ndarray,
    n_rows: int,
    gt_labels: np.ndarray | None = None,
) -> np.ndarray:
    """``(n_rows, C)`` bool: snippet t belongs to a video that carries class c, in its video-level
    labels ``video_labels`` (V, C) multi-hot or, when ``gt_labels`` (N, C or C+1) is given, in its
    ground truth (any snippet of the video labelled c). Snippets of no video: False everywhere.
    ``offsets``/``n_snippets`` (V,) locate each video's snippets, as in a videos table."""
    off = np.asarray(offsets, dtype=np.int64).reshape(-1)
    cnt = np.asarray(n_snippets, dtype=np.int64).reshape(-1)
    vl = np.asarray(video_labels).astype(bool, copy=False)
    if vl.ndim != 2 or vl.shape[0] != off.shape[0] or cnt.shape != off.shape:
        raise InputError(
            f"video labels of shape {vl.shape} for {off.shape[0]} videos", "pass one label row per video"
        )
    if len(off) and (off.min() < 0 or (off + cnt).max() > n_rows):
        raise InputError(f"video spans reach outside the {n_rows} snippets", "pass the table's offsets")
    carries = vl.copy()
    if gt_labels is not None:
        gt = _check_labels(gt_labels, "ground-truth snippet labels")[:, : vl.shape[1]]
        if gt.shape != (n_rows, vl.shape[1]):
            raise InputError(f"ground-truth labels have shape {gt.shape}, expected {n_rows} rows of classes")
        for v, (o, n) in enumerate(zip(off, cnt, strict=True)):
            if n:
                carries[v] |= gt[o : o + n].any(0)
    video_of = np.full(n_rows, -1, dtype=np.int64)
    for v, (o, n) in enumerate(zip(off, cnt, strict=True)):
        video_of[o : o + n] = v
    mask = np.zeros((n_rows, vl.shape[1]), dtype=bool)
    inside = video_of >= 0
    mask[inside] = carries[video_of[inside]]
    return mask


def confidence_summary(
    s: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    gt_labels: np.ndarray | None = None,
    gt_mask: np.ndarray | None = None,
    class_mask: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per-channel diagnostics of a confidence map, one row per class plus the background.

    Columns: ``class``, ``n_pos`` / ``n_neg`` (snippets with pseudo-label 1 / 0), ``mean_s_pos`` /
    ``mean_s_neg`` (mean S over them; NaN when none). With ground-truth snippet labels
    ``gt_labels`` (N, C+1), per channel on its compared rows: ``n_gt`` rows compared, ``agree`` =
    share of them whose pseudo-label equals the GT, ``agree_weighted`` =
    ``sum_t S[t,c] 1[A[t,c] = G[t,c]] / sum_t S[t,c]`` (the same share when each snippet counts with
    its confidence, as DCC weights its features; above ``agree`` when S is higher on correct
    pseudo-labels), ``mean_s_correct`` / ``mean_s_wrong`` (mean S over snippets whose pseudo-label
    is right / wrong); NaN where nothing is compared.

    Compared rows: those where ``gt_mask`` (N,) is True (default: all), and, for class channel c,
    where ``class_mask[:, c]`` is True. Pass ``class_mask`` (N, C), from ``video_class_mask``: the
    snippets of videos that carry class c. Without it every snippet of every video counts, and the
    videos without class c, where pseudo-label 0 and GT 0 agree by construction (pseudo-labels of
    unlabelled classes are 0), inflate ``agree`` and ``agree_weighted`` towards 1. The background
    channel is compared on all ``gt_mask`` rows: every video has a background channel (its
    pseudo-label is never forced to 0), so there is no absent-background case to leave out. A
    ``class_mask`` of C+1 columns sets the background's rows explicitly.
    """
    lab = _check_labels(labels, "pseudo-labels")
    s = np.asarray(s, dtype=np.float64)
    if s.shape != lab.shape:
        raise InputError(
            f"confidence map has shape {s.shape}, pseudo-labels {lab.shape}", "rerun wtal denoise"
        )
    names = list(classes)
    if len(names) == lab.shape[1] - 1:
        names.append(BACKGROUND)
    if len(names) != lab.shape[1]:
        raise InputError(
            f"{len(names)} class names for {lab.shape[1]} channels", "pass the artifact's class list"
        )
    n_pos = lab.sum(0)
    n_neg = lab.shape[0] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        table = {
            "class": names,
            "n_pos": n_pos.astype(np.int64),
            "n_neg": n_neg.astype(np.int64),
            "mean_s_pos": np.where(lab, s, 0.0).sum(0) / np.where(n_pos > 0, n_pos, np.nan),
            "mean_s_neg": np.where(lab, 0.0, s).sum(0) / np.where(n_neg > 0, n_neg, np.nan),
        }
        if gt_labels is not None:
            gt = _check_labels(gt_labels, "ground-truth snippet labels")
            if gt.shape != lab.shape:
                raise InputError(f"ground-truth labels have shape {gt.shape}, pseudo-labels {lab.shape}")
            rows = np.ones(lab.shape[0], dtype=bool) if gt_mask is None else np.asarray(gt_mask, dtype=bool)
            if rows.shape != (lab.shape[0],):
                raise InputError(f"gt_mask has shape {rows.shape}, expected ({lab.shape[0]},)")
            use = np.repeat(rows[:, None], lab.shape[1], axis=1)  # (N, C+1) rows compared per channel
            if class_mask is not None:
                cm = np.asarray(class_mask, dtype=bool)
                if (
                    cm.ndim != 2
                    or cm.shape[0] != lab.shape[0]
                    or cm.shape[1] not in (lab.shape[1] - 1, lab.shape[1])
                ):
                    raise InputError(
                        f"class_mask has shape {cm.shape}, expected ({lab.shape[0]}, {lab.shape[1] - 1})",
                        "pass one column per class (video_class_mask)",
                    )
                use[:, : cm.shape[1]] &= cm
            right = lab == gt  # (N, C+1)
            n_gt = use.sum(0)
            n_right = (right & use).sum(0)
            s_use = np.where(use, s, 0.0)
            s_right = np.where(right, s_use, 0.0).sum(0)
            s_all = s_use.sum(0)
            n_wrong = n_gt - n_right
            table["n_gt"] = n_gt.astype(np.int64)
            table["agree"] = n_right / np.where(n_gt > 0, n_gt, np.nan)
            table["agree_weighted"] = s_right / np.where(s_all > 0, s_all, np.nan)
            table["mean_s_correct"] = s_right / np.where(n_right > 0, n_right, np.nan)
            s_wrong = np.where(right, 0.0, s_use).sum(0)
            table["mean_s_wrong"] = s_wrong / np.where(n_wrong > 0, n_wrong, np.nan)
    return pd.DataFrame(table)
