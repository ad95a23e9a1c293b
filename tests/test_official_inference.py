"""``localize`` against an independent, loop-by-loop port of the official BaS-Net inference.

The port below is written from the algorithm of the official ``test.py`` / ``utils.py``
(Pilhyeon/BaSNet-pytorch), one video and one class at a time, with dense arrays and Python loops:

- classes with a video score ``>= class_threshold`` are kept, and their score is binarised (1); a
  video whose only kept class is class 0 gets no detections (``if pred.any()`` on the kept class
  indices);
- each channel of the raw CAS is min-max normalised over time with relu'd minimum and maximum
  (a non-positive range replaced by 1), without clipping;
- the kept channels are upsampled x24 by linear interpolation at ``u = j / 24`` for
  ``j < 24 T`` (``interp1d`` on ``np.arange(0, T, 1/24)``, extrapolating past the last knot);
- for each of the ten activation thresholds, the curve is zeroed below the threshold, the
  positive samples are grouped into contiguous runs, and each run is scored on that zeroed curve:
  ``mean(inner) - mean(outer) + gamma * score`` with an outer band from ``int(s - 0.25 * len)`` to
  ``int(e + 0.25 * len)`` (``s``, ``e`` the run's first and last samples: ``ceil(0.25 len)``
  samples on the left, ``floor(0.25 len)`` on the right), clipped to the curve;
- a run ``[s, e]`` (inclusive sample indices) spans ``s * f`` to ``(e + 1) * f`` seconds with
  ``f = 16 * v_len / (24 * T * 25)``;
- per class, greedy NMS at 0.7 over all thresholds' runs, with ``+ 1`` on lengths and
  intersections in seconds.

The port takes the deliberate deviations as switches too (centre alignment, the real class score,
NMS without ``+ 1``, class-0-only videos kept), so every combination is held against
``localize_all`` with the matching ``LocalizeParams``.  Where the official code crashes
(``docs/inference.md``: a kept class without any run at some threshold, i.e. a raw CAS never
positive, or a lone positive sample 0 skipped by ``if temp_list.any()``, makes test.py's
``proposals[i][0][0]`` raise IndexError) the port raises :class:`OfficialCrash`; with
``crash=False`` it does what wtal does there (no run for a class never positive, the lone sample
0 kept).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest

from wtalcli.data.timegrid import TimeGrid
from wtalcli.evaluation.localization import (
    BASNET_ACT_THRESHOLDS,
    OFFICIAL,
    WTAL_DEFAULTS,
    LocalizeParams,
    localize_all,
)

GRID = TimeGrid(25.0, 16, 16)  # BaS-Net's 16 frames per snippet at 25 fps


class OfficialCrash(IndexError):
    """Where the official inference raises IndexError instead of giving detections."""


def port_video(
    cas: np.ndarray,
    scores: np.ndarray,
    v_len: int,
    *,
    alignment: str = "basnet",
    class_score: str = "binary",
    plus_one: bool = True,
    class0_only_dropped: bool = True,
    crash: bool = True,
    class_thresh: float = 0.25,
    scale: int = 24,
    lam: float = 0.25,
    gamma: float = 0.2,
) -> list[tuple[int, float, float, float]]:
    """Detections ``(class, start s, end s, score)`` of one video, computed as described above."""
    T = cas.shape[0]
    score = scores[:-1].astype(np.float64)
    kept = [c for c in range(len(score)) if score[c] >= class_thresh]
    used = {c: (1.0 if class_score == "binary" else float(score[c])) for c in kept}
    if not kept or (class0_only_dropped and kept == [0]):
        return []
    x = cas.astype(np.float64)
    hi = np.maximum(x.max(axis=0), 0.0)
    lo = np.maximum(x.min(axis=0), 0.0)
    delta = hi - lo
    delta[delta <= 0] = 1.0
    norm = (x - lo) / delta
    n = T * scale
    knots = norm if T >= 2 else np.concatenate([norm, norm])  # one knot: a constant curve
    up = np.empty((n, norm.shape[1]))
    for j in range(n):
        if alignment == "basnet":
            u = j / scale
        else:  # the centre of sample j's cell, in snippet units, flat beyond the end knots
            u = min(max((j + 0.5) / scale - 0.5, 0.0), T - 1)
        t = min(int(np.floor(u)), knots.shape[0] - 2)
        up[j] = knots[t] + (knots[t + 1] - knots[t]) * (u - t)
    t_factor = 16 * v_len / (scale * T * 25)
    out = []
    for c in kept:
        proposals = []
        for th in BASNET_ACT_THRESHOLDS:
            curve = up[:, c].copy()
            curve[curve < th] = 0
            pos = np.flatnonzero(curve > 0)
            if crash and not pos.any():  # no run list for this class: proposals[i][0][0] fails
                raise OfficialCrash(f"class {c}, threshold {th}: positive samples {pos.tolist()}")
            if len(pos) == 0:
                continue
            runs = np.split(pos, np.flatnonzero(np.diff(pos) != 1) + 1)
            for run in runs:
                inner = curve[run].mean()
                length = len(run)
                outer_s = max(0, int(run[0] - lam * length))
                outer_e = min(n - 1, int(run[-1] + lam * length))
                outer = list(range(outer_s, run[0])) + list(range(run[-1] + 1, outer_e + 1))
                outer_score = curve[outer].mean() if outer else 0.0
                start, end = run[0] * t_factor, (run[-1] + 1) * t_factor
                # NMS: the official tIoU on seconds with + 1; without it, the exact tIoU, on samples
                span = (start - 1.0, end) if plus_one else (float(run[0]), float(run[-1] + 1))
                proposals.append((inner - outer_score + gamma * used[c], start, end, *span))
        remaining = sorted(proposals, key=lambda p: -p[0])
        while remaining:
            best = remaining.pop(0)
            out.append((c, best[1], best[2], best[0]))
            rest = []
            for p in remaining:
                inter = max(0.0, min(best[4], p[4]) - max(best[3], p[3]))
                union = (best[4] - best[3]) + (p[4] - p[3]) - inter
                if inter / union < 0.7:
                    rest.append(p)
            remaining = rest
    return out


def random_tcas(rng: np.random.Generator, T: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw CAS ``(T, C+1)``: smooth random logits around a random offset (negative and positive
    stretches), and video scores keeping 1 to 3 classes, or class 0 alone (one video in eight)."""
    width = rng.uniform(0.5, 6.0)
    kernel = np.exp(-0.5 * (np.arange(-15, 16) / width) ** 2)
    noise = rng.normal(0.0, 1.0, (T + 30, n_classes + 1))
    cas = np.stack([np.convolve(noise[:, k], kernel, "valid") for k in range(n_classes + 1)], axis=1)
    cas = cas / cas.std() + rng.normal(0.0, 1.0, n_classes + 1)
    scores = rng.uniform(0.0, 0.2, n_classes + 1)
    kept = rng.choice(np.arange(1, n_classes), size=rng.integers(1, 4), replace=False)
    scores[kept] = rng.uniform(0.25, 1.0, len(kept))
    if rng.random() < 0.3:
        scores[0] = rng.uniform(0.25, 1.0)  # class 0 kept beside another class
    if rng.random() < 0.125:
        scores[1:-1] = rng.uniform(0.0, 0.2, n_classes - 1)
        scores[0] = rng.uniform(0.25, 1.0)  # class 0 alone: the official code drops the video
    return cas.astype(np.float32), scores


