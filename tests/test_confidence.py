"""Pseudo-labels (method.md 3.1) and the confidence map S (method.md 3.2) on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from wtalcli.core.errors import InputError
from wtalcli.dcc.confidence import (
    cluster_positive_counts,
    confidence_map,
    confidence_summary,
    video_class_mask,
)
from wtalcli.dcc.pseudolabels import RULES, mean_threshold_labels

# ------------------------------------------------------------------------- confidence map S

# 6 snippets, 2 channels (1 class + background), K = 4 clusters (cluster 3 empty).
TOY_ASSIGN = np.array([0, 0, 0, 1, 1, 2])
TOY_LABELS = np.array(
    [
        [1, 0],
        [1, 0],
        [0, 1],
        [1, 0],
        [0, 1],
        [1, 0],
    ],
    dtype=np.uint8,
)
# cluster 0 = {0, 1, 2}: channel 0 labels 1, 1, 0 -> 2 of 3 are 1
#   S[0,0] = S[1,0] = 2/3 (label 1, two of three agree); S[2,0] = 1/3 (label 0, one of three)
#   channel 1 labels 0, 0, 1 -> S[0,1] = S[1,1] = 2/3, S[2,1] = 1/3
# cluster 1 = {3, 4}: channel 0 labels 1, 0 -> S[3,0] = S[4,0] = 1/2; channel 1 likewise 1/2
# cluster 2 = {5}: a singleton always agrees with itself -> S[5,:] = 1
TOY_S = np.array(
    [
        [2 / 3, 2 / 3],
        [2 / 3, 2 / 3],
        [1 / 3, 1 / 3],
        [1 / 2, 1 / 2],
        [1 / 2, 1 / 2],
        [1.0, 1.0],
    ]
)


def test_confidence_map_hand_example() -> None:
    s = confidence_map(TOY_ASSIGN, TOY_LABELS, k=4)
    assert s.dtype == np.float32
    assert s.shape == TOY_LABELS.shape
    np.testing.assert_allclose(s, TOY_S, rtol=1e-6)


def test_cluster_counts_hand_example() -> None:
    pos, size = cluster_positive_counts(TOY_ASSIGN, TOY_LABELS, k=4)
    # channel-0 positives per cluster: {0,1} in cluster 0, {3} in 1, {5} in 2; channel 1: {2}, {4}
    np.testing.assert_array_equal(pos, [[2, 1], [1, 1], [1, 0], [0, 0]])
    np.testing.assert_array_equal(size, [3, 2, 1, 0])


def test_confidence_invariant_to_cluster_relabelling() -> None:
    rng = np.random.default_rng(3)
    k = 7
    assign = rng.integers(0, k, size=500)
    labels = (rng.random((500, 5)) < 0.3).astype(np.uint8)
    perm = rng.permutation(k)
    np.testing.assert_array_equal(confidence_map(assign, labels, k), confidence_map(perm[assign], labels, k))


def test_confidence_matches_definition_on_random_data() -> None:
    """Against the formula read literally: share of t's cluster with the same label as t."""
    rng = np.random.default_rng(4)
    k, n, ch = 5, 120, 4
    assign = rng.integers(0, k, size=n)
    labels = (rng.random((n, ch)) < 0.4).astype(np.uint8)
    s = confidence_map(assign, labels, k)
    same_cluster = assign[:, None] == assign[None, :]  # (n, n)
    for c in range(ch):
        agree = labels[:, c][:, None] == labels[:, c][None, :]
        expected = (same_cluster & agree).sum(1) / same_cluster.sum(1)
        np.testing.assert_allclose(s[:, c], expected, rtol=1e-6)


def test_confidence_rejects_bad_input() -> None:
    with pytest.raises(InputError, match="cluster ids"):
        confidence_map(np.array([0, 5]), np.zeros((2, 2), np.uint8), k=4)
    with pytest.raises(InputError, match="assignments"):
        confidence_map(np.array([0, 1, 1]), np.zeros((2, 2), np.uint8), k=4)
    with pytest.raises(InputError, match="0 and 1"):
        confidence_map(np.array([0, 1]), np.full((2, 2), 2, np.uint8), k=4)


