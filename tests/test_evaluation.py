"""Tests of the ActivityNet detection evaluator and the ground-truth loaders."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wtalcli.core.errors import InputError
from wtalcli.data.named_gt import BASNET_THUMOS14, PACKAGE_DIR
from wtalcli.evaluation.detection import (
    TIOU_PRESETS,
    Predictions,
    evaluate_detection,
    load_predictions,
    parse_tiou_thresholds,
    precision_recall,
    results_dict,
)
from wtalcli.evaluation.groundtruth import (
    THUMOS14_PROTOCOLS,
    GroundTruth,
    Segments,
    apply_protocol,
    gt_from_dataframe,
    load_ground_truth,
)

TH14 = PACKAGE_DIR / "thumos14"  # the packaged THUMOS14 txt files (annotations_val/, annotations_test/)


# ----------------------------------------------------------------------------- helpers


def make_gt(rows, videos=None, ambiguous=None, subset="test") -> GroundTruth:
    """rows: (video, label, start, end)."""
    amb = Segments.empty()
    if ambiguous:
        amb = Segments(
            np.array([a[0] for a in ambiguous], dtype=object),
            np.array([a[1] for a in ambiguous], float),
            np.array([a[2] for a in ambiguous], float),
        )
    vids = videos if videos is not None else list(dict.fromkeys(r[0] for r in rows))
    return GroundTruth(
        np.array([r[0] for r in rows], dtype=object),
        np.array([r[1] for r in rows], dtype=object),
        np.array([r[2] for r in rows], float),
        np.array([r[3] for r in rows], float),
        tuple(vids),
        subset,
        "hand-made",
        ambiguous=amb,
    )


def make_preds(rows) -> Predictions:
    """rows: (video, label, score, start, end)."""
    return Predictions.from_arrays(
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [r[4] for r in rows],
    )


def slow_reference(gt_rows, pred_rows, thr, *, ties="reference", nan_hit=True, ambiguous=None, subset=None):
    """The official compute_average_precision_detection, loop for loop, plus the documented options.

    ``ambiguous``: (video, start, end) rows; unmatched predictions intersecting one are removed.
    ``subset``: if given, predictions on other videos are dropped (outside_subset="drop").
    Returns (classes, ap[C, T]).
    """
    classes = list(dict.fromkeys(r[1] for r in gt_rows))
    if subset is not None:
        pred_rows = [p for p in pred_rows if p[0] in subset]
    ap = np.zeros((len(classes), len(thr)))
    for ci, c in enumerate(classes):
        gtc = [g for g in gt_rows if g[1] == c]
        pc = [p for p in pred_rows if p[1] == c]
        if not pc:
            continue
        sc = np.array([p[2] for p in pc], dtype=np.float64)
        order = sc.argsort()[::-1] if ties == "reference" else np.argsort(-sc, kind="stable")
        pc = [pc[i] for i in order]
        lock = [[False] * len(gtc) for _ in thr]
        flags = [[0] * len(pc) for _ in thr]  # 1 TP, 0 FP, -1 removed
        for i, p in enumerate(pc):
            js = [j for j, g in enumerate(gtc) if g[0] == p[0]]
            tiou = np.empty(len(js))
            for k, j in enumerate(js):
                gs, ge = gtc[j][2], gtc[j][3]
                inter = max(min(p[4], ge) - max(p[3], gs), 0.0)
                union = (ge - gs) + (p[4] - p[3]) - inter
                tiou[k] = (
                    inter / union
                    if union != 0
                    else (math.nan if inter == 0 else math.copysign(math.inf, inter))
                )
            if ties == "reference":
                visit = list(tiou.argsort()[::-1])
            else:
                visit = sorted(
                    range(len(js)), key=lambda k: (0 if np.isnan(tiou[k]) else 1, -np.nan_to_num(tiou[k]), k)
                )
            for t, th in enumerate(thr):
                for k in visit:
                    if np.isnan(tiou[k]):
                        if not nan_hit:
                            continue
                    elif tiou[k] < th:
                        break
                    if lock[t][js[k]]:
                        continue
                    lock[t][js[k]] = True
                    flags[t][i] = 1
                    break
        for t in range(len(thr)):
            tp = fp = 0
            prec, rec = [], []
            for i, p in enumerate(pc):
                if flags[t][i] == 1:
                    tp += 1
                else:
                    hit_amb = ambiguous is not None and any(
                        a[0] == p[0] and min(p[4], a[2]) - max(p[3], a[1]) > 0 for a in ambiguous
                    )
                    if hit_amb:
                        continue
                    fp += 1
                prec.append(tp / (tp + fp))
                rec.append(tp / len(gtc))
            mprec = [0.0] + prec + [0.0]
            mrec = [0.0] + rec + [1.0]
            for i in range(len(mprec) - 2, -1, -1):
                mprec[i] = max(mprec[i], mprec[i + 1])
            ap[ci, t] = sum(
                (mrec[i] - mrec[i - 1]) * mprec[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]
            )
    return classes, ap


# ----------------------------------------------------------------------------- hand-made AP


def test_hand_made_ap_two_instances():
    gt = make_gt([("v1", "jump", 0, 10), ("v1", "jump", 20, 30), ("v2", "run", 0, 5)])
    preds = make_preds(
        [
            ("v1", "jump", 0.9, 0, 10),  # tIoU 1 with A: TP
            ("v1", "jump", 0.8, 0, 10),  # A already matched: FP
            ("v1", "jump", 0.7, 21, 30),  # tIoU 0.9 with B: TP at 0.5, FP at 0.95
            ("v2", "jump", 0.6, 0, 10),  # no jump in v2: FP
        ]
    )
    res = evaluate_detection(gt, preds, [0.5, 0.95])
    # thr 0.5: TP FP TP FP, npos 2: precision 1, 1/2, 2/3, 1/2; recall steps at ranks 1 and 3:
    # AP = 0.5 * max(1, .5, .667, .5) + 0.5 * max(.667, .5) = 0.5 + 1/3
    # thr 0.95: TP FP FP FP: AP = 0.5 * 1
    assert res.classes == ["jump", "run"]
    np.testing.assert_allclose(res.ap[0], [0.5 + 1 / 3, 0.5], atol=1e-15)
    # "run" has no prediction: AP 0, and it counts in the mean
    np.testing.assert_allclose(res.ap[1], [0.0, 0.0])
    np.testing.assert_allclose(res.map_per_tiou, [(0.5 + 1 / 3) / 2, 0.25], atol=1e-15)
    assert res.average_map == pytest.approx(((0.5 + 1 / 3) / 2 + 0.25) / 2, abs=1e-15)
    assert list(res.n_pred) == [4, 0] and list(res.n_gt) == [2, 1]


def test_greedy_takes_best_free_instance():
    # A = [0, 10], B = [4, 14]; p1 = [1.8, 11.8] has tIoU 8.2/11.8 = .695 with A and 7.8/12.2 = .639
    # with B, so it takes A.  p2 = [0, 10] then finds A taken and B at tIoU 6/14 = .43: a FP.
    gt = make_gt([("v", "c", 0, 10), ("v", "c", 4, 14)])
    preds = make_preds([("v", "c", 0.9, 1.8, 11.8), ("v", "c", 0.8, 0, 10)])
    # TP FP with npos 2 -> AP 0.5 (had p1 taken B, p2 would match A and AP would be 1)
    assert evaluate_detection(gt, preds, [0.5]).ap[0, 0] == pytest.approx(0.5)
    # p2 = B instead: p1 takes A, p2 takes B -> AP 1
    preds = make_preds([("v", "c", 0.9, 1.8, 11.8), ("v", "c", 0.8, 4, 14)])
    assert evaluate_detection(gt, preds, [0.5]).ap[0, 0] == pytest.approx(1.0)
    # a taken instance is skipped for the next best free one above the threshold
    preds = make_preds([("v", "c", 0.9, 0, 10), ("v", "c", 0.8, 1.8, 11.8)])
    assert evaluate_detection(gt, preds, [0.6]).ap[0, 0] == pytest.approx(1.0)
    assert evaluate_detection(gt, preds, [0.65]).ap[0, 0] == pytest.approx(0.5)


def test_predictions_outside_subset_are_false_positives():
    gt = make_gt([("v1", "c", 0, 10)], videos=["v1"])
    preds = make_preds([("other", "c", 0.9, 0, 10), ("v1", "c", 0.5, 0, 10)])
    res = evaluate_detection(gt, preds, [0.5])
    assert res.ap[0, 0] == pytest.approx(0.5)  # FP then TP: precision 1/2 at the only recall step
    assert res.counts["outside_subset_false_positives"] == 1
    res = evaluate_detection(gt, preds, [0.5], outside_subset="drop")
    assert res.ap[0, 0] == pytest.approx(1.0)
    assert res.counts["dropped_outside_subset"] == 1


def test_unknown_labels_error_or_drop():
    gt = make_gt([("v1", "c", 0, 10)])
    preds = make_preds([("v1", "zzz", 0.9, 0, 10), ("v1", "c", 0.5, 0, 10)])
    with pytest.raises(InputError, match="zzz"):
        evaluate_detection(gt, preds, [0.5])
    res = evaluate_detection(gt, preds, [0.5], unknown_labels="drop")
    assert res.ap[0, 0] == 1.0 and res.counts["dropped_unknown_labels"] == 1


def test_degenerate_segments_follow_the_reference_or_miss():
    gt = make_gt([("v", "c", 5, 5), ("v", "c", 10, 20)])
    preds = make_preds([("v", "c", 0.9, 5, 5), ("v", "c", 0.8, 10, 20)])
    # 0/0 = NaN tIoU: the reference counts it as a match
    assert evaluate_detection(gt, preds, [0.5, 0.9]).ap[0].tolist() == [1.0, 1.0]
    # ... even when the two zero-length segments are far apart
    far = make_preds([("v", "c", 0.9, 1, 1), ("v", "c", 0.8, 10, 20)])
    assert evaluate_detection(gt, far, [0.5]).ap[0, 0] == 1.0
    # "miss": the zero-length instance can never be found: FP then TP with npos 2 -> 0.5 * 0.5
    res = evaluate_detection(gt, preds, [0.5], degenerate="miss")
    assert res.ap[0, 0] == pytest.approx(0.25)


def test_reversed_segments_use_the_reference_arithmetic():
    gt = make_gt([("v", "c", 1, 3), ("w", "c", 0, 4)])
    # [5, 3] against [1, 3]: intersection 0, union 2 + (-2) = 0 -> NaN -> a match (reference)
    preds = make_preds([("v", "c", 0.9, 5, 3)])
    assert evaluate_detection(gt, preds, [0.5]).ap[0, 0] == pytest.approx(0.5)
    assert evaluate_detection(gt, preds, [0.5], degenerate="miss").ap[0, 0] == 0.0
    # [5, 3] against [0, 4]: union 4 - 2 = 2 -> tIoU 0 -> FP
    assert evaluate_detection(gt, make_preds([("w", "c", 0.9, 5, 3)]), [0.5]).ap[0, 0] == 0.0


def test_excluded_videos_drop_their_predictions():
    rows = [("video_test_0000270", "c", 0, 10), ("video_test_0000001", "c", 0, 10)]
    gt = apply_protocol(make_gt(rows), "basnet")
    assert gt.videos == ("video_test_0000001",)
    preds = make_preds([("video_test_0000270", "c", 0.9, 0, 10), ("video_test_0000001", "c", 0.5, 0, 10)])
    res = evaluate_detection(gt, preds, [0.5])
    assert res.ap[0, 0] == 1.0  # the 270 prediction is dropped, not a false positive
    assert res.counts["dropped_excluded_videos"] == 1


def test_ambiguous_exclusion_removes_unmatched_overlapping_predictions():
    gt = make_gt([("v", "c", 0, 10)], ambiguous=[("v", 30, 40)])
    preds = make_preds([("v", "c", 0.9, 35, 45), ("v", "c", 0.5, 0, 10)])
    assert evaluate_detection(gt, preds, [0.5]).ap[0, 0] == pytest.approx(0.5)
    res = evaluate_detection(gt, preds, [0.5], ambiguous="exclude")
    assert res.ap[0, 0] == pytest.approx(1.0)
    assert res.counts["ambiguous_excluded_per_tiou"] == [1]
    # touching (zero-length intersection) is not overlapping
    touch = make_preds([("v", "c", 0.9, 40, 45), ("v", "c", 0.5, 0, 10)])
    assert evaluate_detection(gt, touch, [0.5], ambiguous="exclude").ap[0, 0] == pytest.approx(0.5)


def test_precision_recall_points_by_hand_with_and_without_ambiguous():
    gt = make_gt([("a", "x", 0, 10), ("a", "x", 20, 30)], ambiguous=[("a", 40, 50)])
    preds = make_preds(
        [("a", "x", 0.9, 0, 10), ("a", "x", 0.8, 41, 45), ("a", "x", 0.7, 60, 70), ("a", "x", 0.6, 20, 30)]
    )
    result, k, curves = precision_recall(gt, preds, [0.3, 0.5, 0.7], at=0.5)
    assert k == 1 and list(curves) == ["x"]
    pr = curves["x"]
    assert pr.scores.tolist() == [0.9, 0.8, 0.7, 0.6] and pr.tp.tolist() == [True, False, False, True]
    np.testing.assert_allclose(pr.recall, [0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(pr.precision, [1.0, 0.5, 1 / 3, 0.5])
    assert pr.ap == pytest.approx(0.5 * 1.0 + 0.5 * 0.5) and pr.ap == result.ap[0, k]
    # THUMOS14's rule: the unmatched prediction inside the Ambiguous part leaves the ranking
    result, k, curves = precision_recall(gt, preds, [0.3, 0.5, 0.7], at=0.5, ambiguous="exclude")
    pr = curves["x"]
    assert pr.scores.tolist() == [0.9, 0.7, 0.6] and pr.tp.tolist() == [True, False, True]
    np.testing.assert_allclose(pr.precision, [1.0, 0.5, 2 / 3])
    assert pr.ap == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert pr.ap == evaluate_detection(gt, preds, [0.3, 0.5, 0.7], ambiguous="exclude").ap[0, 1]
    with pytest.raises(TypeError, match="unknown evaluation options"):
        precision_recall(gt, preds, [0.5], tie="stable")


def test_stable_ties_keep_file_order():
    gt = make_gt([("v", "c", 0, 10)])
    preds = make_preds([("v", "c", 0.5, 50, 60), ("v", "c", 0.5, 0, 10)])  # FP first in the file
    assert evaluate_detection(gt, preds, [0.5], ties="stable").ap[0, 0] == pytest.approx(0.5)
    swapped = make_preds([("v", "c", 0.5, 0, 10), ("v", "c", 0.5, 50, 60)])
    assert evaluate_detection(gt, swapped, [0.5], ties="stable").ap[0, 0] == pytest.approx(1.0)
    # "reference" does whatever numpy's unstable argsort does; the slow reference agrees
    for p in (preds, swapped):
        rows = list(zip(p.video_ids(), p.labels(), p.scores, p.t_start, p.t_end, strict=True))
        _, ap = slow_reference([("v", "c", 0.0, 10.0)], rows, [0.5])
        assert evaluate_detection(gt, p, [0.5]).ap[0, 0] == ap[0, 0]


def test_row_argsort_equals_per_row_argsort():
    """The reference-ties path sorts tIoU rows as one 2-D argsort; it must equal 1-D calls."""
    rng = np.random.default_rng(0)
    for width in (2, 3, 5, 8, 16, 17, 40):
        a = rng.integers(0, 3, (64, width)).astype(np.float64)
        a[rng.random(a.shape) < 0.1] = np.nan
        rows = np.argsort(a, axis=1)
        for i in range(len(a)):
            assert np.array_equal(rows[i], np.argsort(a[i]))


def test_integer_scores_are_flagged():
    doc = {
        "results": {
            "v": [
                {"label": "c", "score": 1, "segment": [0, 1]},
                {"label": "c", "score": 2, "segment": [0, 1]},
            ]
        }
    }
    assert load_predictions(json.dumps(doc).encode()).integer_scores
    doc["results"]["v"][0]["score"] = 1.5
    assert not load_predictions(json.dumps(doc).encode()).integer_scores


# ----------------------------------------------------------------------------- property test

seg_value = st.integers(-1, 12).map(float)


@st.composite
def scenario(draw):
    n_vid = draw(st.integers(1, 4))
    n_cls = draw(st.integers(1, 3))
    gt_rows = []
    for _ in range(draw(st.integers(1, 14))):
        s = draw(st.integers(0, 10))
        gt_rows.append(
            (
                f"v{draw(st.integers(0, n_vid - 1))}",
                f"c{draw(st.integers(0, n_cls - 1))}",
                float(s),
                float(s + draw(st.integers(0, 4))),
            )
        )
    classes = list(dict.fromkeys(r[1] for r in gt_rows))
    pred_rows = []
    for _ in range(draw(st.integers(0, 40))):
        s = draw(seg_value)
        pred_rows.append(
            (
                f"v{draw(st.integers(0, n_vid))}",  # v{n_vid} is outside the subset
                draw(st.sampled_from(classes)),
                float(draw(st.integers(0, 3))),  # many ties
                s,
                s + float(draw(st.integers(-1, 5))),  # degenerate and reversed segments too
            )
        )
    amb = [(f"v{draw(st.integers(0, n_vid - 1))}", 2.0, 5.0)] if draw(st.booleans()) else []
    return gt_rows, pred_rows, amb


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario(), st.sampled_from(["reference", "stable"]), st.sampled_from(["reference", "miss"]))
def test_fast_equals_slow_reference(case, ties, degenerate):
    gt_rows, pred_rows, amb = case
    thr = [0.1, 0.3, 0.5, 0.7, 1.0]
    gt = make_gt(gt_rows, ambiguous=amb)
    preds = make_preds(pred_rows) if pred_rows else Predictions.from_arrays([], [], [], [], [])
    nan_hit = degenerate == "reference"
    classes, ap = slow_reference(gt_rows, pred_rows, thr, ties=ties, nan_hit=nan_hit)
    res = evaluate_detection(gt, preds, thr, ties=ties, degenerate=degenerate)
    assert res.classes == classes
    np.testing.assert_allclose(res.ap, ap, rtol=0, atol=1e-12)
    # Ambiguous exclusion and dropping out-of-subset predictions
    _, ap = slow_reference(
        gt_rows, pred_rows, thr, ties=ties, nan_hit=nan_hit, ambiguous=amb, subset=set(gt.videos)
    )
    res = evaluate_detection(
        gt, preds, thr, ties=ties, degenerate=degenerate, ambiguous="exclude", outside_subset="drop"
    )
    np.testing.assert_allclose(res.ap, ap, rtol=0, atol=1e-12)


@pytest.mark.parametrize("ties", ["reference", "stable"])
def test_fast_equals_slow_reference_on_large_groups(ties):
    """Groups of 20-45 instances (THUMOS-like; > 16 so numpy's sort takes its large-array path)."""
    rng = np.random.default_rng(7)
    gt_rows, pred_rows = [], []
    for v in range(3):
        for c in range(2):
            for _ in range(rng.integers(20, 46)):
                s = float(rng.integers(0, 200))
                gt_rows.append((f"v{v}", f"c{c}", s, s + float(rng.integers(1, 8))))
    for _ in range(400):
        g = gt_rows[rng.integers(len(gt_rows))]
        s = g[2] + float(rng.integers(-2, 3))
        pred_rows.append((g[0], g[1], float(rng.integers(0, 20)), s, s + float(rng.integers(1, 9))))
    thr = [0.1, 0.3, 0.5, 0.7, 0.9]
    classes, ap = slow_reference(gt_rows, pred_rows, thr, ties=ties)
    res = evaluate_detection(make_gt(gt_rows), make_preds(pred_rows), thr, ties=ties)
    assert res.classes == classes
    np.testing.assert_allclose(res.ap, ap, rtol=0, atol=1e-12)
    assert 0.05 < res.average_map < 0.95  # a mixed case, not a trivial one


# ----------------------------------------------------------------------------- real annotation files


def _gt_as_predictions(gt: GroundTruth, rng=None) -> Predictions:
    scores = np.ones(len(gt)) if rng is None else rng.random(len(gt))
    return Predictions.from_arrays(gt.video_ids, gt.labels, scores, gt.t_start, gt.t_end)


def test_thumos_ground_truth_scores_one():
    gt = load_ground_truth(TH14 / "annotations_test", "test")
    assert len(gt.videos) == 212 and len(gt) == 3358 and len(gt.classes) == 20
    assert len(gt.ambiguous) == 99
    rng = np.random.default_rng(0)
    for preset in ("thumos14", "thumos14-basnet"):
        res = evaluate_detection(gt, _gt_as_predictions(gt, rng), preset)
        np.testing.assert_allclose(res.ap, 1.0, rtol=0, atol=1e-12)
    basnet = load_ground_truth(BASNET_THUMOS14 / "gt.json.xz", "test")  # string segments
    assert len(basnet.videos) == 210
    assert evaluate_detection(basnet, _gt_as_predictions(basnet), "thumos14").average_map == pytest.approx(
        1.0
    )


def test_thumos_protocols_match_the_published_files():
    gt = load_ground_truth("thumos14", "test")
    counts = {p: len(apply_protocol(gt, p).videos) for p in THUMOS14_PROTOCOLS}
    assert counts == {"all": 212, "basnet": 210, "opentad": 211}
    assert "video_test_0000270" not in apply_protocol(gt, "opentad").videos
    assert "video_test_0001496" in apply_protocol(gt, "opentad").videos
    for p in THUMOS14_PROTOCOLS:  # the protocol is named in the one-line ground-truth summary
        note = apply_protocol(gt, p).protocol
        assert note.startswith(f"THUMOS14 protocol '{p}'") and "\n" not in apply_protocol(gt, p).summary()
    # the basnet protocol equals BaS-Net's own gt.json, instance for instance
    mine = apply_protocol(gt, "basnet")
    theirs = load_ground_truth(BASNET_THUMOS14 / "gt.json.xz", "test")
    key = lambda g: sorted(zip(g.video_ids, g.labels, g.t_start, g.t_end, strict=True))  # noqa: E731
    assert key(mine) == key(theirs)
    # the name, the parent folder and the test folder give the same ground truth, in the same order
    for other in (load_ground_truth(TH14, "test"), load_ground_truth(TH14 / "annotations_test", "test")):
        assert (
            other.video_ids.tolist() == gt.video_ids.tolist() and other.labels.tolist() == gt.labels.tolist()
        )
        assert other.t_start.tolist() == gt.t_start.tolist() and other.videos == gt.videos
    # ambiguous segments of the dropped videos go with them (1292 has only ambiguous ones)
    dropped = np.isin(gt.ambiguous.video_ids, list(THUMOS14_PROTOCOLS["basnet"]))
    assert len(mine.ambiguous) == 99 - int(dropped.sum()) == 87
    val = load_ground_truth("thumos14", "val")
    assert (len(val.videos), len(val), len(val.ambiguous), val.subset) == (200, 3007, 89, "validation")
    assert load_ground_truth("thumos14", "train").video_ids.tolist() == val.video_ids.tolist()


def test_activitynet_ground_truth_scores_one_with_the_reference_nan_rule():
    gt = load_ground_truth("anet13", "validation")
    assert len(gt.videos) == 4728 and len(gt) == 7293 and len(gt.classes) == 200
    zero = gt.t_end - gt.t_start == 0
    assert zero.sum() == 3  # three zero-length instances: the reference's NaN rule matches them
    res = evaluate_detection(gt, _gt_as_predictions(gt), "anet")
    np.testing.assert_allclose(res.ap, 1.0, rtol=0, atol=1e-12)
    # treating NaN tIoU as a miss, exactly the classes holding a zero-length instance fall below 1
    res = evaluate_detection(gt, _gt_as_predictions(gt), "anet", degenerate="miss")
    below = {c for c, row in zip(res.classes, res.ap, strict=True) if row.min() < 1 - 1e-12}
    assert below == set(gt.labels[zero])


def test_activitynet_other_subset_counts_as_false_positives():
    gt = load_ground_truth("anet12", "test")  # "test": ActivityNet's validation subset
    assert gt.subset == "validation" and len(gt.videos) == 2383 and len(gt) == 3582
    train = load_ground_truth("anet12", "train")
    both = Predictions.from_arrays(
        np.concatenate([gt.video_ids, train.video_ids]),
        np.concatenate([gt.labels, train.labels]),
        np.ones(len(gt) + len(train)),
        np.concatenate([gt.t_start, train.t_start]),
        np.concatenate([gt.t_end, train.t_end]),
    )
    res = evaluate_detection(gt, both, "anet")
    assert res.counts["outside_subset_false_positives"] == len(train) and res.average_map < 1.0
    res = evaluate_detection(gt, both, "anet", outside_subset="drop")
    np.testing.assert_allclose(res.ap, 1.0, rtol=0, atol=1e-12)


def test_dataframe_ground_truth():
    df = pd.DataFrame(
        {
            "video_id": ["a", "a", "b", "c"],
            "label": ["x", "y", "x", "x"],
            "start_s": [0, 1, 2, 3.0],
            "end_s": [1, 2, 3, 4.0],
        }
    )
    gt = gt_from_dataframe(df, ["a", "b", "d"], "test")
    assert len(gt) == 3 and gt.videos == ("a", "b", "d") and gt.classes == ["x", "y"]
    bad = df.assign(end_s=[1, np.nan, 3, 4])
    with pytest.raises(InputError, match="not finite"):
        gt_from_dataframe(bad, ["a"])
    with pytest.raises(InputError, match="columns"):
        gt_from_dataframe(df.drop(columns="label"), ["a"])


# ----------------------------------------------------------------------------- parsers and errors


def test_tiou_threshold_parser():
    assert np.array_equal(parse_tiou_thresholds("anet"), np.linspace(0.5, 0.95, 10))
    assert parse_tiou_thresholds("anet")[8] == 0.8999999999999999
    assert np.array_equal(parse_tiou_thresholds("0.5:0.95:0.05"), TIOU_PRESETS["anet"])
    assert np.array_equal(parse_tiou_thresholds("0.1:0.7:0.1"), [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    assert np.array_equal(parse_tiou_thresholds("0.1:0.9:0.1"), TIOU_PRESETS["thumos14-basnet"])
    assert parse_tiou_thresholds("0.3, 0.5").tolist() == [0.3, 0.5]
    assert parse_tiou_thresholds([0.5]).tolist() == [0.5]
    for bad in ("0.1:0.7:0.25", "x", "0:0.5:0.1", "1.5", "0.7:0.1:0.1", ""):
        with pytest.raises(InputError):
            parse_tiou_thresholds(bad)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"version": 1}', "no 'results'"),
        (b'{"results": {"v": {}}}', "not a list"),
        (b'{"results": {"v": [{"label": "c", "score": 1}]}}', "lacks 'segment'"),
        (b'{"results": {"v": [{"label": "c", "score": "high", "segment": [0, 1]}]}}', "score"),
        (b'{"results": {"v": [{"label": "c", "score": 0.5, "segment": [0, 1, 2]}]}}', "not \\[start, end\\]"),
        (b'{"results": {"v": [{"label": "c", "score": 0.5, "segment": ["a", 1]}]}}', "not a number"),
        (b'{"results": {"v": [{"label": "c", "score": NaN, "segment": [0, 1]}]}}', "non-finite"),
        (b'{"results": {"v": [{"label": 3, "score": 0.5, "segment": [0, 1]}]}}', "label"),
        (b'{"results": {"v": [7]}}', "not an object"),
    ],
)
def test_prediction_parse_errors(text, match):
    with pytest.raises(InputError, match=match):
        load_predictions(text)


