"""Sanity figures computed from a T-CAS and the ground truth (never used for training)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from wtalcli.data.schema import SnippetTable
from wtalcli.evaluation.localization import minmax_norm


def snippet_truth(table: SnippetTable, annotations: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """``(N, C)`` bool: snippet t of a video lies inside an annotated instance of class c.

    A snippet is inside when its centre (``TimeGrid.snippet_centers``) falls in ``[start, end]``."""
    index = {c: i for i, c in enumerate(classes)}
    n = int(table.videos["n_snippets"].sum())
    truth = np.zeros((n, len(classes)), bool)
    if len(annotations) == 0:
        return truth
    for vid, group in annotations.groupby("video_id", sort=False):
        if vid not in table._index:
            continue
        r = table.row(vid)
        span = table.span(r)
        centers = table.grid(r).snippet_centers(span.stop - span.start)
        for label, s, e in zip(group["label"], group["start_s"], group["end_s"], strict=True):
            if label in index:
                inside = (centers >= s) & (centers <= e)
                truth[span.start : span.stop, index[label]] |= inside
    return truth


def inside_outside(
    table: SnippetTable, cas: np.ndarray, annotations: pd.DataFrame, classes: list[str], subset: str
) -> dict:
    """For each (video, labelled class) of ``subset`` with both action and background snippets:
    is the class's mean activation higher inside its instances than outside them?

    ``cas`` is a raw T-CAS; each (video, class) curve is min-max normalised over the video as
    localization does it (BaS-Net's ``minmax_norm``, relu'd min and max), so the means are on the
    scale the activation thresholds act on (0 = the video's minimum or below, 1 = its maximum).
    The comparison itself does not depend on the normalisation (an increasing affine map).

    Returns the fraction of such pairs where it is (1.0 = the model fires on the actions; well
    below 0.5 = it localizes the background), plus the mean inside/outside activations."""
    truth = snippet_truth(table, annotations, classes)
    index = {c: i for i, c in enumerate(classes)}
    wins, pairs, ins, outs = 0, 0, [], []
    for r in table.rows_of(subset):
        span = table.span(int(r))
        for label in table.videos.at[int(r), "labels"]:
            c = index[label]
            t = truth[span, c]
            if t.all() or not t.any():
                continue
            a = minmax_norm(np.asarray(cas[span, c], dtype=np.float64)[:, None])[:, 0]
            i_mean, o_mean = a[t].mean(), a[~t].mean()
            ins.append(i_mean)
            outs.append(o_mean)
            wins += int(i_mean > o_mean)
            pairs += 1
    return {
        "pairs": pairs,
        "fraction_inside_higher": wins / pairs if pairs else float("nan"),
        "mean_inside": float(np.mean(ins)) if ins else float("nan"),
        "mean_outside": float(np.mean(outs)) if outs else float("nan"),
    }
