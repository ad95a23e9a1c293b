"""The ActivityNet detection protocol (``eval_detection.py`` of activitynet/ActivityNet), fast.

Semantics (each checked against the official code; the defaults reproduce it exactly):

- Ground truth: the instances of one subset (:class:`wtalcli.evaluation.groundtruth.GroundTruth`).  Classes are the
  labels present in it, in order of first appearance (the reference's ``activity_index``).
  ``npos`` of a class = its number of instances.
- Predictions are taken in file order.  Per class they are ranked by descending score.
  ``ties="reference"``: the rank is ``np.argsort(scores_of_class_in_file_order)[::-1]``, the very
  call the reference makes (pandas ``Series.values.argsort()`` is numpy's default ``quicksort``
  kind).  That sort is *not stable*, and which of several equal scores comes first depends on the
  numpy version and on the CPU (numpy >= 1.25/2.0 dispatches it to x86-simd-sort on AVX2/AVX-512
  machines, introsort with insertion sort for <= 16 elements elsewhere); calling it on the same
  array reproduces the reference on the same machine.  If every score in the file is an integer
  the reference sorts an int64 array, and so does this module.  ``ties="stable"``: equal scores
  keep file order (earlier first), and equal tIoUs prefer the earlier ground-truth instance.
- A prediction is compared with the instances of its class in its video.  The reference visits
  them in ``argsort(tiou)[::-1]`` order (the same unstable sort, run here on identical rows), skips
  instances already matched at that threshold, and stops at the first tIoU below the threshold.
  The result: it matches the unmatched instance of highest tIoU if that tIoU >= threshold, each
  instance matching at most once per threshold.  Predictions on videos with no instance of their
  class are false positives, and so are predictions on videos outside the subset (the reference
  never filters predictions by subset; ``outside_subset="drop"`` drops them instead).
- tIoU is computed with the reference's arithmetic: ``inter = max(min(e1,e2) - max(s1,s2), 0)``,
  ``union = (e_gt - s_gt) + (e_pred - s_pred) - inter``, ``tiou = inter / union``.
  Degenerate segments: a zero-length prediction against a zero-length instance (anywhere in the
  video) gives 0/0 = NaN; ``argsort`` puts NaN last, so the reversed order visits it first, and
  ``NaN < thr`` is false, so the reference counts it as a match at every threshold.
  ``degenerate="reference"`` (default) reproduces that; ``degenerate="miss"`` treats a NaN tIoU as
  no match (a zero-length instance then can never be found).  ActivityNet-1.3 validation has three
  zero-length instances; under the reference rule submitting the ground truth still scores 1.0.
  Reversed segments (start > end) are not reordered: the same arithmetic applies (the
  intersection is 0, so tIoU is 0, -0.0 or, when the lengths cancel, NaN; that last case is a
  match under the reference rule and a miss under ``degenerate="miss"``).
- Unknown labels (not among the subset's classes): the reference raises ``KeyError``.
  ``unknown_labels="error"`` (default) raises an :class:`InputError` naming the label;
  ``"drop"`` drops those predictions (they cannot count for any class's AP) and counts them.
- Videos removed by a protocol (``GroundTruth.excluded_videos``, like the reference's blocked
  videos) have their predictions dropped, as the reference does for blocked videos.
- AP: all-point interpolated (``interpolated_prec_rec``: precision made monotone from the right,
  summed over the recall steps); a class with no predictions has AP 0.  mAP per tIoU is the mean
  over classes, the average mAP the mean over thresholds.  :func:`precision_recall` returns each
  class's precision-recall points at one threshold from the same ranking and matching (the report
  draws them), with the very AP :func:`evaluate_detection` gives.
- THUMOS14 ``Ambiguous`` segments: ``ambiguous="ignore"`` (default; the ActivityNet protocol every
  WTAL codebase uses) treats them like background.  ``ambiguous="exclude"`` follows the THUMOS14
  toolkit (``TH14evalDet.m``: "overlapping detections will be removed from the FP list"): at each
  threshold, a prediction that is not a true positive and whose interval intersects (positive
  length) an Ambiguous segment of its video is removed from the ranking of its class.

Speed: the per-(video, class) greedy matching is the only sequential part.  It is resolved for
all thresholds and groups at once in rounds: every still-unresolved prediction looks at its
best still-free instance; in each group, the predictions before the first one whose choice
collides with an earlier one's are final (they get exactly the instance the sequential loop would
give).  The number of rounds is bounded by the matches per group, not by the predictions.  Only
(prediction, instance) pairs that can match at some threshold are built (an interval search per
group); a prediction's whole row is sorted only where NaN or tied tIoUs make the reference's
unstable order matter.
"""

from __future__ import annotations

import gc
import itertools
import json
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from wtalcli.core.errors import InputError
from wtalcli.data.annotations import short_repr
from wtalcli.evaluation.groundtruth import GroundTruth

Ties = Literal["reference", "stable"]
Degenerate = Literal["reference", "miss"]

