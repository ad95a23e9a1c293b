"""Diagnostics against the ground truth (never used for training), one definition each: the
ground-truth snippet labels, the inside/outside sanity figure of a T-CAS, pseudo-label quality and
the AUC of the confidence, the embedding's geometry (and its legacy pooled action/background
centroid score), the contrast loss against its uniform value, and a run's diagnostics as its
artifacts recorded them. The per-class separation of action from background (T-CAS, embedding,
linear probes) is :mod:`wtalcli.evaluation.separation` and :mod:`wtalcli.evaluation.probes`; its
recorded form is read here (:func:`separation_columns`). Stages record them in their artifacts'
summaries; ``report`` and ``ablate`` read them there or call these functions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from wtalcli.core import rounds as refresh_rounds
from wtalcli.core.store import Store
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
    centers: dict[int, tuple[slice, np.ndarray]] = {}  # per video row, computed once
    for vid, label, s, e in zip(
        annotations["video_id"].tolist(),
        annotations["label"].tolist(),
        annotations["start_s"].to_numpy(np.float64),
        annotations["end_s"].to_numpy(np.float64),
        strict=True,
    ):
        r, c = table.find(vid), index.get(label)
        if r is None or c is None:
            continue
        if r not in centers:
            span = table.span(r)
            centers[r] = (span, table.grid(r).snippet_centers(span.stop - span.start))
        span, cen = centers[r]
        truth[span, c] |= (cen >= s) & (cen <= e)
    return truth


def truth_with_background(table: SnippetTable, annotations: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """``(N, C+1)`` uint8 ground-truth snippet labels, the last channel background (no action)."""
    truth = snippet_truth(table, annotations, classes)
    return np.concatenate([truth, ~truth.any(1, keepdims=True)], axis=1).astype(np.uint8)


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


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with ties sharing their average rank."""
    values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` separating ``positive`` from the rest (ties count
    half, as the Mann-Whitney statistic); NaN without both kinds."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    pos = np.asarray(positive, dtype=bool).reshape(-1)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pseudolabel_quality(
    labels: np.ndarray, truth: np.ndarray, carries: np.ndarray, confidence: np.ndarray | None = None
) -> dict:
    """How pseudo-labels compare with the ground-truth snippet labels, on the action channels of
    the classes each snippet's video carries (the only ones DCC uses).

    ``labels``, ``truth``: (N, C+1) 0/1 (background last; only the C action channels are read);
    ``carries``: (N, C) bool, the snippet's video is labelled with the class; ``confidence``:
    (N, C+1) S. Returns micro-averaged ``precision``, ``recall`` and ``iou`` of the 1-labels, the
    share of correct labels, and, with ``confidence``, ``s_auc``: how well S ranks correct labels
    above wrong ones (0.5: S carries no information about correctness), with the mean S of each.
    """
    c = carries.shape[1]
    a = np.asarray(labels)[:, :c].astype(bool)[carries]
    g = np.asarray(truth)[:, :c].astype(bool)[carries]
    tp, fp, fn = int((a & g).sum()), int((a & ~g).sum()), int((~a & g).sum())
    out = {
        "compared": int(a.size),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "iou": tp / (tp + fp + fn) if tp + fp + fn else float("nan"),
        "correct": float((a == g).mean()) if a.size else float("nan"),
    }
    if confidence is not None:
        s = np.asarray(confidence, dtype=np.float64)[:, :c][carries]
        right = a == g
        out["s_auc"] = auc(s, right)
        out["mean_s_correct"] = float(s[right].mean()) if right.any() else float("nan")
        out["mean_s_wrong"] = float(s[~right].mean()) if (~right).any() else float("nan")
    return out


def embedding_geometry(
    h: np.ndarray, truth: np.ndarray, video: np.ndarray, seed: int = 0, limit: int = 20000
) -> dict:
    """Numbers behind the t-SNE pictures of embedding papers, on snippets of held-aside videos.

    ``h`` (N, H) embeddings; ``truth`` (N, C) bool ground-truth snippet classes (none: background);
    ``video`` (N,) video index. Snippets are L2-normalised and, past ``limit``, sampled.

    - ``action_background_auc`` (legacy): two-fold over videos, the centroids of action and of
      background snippets of one half score the other half's snippets by ``cos(x, mu_act) -
      cos(x, mu_bg)``; the AUC of that score separating action from background. One centroid pooled
      over every class: when classes tighten it can fall while each class separates better, so no
      conclusion rests on it (the per-class figures: :mod:`wtalcli.evaluation.separation`).
    - ``intra_inter_ratio``: the mean distance of action snippets (one class each) to their class
      centroid, over the mean distance between class centroids (lower: tighter, better separated
      classes).
    """
    rng = np.random.default_rng(seed)
    n = len(h)
    idx = np.sort(rng.choice(n, limit, replace=False)) if n > limit else np.arange(n)
    x = np.asarray(h[idx], dtype=np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    t = np.asarray(truth[idx], dtype=bool)
    act = t.any(1)
    vids = np.asarray(video)[idx]
    out: dict = {"snippets": int(len(idx)), "action_share": float(act.mean()) if len(idx) else float("nan")}
    # two-fold action-vs-background AUC
    uv = np.unique(vids)
    fold = np.isin(vids, rng.permutation(uv)[: len(uv) // 2])
    scores = np.full(len(x), np.nan)
    for f in (fold, ~fold):
        fit = ~f
        if not (act[fit].any() and (~act[fit]).any()):
            continue
        mu_a = x[fit & act].mean(0)
        mu_b = x[fit & ~act].mean(0)
        mu_a /= max(np.linalg.norm(mu_a), 1e-12)
        mu_b /= max(np.linalg.norm(mu_b), 1e-12)
        scores[f] = x[f] @ mu_a - x[f] @ mu_b
    ok = np.isfinite(scores)
    out["action_background_auc"] = auc(scores[ok], act[ok]) if ok.any() else float("nan")
    single = act & (t.sum(1) == 1)
    cls = t[single].argmax(1)
    xs = x[single]
    present = np.unique(cls)
    if len(present) >= 2:
        cent = np.stack([xs[cls == k].mean(0) for k in present])
        intra = float(np.linalg.norm(xs - cent[np.searchsorted(present, cls)], axis=1).mean())
        d = np.linalg.norm(cent[:, None, :] - cent[None, :, :], axis=-1)
        inter = float(d[np.triu_indices(len(present), 1)].mean())
        out["intra_inter_ratio"] = intra / inter if inter > 0 else float("nan")
    else:
        out["intra_inter_ratio"] = float("nan")
    return out


def centroid_separation(x: np.ndarray, is_action: np.ndarray) -> float:
    """Distance between the action and background centroids over the RMS distance of points to
    their own group's centroid (higher = better separated); NaN with fewer than two points in a
    group. ``x`` (N, H) embeddings (the report passes them L2-normalised), ``is_action`` (N,) bool."""
    a, b = x[is_action], x[~is_action]
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    ma, mb = a.mean(0), b.mean(0)
    within = np.concatenate([((a - ma) ** 2).sum(1), ((b - mb) ** 2).sum(1)])
    return float(np.linalg.norm(ma - mb) / max(np.sqrt(within.mean()), 1e-12))


SEPARATION_KINDS = ("action", "noncore", "core")  # the action snippets a per-class AUC takes as positives
# what a T-CAS summary's ``separation_test`` scores, and the column prefix of each in run_diagnostics
SEPARATION_SOURCES = {
    "tcas": "tcas",
    "embedding": "emb_class",
    "probe_input": "probe_input",
    "probe_h": "probe_h",
}


def separation_columns(summary: dict | None) -> dict:
    """A T-CAS summary's ``separation_test`` (:func:`wtalcli.evaluation.separation.separation_summary`)
    as flat columns: ``<source>_<kind>_auc``, the mean over (video, labelled class) pairs, for the
    T-CAS, the embedding's class-centroid score and the two probes; ``<kind>_pairs``, the T-CAS's
    number of pairs; NaN where the summary has none (artifacts written before it existed; kinds
    ``noncore`` and ``core`` where no core is known)."""
    nan = float("nan")
    summary = summary or {}
    out: dict = {}
    for source, prefix in SEPARATION_SOURCES.items():
        for kind in SEPARATION_KINDS:
            out[f"{prefix}_{kind}_auc"] = (summary.get(source) or {}).get(kind, {}).get("mean", nan)
    for kind in SEPARATION_KINDS:
        out[f"{kind}_pairs"] = (summary.get("tcas") or {}).get(kind, {}).get("pairs", nan)
    return out


def contrast_against_uniform(log: pd.DataFrame, window: int = 50) -> dict:
    """The contrast loss ``dcc`` of a training log at the start and at the end of training against
    its uniform value ``dcc_uniform`` (the loss with every logit equal, logged beside it):
    ``dcc_start`` / ``dcc_end``, the mean over the first / last ``window`` steps where the contrast
    was computed with anchors (fewer when it was computed on fewer than ``2 window`` steps, so the
    two never overlap), ``dcc_uniform_start`` / ``_end`` over the same steps and the ratios
    ``dcc_start_ratio`` / ``dcc_end_ratio`` (1: no better than features that say nothing). NaN where
    the log has no contrast (a baseline) or, for the uniform value, predates it."""
    nan = float("nan")
    keys = (
        "dcc_start",
        "dcc_end",
        "dcc_uniform_start",
        "dcc_uniform_end",
        "dcc_start_ratio",
        "dcc_end_ratio",
    )
    out = dict.fromkeys(keys, nan)
    if "dcc" not in log:
        return out
    d = log[log["dcc"].notna()]
    if "anchors" in d:
        d = d[d["anchors"] > 0]
    d = d.sort_values("step") if "step" in d else d
    if len(d) == 0:
        return out
    k = min(window, max(len(d) // 2, 1))
    for when, part in (("start", d.iloc[:k]), ("end", d.iloc[-k:])):
        out[f"dcc_{when}"] = float(part["dcc"].mean())
        if "dcc_uniform" in part and part["dcc_uniform"].notna().all():
            u = float(part["dcc_uniform"].mean())
            out[f"dcc_uniform_{when}"] = u
            out[f"dcc_{when}_ratio"] = out[f"dcc_{when}"] / u if u > 0 else nan
    return out


def run_diagnostics(store: Store, model: str, tcas: str) -> dict:
    """A training run's diagnostics as its artifacts recorded them (NaN where the run has none):
    the quality of the pseudo-labels in use at the end (the last refresh round's, else the run's
    inputs) and the AUC of their confidence; the gradient share and cosine logged in training
    (means over the logged iterations; the cosine is a raw figure, no evidence either way without a
    control: over ~10^5 shared parameters the gradients of two objectives that both help can be
    nearly orthogonal); the contrast loss at the start and
    the end of training against its uniform value (:func:`contrast_against_uniform`); the test
    videos' per-class separation of action from background (:func:`separation_columns`); and the
    test embedding's geometry (``emb_action_auc``: the legacy pooled-centroid score) (``model``
    and ``tcas`` are the run's artifact ids)."""
    nan = float("nan")
    out = {
        "pl_precision": nan,
        "pl_recall": nan,
        "pl_iou": nan,
        "s_auc": nan,
        "grad_ratio": nan,
        "grad_cos": nan,
        "emb_action_auc": nan,
        "emb_intra_inter": nan,
    }
    m = store.get(store.root / model)
    t = store.get(store.root / tcas)
    summary = t.manifest.get("summary", {})
    geo = summary.get("embedding_test") or {}
    out["emb_action_auc"] = geo.get("action_background_auc", nan)
    out["emb_intra_inter"] = geo.get("intra_inter_ratio", nan)
    out |= separation_columns(summary.get("separation_test"))
    log_path = m.path / "train_log.parquet"
    tl = pd.read_parquet(log_path) if log_path.exists() else pd.DataFrame()
    for k in ("grad_ratio", "grad_cos"):
        if k in tl:
            out[k] = float(tl[k].dropna().mean()) if tl[k].notna().any() else nan
    out |= contrast_against_uniform(tl)
    # the pseudo-labels and confidence in use at the end: the last round's, else the inputs'
    rounds = refresh_rounds.of_run(store, "pseudolabels", m.id)
    pl = rounds[-1][1] if rounds else None
    if pl is None and "pseudolabels" in m.manifest.get("inputs", {}):
        pl = store.get(store.root / m.manifest["inputs"]["pseudolabels"]["id"])
    if pl is not None:
        q = pl.manifest.get("summary", {}).get("quality") or {}
        out.update(
            pl_precision=q.get("precision", nan), pl_recall=q.get("recall", nan), pl_iou=q.get("iou", nan)
        )
        # a refresh round's confidence map is the only one made from its pseudo-labels; without
        # rounds, the map the run read (the same pseudo-labels may have maps for several K)
        used = m.manifest.get("inputs", {}).get("confidence", {}).get("id") if not rounds else None
        confs = [
            a
            for a in store.artifacts("confidence")
            if a.manifest["inputs"]["pseudolabels"]["id"] == pl.id and (used is None or a.id == used)
        ]
        if confs:
            out["s_auc"] = (confs[-1].manifest.get("summary", {}).get("quality") or {}).get("s_auc", nan)
    return out
