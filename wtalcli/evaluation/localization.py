"""BaS-Net inference: T-CAS -> scored segments, vectorised; the official computation, four
deliberate deviations switchable back (``docs/inference.md`` lists them with their effect).

Per video (docs/method.md §3), from the suppression-branch CAS ``(T, C+1)`` (raw:
the last convolution's output, last channel background) and the video-level scores ``(C+1,)``:

1. classes ``c < C`` with ``scores[c] >= class_threshold`` are kept (class 0 included: the
   official ``if pred.any()`` on the kept class indices drops every video whose only kept class
   is 0; ``drop_class0_only=True`` does the same);
2. each kept class is min-max normalised over time as BaS-Net's ``minmax_norm``:
   ``(x - relu(min)) / (relu(max) - relu(min))``, a non-positive denominator replaced by 1
   (computed in float64), so stretches with negative activations stay negative and fall below
   every threshold;
3. the series is upsampled ``upsample`` times by linear interpolation (below);
4. for every activation threshold, the maximal runs of upsampled samples with
   ``value >= threshold`` and ``value > 0`` are proposals (BaS-Net zeroes values below the
   threshold and keeps the positive ones, so threshold 0 means "positive");
5. score = outer-inner contrast: ``mean(inside) - mean(outer) + oic_gamma * score_c``, both
   means taken on the upsampled curve *zeroed below the current threshold* (BaS-Net's
   ``get_proposal_oic`` receives that curve: outer samples count only where they are at or above
   the threshold, i.e. where they belong to other runs of the same threshold).  The outer band
   is ``[floor(s - lam*L), s) U [e, floor(e - 1 + lam*L)]`` (samples, ``L`` the run length,
   ``e`` exclusive; ``ceil(lam*L)`` samples on the left, ``floor(lam*L)`` on the right, as the
   official ``int()`` of the band's ends) clipped to the video, its mean 0 when empty.  ``score_c`` is the video-level
   score (``oic_class_score="real"``); the official code binarised it (``"binary"``: 1 for every
   kept class, so the term is the constant ``oic_gamma``);
6. per-class greedy NMS at tIoU ``nms_tiou`` over the union of all thresholds' proposals,
   suppressing tIoU >= ``nms_tiou``.  Default: exact tIoU on the sample intervals; the official
   ``+ 1`` on every length and intersection in seconds (meant for frame indices) with
   ``nms_plus_one=True``.  Order: score descending, ties by lower activation threshold, then
   earlier start;
7. optionally only the ``max_proposals`` best (score) segments of the video are kept.

Upsampled grid and seconds.  Sample ``j`` (``0 <= j < T*upsample``) owns the snippet-axis cell
``[j/upsample, (j+1)/upsample)`` (snippet ``t`` owns ``[t, t+1)``), so a run of samples
``[s, e)`` covers cells ``[s/upsample, e/upsample)``, converted to seconds with
:meth:`wtalcli.data.timegrid.TimeGrid.index_to_seconds` (with clip_len = stride = 16 at 25 fps this is
BaS-Net's ``16 * j / (25 * 24)``).  The value of sample ``j`` is the CAS interpolated at snippet
position ``u``, snippet ``t``'s value sitting at ``u = t``:

- ``alignment="center"`` (default): ``u = (j + 0.5)/upsample - 0.5``, the centre of the sample's
  cell in snippet units, clamped to ``[0, T-1]`` (flat ends).  Snippet ``t``'s value is then
  placed at the centre of its own cell, so a segment thresholded at half height covers exactly
  its snippets' cells.
- ``alignment="basnet"``: ``u = j/upsample`` with linear extrapolation past ``T-1`` (scipy's
  ``interp1d(..., fill_value="extrapolate")`` on ``np.arange(0, T, 1/24)``, as BaS-Net): values
  sit half a snippet left of their cells, i.e. segments come out shifted 0.5 snippet early.

Speed: the upsampled series is never materialised.  Between two knots it is linear, so it is
monotone on each group of samples between knots; run boundaries are found from the levels
(number of thresholds passed) at each group's first and last sample and, inside a group, by a
vectorised binary search that evaluates exactly the same expression as the dense upsampling.
Inside sums come from closed-form prefix sums of the linear pieces; the outer sums on the zeroed
curve are sums of whole and partial run masses of the same (series, threshold), found by one
binary search per band end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from types import MappingProxyType
from typing import Literal

import numpy as np

from wtalcli.core.errors import InputError
from wtalcli.core.params import param
from wtalcli.data.schema import SUBSETS
from wtalcli.data.timegrid import TimeGrid
from wtalcli.evaluation.detection import results_dict

# BaS-Net's config.py: act_thresh = np.arange(0.0, 0.25, 0.025) (ten values, 0.225 the last)
BASNET_ACT_THRESHOLDS: tuple[float, ...] = tuple(float(x) for x in np.arange(0.0, 0.25, 0.025))

# the videos localize reads: a subset of the T-CAS, or all of them
LOCALIZE_SUBSETS = (*reversed(SUBSETS), "all")  # test, val, train, all
# every switchable deviation: wtal's value, and the official code's (docs/inference.md)
WTAL_DEFAULTS: Mapping[str, object] = MappingProxyType(
    {"alignment": "center", "oic_class_score": "real", "nms_plus_one": False, "drop_class0_only": False}
)
OFFICIAL: Mapping[str, object] = MappingProxyType(
    {"alignment": "basnet", "oic_class_score": "binary", "nms_plus_one": True, "drop_class0_only": True}
)

Alignment = Literal["center", "basnet"]
ClassScore = Literal["real", "binary"]
MAX_THRESHOLDS = 10_000  # a range giving more is a typo (e.g. a step of 1e-13), not a request


def parse_act_thresholds(spec: str | float | Sequence[float]) -> tuple[float, ...]:
    """Activation thresholds from one value, a comma list, or ``start:stop:step``.

    A range excludes its stop, as ``np.arange`` (BaS-Net writes ``np.arange(0.0, 0.25, 0.025)``):
    its values are ``start + i*step`` for ``i = 0, 1, ...`` while below ``stop - 1e-9*step``, so
    ``"0:0.25:0.025"`` gives BaS-Net's ten values bit for bit (0.07500000000000001 included).
    Values must lie in [0, 1]; they are returned sorted and without duplicates.
    """
    if isinstance(spec, str):
        text = spec.strip()
        try:
            if ":" in text:
                start, stop, step = (float(p) for p in text.split(":"))
                if not step > 0 or stop <= start:
                    raise InputError(
                        f"empty threshold range {spec!r}",
                        "write start:stop:step with step > 0 and stop > start",
                    )
                count = (stop - start) / step - 1e-9
                if not count <= MAX_THRESHOLDS:  # also inf/nan: never build a huge list
                    raise InputError(
                        f"threshold range {spec!r} gives more than {MAX_THRESHOLDS} values",
                        "use a larger step",
                    )
                values = [start + i * step for i in range(int(np.ceil(count)))]
            else:
                values = [float(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise InputError(
                f"cannot read activation thresholds {spec!r}", "give a value, a comma list or start:stop:step"
            ) from None
    elif isinstance(spec, (int, float)):
        values = [float(spec)]
    else:
        values = [float(x) for x in spec]
    arr = np.unique(np.asarray(values, dtype=np.float64))
    if arr.size == 0 or not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
        raise InputError(f"invalid activation thresholds {spec!r}", "thresholds must lie in [0, 1]")
    return tuple(float(x) for x in arr)


@dataclass(frozen=True)
class LocalizeParams:
    """Everything ``localize`` can set: inference settings (defaults: BaS-Net's, minus its quirks;
    ``docs/inference.md``) and the videos it reads (``subset``; :func:`localize_all` takes its videos
    directly and ignores it).

    The deliberate deviations from the official code each have a switch back:
    ``alignment="basnet"`` (values at ``u = j/upsample``, segments half a snippet early),
    ``oic_class_score="binary"`` (the class score in the OIC score is 1 for every kept class,
    i.e. a constant ``oic_gamma``), ``nms_plus_one=True`` (NMS adds 1 to every length and
    intersection, measured in seconds) and ``drop_class0_only=True`` (no detections for a video
    whose only kept class is class 0). A switch left ``None`` takes wtal's value, or the official
    one (:data:`OFFICIAL`) with ``official=True``: a switch given explicitly always wins
    (:meth:`resolved`). ``official`` itself is not part of :meth:`as_dict` (the cache key), so
    ``official=True`` and the four switches set by hand make the same artifact.
    """

    class_threshold: float = param(0.25, "Keep classes whose video score is at least this.")
    act_thresholds: tuple[float, ...] = param(
        BASNET_ACT_THRESHOLDS,
        "Activation threshold(s): repeat the option, or give a comma list or start:stop:step with the "
        "stop EXCLUDED, as numpy.arange (BaS-Net's ten, the default, are 0:0.25:0.025 = 0, 0.025, ..., 0.225).",
        flag="--threshold",
        multiple=True,
        parse=lambda specs: tuple(sorted({x for s in specs for x in parse_act_thresholds(s)})),
        show=lambda v: "0:0.25:0.025" if tuple(v) == BASNET_ACT_THRESHOLDS else ",".join(f"{x:g}" for x in v),
    )
    upsample: int = param(24, "Temporal upsampling factor.")
    oic_lambda: float = param(0.25, "Outer band of the outer-inner score, as a share of the proposal length.")
    oic_gamma: float = param(0.2, "Weight of the class score in the proposal score.")
    nms_tiou: float = param(0.7, "Per-class NMS tIoU.", flag="--nms")
    max_proposals: int | None = param(None, "Keep at most this many proposals per video.")
    alignment: Alignment | None = param(
        None,
        "Where upsampled samples sit: center (default) = each snippet's value at the centre of its cell; "
        "basnet (--official) = u = j/upsample as the official code (segments half a snippet early).",
        choices=("center", "basnet"),
    )
    oic_class_score: ClassScore | None = param(
        None,
        "Class score in the proposal score: real (default) = the video-level score; binary (--official) = "
        "1 for every kept class, a constant gamma.",
        choices=("real", "binary"),
    )
    nms_plus_one: bool | None = param(
        None,
        "Add 1 (second) to lengths and intersections in NMS, as the official code does "
        "(default: no; yes with --official).",
    )
    drop_class0_only: bool | None = param(
        None,
        "No detections for a video whose only kept class is class 0, as the official code's "
        "`if pred.any()` on the kept class indices does (default: no; yes with --official).",
    )
    official: bool = param(
        False,
        "The official BaS-Net code's inference: --alignment basnet --oic-class-score binary "
        "--nms-plus-one --drop-class0-only, unless a switch is given explicitly (it wins).",
    )
    subset: str = param("test", "Videos to localize.", choices=LOCALIZE_SUBSETS)

    def __post_init__(self) -> None:
        if not (isinstance(self.upsample, (int, np.integer)) and self.upsample >= 1):
            raise InputError(f"upsample={self.upsample!r}", "use a whole number >= 1")
        if self.alignment not in (None, "center", "basnet"):
            raise InputError(f"alignment={self.alignment!r}", "use 'center' or 'basnet'")
        if self.oic_class_score not in (None, "real", "binary"):
            raise InputError(
                f"oic_class_score={self.oic_class_score!r}",
                "use 'real' (the video-level score) or 'binary' (BaS-Net's: 1 for every kept class)",
            )
        for name in ("nms_plus_one", "drop_class0_only", "official"):
            value = getattr(self, name)
            if value is None and name != "official":
                continue
            if not isinstance(value, (bool, np.bool_)):
                raise InputError(f"{name}={value!r}", "use True or False")
            object.__setattr__(self, name, bool(value))
        if self.subset not in LOCALIZE_SUBSETS:
            raise InputError(f"unknown subset {self.subset!r}", f"use one of {', '.join(LOCALIZE_SUBSETS)}")
        if not 0 < self.nms_tiou <= 1:
            raise InputError(f"nms_tiou={self.nms_tiou!r}", "use a tIoU in (0, 1]")
        if self.max_proposals is not None and self.max_proposals < 1:
            raise InputError(f"max_proposals={self.max_proposals!r}", "use a positive number or None")
        if not (self.oic_lambda >= 0 and np.isfinite(self.oic_lambda)):
            raise InputError(f"oic_lambda={self.oic_lambda!r}", "use a non-negative band ratio")
        if not np.isfinite(self.oic_gamma):
            raise InputError(f"oic_gamma={self.oic_gamma!r}", "use a finite weight")
        if not 0 <= self.class_threshold <= 1:
            raise InputError(f"class_threshold={self.class_threshold!r}", "use a score in [0, 1]")
        object.__setattr__(self, "act_thresholds", parse_act_thresholds(list(self.act_thresholds)))

    def resolved(self) -> LocalizeParams:
        """These settings with every switch left ``None`` set: to the official value with
        ``official``, else to wtal's (and ``official`` then False: it is spelled out). What
        :func:`localize_all` runs; resolving at use, not at construction, keeps
        ``dataclasses.replace(p, official=True)`` meaning what it says."""
        chosen = OFFICIAL if self.official else WTAL_DEFAULTS
        return replace(self, official=False, **{k: v for k, v in chosen.items() if getattr(self, k) is None})

    def as_dict(self) -> dict:
        """The resolved settings (``official`` left out: it is spelled out in the switches)."""
        d = asdict(self.resolved())
        d["act_thresholds"] = list(self.act_thresholds)
        del d["official"]
        return d


@dataclass(frozen=True)
class Detections:
    """Columnar detections of many videos (seconds)."""

    video: np.ndarray  # (n,) int64 index of the video in the input order
    label: np.ndarray  # (n,) int64 class index
    score: np.ndarray  # (n,) float64
    t_start: np.ndarray  # (n,) float64 seconds
    t_end: np.ndarray  # (n,) float64 seconds
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.score)

    def of_video(self, v: int) -> Detections:
        sel = self.video == v
        return Detections(
            self.video[sel], self.label[sel], self.score[sel], self.t_start[sel], self.t_end[sel], self.params
        )

    def to_results_json(
        self,
        video_ids: Sequence[str],
        class_names: Sequence[str],
        version: str = "VERSION 1.3",
        external_data: dict | None = None,
    ) -> dict:
        """The ActivityNet results JSON dict; every input video appears (possibly with ``[]``)."""
        vids = np.asarray(list(video_ids), dtype=object)
        names = np.asarray(list(class_names), dtype=object)
        if len(self) and (self.label.max() >= len(names) or self.video.max() >= len(vids)):
            raise InputError(
                "detections refer to classes or videos beyond the given lists", "pass the full lists"
            )
        return results_dict(
            vids[self.video],
            names[self.label],
            self.score,
            self.t_start,
            self.t_end,
            version,
            external_data,
            vids,
        )


# ---------------------------------------------------------------------------------- upsampling grid


def sample_positions(n_samples: int | np.ndarray, T: int, upsample: int, alignment: Alignment):
    """Knot index ``t`` and weight ``w`` of upsampled samples: value = v[t] + (v[t+1] - v[t]) * w.

    ``n_samples`` is a count (all samples ``0..n-1``) or an array of sample indices.  ``T`` knots
    (a single knot is duplicated by the callers, so ``t`` is always in ``[0, max(T, 2) - 2]``).
    """
    j = np.arange(n_samples) if np.isscalar(n_samples) else np.asarray(n_samples)
    last = max(T, 2) - 2
    if alignment == "basnet":
        u = j / upsample
    else:
        u = np.clip((j + 0.5) / upsample - 0.5, 0.0, T - 1)
    t = np.minimum(np.floor(u).astype(np.int64), last)
    return t, u - t


def upsample_dense(values: np.ndarray, upsample: int, alignment: Alignment) -> np.ndarray:
    """The upsampled series, materialised: ``(T, K) -> (T*upsample, K)`` (reference / plotting)."""
    T = values.shape[0]
    v = values if T >= 2 else np.concatenate([values, values], axis=0)
    t, w = sample_positions(T * upsample, T, upsample, alignment)
    return v[t] + (v[t + 1] - v[t]) * w[:, None]


def minmax_norm(cas: np.ndarray) -> np.ndarray:
    """BaS-Net's ``minmax_norm`` over time (axis 0), per class, in float64."""
    x = np.asarray(cas, dtype=np.float64)
    mx = np.maximum(x.max(axis=0), 0.0)
    mn = np.maximum(x.min(axis=0), 0.0)
    delta = mx - mn
    delta[delta <= 0] = 1.0
    return (x - mn) / delta