# Threshold values exactly as the reference code builds them (np.linspace): ActivityNet's
# default, BaS-Net's test.py (0.1..0.9, so 0.30000000000000004 and 0.7000000000000001), and the
# THUMOS14 range papers report (0.1..0.7, whose linspace equals the decimals).  Note ANet's
# fifth-from-last value 0.8999999999999999, not 0.9.
TIOU_PRESETS: dict[str, np.ndarray] = {
    "thumos14": np.linspace(0.1, 0.7, 7),
    "thumos14-basnet": np.linspace(0.1, 0.9, 9),
    "anet": np.linspace(0.5, 0.95, 10),
}


# ---------------------------------------------------------------------------------- thresholds


def parse_tiou_thresholds(spec: str | Sequence[float] | np.ndarray) -> np.ndarray:
    """tIoU thresholds from a preset name, ``start:stop:step`` (stop included) or a comma list.

    ``"0.1:0.7:0.1"`` gives ``np.linspace(0.1, 0.7, 7)``: the stop is included (papers write
    tIoU ranges inclusively) and the values are those of ``np.linspace``, so a range written as
    ``0.5:0.95:0.05`` equals the ActivityNet default bit for bit.  Values must lie in (0, 1].
    """
    if isinstance(spec, str):
        text = spec.strip()
        if text in TIOU_PRESETS:
            values = TIOU_PRESETS[text].copy()
        elif ":" in text:
            values = _inclusive_range(text)
        else:
            try:
                values = np.array([float(x) for x in text.split(",") if x.strip()], dtype=np.float64)
            except ValueError:
                raise InputError(
                    f"cannot read tIoU thresholds {spec!r}",
                    f"give a preset ({', '.join(TIOU_PRESETS)}), start:stop:step or a comma list",
                ) from None
    else:
        values = np.asarray(spec, dtype=np.float64).reshape(-1)
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values <= 0) or np.any(values > 1):
        raise InputError(f"invalid tIoU thresholds {spec!r}", "thresholds must lie in (0, 1]")
    return values


def _inclusive_range(text: str) -> np.ndarray:
    parts = text.split(":")
    try:
        start, stop, step = (float(p) for p in parts)
    except ValueError:
        raise InputError(f"cannot read range {text!r}", "write start:stop:step, e.g. 0.1:0.7:0.1") from None
    if not (step > 0 and stop >= start):
        raise InputError(f"empty range {text!r}", "write start:stop:step with step > 0 and stop >= start")
    steps = (stop - start) / step
    if not steps <= 10_000:  # also inf/nan: a typo such as a step of 1e-13, never a huge array
        raise InputError(f"range {text!r} gives more than 10000 thresholds", "use a larger step")
    n = round(steps)
    if abs(steps - n) > 1e-6:
        raise InputError(f"range {text!r}: stop is not start + k*step", "adjust stop or step")
    return np.linspace(start, stop, n + 1)


# ---------------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class Predictions:
    """Columnar predictions, in file order (the order matters for ``ties="reference"``)."""

    videos: list[str]  # distinct video ids, in order of first appearance
    video_index: np.ndarray  # (n,) int64 into ``videos``
    label_names: list[str]  # distinct labels, in order of first appearance
    label_index: np.ndarray  # (n,) int64 into ``label_names``
    scores: np.ndarray  # (n,) float64
    t_start: np.ndarray  # (n,) float64 seconds
    t_end: np.ndarray  # (n,) float64 seconds
    integer_scores: bool = False  # every score was an integer (the reference then sorts int64)
    source: str = "predictions"
    meta: dict = field(default_factory=dict)  # version / external_data of a results file

    def __len__(self) -> int:
        return len(self.scores)

    @staticmethod
    def from_arrays(
        video_ids: Sequence[str] | np.ndarray,
        labels: Sequence[str] | np.ndarray,
        scores,
        t_start,
        t_end,
        source: str = "predictions",
    ) -> Predictions:
        """Build from per-prediction sequences (no JSON round trip)."""
        vnames, vidx = _factorize(video_ids)
        lnames, lidx = _factorize(labels)
        sc = np.asarray(scores, dtype=np.float64).reshape(-1)
        s = np.asarray(t_start, dtype=np.float64).reshape(-1)
        e = np.asarray(t_end, dtype=np.float64).reshape(-1)
        if not (len(vidx) == len(lidx) == len(sc) == len(s) == len(e)):
            raise InputError(
                "prediction columns differ in length", "give one value per prediction", path=source
            )
        _check_finite(sc, s, e, vnames, vidx, source)
        return Predictions(vnames, vidx, lnames, lidx, sc, s, e, False, source)

    def video_ids(self) -> np.ndarray:
        return np.array(self.videos, dtype=object)[self.video_index]

    def labels(self) -> np.ndarray:
        return np.array(self.label_names, dtype=object)[self.label_index]

    def to_results_dict(self, version: str = "VERSION 1.3", external_data: dict | None = None) -> dict:
        """The ActivityNet results JSON object (videos in order of first appearance)."""
        return results_dict(
            self.video_ids(), self.labels(), self.scores, self.t_start, self.t_end, version, external_data
        )