def assert_same(mine, want, context: str) -> None:
    mine, want = sorted(mine), sorted(want)
    assert len(mine) == len(want), f"{context}: {len(mine)} detections, the port gives {len(want)}"
    for a, b in zip(mine, want, strict=True):
        assert a[0] == b[0], context
        np.testing.assert_allclose(a[1:], b[1:], rtol=0, atol=1e-9, err_msg=context)


def detections_of(det, v: int) -> list[tuple[int, float, float, float]]:
    d = det.of_video(v)
    return list(zip(d.label.tolist(), d.t_start.tolist(), d.t_end.tolist(), d.score.tolist(), strict=True))


def official_or_wtal(cas: np.ndarray, sc: np.ndarray, v_len: int, **switches) -> tuple[list, bool]:
    """The port's detections, and whether the official code would have crashed on the video (the
    detections are then what wtal gives where it crashes)."""
    try:
        return port_video(cas, sc, v_len, **switches), False
    except OfficialCrash:
        return port_video(cas, sc, v_len, crash=False, **switches), True


LENGTHS = (1, 2, 3, 5, 11, 40, 97, 256, 1000)


def test_official_settings_equal_the_port_on_random_tcas():
    """One T-CAS artifact's worth of videos per seed, 12 seeds: one row per snippet (``v_len = T``)."""
    total = dropped = crashed = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        videos = [random_tcas(rng, T, 5) for T in LENGTHS]
        det = localize_all(
            [v[0] for v in videos], [v[1] for v in videos], GRID, LocalizeParams(official=True)
        )
        for i, (cas, sc) in enumerate(videos):
            want, crash = official_or_wtal(cas, sc, cas.shape[0])
            assert_same(detections_of(det, i), want, f"seed {seed}, T={cas.shape[0]}")
            total += len(want)
            crashed += crash
            dropped += np.flatnonzero(sc[:-1] >= 0.25).tolist() == [0]
    # the comparison is not vacuous, and covers the class-0 quirk and the official crash
    assert total > 600 and dropped >= 5 and crashed >= 1, (total, dropped, crashed)