# ---------------------------------------------------------------------------------- proposals


@dataclass(frozen=True)
class _Geometry:
    """Per-T sample grid: group (knot interval) sample ranges and prefix sums of the weights."""

    n: int  # samples
    gs: np.ndarray  # (G,) first sample of each group
    ge: np.ndarray  # (G,) one past the last sample
    w: np.ndarray  # (n,) interpolation weight of each sample
    cw: np.ndarray  # (n+1,) prefix sums of w
    group_of: np.ndarray  # (n,) group of each sample


def _geometry(T: int, upsample: int, alignment: Alignment) -> _Geometry:
    n = T * upsample
    t, w = sample_positions(n, T, upsample, alignment)
    G = max(T, 2) - 1
    gs = np.searchsorted(t, np.arange(G), side="left")
    ge = np.searchsorted(t, np.arange(G), side="right")
    if np.any(ge <= gs):  # pragma: no cover - cannot happen for upsample >= 1
        raise AssertionError("empty interpolation group")
    cw = np.concatenate([[0.0], np.cumsum(w)])
    return _Geometry(n, gs, ge, w, cw, t)


def _series_proposals(
    values: np.ndarray, geo: _Geometry, thetas: np.ndarray, lam: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Runs of every series (rows of ``values``, ``(K, T)`` normalised) at every threshold.

    Returns (series, threshold index, start sample, end sample (exclusive), inner - outer), sorted
    by series, threshold, start; the outer mean is taken on the curve zeroed below the threshold.
    """
    K, T = values.shape
    v = values if T >= 2 else np.concatenate([values, values], axis=1)
    G = len(geo.gs)
    n_thr = len(thetas)
    a = np.ascontiguousarray(v[:, :G]).reshape(-1)  # (K*G,) value at each group's left knot
    d = (v[:, 1 : G + 1] - v[:, :G]).reshape(-1)  # slope per unit weight
    gs, ge, w = geo.gs, geo.ge, geo.w
    # inside_j(x) <=> x >= tp[j] (tp: thresholds, 0 replaced by the smallest positive double)
    tp = np.maximum(thetas, np.nextafter(0.0, 1.0))
    # levels (thresholds passed) at checkpoints: [0, first_0, last_0, ..., last_{G-1}, 0]; the
    # outer zeros open every run at the series start and close it at the end
    lev = np.zeros((K, 2 * G + 2), dtype=np.int64)
    lev[:, 1:-1:2] = np.searchsorted(tp, (a + d * np.tile(w[gs], K)).reshape(K, G), side="right")
    lev[:, 2:-1:2] = np.searchsorted(tp, (a + d * np.tile(w[ge - 1], K)).reshape(K, G), side="right")
    k_idx, q = np.nonzero(lev[:, 1:] != lev[:, :-1])
    l1, l2 = lev[k_idx, q], lev[k_idx, q + 1]
    lo_j, n_j = np.minimum(l1, l2), np.abs(l2 - l1)
    ev = np.repeat(np.arange(len(q)), n_j)  # one event per (transition, threshold crossed)
    j = lo_j[ev] + (np.arange(len(ev)) - np.repeat(np.cumsum(n_j) - n_j, n_j))
    ek, eq = k_idx[ev], q[ev]
    rising = (l2 > l1)[ev]
    # even q: between checkpoints of different groups -> boundary at a group start (or the end)
    bpos = np.append(gs, geo.n)
    pos = bpos[eq // 2]
    inside = eq % 2 == 1  # first -> last of group g = q // 2: search the first changed sample
    if inside.any():
        ig = eq[inside] // 2
        fi = ek[inside] * G + ig
        ae, de, thr = a[fi], d[fi], tp[j[inside]]
        lo = gs[ig].copy()  # on the side of the group's first sample
        hi = ge[ig] - 1  # on the other side
        first_in = (ae + de * w[lo]) >= thr
        while True:
            open_ = hi - lo > 1
            if not open_.any():
                break
            mid = (lo + hi) // 2
            changed = ((ae + de * w[mid]) >= thr) != first_in
            hi = np.where(open_ & changed, mid, hi)
            lo = np.where(open_ & ~changed, mid, lo)
        pos[inside] = hi
    order = np.argsort((ek * n_thr + j) * (geo.n + 1) + pos)  # unique keys: (series, threshold, pos)
    rising = rising[order]
    sk, sj = ek[order][rising], j[order][rising]
    start, end = pos[order][rising], pos[order][~rising]
    if len(start) != len(end) or np.any(end <= start):  # pragma: no cover - an internal invariant
        raise AssertionError("run boundaries do not alternate")

    # prefix sums S(i) = sum of the first i samples of a series, from the linear pieces
    n_g = np.tile((ge - gs).astype(np.float64), K)
    dcw = np.tile(geo.cw[ge] - geo.cw[gs], K)
    tot = (n_g * a + d * dcw).reshape(K, G)
    before = (np.cumsum(tot, axis=1) - tot).reshape(-1)  # exclusive prefix over groups
    base = sk * G

    def prefix(i: np.ndarray) -> np.ndarray:
        gi = np.where(i >= geo.n, G - 1, geo.group_of[np.minimum(i, geo.n - 1)])
        fi = base + gi
        return before[fi] + (i - gs[gi]) * a[fi] + d[fi] * (geo.cw[i] - geo.cw[gs[gi]])

    # Outer-inner contrast on the curve zeroed below the run's threshold (BaS-Net passes that
    # curve to get_proposal_oic): it equals the series on the runs of the same (series,
    # threshold) and 0 elsewhere, so its sums are sums of run masses.  Z(i) = zeroed mass of
    # samples [0, i) = mass of the earlier runs of the same (series, threshold) + the part of the
    # run holding sample i - 1.
    length = end - start
    p_s, p_e = prefix(start), prefix(end)
    mass = p_e - p_s
    csum = np.cumsum(mass) - mass  # exclusive prefix over all runs (sorted by series, threshold, start)
    grp = sk * n_thr + sj
    first = np.searchsorted(grp, grp, side="left")  # first run of each run's (series, threshold)
    key = grp * (geo.n + 1) + start  # sorted

    def zeroed_prefix(i: np.ndarray) -> np.ndarray:
        r = np.searchsorted(key, grp * (geo.n + 1) + i, side="left") - 1  # last run starting before i
        valid = r >= first
        r = np.where(valid, r, first)
        part = prefix(np.minimum(i, end[r])) - p_s[r]
        return np.where(valid, csum[r] - csum[first] + part, 0.0)

    band = lam * length
    o_s = np.maximum(np.floor(start - band).astype(np.int64), 0)
    o_e = np.maximum(np.minimum(np.floor(end - 1 + band).astype(np.int64), geo.n - 1) + 1, end)  # exclusive
    inner = mass / length
    n_out = (start - o_s) + (o_e - end)
    at_start = csum - csum[first]  # Z(start): the earlier runs, whole
    out_sum = (at_start - zeroed_prefix(o_s)) + (zeroed_prefix(o_e) - at_start - mass)
    outer = np.where(n_out > 0, out_sum / np.maximum(n_out, 1), 0.0)
    return sk, sj, start, end, inner - outer


# ---------------------------------------------------------------------------------- NMS


def nms_groups(
    group: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    rank: np.ndarray,
    tiou: float,
    pad: float = 0.0,
) -> np.ndarray:
    """Greedy NMS within each group; returns a keep mask (the same as the one-at-a-time loop).

    ``rank``: an item's position in its group's processing order (unique within the group).
    An item is suppressed by an earlier-ranked kept item of its group whose tIoU with it is
    >= ``tiou``: tIoU = intersection / union of the ``[start, end)`` intervals when ``pad`` is 0;
    ``pad`` is added to every length and to every intersection before clipping it at 0 (BaS-Net's
    ``nms`` uses ``pad = 1``, so intervals less than ``pad`` apart overlap).

    Only candidate pairs are examined: if ``start_i <= start_j`` and tIoU >= tiou then
    ``start_j - start_i <= (1 - tiou) * (end_i - start_i + pad)``, so after sorting by start each item
    meets a short window of followers.  The greedy order is then resolved in rounds: an
    undecided item without a kept or undecided suppressor is kept, an item with a kept
    suppressor is dropped; every round settles at least the first undecided item of each group.
    """
    n = len(group)
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    if not 0 < tiou <= 1:
        raise InputError(f"NMS tIoU {tiou!r}", "use a value in (0, 1]")
    if not (pad >= 0 and np.isfinite(pad)):
        raise InputError(f"NMS length pad {pad!r}", "use 0 or a positive value")
    s = np.asarray(start, dtype=np.float64)
    e = np.asarray(end, dtype=np.float64)
    length = e - s
    if np.any(length <= 0):
        raise InputError("NMS got an empty or reversed interval", "intervals need end > start")
    order = np.lexsort((s, group))  # by group, then start
    g_o, s_o = group[order], s[order]
    # window end: first item (in this order) beyond start + (1 - tiou) * length of the same group
    gcode = np.unique(g_o, return_inverse=True)[1].astype(np.float64)
    span = float(np.max(s_o) - np.min(s_o) + np.max(length) + pad + 2.0)
    key = gcode * span + (s_o - np.min(s_o))
    limit = key + (1.0 - tiou) * (length[order] + pad) * (1 + 1e-9) + 1e-9
    hi = np.searchsorted(key, limit, side="right")
    count = hi - np.arange(n) - 1
    first = np.repeat(np.arange(n), count)
    second = _ranges(np.arange(n) + 1, count)
    a, b = order[first], order[second]
    inter = np.minimum(e[a], e[b]) - np.maximum(s[a], s[b]) + pad
    np.maximum(inter, 0.0, out=inter)
    union = length[a] + length[b] + 2 * pad - inter
    close = inter / union >= tiou
    a, b = a[close], b[close]
    swap = rank[a] > rank[b]
    sup, vic = np.where(swap, b, a), np.where(swap, a, b)  # suppressor ranks before its victim
    undecided = np.ones(n, dtype=bool)
    while undecided.any():
        live = undecided[sup] | keep[sup]
        blocked = np.zeros(n, dtype=bool)
        blocked[vic[live]] = True
        newly = undecided & ~blocked
        keep |= newly
        undecided &= ~newly
        hit = np.zeros(n, dtype=bool)
        hit[vic[keep[sup]]] = True
        undecided &= ~hit
        useful = undecided[vic] & (undecided[sup] | keep[sup])
        sup, vic = sup[useful], vic[useful]
    return keep


def _ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each pair (vectorised)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    offs = np.repeat(np.asarray(starts, dtype=np.int64) - (np.cumsum(sizes) - sizes), sizes)
    return offs + np.arange(total)


# ---------------------------------------------------------------------------------- videos


def localize_all(
    cas: Sequence[np.ndarray],
    scores: np.ndarray | Sequence[np.ndarray],
    grids: TimeGrid | Sequence[TimeGrid],
    params: LocalizeParams | None = None,
    spans: Sequence[float] | None = None,
) -> Detections:
    """Detections of many videos: ``cas[v]`` ``(T_v, C+1)`` raw class activations (the last
    convolution's output; min-max normalised here), ``scores[v]`` ``(C+1,)``.

    ``spans[v]``: how many snippet cells the ``T_v`` rows of ``cas[v]`` stand for (default
    ``T_v``: one row per snippet, as in a T-CAS artifact).  BaS-Net localizes its ``T`` test
    samples of a video of ``L`` snippets directly (``spans = L``): sample ``i`` then covers
    snippet cells ``[i L/T, (i+1) L/T)``.
    """
    p = (params or LocalizeParams()).resolved()
    n_vid = len(cas)
    grid_list = [grids] * n_vid if isinstance(grids, TimeGrid) else list(grids)
    if len(grid_list) != n_vid or len(scores) != n_vid:
        raise InputError(
            f"{n_vid} CAS arrays but {len(scores)} score rows and {len(grid_list)} grids",
            "give one per video",
        )
    if spans is not None and len(spans) != n_vid:
        raise InputError(f"{n_vid} CAS arrays but {len(spans)} spans", "give one span per video")
    thetas = np.asarray(p.act_thresholds, dtype=np.float64)
    s = int(p.upsample)
    scale = np.ones(n_vid)  # snippet cells per CAS row
    # kept (video, class) series, grouped by length T
    by_T: dict[int, list[tuple[int, int, np.ndarray, float]]] = {}
    for vi in range(n_vid):
        x = np.asarray(cas[vi])
        sc = np.asarray(scores[vi], dtype=np.float64).reshape(-1)
        if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 2 or sc.shape[0] != x.shape[1]:
            raise InputError(
                f"video {vi}: CAS shape {x.shape} and scores shape {sc.shape} do not fit",
                "CAS must be (T, C+1) with T >= 1 and scores (C+1,)",
            )
        if not (np.isfinite(sc).all() and np.isfinite(x).all()):
            raise InputError(f"video {vi}: CAS or scores hold NaN or Inf", "recompute the T-CAS")
        if spans is not None:
            if not (np.isfinite(spans[vi]) and spans[vi] > 0):
                raise InputError(f"video {vi}: span {spans[vi]!r}", "spans are positive snippet counts")
            scale[vi] = float(spans[vi]) / x.shape[0]
        keep = np.flatnonzero(sc[:-1] >= p.class_threshold)
        if len(keep) == 0 or (p.drop_class0_only and keep.tolist() == [0]):
            continue
        norm = minmax_norm(x[:, keep])  # (T, k)
        for col, c in enumerate(keep):
            cscore = float(sc[c]) if p.oic_class_score == "real" else 1.0
            by_T.setdefault(x.shape[0], []).append((vi, int(c), norm[:, col], cscore))

    out_v, out_c, out_j, out_s, out_e, out_score = [], [], [], [], [], []
    for T, series in by_T.items():
        geo = _geometry(T, s, p.alignment)
        values = np.stack([x[2] for x in series])  # (K, T)
        k, j, st, en, oic = _series_proposals(values, geo, thetas, p.oic_lambda)
        vid = np.array([x[0] for x in series], dtype=np.int64)
        cls = np.array([x[1] for x in series], dtype=np.int64)
        pc = np.array([x[3] for x in series], dtype=np.float64)
        out_v.append(vid[k])
        out_c.append(cls[k])
        out_j.append(j)
        out_s.append(st)
        out_e.append(en)
        out_score.append(oic + p.oic_gamma * pc[k])
    v = np.concatenate(out_v) if out_v else np.zeros(0, np.int64)
    if len(v) == 0:
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0)
        return Detections(empty_i, empty_i, empty_f, empty_f, empty_f, p.as_dict())
    c, j = np.concatenate(out_c), np.concatenate(out_j)
    st, en, score = np.concatenate(out_s), np.concatenate(out_e), np.concatenate(out_score)

    # samples -> snippet cells -> seconds, per time grid
    t_start = np.empty(len(v))
    t_end = np.empty(len(v))
    grid_of: dict[TimeGrid, list[int]] = {}
    for vi in np.unique(v):
        grid_of.setdefault(grid_list[vi], []).append(vi)
    cells_s, cells_e = st / s * scale[v], en / s * scale[v]
    for grid, vids in grid_of.items():
        sel = slice(None)  # one grid (the usual case): every detection, without a selection
        if len(grid_of) > 1:
            of_grid = np.zeros(n_vid, dtype=bool)
            of_grid[vids] = True
            sel = of_grid[v]
        t_start[sel] = grid.index_to_seconds(cells_s[sel])
        t_end[sel] = grid.index_to_seconds(cells_e[sel])

    # NMS per (video, class): order by score desc, then threshold, then start (a global order
    # serves as the within-group order).  Sample indices give the exact tIoU (seconds are an
    # affine map of them within a video); BaS-Net's "+ 1" acts on lengths in seconds.
    group = v * (int(c.max()) + 1) + c
    rank = np.empty(len(v), dtype=np.int64)
    rank[np.lexsort((j * (int(st.max()) + 1) + st, -score))] = np.arange(
        len(v)
    )  # (threshold, start) in one key
    if p.nms_plus_one:
        keep = nms_groups(group, t_start, t_end, rank, p.nms_tiou, pad=1.0)
    else:
        keep = nms_groups(group, st, en, rank, p.nms_tiou)
    v, c, st, score, t_start, t_end = v[keep], c[keep], st[keep], score[keep], t_start[keep], t_end[keep]

    # per-video order: score desc (then class, then start); optional cap
    order = np.lexsort((st, c, -score, v))
    v, c, score, t_start, t_end = v[order], c[order], score[order], t_start[order], t_end[order]
    if p.max_proposals is not None and len(v):
        newv = np.ones(len(v), dtype=bool)
        newv[1:] = v[1:] != v[:-1]
        vstart = np.flatnonzero(newv)
        within = np.arange(len(v)) - np.repeat(vstart, np.diff(np.append(vstart, len(v))))
        sel = within < p.max_proposals
        v, c, score, t_start, t_end = v[sel], c[sel], score[sel], t_start[sel], t_end[sel]
    return Detections(v, c, score, t_start, t_end, p.as_dict())


def localize_video(
    cas: np.ndarray, scores: np.ndarray, grid: TimeGrid, params: LocalizeParams | None = None
) -> Detections:
    """Detections of one video (``video`` index 0)."""
    return localize_all([cas], [scores], [grid], params)