def results_dict(
    video_ids,
    labels,
    scores,
    t_start,
    t_end,
    version: str = "VERSION 1.3",
    external_data: dict | None = None,
    all_videos: Sequence[str] | None = None,
) -> dict:
    """``{"version", "external_data", "results": {video: [{label, score, segment}]}}``.

    ``all_videos`` (optional) lists videos to include even without predictions (empty lists).
    """
    results: dict[str, list] = {str(v): [] for v in all_videos} if all_videos is not None else {}
    for v, lab, sc, s, e in zip(
        np.asarray(video_ids, dtype=object).tolist(),
        np.asarray(labels, dtype=object).tolist(),
        np.asarray(scores, dtype=np.float64).tolist(),
        np.asarray(t_start, dtype=np.float64).tolist(),
        np.asarray(t_end, dtype=np.float64).tolist(),
        strict=True,
    ):
        results.setdefault(str(v), []).append({"label": str(lab), "score": sc, "segment": [s, e]})
    return {
        "version": version,
        "external_data": external_data if external_data is not None else {"used": False, "details": ""},
        "results": results,
    }


def _factorize(values) -> tuple[list[str], np.ndarray]:
    lut: dict = {}
    seq = values.tolist() if isinstance(values, np.ndarray) else list(values)
    idx = np.fromiter((lut.setdefault(x, len(lut)) for x in seq), dtype=np.int64, count=len(seq))
    return [str(k) for k in lut], idx


def _check_finite(sc, s, e, vnames, vidx, source) -> None:
    bad = ~(np.isfinite(sc) & np.isfinite(s) & np.isfinite(e))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"prediction {i} of video {vnames[vidx[i]]!r} has a non-finite score or segment",
            "write finite numbers",
            path=source,
        )


@contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector while json builds millions of small objects (2x faster)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def load_predictions(source: str | Path | bytes) -> Predictions:
    """Parse an ActivityNet results JSON (a path, or the file's bytes)."""
    if isinstance(source, (bytes, bytearray)):
        raw, name = bytes(source), "predictions"
    else:
        path = Path(source)
        name = str(path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise InputError("prediction file not found", "check the path", path=path) from None
        except IsADirectoryError:
            raise InputError(
                "prediction path is a folder", "give the results .json file", path=path
            ) from None
    with _gc_paused():
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # also > 4300-digit integers and absurd nesting
            raise InputError(
                f"predictions are not valid JSON ({exc})", "give an ActivityNet results JSON", path=name
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
            raise InputError(
                "predictions have no 'results' object",
                'expected {"version", "external_data", "results": {video: [{label, score, segment}]}}',
                path=name,
            )
        return _columns(data, name)


def _columns(data: dict, name: str) -> Predictions:
    results = data["results"]
    videos = list(results.keys())
    lists = list(results.values())
    if not all(type(v) is list for v in lists):
        bad = next(k for k, v in results.items() if not isinstance(v, list))
        raise InputError(f"results of video {bad!r} are not a list", "write a list of predictions", path=name)
    counts = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    n = int(counts.sum())
    items = list(itertools.chain.from_iterable(lists))
    try:
        labels = [x["label"] for x in items]
        scores_l = [x["score"] for x in items]
        segs = [x["segment"] for x in items]
    except (TypeError, KeyError):
        _locate_bad_item(results, name)
        raise  # _locate_bad_item always raises; this keeps type checkers content
    score_types = set(map(type, scores_l))
    if not score_types <= {float, int}:
        _locate_bad_item(results, name)
    integer_scores = score_types == {int}
    try:
        scores = np.fromiter(scores_l, dtype=np.float64, count=n)
    except OverflowError:  # an integer beyond the float range
        _locate_bad_item(results, name)
        raise
    bounds = None
    if set(map(type, segs)) <= {list} and set(map(len, segs)) <= {2}:
        try:
            bounds = np.fromiter(itertools.chain.from_iterable(segs), dtype=np.float64, count=2 * n)
        except (TypeError, ValueError, OverflowError):
            bounds = None
    if bounds is None:  # strings, tuples or malformed segments: the careful path
        bounds = np.array([[_bound(s, 0, results, name), _bound(s, 1, results, name)] for s in segs], float)
        bounds = bounds.reshape(-1)
    lut: dict = {}
    label_index = np.fromiter((lut.setdefault(x, len(lut)) for x in labels), dtype=np.int64, count=n)
    label_names = list(lut)
    for lab in label_names:
        if not isinstance(lab, str) or not lab:
            raise InputError(f"a prediction has label {lab!r}", "labels must be class names", path=name)
    video_index = np.repeat(np.arange(len(videos), dtype=np.int64), counts)
    t_start = bounds[0::2].copy()
    t_end = bounds[1::2].copy()
    _check_finite(scores, t_start, t_end, videos, video_index, name)
    meta = {k: data[k] for k in ("version", "external_data") if k in data}
    return Predictions(
        videos, video_index, label_names, label_index, scores, t_start, t_end, integer_scores, name, meta
    )


def _bound(seg, k: int, results: dict, name: str) -> float:
    if not isinstance(seg, (list, tuple)) or len(seg) != 2:
        _locate_bad_item(results, name)
    x = seg[k]
    if isinstance(x, bool) or not isinstance(x, (int, float, str)):
        _locate_bad_item(results, name)
    try:
        return float(x)
    except (ValueError, OverflowError):
        _locate_bad_item(results, name)
        raise


def _as_float(x) -> float | None:
    """``float(x)``, or None where that fails (not numeric, or an integer beyond the float range)."""
    try:
        return float(x)
    except (TypeError, ValueError, OverflowError):
        return None


def _locate_bad_item(results: dict, name: str) -> None:
    """Raise an InputError naming the first malformed prediction."""
    for vid, items in results.items():
        for k, x in enumerate(items):
            where = f"prediction {k} of video {vid!r}"
            if not isinstance(x, dict):
                raise InputError(f"{where} is not an object", "write {label, score, segment}", path=name)
            for key in ("label", "score", "segment"):
                if key not in x:
                    raise InputError(f"{where} lacks '{key}'", "write {label, score, segment}", path=name)
            sc = x["score"]
            if isinstance(sc, bool) or not isinstance(sc, (int, float)) or _as_float(sc) is None:
                raise InputError(
                    f"{where}: score {short_repr(sc)} is not a number", "write a numeric score", path=name
                )
            seg = x["segment"]
            if not isinstance(seg, (list, tuple)) or len(seg) != 2:
                raise InputError(
                    f"{where}: segment {seg!r} is not [start, end]", "write [start, end]", path=name
                )
            for b in seg:
                ok = not isinstance(b, bool) and isinstance(b, (int, float, str)) and _as_float(b) is not None
                if not ok:
                    raise InputError(
                        f"{where}: segment bound {short_repr(b)} is not a number",
                        "write seconds as numbers",
                        path=name,
                    )
    raise InputError("malformed predictions", "check the results entries", path=name)


# ---------------------------------------------------------------------------------- result


@dataclass(frozen=True)
class EvalResult:
    """Per-class AP at every threshold, plus what was counted and dropped."""

    tiou_thresholds: np.ndarray  # (n_thr,)
    classes: list[str]  # (C,) in the reference's activity-index order
    ap: np.ndarray  # (C, n_thr)
    n_gt: np.ndarray  # (C,) instances per class
    n_pred: np.ndarray  # (C,) predictions ranked per class
    counts: dict  # predictions read / dropped and why
    options: dict  # the semantic options used
    ground_truth: str  # GroundTruth.summary()

    @property
    def map_per_tiou(self) -> np.ndarray:
        """mAP at each threshold (mean over classes)."""
        return np.ascontiguousarray(self.ap.T).mean(axis=1)

    @property
    def average_map(self) -> float:
        return float(self.map_per_tiou.mean())

    def to_json(self) -> dict:
        """A JSON-serialisable report."""
        return {
            "tiou_thresholds": [float(t) for t in self.tiou_thresholds],
            "map_per_tiou": [float(x) for x in self.map_per_tiou],
            "average_map": self.average_map,
            "classes": list(self.classes),
            "ap": {c: [float(x) for x in row] for c, row in zip(self.classes, self.ap, strict=True)},
            "n_gt": {c: int(n) for c, n in zip(self.classes, self.n_gt, strict=True)},
            "n_pred": {c: int(n) for c, n in zip(self.classes, self.n_pred, strict=True)},
            "counts": dict(self.counts),
            "options": dict(self.options),
            "ground_truth": self.ground_truth,
        }


# ---------------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class ClassPR:
    """One class's ranking at one tIoU threshold: the predictions kept in the ranking (those the
    ``ambiguous="exclude"`` rule removes are left out), best score first."""

    scores: np.ndarray  # (k,) float64, descending (ties in the evaluator's order)
    tp: np.ndarray  # (k,) bool: true positive at this threshold
    recall: np.ndarray  # (k,) recall after each prediction
    precision: np.ndarray  # (k,) precision after each prediction
    ap: float  # the all-point interpolated AP: exactly EvalResult.ap of this class and threshold


@dataclass(frozen=True)
class _Ranked:
    """What the matching produced, before AP: per-class rankings and their true positives."""

    thr: np.ndarray
    classes: list[str]
    tp: np.ndarray  # (n_thr, n) bool, class-major rank order
    exclude: np.ndarray | None  # (n_thr, n) bool: removed from the ranking (Ambiguous rule)
    bounds: np.ndarray  # (C+1,) class c ranks at bounds[c]:bounds[c+1]
    scores: np.ndarray  # (n,) scores in rank order
    n_gt: np.ndarray
    n_pred: np.ndarray
    counts: dict
    options: dict
    ground_truth: str

    def result(self) -> EvalResult:
        ap = _interpolated_ap(self.tp, self.exclude, self.bounds, self.n_gt)
        return EvalResult(
            self.thr, self.classes, ap, self.n_gt, self.n_pred, self.counts, self.options, self.ground_truth
        )

    def curves(self, t: int, ap: np.ndarray) -> dict[str, ClassPR]:
        out: dict[str, ClassPR] = {}
        for c, name in enumerate(self.classes):
            sl = slice(self.bounds[c], self.bounds[c + 1])
            keep = ~self.exclude[t, sl] if self.exclude is not None else np.ones(sl.stop - sl.start, bool)
            tp = self.tp[t, sl][keep]
            hits = np.cumsum(tp, dtype=np.float64)
            seen = np.arange(1, len(tp) + 1, dtype=np.float64)
            out[name] = ClassPR(
                self.scores[sl][keep], tp, hits / float(self.n_gt[c]), hits / seen, float(ap[c, t])
            )
        return out


def evaluate_detection(
    gt: GroundTruth,
    preds: Predictions,
    tiou_thresholds: np.ndarray | Sequence[float] | str = "anet",
    *,
    ties: Ties = "reference",
    degenerate: Degenerate = "reference",
    unknown_labels: Literal["error", "drop"] = "error",
    outside_subset: Literal["fp", "drop"] = "fp",
    ambiguous: Literal["ignore", "exclude"] = "ignore",
) -> EvalResult:
    """Average precision per class and tIoU threshold (see the module docstring for the rules)."""
    return _rank_and_match(
        gt, preds, tiou_thresholds, ties, degenerate, unknown_labels, outside_subset, ambiguous
    ).result()


def precision_recall(
    gt: GroundTruth,
    preds: Predictions,
    tiou_thresholds: np.ndarray | Sequence[float] | str = "anet",
    at: float = 0.5,
    **options,
) -> tuple[EvalResult, int, dict[str, ClassPR]]:
    """:func:`evaluate_detection` plus each class's precision-recall points at the threshold
    nearest ``at``: ``(result, index of that threshold, {class: ClassPR})``.  The curves come from
    the very ranking and matching the result's AP is computed from, so ``ClassPR.ap`` equals
    ``result.ap[class, index]`` exactly, and their mean ``result.map_per_tiou[index]``."""
    ranked = _rank_and_match(gt, preds, tiou_thresholds, **_options(options))
    result = ranked.result()
    t = int(np.argmin(np.abs(ranked.thr - at)))
    return result, t, ranked.curves(t, result.ap)


def _options(options: dict) -> dict:
    known = ("ties", "degenerate", "unknown_labels", "outside_subset", "ambiguous")
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"unknown evaluation options {unknown}")
    defaults = {"ties": "reference", "degenerate": "reference", "unknown_labels": "error"}
    return {**defaults, "outside_subset": "fp", "ambiguous": "ignore", **options}


def _rank_and_match(
    gt: GroundTruth,
    preds: Predictions,
    tiou_thresholds,
    ties: Ties,
    degenerate: Degenerate,
    unknown_labels: str,
    outside_subset: str,
    ambiguous: str,
) -> _Ranked:
    """Rank every class's predictions and match them at every threshold (the module's rules)."""
    thr = parse_tiou_thresholds(tiou_thresholds)
    for name, value, allowed in (
        ("ties", ties, ("reference", "stable")),
        ("degenerate", degenerate, ("reference", "miss")),
        ("unknown_labels", unknown_labels, ("error", "drop")),
        ("outside_subset", outside_subset, ("fp", "drop")),
        ("ambiguous", ambiguous, ("ignore", "exclude")),
    ):
        if value not in allowed:
            raise InputError(f"{name}={value!r} is not an option", f"use one of {allowed}")
    classes = gt.classes
    n_cls = len(classes)
    if n_cls == 0:
        raise InputError(
            "the ground truth has no instances", "check the subset and the protocol", path=gt.source
        )

    # --- ground truth: class and video indices, groups of (class, video) in source order
    cls_lut = {c: i for i, c in enumerate(classes)}
    gt_cls = np.fromiter((cls_lut[c] for c in gt.labels.tolist()), dtype=np.int64, count=len(gt))
    gt_vnames = gt.videos_with_instances
    vid_lut = {v: i for i, v in enumerate(gt_vnames)}
    gt_vid = np.fromiter((vid_lut[v] for v in gt.video_ids.tolist()), dtype=np.int64, count=len(gt))
    n_vid = max(len(gt_vnames), 1)
    gkey = gt_cls * n_vid + gt_vid
    gorder = np.argsort(gkey, kind="stable")
    g_s, g_e = gt.t_start[gorder], gt.t_end[gorder]
    ukeys, gstart, gcount = np.unique(gkey[gorder], return_index=True, return_counts=True)
    n_gt = np.bincount(gt_cls, minlength=n_cls)

    # --- predictions: drop excluded videos / unknown labels / (optionally) outside the subset
    counts = {"predictions_read": len(preds)}
    pv_excluded = np.array([v in gt.excluded_videos for v in preds.videos], dtype=bool)
    subset_set = set(gt.videos)
    pv_inside = np.array([v in subset_set for v in preds.videos], dtype=bool)
    pv_gtidx = np.array([vid_lut.get(v, -1) for v in preds.videos], dtype=np.int64)
    lab_cls = np.array([cls_lut.get(lab, -1) for lab in preds.label_names], dtype=np.int64)
    keep = ~pv_excluded[preds.video_index] if len(preds.videos) else np.zeros(0, bool)
    counts["dropped_excluded_videos"] = int(len(preds) - keep.sum())
    if outside_subset == "drop":
        inside = pv_inside[preds.video_index] if len(preds.videos) else np.zeros(0, bool)
        counts["dropped_outside_subset"] = int((keep & ~inside).sum())
        keep &= inside
    p_cls_all = lab_cls[preds.label_index] if len(preds.label_names) else np.zeros(0, np.int64)
    unknown = keep & (p_cls_all < 0)
    if unknown.any():
        if unknown_labels == "error":
            first = preds.label_names[int(preds.label_index[np.flatnonzero(unknown)[0]])]
            raise InputError(
                f"{int(unknown.sum())} predictions have labels absent from the ground truth "
                f"(first: {first!r})",
                "fix the class names, or drop such predictions (--unknown-labels drop)",
                path=preds.source,
            )
        keep &= ~unknown
    counts["dropped_unknown_labels"] = int(unknown.sum())
    idx = np.flatnonzero(keep)
    p_cls = p_cls_all[idx]
    p_vid = pv_gtidx[preds.video_index[idx]]
    if len(preds.videos):
        counts["outside_subset_false_positives"] = int((~pv_inside[preds.video_index[idx]]).sum())
    else:
        counts["outside_subset_false_positives"] = 0
    counts["predictions_ranked"] = int(len(idx))

    # --- rank predictions per class (class-major order; position = rank in the whole array)
    by_cls = np.argsort(p_cls, kind="stable")
    n_pred = np.bincount(p_cls, minlength=n_cls)
    bounds = np.concatenate([[0], np.cumsum(n_pred)])
    scores = preds.scores[idx]
    sort_scores = scores.astype(np.int64) if preds.integer_scores else scores
    order = np.empty_like(by_cls)
    for c in range(n_cls):
        seg = by_cls[bounds[c] : bounds[c + 1]]
        if ties == "reference":
            perm = np.argsort(sort_scores[seg])[::-1]
        else:
            perm = np.argsort(-scores[seg], kind="stable")
        order[bounds[c] : bounds[c + 1]] = seg[perm]
    s_s, s_e = preds.t_start[idx][order], preds.t_end[idx][order]
    s_vid, s_cls = p_vid[order], p_cls[order]
    orig_video = preds.video_index[idx][order]

    tp = _match(s_s, s_e, s_vid, s_cls, n_vid, ukeys, gstart, gcount, g_s, g_e, thr, ties, degenerate)

    exclude = None
    if ambiguous == "exclude":
        counts["ambiguous_excluded_per_tiou"] = [0] * len(thr)
        if len(gt.ambiguous):
            amb_hit = _ambiguous_overlap(preds.videos, orig_video, s_s, s_e, gt)
            exclude = ~tp & amb_hit[None, :]
            counts["ambiguous_excluded_per_tiou"] = [int(x) for x in exclude.sum(axis=1)]

    options = {
        "ties": ties,
        "degenerate": degenerate,
        "unknown_labels": unknown_labels,
        "outside_subset": outside_subset,
        "ambiguous": ambiguous,
    }
    return _Ranked(
        thr, classes, tp, exclude, bounds, scores[order], n_gt, n_pred, counts, options, gt.summary()
    )


def segment_tiou(ps, pe, gs, ge) -> np.ndarray:
    """tIoU of prediction and ground-truth segments with the reference's arithmetic (elementwise)."""
    tt1 = np.maximum(ps, gs)
    tt2 = np.minimum(pe, ge)
    inter = (tt2 - tt1).clip(0)
    union = (ge - gs) + (pe - ps) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / union


def _match(
    s_s, s_e, s_vid, s_cls, n_vid, ukeys, gstart, gcount, g_s, g_e, thr, ties, degenerate
) -> np.ndarray:
    """Greedy matching of ranked predictions; returns ``tp`` (n_thr, n) bool in rank order.

    Only candidate pairs are built: those that can match at some threshold (tIoU >= the lowest
    threshold, or NaN under the reference rule).  A prediction visits its candidates in
    decreasing tIoU (NaN first); where two candidates tie, the reference's unstable
    ``argsort(tiou)[::-1]`` decides, so that prediction's full row (all instances of its group, in
    source order) is sorted exactly as the reference does (``ties="reference"``), or the earlier
    instance goes first (``ties="stable"``).
    """
    n, n_thr = len(s_s), len(thr)
    tp = np.zeros(n_thr * n, dtype=bool)
    if n == 0 or len(ukeys) == 0:
        return tp.reshape(n_thr, n)
    # group of each prediction (its class's instances in its video), -1 if none
    pkey = np.where(s_vid >= 0, s_cls * n_vid + s_vid, -1)
    grp = np.searchsorted(ukeys, pkey)
    grp_c = np.minimum(grp, len(ukeys) - 1)
    has = (s_vid >= 0) & (ukeys[grp_c] == pkey)
    pred = np.flatnonzero(has)
    if len(pred) == 0:
        return tp.reshape(n_thr, n)
    pred = pred[np.argsort(grp_c[pred] * n + pred)]  # (group, rank) order: the order the rounds need
    pgrp = grp_c[pred]
    n_groups = len(ukeys)
    nan_hit = degenerate == "reference"
    lowest = float(thr.min())
    gt_group = np.repeat(np.arange(n_groups), gcount)
    g_len = g_e - g_s
    p_s, p_e = s_s[pred], s_e[pred]

    # candidates.  Normal case (positive lengths): union > 0, so a match needs a positive
    # intersection: instances starting in (start - longest instance of the group, end).  Zero-length
    # or reversed segments can give 0/0 = NaN with any instance: those predictions get full rows.
    bad_group = np.zeros(n_groups, dtype=bool)
    bad_group[gt_group[~(g_len > 0)]] = True
    special = ~(p_e - p_s > 0) | bad_group[pgrp]
    by_start = np.lexsort((g_s, gt_group))  # grouped instance indices, by (group, start)
    lo_all = float(min(g_s.min(), p_s.min()))
    span = float(max(g_e.max(), g_s.max(), p_e.max(), p_s.max()) - lo_all) + 1.0
    key = gt_group[by_start] * span + (g_s[by_start] - lo_all)
    margin = (n_groups + 1.0) * span * 1e-13  # absorbs rounding of the keys: a superset is fine
    longest = np.zeros(n_groups)
    np.maximum.at(longest, gt_group, np.maximum(g_len, 0.0))
    norm = np.flatnonzero(~special)
    qg = pgrp[norm]
    lo = np.searchsorted(key, qg * span + (p_s[norm] - longest[qg] - lo_all) - margin, side="left")
    hi = np.searchsorted(key, qg * span + (p_e[norm] - lo_all) + margin, side="right")
    lo = np.maximum(lo, gstart[qg])
    hi = np.minimum(hi, gstart[qg] + gcount[qg])
    cnt = np.maximum(hi - lo, 0)
    spec = np.flatnonzero(special)
    m_spec = gcount[pgrp[spec]]
    pair_pred = np.concatenate([np.repeat(norm, cnt), np.repeat(spec, m_spec)])  # index into ``pred``
    pair_gt = np.concatenate([by_start[_ranges(lo, cnt)], _ranges(gstart[pgrp[spec]], m_spec)])
    tiou = segment_tiou(p_s[pair_pred], p_e[pair_pred], g_s[pair_gt], g_e[pair_gt])
    isnan = np.isnan(tiou)
    with np.errstate(invalid="ignore"):
        useful = tiou >= lowest
    if nan_hit:
        useful |= isnan
    pair_pred, pair_gt, tiou, isnan = pair_pred[useful], pair_gt[useful], tiou[useful], isnan[useful]
    local = pair_gt - gstart[pgrp[pair_pred]]  # source order within the group

    # visit order: NaN first, then decreasing tIoU, ties by source order (exact for "stable")
    desc = np.where(isnan, -np.inf, -tiou)
    order = np.lexsort((local, desc, pair_pred))
    if ties == "reference":
        pp, dd = pair_pred[order], desc[order]
        tie = np.zeros(len(order), dtype=bool)
        tie[1:] = (pp[1:] == pp[:-1]) & (dd[1:] == dd[:-1])
        tied = np.unique(pp[tie])
        if len(tied):
            # the reference's own order for these predictions: argsort of the full tIoU row
            row_rank = np.zeros(len(order), dtype=np.int64)
            within = np.arange(len(order)) - np.searchsorted(pp, pp, side="left")
            row_rank[:] = within  # non-tied predictions keep the order above
            m_t = gcount[pgrp[tied]]
            for mm in np.unique(m_t):
                rows = tied[m_t == mm]
                cell = gstart[pgrp[rows]][:, None] + np.arange(mm)[None, :]
                full = segment_tiou(p_s[rows][:, None], p_e[rows][:, None], g_s[cell], g_e[cell])
                perm = np.argsort(full, axis=1)[:, ::-1]  # the call the reference makes, per row
                rank = np.empty_like(perm)
                np.put_along_axis(rank, perm, np.arange(mm)[None, :], axis=1)
                slot = np.full(len(pred), -1, dtype=np.int64)
                slot[rows] = np.arange(len(rows))
                sel = np.flatnonzero(slot[pp] >= 0)
                row_rank[sel] = rank[slot[pp[sel]], local[order][sel]]
            order = order[np.lexsort((row_rank, pp))]
    visit = order
    v_tiou, v_nan = tiou[visit], isnan[visit]
    v_group = pgrp[pair_pred[visit]].astype(np.int64)
    v_pos = pred[pair_pred[visit]].astype(np.int64)
    v_gt = pair_gt[visit].astype(np.int64)
    n_groups, n_inst = len(ukeys), len(g_s)

    e_g, e_p, e_l = [], [], []
    for t in range(n_thr):
        with np.errstate(invalid="ignore"):
            ok = v_tiou >= thr[t]
        if degenerate == "reference":
            ok |= v_nan
        sel = np.flatnonzero(ok)
        e_g.append(v_group[sel] + t * n_groups)
        e_p.append(v_pos[sel] + t * n)
        e_l.append(v_gt[sel] + t * n_inst)
    eg, ep, el = np.concatenate(e_g), np.concatenate(e_p), np.concatenate(e_l)
    locked = np.zeros(n_thr * n_inst, dtype=bool)
    while len(eg):
        first = np.ones(len(ep), dtype=bool)
        first[1:] = ep[1:] != ep[:-1]
        top = np.flatnonzero(first)  # each unresolved prediction's best free instance
        tg, tl, tpk = eg[top], el[top], ep[top]
        o = np.argsort(tl, kind="stable")  # tops are in (group, rank) order: earlier rank first
        sl = tl[o]
        dup = np.zeros(len(top), dtype=bool)
        dup[o[1:]] = sl[1:] == sl[:-1]  # an earlier prediction wants the same instance
        cs = np.cumsum(dup)
        gfirst = np.ones(len(top), dtype=bool)
        gfirst[1:] = tg[1:] != tg[:-1]
        start = np.maximum.accumulate(np.where(gfirst, np.arange(len(top)), 0))
        accept = (cs - (cs[start] - dup[start])) == 0  # before the group's first collision
        tp[tpk[accept]] = True
        locked[tl[accept]] = True
        alive = ~(locked[el] | tp[ep])
        eg, ep, el = eg[alive], ep[alive], el[alive]
    return tp.reshape(n_thr, n)


def _ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each pair (vectorised)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    offs = np.repeat(np.asarray(starts, dtype=np.int64) - (np.cumsum(sizes) - sizes), sizes)
    return offs + np.arange(int(sizes.sum()), dtype=np.int64)


def _ambiguous_overlap(videos: list[str], video_of, s_s, s_e, gt: GroundTruth) -> np.ndarray:
    """Whether each prediction intersects (positive length) an ambiguous segment of its video."""
    amb = gt.ambiguous
    out = np.zeros(len(s_s), dtype=bool)
    lut: dict[str, list[int]] = {}
    for i, v in enumerate(amb.video_ids.tolist()):
        lut.setdefault(v, []).append(i)
    for vi, v in enumerate(videos):
        rows = lut.get(v)
        if not rows:
            continue
        sel = np.flatnonzero(video_of == vi)
        if len(sel) == 0:
            continue
        a_s, a_e = amb.t_start[rows], amb.t_end[rows]
        inter = np.minimum(s_e[sel, None], a_e[None, :]) - np.maximum(s_s[sel, None], a_s[None, :])
        out[sel] = (inter > 0).any(axis=1)
    return out


def _interpolated_ap(
    tp: np.ndarray, exclude: np.ndarray | None, bounds: np.ndarray, npos: np.ndarray
) -> np.ndarray:
    """All-point interpolated AP (``interpolated_prec_rec``) of every class at every threshold.

    ``tp`` is (n_thr, n) in class-major rank order, class ``c`` at ``bounds[c]:bounds[c+1]``.
    Recall changes exactly at the true positives, where the reference adds
    ``(rec[k] - rec[k-1]) * max(prec[k:])``; between true positives precision only falls, so
    ``max(prec[k:])`` is the maximum over the true positives from ``k`` on.  Only those positions
    are computed, with the reference's own divisions (``tp_cum / npos``,
    ``tp_cum / (tp_cum + fp_cum)`` on exact integer counts), so every term is bit-identical.
    Returns (C, n_thr).
    """
    n_thr, n = tp.shape
    n_cls = len(npos)
    ap = np.zeros((n_cls, n_thr))
    if n == 0:
        return ap
    cls_of = np.repeat(np.arange(n_cls), np.diff(bounds))
    t_idx, k = np.nonzero(tp)  # row-major: by threshold, then rank (so by class, then rank)
    if len(k) == 0:
        return ap
    c = cls_of[k]
    seg = t_idx * n_cls + c  # one segment per (threshold, class), ascending
    new = np.ones(len(k), dtype=bool)
    new[1:] = seg[1:] != seg[:-1]
    starts = np.flatnonzero(new)
    ordinal = np.arange(len(k)) - np.repeat(starts, np.diff(np.append(starts, len(k))))
    r = (ordinal + 1).astype(np.float64)  # tp_cum at the k-th position
    seen = (k - bounds[c] + 1).astype(np.float64)  # predictions ranked so far in the class
    fp = seen - r
    if exclude is not None:
        ex_cum = np.cumsum(exclude, axis=1)
        before = np.where(bounds[c] > 0, ex_cum[t_idx, np.maximum(bounds[c] - 1, 0)], 0)
        fp -= ex_cum[t_idx, k] - before
    n_pos = npos[c].astype(np.float64)
    rec = r / n_pos
    prev = (r - 1.0) / n_pos
    prec = r / (r + fp)
    # suffix maximum of precision within each segment, on a padded (segments, longest) array
    lengths = np.diff(np.append(starts, len(k)))
    pad = np.full((len(starts), int(lengths.max())), -np.inf)
    pad[np.repeat(np.arange(len(starts)), lengths), ordinal] = prec
    env = np.maximum.accumulate(pad[:, ::-1], axis=1)[:, ::-1][
        np.repeat(np.arange(len(starts)), lengths), ordinal
    ]
    sums = np.add.reduceat((rec - prev) * env, starts)
    first_seg = seg[starts]
    ap[first_seg % n_cls, first_seg // n_cls] = sums
    return ap


__all__ = [
    "TIOU_PRESETS",
    "ClassPR",
    "EvalResult",
    "Predictions",
    "evaluate_detection",
    "load_predictions",
    "parse_tiou_thresholds",
    "precision_recall",
    "results_dict",
    "segment_tiou",
]
