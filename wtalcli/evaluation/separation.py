"""Per-class separation of action from background on test videos, a diagnostic against the ground
truth (never used for training), one definition each:

- :func:`pair_aucs`: for every (video, labelled class) pair, the AUC of a per-snippet score
  separating that class's action snippets from the same video's background snippets (no class at
  all), summarised as mean, median and number of pairs. Where the synthetic generator's hidden
  cores are known (:mod:`wtalcli.data.synthetic_truth`), for the instances' *non-core* snippets
  (the weak evidence the T-CAS thresholds must still reach) and for the cores separately; always
  for all action snippets.
- :func:`centroid_scores`: the embedding's score of a snippet for class c, ``cos(x, mu_c) -
  cos(x, mu_bg)`` with the class's action centroid and the background centroid fitted on the other
  half of the videos (``x``, the centroids: L2-normalised).
- the linear probes of :mod:`wtalcli.evaluation.probes` on the input features and the embedding.

:func:`separation_summary` puts them together as a T-CAS artifact's summary records them
(``separation_test``; its keys: :data:`wtalcli.evaluation.diagnostics.SEPARATION_SOURCES`). One
pooled action centroid against one background centroid (``action_background_auc`` of
:func:`wtalcli.evaluation.diagnostics.embedding_geometry`) mixes the classes: when classes tighten
it can fall while every class separates better, so conclusions read these per-class figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from wtalcli.data.schema import FeatureSet, SnippetTable, rebase
from wtalcli.data.synthetic_truth import hidden_core
from wtalcli.evaluation.diagnostics import SEPARATION_KINDS as KINDS
from wtalcli.evaluation.diagnostics import auc, snippet_truth
from wtalcli.evaluation.probes import CHUNK, heldout_probe_scores


@dataclass
class Snippets:
    """The scored snippets (several videos, each a contiguous run of rows) and their truth."""

    truth: np.ndarray  # (N, C) bool: the snippet lies in an instance of class c
    video: np.ndarray  # (N,) int64: index of the snippet's video, 0..V-1, non-decreasing
    labels: np.ndarray  # (V, C) bool: video-level labels
    core: np.ndarray | None = None  # (N,) bool: in an instance's discriminative core; None: unknown

    @property
    def background(self) -> np.ndarray:
        return ~self.truth.any(1)

    def kinds(self) -> tuple[str, ...]:
        return KINDS if self.core is not None else KINDS[:1]

    def actions(self, kind: str, c: int | None = None, rows: slice = slice(None)) -> np.ndarray:
        """The action snippets of ``kind`` among ``rows``: of class c, or of any class (None)."""
        t = self.truth[rows].any(1) if c is None else self.truth[rows, c]
        if kind == "action":
            return t
        core = self.core[rows]
        return t & core if kind == "core" else t & ~core

    def spans(self) -> list[slice]:
        """Each video's rows."""
        bounds = np.searchsorted(self.video, np.arange(len(self.labels) + 1))
        return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _summary(values: list[float]) -> dict:
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return {"mean": float("nan"), "median": float("nan"), "pairs": 0}
    return {"mean": float(v.mean()), "median": float(np.median(v)), "pairs": int(len(v))}


def pair_aucs(score: np.ndarray, s: Snippets) -> dict[str, dict]:
    """Per (video, labelled class) AUC of ``score`` separating the class's action snippets (of each
    kind: all, non-core, core) from the video's background snippets; ``score`` (N, C) per class or
    (N,) one score for every class. A pair counts for a kind when it has both sets and finite
    scores. Returns ``{kind: {"mean", "median", "pairs"}}`` for the kinds ``s`` knows."""
    score = np.asarray(score, dtype=np.float64)
    bg = s.background
    values: dict[str, list[float]] = {k: [] for k in s.kinds()}
    for v, span in enumerate(s.spans()):
        neg = bg[span]
        if not neg.any():
            continue
        for c in np.flatnonzero(s.labels[v]):
            sc = score[span, c] if score.ndim == 2 else score[span]
            for kind in values:
                pos = s.actions(kind, int(c), span)
                keep = pos | neg
                if pos.any() and np.isfinite(sc[keep]).all():
                    values[kind].append(auc(sc[keep], pos[keep]))
    return {k: _summary(v) for k, v in values.items()}