@pytest.mark.parametrize("seed", range(4))
def test_official_settings_on_the_t_sample_output(seed):
    """BaS-Net localizes the T test samples of a video of ``v_len`` snippets (``spans``)."""
    rng = np.random.default_rng(100 + seed)
    T = int(rng.choice([2, 50, 128, 750]))
    v_lens = [int(x) for x in rng.integers(1, 3 * T, size=4)]
    videos = [random_tcas(rng, T, 4) for _ in v_lens]
    det = localize_all(
        [v[0] for v in videos], [v[1] for v in videos], GRID, LocalizeParams(official=True), spans=v_lens
    )
    for i, ((cas, sc), v_len) in enumerate(zip(videos, v_lens, strict=True)):
        want, _ = official_or_wtal(cas, sc, v_len)
        assert_same(detections_of(det, i), want, f"seed {seed}, T={T}, L={v_len}")


@pytest.mark.parametrize(
    ("alignment", "class_score", "plus_one", "class0"),
    list(itertools.product(["basnet", "center"], ["binary", "real"], [True, False], [True, False])),
)
def test_every_deviation_switch_equals_the_port(alignment, class_score, plus_one, class0):
    rng = np.random.default_rng(7)
    videos = [random_tcas(rng, T, 4) for T in (1, 2, 9, 64, 300) * 2]
    assert sum(np.flatnonzero(v[1][:-1] >= 0.25).tolist() == [0] for v in videos) >= 1  # class 0 alone
    params = LocalizeParams(
        alignment=alignment, oic_class_score=class_score, nms_plus_one=plus_one, drop_class0_only=class0
    )
    det = localize_all([v[0] for v in videos], [v[1] for v in videos], GRID, params)
    switches = {"alignment": alignment, "class_score": class_score, "plus_one": plus_one}
    for i, (cas, sc) in enumerate(videos):
        want, _ = official_or_wtal(cas, sc, cas.shape[0], class0_only_dropped=class0, **switches)
        assert_same(detections_of(det, i), want, f"{params}, video {i}")


def test_the_switches_change_the_result():
    """Each switch alone moves detections on random T-CAS (none of them is a no-op)."""
    rng = np.random.default_rng(3)
    videos = [random_tcas(rng, 200, 4) for _ in range(6)]
    cas, sc = [v[0] for v in videos], [v[1] for v in videos]
    sc[0] = np.array([0.6, 0.1, 0.1, 0.1, 0.1])  # class 0 alone
    base = localize_all(cas, sc, GRID, LocalizeParams())
    assert 0 in base.video.tolist()
    for change in OFFICIAL.items():
        other = localize_all(cas, sc, GRID, LocalizeParams(**dict([change])))
        same = (
            len(other) == len(base)
            and np.allclose(other.score, base.score)
            and np.allclose(other.t_start, base.t_start)
        )
        assert not same, change
    assert 0 not in localize_all(cas, sc, GRID, LocalizeParams(drop_class0_only=True)).video.tolist()


def test_negative_stretches_never_become_proposals():
    """Raw CAS: where a kept class's activation is negative, min-max with relu keeps it < 0."""
    T = 60
    cas = np.full((T, 3), -2.0, np.float32)
    cas[20:30, 1] = 3.0  # the only positive stretch of class 1
    cas[:, 0] = np.linspace(-5.0, -1.0, T)  # class 0: negative throughout (max relu'd to 0)
    cas[:, -1] = 0.5
    sc = np.array([0.9, 0.9, 0.1])
    det = localize_all([cas], [sc], GRID, LocalizeParams(alignment="basnet"))
    assert set(det.label.tolist()) == {1}
    # the upsampled curve crosses 0 between snippets 19 and 20 (basnet: value at u = j/24) and
    # between 29 and 30; every run lies inside (19, 30)
    idx = GRID.seconds_to_index(np.concatenate([det.t_start, det.t_end]))
    assert idx.min() > 19 and idx.max() <= 30 + 1 / 24
    port = {"class_score": "real", "plus_one": False}
    assert_same(detections_of(det, 0), port_video(cas, sc, T, crash=False, **port), "negatives")
    with pytest.raises(OfficialCrash):  # the official code: class 0 is kept but has no run
        port_video(cas, sc, T, **port)


