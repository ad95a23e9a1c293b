"""Tests of BaS-Net inference (``wtalcli.evaluation.localization``); the comparison with a port of
the official code is in ``test_official_inference.py``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wtalcli.core.errors import InputError
from wtalcli.data.timegrid import TimeGrid
from wtalcli.evaluation.detection import Predictions, evaluate_detection, load_predictions
from wtalcli.evaluation.groundtruth import GroundTruth
from wtalcli.evaluation.localization import (
    BASNET_ACT_THRESHOLDS,
    LocalizeParams,
    _geometry,
    _series_proposals,
    localize_all,
    localize_video,
    minmax_norm,
    nms_groups,
    parse_act_thresholds,
    upsample_dense,
)

GRID = TimeGrid(25.0, 16, 16)


def planted_cas(T: int, n_classes: int, segments: dict[int, list[tuple[int, int]]], low: float = 0.0):
    """CAS (T, C+1): class c is 1 on its snippet ranges [a, b), ``low`` elsewhere."""
    cas = np.full((T, n_classes + 1), low, dtype=np.float32)
    cas[:, -1] = 1.0
    for c, segs in segments.items():
        for a, b in segs:
            cas[a:b, c] = 1.0
            cas[a:b, -1] = 0.0
    return cas


def scores_for(n_classes: int, kept: dict[int, float]) -> np.ndarray:
    sc = np.full(n_classes + 1, 0.05)
    for c, v in kept.items():
        sc[c] = v
    return sc


# ----------------------------------------------------------------------------- planted segments


def test_planted_segments_come_back_exactly_in_seconds():
    segs = {0: [(10, 30), (100, 140)], 3: [(50, 51), (200, 260)]}  # class 0 included
    cas = planted_cas(300, 5, segs)
    params = LocalizeParams(act_thresholds=(0.5,))
    det = localize_video(cas, scores_for(5, {0: 0.9, 3: 0.6}), GRID, params)
    got = sorted(zip(det.label.tolist(), det.t_start.tolist(), det.t_end.tolist(), strict=True))
    want = sorted(
        (c, float(GRID.index_to_seconds(a)), float(GRID.index_to_seconds(b)))
        for c, ss in segs.items()
        for a, b in ss
    )
    assert [g[0] for g in got] == [w[0] for w in want]
    np.testing.assert_allclose([g[1:] for g in got], [w[1:] for w in want], rtol=0, atol=1e-12)
    # 16 x / 25 seconds for the THUMOS I3D grid
    assert got[0][1:] == pytest.approx((10 * 16 / 25, 30 * 16 / 25))
    # the score is the outer-inner contrast of the upsampled series zeroed below the threshold,
    # computed here densely
    for c, a, b, sc in zip(det.label, det.t_start, det.t_end, det.score, strict=True):
        up = upsample_dense(minmax_norm(cas[:, [c]]), 24, "center")[:, 0]
        up[up < 0.5] = 0.0
        s, e = (int(round(x)) for x in GRID.seconds_to_index(np.array([a, b])) * 24)
        band = int(0.25 * (e - s))
        outer = np.concatenate([up[max(0, s - band) : s], up[e : e + band]])
        assert sc == pytest.approx(up[s:e].mean() - outer.mean() + 0.2 * {0: 0.9, 3: 0.6}[int(c)], abs=1e-12)


def test_only_class_zero_is_localized():
    """The official ``if pred.any()`` dropped videos whose only kept class had index 0."""
    cas = planted_cas(50, 3, {0: [(5, 15)]})
    det = localize_video(cas, scores_for(3, {0: 0.3}), GRID)
    assert len(det) > 0 and set(det.label.tolist()) == {0}


def test_class_threshold_and_background():
    cas = planted_cas(60, 3, {1: [(5, 15)], 2: [(30, 40)]})
    sc = scores_for(3, {1: 0.24999, 2: 0.25})
    sc[-1] = 0.99  # background never localized
    det = localize_video(cas, sc, GRID)
    assert set(det.label.tolist()) == {2}


def test_basnet_alignment_shifts_half_a_snippet():
    cas = planted_cas(40, 2, {1: [(10, 20)]})
    params = LocalizeParams(act_thresholds=(0.5,), alignment="basnet")
    det = localize_video(cas, scores_for(2, {1: 0.9}), GRID, params)
    # values sit at u = j / 24: the half-height run is u in [9.5, 19.5] -> cells [9.5, 19.5 + 1/24)
    assert det.t_start.tolist() == pytest.approx([GRID.index_to_seconds(9.5)])
    assert det.t_end.tolist() == pytest.approx([GRID.index_to_seconds(19.5 + 1 / 24)])


def test_default_thresholds_recover_planted_segments():
    segs = {2: [(20, 60), (150, 175)]}
    det = localize_video(planted_cas(250, 4, segs), scores_for(4, {2: 0.8}), GRID)
    truth = [(GRID.index_to_seconds(a), GRID.index_to_seconds(b)) for a, b in segs[2]]
    for ts, te in truth:
        inter = np.clip(np.minimum(det.t_end, te) - np.maximum(det.t_start, ts), 0, None)
        iou = inter / ((det.t_end - det.t_start) + (te - ts) - inter)
        assert iou.max() > 0.9
    # nothing survives NMS with tIoU >= 0.7 against a better one of the same class
    _assert_nms_property(det.t_start, det.t_end, det.score, 0.7)


def test_outer_inner_contrast_on_a_hand_case():
    # no upsampling (x1, centre alignment: sample j = snippet j); threshold 0.4
    x = np.array([0, 0.3, 1, 1, 1, 1, 0.5, 0, 0, 0], dtype=np.float32)
    cas = np.stack([x, 1 - x], axis=1)
    params = LocalizeParams(act_thresholds=(0.4,), upsample=1)
    det = localize_video(cas, np.array([0.5, 0.1]), GRID, params)
    # run [2, 7) = 1, 1, 1, 1, 0.5 (mean 0.9): L = 5, band int(1.25) = 1 each side: samples 1
    # (0.3, below the threshold: zeroed) and 7 (0) -> 0.9 - 0 + 0.2 * 0.5
    assert det.score.tolist() == pytest.approx([0.9 + 0.1])
    assert det.t_start.tolist() == pytest.approx([2 * 16 / 25])
    assert det.t_end.tolist() == pytest.approx([7 * 16 / 25])
    # the outer band counts the other runs of the same threshold: runs [0, 8) and [9, 10) of
    # [1 x 8, 0.3, 0.8, 0, ...] at 0.4; the first run's band (2 samples) is 0.3 (zeroed) and 0.8
    y = np.array([1] * 8 + [0.3, 0.8, 0, 0], dtype=np.float32)
    cas_y = np.stack([y, 1 - y], axis=1)
    det = localize_video(cas_y, np.array([0.5, 0.1]), GRID, params)
    starts = np.round(GRID.seconds_to_index(det.t_start)).astype(int).tolist()
    by_start = dict(zip(starts, det.score.tolist(), strict=True))
    assert by_start[0] == pytest.approx(1 - 0.4 + 0.2 * 0.5)
    # the second run (L = 1) has an empty band (BaS-Net's int(0.25))
    assert by_start[9] == pytest.approx(0.8 + 0.2 * 0.5)
    # at threshold 0.2 the same curve gives one run [0, 10) with a 2-sample band of zeros
    det = localize_video(cas_y, np.array([0.5, 0.1]), GRID, LocalizeParams(act_thresholds=(0.2,), upsample=1))
    assert det.score.tolist() == pytest.approx([np.mean(y[:10]) + 0.1])


def test_outer_band_is_zeroed_below_the_threshold_not_the_raw_curve():
    # the band of run [4, 8) at threshold 0.5 holds 0.45 and 0.45 (raw): zeroed, the outer mean is 0
    x = np.array([0, 0, 0, 0.45, 1, 1, 1, 1, 0.45, 0, 0, 0], dtype=np.float32)
    cas = np.stack([x, 1 - x], axis=1)
    det = localize_video(cas, np.array([0.5, 0.1]), GRID, LocalizeParams(act_thresholds=(0.5,), upsample=1))
    assert det.score.tolist() == pytest.approx([1.0 + 0.1])  # the raw curve would give 1 - 0.45 + 0.1


def test_seconds_round_trip_to_sample_indices():
    grid = TimeGrid(30.0, 8, 16)  # clip longer than stride: a non-zero shift
    rng = np.random.default_rng(3)
    cas = rng.random((120, 4)).astype(np.float32)
    det = localize_video(cas, np.array([0.9, 0.9, 0.9, 0.0]), grid)
    assert len(det) > 0
    for t in (det.t_start, det.t_end):
        samples = grid.seconds_to_index(t) * 24
        np.testing.assert_allclose(samples, np.round(samples), atol=1e-6)
        assert samples.min() >= -1e-6 and samples.max() <= 120 * 24 + 1e-6


def test_max_proposals_keeps_the_best():
    rng = np.random.default_rng(0)
    cas = [rng.random((200, 6)).astype(np.float32) for _ in range(3)]
    scores = [np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.0])] * 3
    full = localize_all(cas, scores, GRID)
    capped = localize_all(cas, scores, GRID, LocalizeParams(max_proposals=5))
    for v in range(3):
        f, c = full.of_video(v), capped.of_video(v)
        assert len(c) == 5
        np.testing.assert_allclose(c.score, np.sort(f.score)[::-1][:5])


def test_many_videos_with_different_lengths_and_grids():
    rng = np.random.default_rng(1)
    cas = [rng.random((T, 4)).astype(np.float32) for T in (1, 2, 7, 50)]
    scores = [np.array([0.9, 0.1, 0.5, 0.0])] * 4
    grids = [GRID, TimeGrid(30.0, 8, 16), GRID, TimeGrid(24.0, 4, 4)]
    det = localize_all(cas, scores, grids)
    for v in range(4):
        one = localize_video(cas[v], scores[v], grids[v])
        mine = det.of_video(v)
        np.testing.assert_allclose(mine.score, one.score)
        np.testing.assert_allclose(mine.t_start, one.t_start)
        assert mine.label.tolist() == one.label.tolist()
        assert set(mine.label.tolist()) <= {0, 2}


def test_results_json_round_trip_and_perfect_score(tmp_path):
    segs = {0: [(10, 30)], 1: [(40, 80), (100, 120)]}
    cas = [planted_cas(150, 2, segs), planted_cas(150, 2, {1: [(5, 25)]})]
    scores = [scores_for(2, {0: 0.9, 1: 0.9}), scores_for(2, {1: 0.7})]
    det = localize_all(cas, scores, GRID, LocalizeParams(act_thresholds=(0.5,)))
    doc = det.to_results_json(
        ["va", "vb", "vc"], ["jump", "run"], external_data={"used": True, "details": "I3D"}
    )
    assert doc["results"]["vc"] == [] and len(doc["results"]["va"]) == 3
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    preds = load_predictions(path)
    assert len(preds) == len(det)
    rows = [("va", "jump", 10, 30), ("va", "run", 40, 80), ("va", "run", 100, 120), ("vb", "run", 5, 25)]
    gt = GroundTruth(
        np.array([r[0] for r in rows], dtype=object),
        np.array([r[1] for r in rows], dtype=object),
        GRID.index_to_seconds(np.array([r[2] for r in rows], float)),
        GRID.index_to_seconds(np.array([r[3] for r in rows], float)),
        ("va", "vb", "vc"),
        "test",
        "planted",
    )
    assert evaluate_detection(gt, preds, "thumos14-basnet").average_map == pytest.approx(1.0)
    assert isinstance(preds, Predictions)


# ----------------------------------------------------------------------------- fast == dense


def dense_proposals(values: np.ndarray, upsample: int, alignment: str, thetas, lam: float):
    """The straightforward way on one normalised series: (threshold index, start, end, inner - outer),
    both means on the upsampled curve zeroed below the threshold."""
    up = upsample_dense(values[:, None], upsample, alignment)[:, 0]
    n = len(up)
    out = []
    for j, th in enumerate(thetas):
        z = np.where(up >= th, up, 0.0)
        idx = np.flatnonzero(z > 0)
        if len(idx) == 0:
            continue
        for run in np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1):
            s, e = int(run[0]), int(run[-1]) + 1
            length = e - s
            o_s = max(0, int(np.floor(s - lam * length)))
            o_e = min(n - 1, int(np.floor(e - 1 + lam * length)))
            outer = list(range(o_s, s)) + list(range(e, o_e + 1))
            out.append((j, s, e, z[s:e].mean() - (z[outer].mean() if outer else 0.0)))
    return sorted(out)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(1, 30),
    st.sampled_from(["center", "basnet"]),
    st.integers(1, 3),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_fast_proposals_equal_dense_upsampling(T, upsample, alignment, K, plateaus, seed):
    rng = np.random.default_rng(seed)
    # exact threshold hits too; negative values (raw CAS) stay negative after the min-max
    raw = rng.integers(-2, 5, (T, K)) / 4.0 if plateaus else rng.normal(0.3, 1.0, (T, K))
    values = minmax_norm(raw).T
    thetas = np.array(BASNET_ACT_THRESHOLDS + (0.5, 1.0))
    k, j, s, e, score = _series_proposals(values, _geometry(T, upsample, alignment), thetas, 0.25)
    for series in range(K):
        want = dense_proposals(values[series], upsample, alignment, thetas, 0.25)
        sel = k == series
        got = sorted(zip(j[sel].tolist(), s[sel].tolist(), e[sel].tolist(), score[sel].tolist(), strict=True))
        assert [g[:3] for g in got] == [w[:3] for w in want]
        np.testing.assert_allclose([g[3] for g in got], [w[3] for w in want], rtol=0, atol=1e-9)


def test_upsample_dense_matches_basnet_interpolation_grid():
    # BaS-Net: interp1d(arange(T), x, linear, extrapolate) at arange(0, T, 1/24)
    x = np.array([0.0, 1.0, 0.5, 0.25])
    up = upsample_dense(x[:, None], 24, "basnet")[:, 0]
    u = np.arange(4 * 24) / 24
    expect = np.interp(u, np.arange(4), x)
    tail = u > 3
    expect[tail] = 0.25 + (0.25 - 0.5) * (u[tail] - 3)  # linear extrapolation of the last piece
    np.testing.assert_allclose(up, expect, atol=1e-15)
    centre = upsample_dense(x[:, None], 3, "center")[:, 0]
    assert centre[0] == 0.0 and centre[-1] == 0.25  # flat ends
    assert centre[4] == 1.0  # sample 4 owns cells [4/3, 5/3): its centre 1.5 is snippet 1's centre
    np.testing.assert_allclose(centre[3], 1 - 1 / 3)  # centre 7/6: a third of a snippet before


def test_minmax_norm_is_basnets():
    x = np.array([[0.2, -1.0, 3.0], [0.6, -0.5, 3.0], [1.0, 2.0, 3.0]])
    got = minmax_norm(x)
    np.testing.assert_allclose(got[:, 0], [0, 0.5, 1.0])
    # min clipped at 0 by relu: (x - 0) / (2 - 0)
    np.testing.assert_allclose(got[:, 1], [-0.5, -0.25, 1.0])
    # constant column: delta 0 -> 1, (x - 3) / 1
    np.testing.assert_allclose(got[:, 2], [0.0, 0.0, 0.0])


# ----------------------------------------------------------------------------- NMS


def greedy_nms(start, end, score, tiou, pad=0.0):
    order = sorted(range(len(start)), key=lambda i: (-score[i], i))
    keep = []
    for i in order:
        ok = True
        for k in keep:
            inter = max(0.0, min(end[i], end[k]) - max(start[i], start[k]) + pad)
            union = (end[i] - start[i] + pad) + (end[k] - start[k] + pad) - inter
            if inter / union >= tiou:
                ok = False
                break
        if ok:
            keep.append(i)
    return sorted(keep)


def _assert_nms_property(start, end, score, tiou, pad=0.0):
    kept = np.arange(len(start))
    for a in kept:
        for b in kept:
            if a < b:
                inter = max(0.0, min(end[a], end[b]) - max(start[a], start[b]) + pad)
                union = (end[a] - start[a] + pad) + (end[b] - start[b] + pad) - inter
                assert inter / union < tiou


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 30), st.integers(1, 12), st.integers(0, 5)),
        min_size=0,
        max_size=60,
    ),
    st.sampled_from([0.3, 0.5, 0.7, 1.0]),
    st.sampled_from([0.0, 1.0, 2.5]),
    st.sampled_from([1.0, 0.4]),
)
def test_nms_equals_greedy_loop(items, tiou, pad, unit):
    """``pad``: BaS-Net's ``+ 1`` on lengths (in seconds: ``unit`` < 1 puts intervals closer
    than ``pad`` apart, which then overlap)."""
    group = np.array([i[0] for i in items], dtype=np.int64)
    start = np.array([i[1] for i in items], dtype=np.int64) * unit
    end = start + np.array([i[2] for i in items], dtype=np.int64) * unit
    score = np.array([i[3] for i in items], dtype=np.float64)
    rank = np.empty(len(items), dtype=np.int64)
    rank[np.lexsort((np.arange(len(items)), -score))] = np.arange(len(items))
    keep = nms_groups(group, start, end, rank, tiou, pad=pad)
    for g in np.unique(group):
        idx = np.flatnonzero(group == g)
        want = greedy_nms(start[idx], end[idx], score[idx], tiou, pad)
        assert np.flatnonzero(keep[idx]).tolist() == want
        kept = idx[keep[idx]]
        _assert_nms_property(start[kept], end[kept], score[kept], tiou, pad)
        assert keep[idx[np.argmax(score[idx])]]  # the best of every group survives


# ----------------------------------------------------------------------------- parsing and errors


def test_activation_threshold_parser():
    assert parse_act_thresholds("0:0.25:0.025") == tuple(np.arange(0.0, 0.25, 0.025).tolist())
    assert len(BASNET_ACT_THRESHOLDS) == 10 and BASNET_ACT_THRESHOLDS[3] == 0.07500000000000001
    assert parse_act_thresholds("0.1") == (0.1,)
    assert parse_act_thresholds(0.2) == (0.2,)
    assert parse_act_thresholds("0.2, 0.1, 0.2") == (0.1, 0.2)
    assert parse_act_thresholds("0.1:0.3:0.1") == (0.1, 0.2)  # stop excluded, like np.arange
    for bad in ("", "a", "0:0.2:0", "0.5:0.1:0.1", "1.5", "-0.1"):
        with pytest.raises(InputError):
            parse_act_thresholds(bad)


def test_bad_inputs_raise_input_errors():
    good = np.zeros((10, 3), dtype=np.float32)
    with pytest.raises(InputError, match="do not fit"):
        localize_video(good, np.zeros(4), GRID)
    with pytest.raises(InputError, match="do not fit"):
        localize_video(np.zeros((0, 3)), np.zeros(3), GRID)
    bad = good.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        localize_video(bad, np.full(3, 0.9), GRID)
    with pytest.raises(InputError, match="one per video"):
        localize_all([good, good], [np.zeros(3)], GRID)
    for kwargs in (
        {"upsample": 0},
        {"alignment": "left"},
        {"nms_tiou": 0.0},
        {"max_proposals": 0},
        {"oic_class_score": "binarised"},
        {"nms_plus_one": "yes"},
        {"oic_lambda": float("nan")},
        {"oic_gamma": float("inf")},
        {"class_threshold": 1.5},
    ):
        with pytest.raises(InputError):
            LocalizeParams(**kwargs)
    with pytest.raises(InputError, match="span"):
        localize_all([good], [np.full(3, 0.9)], GRID, spans=[0])
    with pytest.raises(InputError, match="spans"):
        localize_all([good], [np.full(3, 0.9)], GRID, spans=[10, 10])
    with pytest.raises(InputError, match="pad"):
        nms_groups(np.zeros(1, np.int64), np.zeros(1), np.ones(1), np.zeros(1, np.int64), 0.5, pad=-1.0)
    assert len(localize_video(good, np.zeros(3), GRID)) == 0  # nothing kept: empty, no error