def test_prediction_file_round_trip(tmp_path):
    doc = results_dict(["a", "a", "b"], ["x", "y", "x"], [0.5, 0.25, 1.0], [0, 1, 2], [1, 2, 3])
    assert set(doc) == {"version", "external_data", "results"}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    p = load_predictions(path)
    assert p.videos == ["a", "b"] and p.labels().tolist() == ["x", "y", "x"]
    assert p.scores.tolist() == [0.5, 0.25, 1.0] and p.t_end.tolist() == [1, 2, 3]
    # numeric strings in segments are accepted (float() as the reference does)
    doc["results"]["a"][0]["segment"] = ["0.5", "1.5"]
    assert load_predictions(json.dumps(doc).encode()).t_start[0] == 0.5
    with pytest.raises(InputError, match="not found"):
        load_predictions(tmp_path / "missing.json")
    res = evaluate_detection(make_gt([("a", "x", 0, 1)]), p, [0.5], unknown_labels="drop")
    json.dumps(res.to_json())


def test_ground_truth_errors(tmp_path):
    bad = tmp_path / "gt.json"
    bad.write_text(
        json.dumps(
            {"database": {"v": {"subset": "test", "annotations": [{"segment": [0, "x"], "label": "c"}]}}}
        )
    )
    with pytest.raises(InputError, match="not a number"):
        load_ground_truth(bad, "test")
    bad.write_text(
        json.dumps({"database": {"v": {"subset": "test", "annotations": [{"segment": [0], "label": "c"}]}}})
    )
    with pytest.raises(InputError, match="start, end"):
        load_ground_truth(bad, "test")
    bad.write_text(json.dumps({"database": {"v": {"subset": "training", "annotations": []}}}))
    with pytest.raises(InputError, match="training"):
        load_ground_truth(bad, "validation")
    bad.write_text("[]")
    with pytest.raises(InputError, match="database"):
        load_ground_truth(bad, "test")
    folder = tmp_path / "txt"
    folder.mkdir()
    (folder / "Jump_test.txt").write_text("video_test_1 1.0 2.0\nvideo_test_2 3.0\n")
    with pytest.raises(InputError, match="line 2"):
        load_ground_truth(folder, "test")
    (folder / "Jump_test.txt").write_text("video_test_1 1.0 2.0\n")
    (folder / "Ambiguous_test.txt").write_text("video_test_1 5.0 6.0\n")
    gt = load_ground_truth(folder, "test")
    assert gt.classes == ["Jump"] and len(gt.ambiguous) == 1
    with pytest.raises(InputError, match=r"no video of subset 'val'.*\['test'\]"):
        load_ground_truth(folder, "val")
    with pytest.raises(InputError, match="subset"):
        load_ground_truth(folder, "train")
    with pytest.raises(InputError, match="protocol"):
        apply_protocol(gt, "nope")