def test_localize_official_on_a_stored_tcas_equals_the_port(tmp_path, capsys):
    """``wtal localize --official`` on a T-CAS artifact of a trained model against the port run on the
    stored arrays; two videos' scores are rewritten to keep class 0 alone (the official code drops
    them). An explicit switch beside ``--official`` wins."""
    from stages.baseline import baseline
    from wtalcli.app import main
    from wtalcli.core.store import Store
    from wtalcli.data.feature_artifact import extract_synthetic
    from wtalcli.data.schema import TCAS, write_tcas
    from wtalcli.model.config import BaselineParams

    quiet = {"log": lambda m: None}
    store = Store(tmp_path / "wd")
    fs = extract_synthetic(store, "tiny", seed=0, **quiet)
    _, trained = baseline(store, fs.id, BaselineParams(device="cpu", iterations=60), **quiet)
    t = TCAS(trained.path)
    rows = t.rows_of("test")
    scores = t.scores.copy()
    for r in rows[:2]:
        scores[r, :-1] = 0.05
        scores[r, 0] = 0.7  # class 0 alone
    plan = store.plan("tcas", "test-class0", {}, {}, lineage=dict(trained.lineage))
    with store.build(plan) as tmp:
        write_tcas(tmp, t.videos, t.cas, scores, t.classes)
    stored = TCAS(store.get(plan.id).path)

    def cli(*switches: str) -> dict:
        out = tmp_path / f"p{len(switches)}.json"
        args = ["localize", "--official", *switches, "--tcas", plan.id, "--out", str(out)]
        assert main([*args, "--workdir", str(tmp_path / "wd")]) == 0, capsys.readouterr().err
        return json.loads(out.read_text())["results"]

    def port(**switches) -> dict:
        grid = stored.grid(int(rows[0]))
        assert (grid.fps, grid.stride, grid.clip_len) == (GRID.fps, GRID.stride, GRID.clip_len)
        names = stored.videos["video_id"].to_numpy()
        res = {}
        for r in rows:
            cas = stored.cas[stored.span(int(r))]
            dets, _ = official_or_wtal(cas, stored.scores[r], cas.shape[0], **switches)
            res[names[r]] = dets
        return res

    def as_tuples(results: dict) -> dict:
        return {
            v: [(t.classes.index(d["label"]), d["segment"][0], d["segment"][1], d["score"]) for d in dets]
            for v, dets in results.items()
        }

    official, want = as_tuples(cli()), port()
    assert official.keys() == want.keys() and len(official) == len(rows)
    for v in want:
        assert_same(official[v], want[v], f"video {v}")
    names = stored.videos["video_id"].to_numpy()
    assert all(official[names[r]] == [] for r in rows[:2])  # class 0 alone: dropped
    assert sum(len(d) for d in official.values()) > 50  # 87 with this model
    # an explicit switch beside --official wins: here the class-0-only videos are localized again
    kept = as_tuples(cli("--no-drop-class0-only"))
    want_kept = port(class0_only_dropped=False)
    assert all(len(kept[names[r]]) > 0 for r in rows[:2])
    for v in want_kept:
        assert_same(kept[v], want_kept[v], f"video {v}, --no-drop-class0-only")


def test_official_flag_resolves_the_switches_not_given():
    p = LocalizeParams(official=True, alignment="center").resolved()
    switches = (p.alignment, p.oic_class_score, p.nms_plus_one, p.drop_class0_only)
    assert switches == ("center", "binary", True, True)
    # resolved where it is used: replace() of the flag means what it says, both ways
    assert replace(LocalizeParams(), official=True).as_dict() == LocalizeParams(**OFFICIAL).as_dict()
    assert replace(LocalizeParams(official=True), official=False).as_dict() == LocalizeParams().as_dict()
    assert LocalizeParams().as_dict() == LocalizeParams(official=False, **WTAL_DEFAULTS).as_dict()
    # the flag is spelled out in the switches: the same settings, the same cache key
    assert LocalizeParams(official=True).as_dict() == LocalizeParams(**OFFICIAL).as_dict()
    assert "official" not in LocalizeParams(official=True).as_dict()
    assert LocalizeParams(official=True).as_dict() != LocalizeParams().as_dict()