def video_folds(n_videos: int, seed: int = 0) -> np.ndarray:
    """(V,) bool: a seeded half of the videos (the other half False)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xF01D]))
    fold = np.zeros(n_videos, bool)
    fold[rng.permutation(n_videos)[: n_videos // 2]] = True
    return fold


def _unit(h, part: slice) -> np.ndarray:
    x = np.asarray(h[part], dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def centroid_scores(h, s: Snippets, fold: np.ndarray) -> np.ndarray:
    """(N, C) float32: ``cos(x, mu_c) - cos(x, mu_bg)`` of each L2-normalised embedding ``x`` (``h``
    (N, H), read ``CHUNK`` rows at a time), the centroids (normalised means of the L2-normalised
    snippets of class c, of the background) fitted on the videos of the other ``fold`` (V,) half;
    NaN for a class without snippets there."""
    n, c = s.truth.shape
    side = np.asarray(fold)[s.video]  # (N,) the snippet's half
    groups = np.concatenate([s.truth, s.background[:, None]], axis=1).astype(np.float32)  # (N, C+1)
    sums = np.zeros((2, c + 1, h.shape[1]), np.float64)
    counts = np.zeros((2, c + 1))
    for k in range(0, n, CHUNK):
        part = slice(k, min(k + CHUNK, n))
        x = _unit(h, part)
        for half in (0, 1):
            g = groups[part] * (side[part] == bool(half))[:, None]
            sums[half] += g.T @ x
            counts[half] += g.sum(0)
    mu = sums / np.maximum(np.linalg.norm(sums, axis=2, keepdims=True), 1e-12)  # (2, C+1, H)
    mu[counts == 0] = np.nan
    out = np.empty((n, c), np.float32)
    for k in range(0, n, CHUNK):
        part = slice(k, min(k + CHUNK, n))
        x = _unit(h, part)
        other = (~side[part]).astype(int)  # the centroids of the other half
        for half in (0, 1):
            rows = other == half
            cos = x[rows] @ mu[half].T.astype(np.float32)  # (n_rows, C+1)
            out[part][rows] = cos[:, :c] - cos[:, c:]
    return out


def separation_summary(
    cas: np.ndarray,
    h,
    features,
    feature_rows: np.ndarray,
    s: Snippets,
    seed: int = 0,
    limit: int = 20000,
) -> dict:
    """A model's per-class separation on the scored snippets (a T-CAS artifact's
    ``separation_test``): ``cas`` (N, C+1) its raw T-CAS; ``h`` (N, H) its embedding; ``features``
    the feature set's input features, snippet i's at row ``feature_rows[i]``.

    - ``tcas`` and ``embedding``: :func:`pair_aucs` of the class's T-CAS channel and of
      :func:`centroid_scores` (two folds over the videos);
    - ``probe_input`` and ``probe_h``: a linear probe (:mod:`wtalcli.evaluation.probes`, two folds
      over the videos, at most ``limit`` snippets fitted) of the non-core action snippets against
      the background where the cores are known, else of all action snippets; :func:`pair_aucs` of
      its held-out scores, plus ``pooled``, the AUC over all snippets of each half (mean of the two
      halves), per kind, and the L2 strength chosen on each half (``l2``).
    """
    fold = video_folds(len(s.labels), seed)
    c = s.truth.shape[1]
    out: dict = {
        "core_known": s.core is not None,
        "videos": int(len(s.labels)),
        "snippets": int(len(s.video)),
        "tcas": pair_aucs(np.asarray(cas)[:, :c], s),
        "embedding": pair_aucs(centroid_scores(h, s, fold), s),
    }
    target = s.actions("noncore" if s.core is not None else "action")
    side = fold[s.video]
    for name, x, rows in (("probe_input", features, feature_rows), ("probe_h", h, None)):
        scores, l2 = heldout_probe_scores(x, target, s.background, s.video, fold, rows, seed, limit)
        pooled = {}
        for kind in s.kinds():
            pos = s.actions(kind)
            halves = [
                auc(scores[m], pos[m])
                for half in (side, ~side)
                if (m := half & (pos | s.background) & np.isfinite(scores)).any()
            ]
            halves = [a for a in halves if np.isfinite(a)]
            pooled[kind] = float(np.mean(halves)) if halves else float("nan")
        out[name] = {**pair_aucs(scores, s), "pooled": pooled, "l2": l2}
    return out


def separation_on_test(fs: FeatureSet, rows: np.ndarray, cas: np.ndarray, h, seed: int = 0) -> dict:
    """:func:`separation_summary` of a model on the feature set's ``rows`` videos (its test
    videos), from its raw T-CAS ``cas`` and embedding ``h`` of those videos' snippets (in ``rows``
    order), with the feature set's ground truth and, for a synthetic set, its hidden cores; plus
    the seconds it took."""
    started = time.perf_counter()
    table = SnippetTable(rebase(fs.videos.iloc[rows]))
    n = table.videos["n_snippets"].to_numpy(np.int64)
    start = fs.videos["offset"].to_numpy(np.int64)[rows]
    feature_rows = np.concatenate([np.arange(a, a + k) for a, k in zip(start, n, strict=True)])
    core = hidden_core(fs.path, fs, fs.annotations)
    s = Snippets(
        truth=snippet_truth(table, fs.annotations, fs.classes),
        video=np.repeat(np.arange(len(rows)), n),
        labels=fs.label_matrix(rows).astype(bool),
        core=None if core is None else core[feature_rows],
    )
    out = separation_summary(cas, h, fs.features, feature_rows, s, seed)
    out["seconds"] = round(time.perf_counter() - started, 2)
    return out