def test_confidence_summary_hand_example() -> None:
    gt = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [1, 0]], dtype=np.uint8)
    df = confidence_summary(TOY_S, TOY_LABELS, ["jump"], gt_labels=gt)
    assert list(df["class"]) == ["jump", "__background__"]
    row = df.iloc[0]
    # channel 0: pseudo-label 1 on snippets 0, 1, 3, 5 -> mean S = (2/3 + 2/3 + 1/2 + 1) / 4
    assert row["n_pos"] == 4 and row["n_neg"] == 2
    assert row["mean_s_pos"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 2 + 1) / 4)
    assert row["mean_s_neg"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    # pseudo-label vs GT on channel 0: A = 1 1 0 1 0 1, G = 1 1 1 0 0 1 -> wrong on snippets 2, 3
    assert row["agree"] == pytest.approx(4 / 6)
    # weighted: S of the right ones (2/3 + 2/3 + 1/2 + 1) over all S (2/3+2/3+1/3+1/2+1/2+1)
    assert row["agree_weighted"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 2 + 1) / (11 / 3))
    assert row["mean_s_correct"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 2 + 1) / 4)
    assert row["mean_s_wrong"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    # gt_mask keeps only snippets 0..2: A = 1 1 0, G = 1 1 1 -> 2 of 3 right
    masked = confidence_summary(TOY_S, TOY_LABELS, ["jump"], gt_labels=gt, gt_mask=np.arange(6) < 3)
    assert masked.iloc[0]["n_gt"] == 3
    assert masked.iloc[0]["agree"] == pytest.approx(2 / 3)


# Two videos, 2 classes + background: video A = snippets 0..2 labelled {class 0}, video B =
# snippets 3..5 labelled {class 1}. Pseudo-labels of a class a video lacks are 0 by construction.
TWO_LABELS = np.array(
    [  # class 0, class 1, background
        [1, 0, 0],
        [0, 0, 1],
        [1, 0, 0],
        [0, 1, 0],
        [0, 1, 0],
        [0, 0, 1],
    ],
    dtype=np.uint8,
)
TWO_GT = np.array(
    [  # A: class 0 on snippets 0, 1; B: class 1 on snippet 4; background = no action
        [1, 0, 0],
        [1, 0, 0],
        [0, 0, 1],
        [0, 0, 1],
        [0, 1, 0],
        [0, 0, 1],
    ],
    dtype=np.uint8,
)
TWO_S = np.array(
    [
        [0.9, 0.5, 0.7],
        [0.4, 0.5, 0.2],
        [0.3, 0.5, 0.6],
        [0.8, 0.6, 0.5],
        [0.7, 0.9, 0.5],
        [0.6, 0.8, 0.9],
    ]
)
TWO_OFFSETS, TWO_COUNTS = np.array([0, 3]), np.array([3, 3])
TWO_VIDEO_LABELS = np.array([[1, 0], [0, 1]], dtype=np.uint8)


def test_video_class_mask_hand_example() -> None:
    mask = video_class_mask(TWO_OFFSETS, TWO_COUNTS, TWO_VIDEO_LABELS, 6)
    np.testing.assert_array_equal(mask, [[1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [0, 1]])
    # ground truth adds the classes a video shows without carrying the label: class 0 in B
    gt = TWO_GT.copy()
    gt[5, 0] = 1
    mask = video_class_mask(TWO_OFFSETS, TWO_COUNTS, TWO_VIDEO_LABELS, 6, gt_labels=gt)
    np.testing.assert_array_equal(mask[:, 0], [1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(mask[:, 1], [0, 0, 0, 1, 1, 1])
    # rows of no video (a gap) compare nothing; bad spans are refused
    gap = video_class_mask(np.array([0, 4]), np.array([3, 2]), TWO_VIDEO_LABELS, 6)
    assert not gap[3].any()
    with pytest.raises(InputError, match="outside"):
        video_class_mask(np.array([0, 4]), np.array([3, 3]), TWO_VIDEO_LABELS, 6)
    with pytest.raises(InputError, match="per video"):
        video_class_mask(TWO_OFFSETS, TWO_COUNTS, TWO_VIDEO_LABELS[:1], 6)


def test_confidence_summary_compares_each_class_on_its_videos() -> None:
    """The old, unmasked numbers count video B for class 0 (and A for class 1), where pseudo-label
    0 and GT 0 agree by construction; the per-class mask leaves them out."""
    old = confidence_summary(TWO_S, TWO_LABELS, ["a", "b"], gt_labels=TWO_GT)
    mask = video_class_mask(TWO_OFFSETS, TWO_COUNTS, TWO_VIDEO_LABELS, 6)
    new = confidence_summary(TWO_S, TWO_LABELS, ["a", "b"], gt_labels=TWO_GT, class_mask=mask)
    assert list(new["class"]) == ["a", "b", "__background__"]
    # class 0, all rows: A = 1 0 1 0 0 0, G = 1 1 0 0 0 0 -> right 1 0 0 1 1 1
    assert old.iloc[0]["n_gt"] == 6 and old.iloc[0]["agree"] == pytest.approx(4 / 6)
    assert old.iloc[0]["agree_weighted"] == pytest.approx((0.9 + 0.8 + 0.7 + 0.6) / 3.7)
    # class 0, video A only (rows 0..2): right 1 0 0
    a = new.iloc[0]
    assert a["n_gt"] == 3 and a["agree"] == pytest.approx(1 / 3)
    assert a["agree_weighted"] == pytest.approx(0.9 / (0.9 + 0.4 + 0.3))
    assert a["mean_s_correct"] == pytest.approx(0.9)
    assert a["mean_s_wrong"] == pytest.approx((0.4 + 0.3) / 2)
    # class 1, all rows: A = 0 0 0 1 1 0, G = 0 0 0 0 1 0 -> 5 of 6 right; video B only: 0 1 1
    assert old.iloc[1]["agree"] == pytest.approx(5 / 6)
    b = new.iloc[1]
    assert b["n_gt"] == 3 and b["agree"] == pytest.approx(2 / 3)
    assert b["agree_weighted"] == pytest.approx((0.9 + 0.8) / (0.6 + 0.9 + 0.8))
    assert b["mean_s_wrong"] == pytest.approx(0.6)
    # background: every video, unchanged. A = 0 1 0 0 0 1, G = 0 0 1 1 0 1 -> right 1 0 0 0 1 1
    for df in (old, new):
        bg = df.iloc[2]
        assert bg["n_gt"] == 6 and bg["agree"] == pytest.approx(3 / 6)
        assert bg["agree_weighted"] == pytest.approx((0.7 + 0.5 + 0.9) / 3.4)
    # counts of pseudo-labels do not depend on the mask
    np.testing.assert_array_equal(new["n_pos"], old["n_pos"])
    # gt_mask still applies on top (rows 0, 1, 3, 4): class 0 -> rows 0, 1 (right 1 0)
    both = confidence_summary(
        TWO_S, TWO_LABELS, ["a", "b"], gt_labels=TWO_GT, gt_mask=np.array([1, 1, 0, 1, 1, 0]), class_mask=mask
    )
    assert list(both["n_gt"]) == [2, 2, 4]
    assert both.iloc[0]["agree"] == pytest.approx(1 / 2)
    # a C+1-column mask sets the background's rows too; a wrong shape is refused
    full = np.concatenate([mask, np.array([[1], [1], [1], [0], [0], [0]], bool)], axis=1)
    bg_a = confidence_summary(TWO_S, TWO_LABELS, ["a", "b"], gt_labels=TWO_GT, class_mask=full)
    assert bg_a.iloc[2]["n_gt"] == 3 and bg_a.iloc[2]["agree"] == pytest.approx(1 / 3)
    with pytest.raises(InputError, match="class_mask"):
        confidence_summary(TWO_S, TWO_LABELS, ["a", "b"], gt_labels=TWO_GT, class_mask=mask[:5])


def test_confidence_summary_class_without_videos_is_nan() -> None:
    mask = np.zeros((6, 2), bool)
    mask[:3, 0] = True  # no video carries class 1
    df = confidence_summary(TWO_S, TWO_LABELS, ["a", "b"], gt_labels=TWO_GT, class_mask=mask)
    assert df.iloc[1]["n_gt"] == 0
    assert np.isnan(df.iloc[1]["agree"]) and np.isnan(df.iloc[1]["agree_weighted"])


def test_confidence_summary_without_gt_and_empty_class() -> None:
    labels = np.array([[0, 1], [0, 1]], dtype=np.uint8)
    df = confidence_summary(np.ones((2, 2)), labels, ["a", "__background__"])
    assert "agree" not in df.columns
    assert np.isnan(df.iloc[0]["mean_s_pos"])  # no positive snippet for class a
    assert df.iloc[1]["mean_s_pos"] == 1.0


# ------------------------------------------------------------------------- pseudo-labels


def _toy_cas() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # 2 classes + background; video A = rows 0..3 labelled {class 0}, video B = rows 4..6 {class 1}
    cas = np.array(
        [
            # A: ch0 norm (x - .1) / .8 = 0, .5, 1, .25 -> mean .4375 -> 0 1 1 0
            #    ch1 would be 1 0 0 1 but class 1 is not in A's label -> 0 0 0 0
            #    bg norm (x - .2) / .4 = 1, 0, 0, 0 -> mean .25 -> 1 0 0 0
            [0.1, 0.9, 0.6],
            [0.5, 0.1, 0.2],
            [0.9, 0.2, 0.2],
            [0.3, 0.8, 0.2],
            # B: ch0 not in B's label -> 0; ch1 norm (x - .1) / .2 = 1, 0, .5 -> mean .5 -> 1 0 0
            #    bg norm (x - .1) / .2 = 0, 1, .5 -> mean .5 -> 0 1 0
            [0.7, 0.3, 0.1],
            [0.1, 0.1, 0.3],
            [0.4, 0.2, 0.2],
        ],
        dtype=np.float32,
    )
    offsets = np.array([0, 4])
    n_snippets = np.array([4, 3])
    video_labels = np.array([[1, 0], [0, 1]], dtype=np.uint8)
    return cas, offsets, n_snippets, video_labels


TOY_EXPECTED = np.array(
    [[0, 0, 1], [1, 0, 0], [1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]],
    dtype=np.uint8,
)


def test_pseudo_labels_hand_example() -> None:
    cas, off, n, vl = _toy_cas()
    out = mean_threshold_labels(cas, off, n, vl)
    assert out.dtype == np.uint8 and out.shape == cas.shape
    np.testing.assert_array_equal(out, TOY_EXPECTED)
    assert "mean" in RULES


def test_pseudo_labels_without_label_mask() -> None:
    cas, off, n, vl = _toy_cas()
    out = mean_threshold_labels(cas, off, n, vl, apply_labels=np.array([False, True]))
    # video A unmasked: ch1 norm (x - .1) / .8 = 1, 0, .125, .875 -> mean .5 -> 1 0 0 1
    np.testing.assert_array_equal(out[:4, 1], [1, 0, 0, 1])
    np.testing.assert_array_equal(out[4:], TOY_EXPECTED[4:])  # video B still masked


def test_pseudo_labels_video_order_gaps_and_empty_videos() -> None:
    cas, off, n, vl = _toy_cas()
    # the same two videos listed in reverse order, with 2 uncovered rows in between and an empty video
    big = np.concatenate([cas[4:], np.full((2, 3), 0.5, np.float32), cas[:4]])
    out = mean_threshold_labels(
        big, np.array([5, 0, 3]), np.array([4, 3, 0]), np.array([[1, 0], [0, 1], [1, 1]], np.uint8)
    )
    np.testing.assert_array_equal(out[5:], TOY_EXPECTED[:4])
    np.testing.assert_array_equal(out[:3], TOY_EXPECTED[4:])
    np.testing.assert_array_equal(out[3:5], 0)  # rows of no video


def test_pseudo_labels_minmax_uses_relu_and_clip() -> None:
    # one video, 1 class + bg. ch0 = -1, .2, .4: relu(min) = 0, max .4 -> clip(x / .4) = 0, .5, 1,
    # mean .5 -> 0 0 1 (the raw mean -0.133 would have given 0 1 1). bg constant -> all 0.
    cas = np.array([[-1.0, 0.3], [0.2, 0.3], [0.4, 0.3]], dtype=np.float32)
    out = mean_threshold_labels(cas, np.array([0]), np.array([3]), np.array([[1]]))
    np.testing.assert_array_equal(out, [[0, 0], [0, 0], [1, 0]])


def test_pseudo_labels_of_a_raw_channel_that_is_negative_throughout() -> None:
    # raw CAS: class 0 never fires (all < 0): relu'd max 0, range 1, clip -> all 0 -> no label
    # (x > mean(x) on the unclipped values would label the two highest snippets); the background
    # mixes signs: x / relu(max) clipped = 0, 0, .5, 1 -> mean .375 -> 0 0 1 1
    cas = np.array([[-3.0, -1.0], [-2.0, -0.5], [-0.5, 1.0], [-0.4, 2.0]], dtype=np.float32)
    out = mean_threshold_labels(cas, np.array([0]), np.array([4]), np.array([[1]]))
    np.testing.assert_array_equal(out, [[0, 0], [0, 0], [0, 1], [0, 1]])


def test_pseudo_labels_match_a_per_video_reference() -> None:
    rng = np.random.default_rng(7)
    lengths = rng.integers(1, 40, size=25)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    n_classes = 6
    # raw activations of both signs, channels shifted so some are mostly negative
    cas = (
        rng.normal(0.0, 1.0, (int(lengths.sum()), n_classes + 1)) + rng.normal(0, 1.5, n_classes + 1)
    ).astype(np.float32)
    vl = (rng.random((25, n_classes)) < 0.3).astype(np.uint8)
    out = mean_threshold_labels(cas, offsets, lengths, vl)
    for v, (o, ln) in enumerate(zip(offsets, lengths, strict=True)):
        seg = cas[o : o + ln].astype(np.float64)
        lo, hi = np.maximum(seg.min(0), 0), np.maximum(seg.max(0), 0)
        delta = np.where(hi - lo > 0, hi - lo, 1.0)
        norm = np.clip((seg - lo) / delta, 0, 1)
        expected = norm > norm.mean(0)
        expected[:, :n_classes] &= vl[v].astype(bool)
        np.testing.assert_array_equal(out[o : o + ln], expected.astype(np.uint8), err_msg=f"video {v}")


def test_pseudo_labels_reject_bad_input() -> None:
    cas, off, n, vl = _toy_cas()
    with pytest.raises(InputError, match="rule"):
        mean_threshold_labels(cas, off, n, vl, rule="median-of-nothing")
    with pytest.raises(InputError, match="video labels"):
        mean_threshold_labels(cas, off, n, vl[:, :1])
    with pytest.raises(InputError, match="outside"):
        mean_threshold_labels(cas, np.array([0, 5]), n, vl)
    with pytest.raises(InputError, match="share"):
        mean_threshold_labels(cas, np.array([0, 2]), n, vl)
    bad = cas.copy()
    bad[2, 1] = np.nan
    with pytest.raises(InputError, match="row 2"):
        mean_threshold_labels(bad, off, n, vl)
