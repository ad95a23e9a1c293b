"""The per-class diagnostics (wtalcli/evaluation/separation.py, probes.py) and the recorded forms
run_diagnostics reads (diagnostics.py), on constructed data with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from wtalcli.evaluation.diagnostics import contrast_against_uniform, separation_columns
from wtalcli.evaluation.probes import _lbfgs, _objective, heldout_probe_scores
from wtalcli.evaluation.separation import (
    Snippets,
    centroid_scores,
    pair_aucs,
    separation_summary,
    video_folds,
)


def _videos(n_videos=40, length=30, n_classes=3, seed=0) -> Snippets:
    """Videos of ``length`` snippets, one labelled class each, an instance in the middle third whose
    first half is its core."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n_videos * length, n_classes), bool)
    core = np.zeros(n_videos * length, bool)
    labels = np.zeros((n_videos, n_classes), bool)
    for v in range(n_videos):
        c = int(rng.integers(n_classes))
        labels[v, c] = True
        s = v * length + length // 3
        truth[s : s + length // 3, c] = True
        core[s : s + length // 6] = True
    return Snippets(truth, np.repeat(np.arange(n_videos), length), labels, core)


def test_pair_aucs_known_answers():
    s = _videos()
    n, c = s.truth.shape
    perfect = s.truth.astype(float)  # (N, C): the class's channel is 1 exactly on its actions
    out = pair_aucs(perfect, s)
    for kind in ("action", "noncore", "core"):
        assert out[kind] == {"mean": 1.0, "median": 1.0, "pairs": 40}
    assert pair_aucs(-perfect, s)["noncore"]["mean"] == 0.0
    # a score that ranks cores above background but non-core below it
    split = np.where(s.core, 2.0, np.where(s.truth.any(1), -1.0, 0.0))
    out = pair_aucs(split, s)  # (N,): one score for every class
    assert out["core"]["mean"] == 1.0 and out["noncore"]["mean"] == 0.0 and out["action"]["mean"] == 0.5
    noise = np.random.default_rng(1).standard_normal((n, c))
    assert abs(pair_aucs(noise, s)["action"]["mean"] - 0.5) < 0.06
    # only the video's labelled class, only against its own background: a channel that is high on
    # another class's actions, or in another video's background, does not count
    other = np.zeros((n, c))
    other[:, :] = np.where(s.labels[s.video], 0.0, 5.0)
    other += perfect
    assert pair_aucs(other, s)["action"]["mean"] == 1.0


def test_pair_aucs_count_only_pairs_with_both_sets_and_no_core_kinds_when_unknown():
    s = _videos(n_videos=4)
    s.truth[:30] = False  # video 0: no action snippet of its class
    s.core[:30] = False
    s.truth[30:60, np.flatnonzero(s.labels[1])[0]] = True  # video 1: no background
    s.core[30:60] = False
    out = pair_aucs(s.truth.astype(float), s)
    assert out["action"]["pairs"] == 2 and out["core"]["pairs"] == 2
    unknown = Snippets(s.truth, s.video, s.labels, None)
    assert set(pair_aucs(s.truth.astype(float), unknown)) == {"action"}
    assert pair_aucs(np.zeros(0), Snippets(s.truth[:0], s.video[:0], s.labels[:0]))["action"] == {
        "mean": pytest.approx(float("nan"), nan_ok=True),
        "median": pytest.approx(float("nan"), nan_ok=True),
        "pairs": 0,
    }


def test_class_centroids_score_each_class_and_come_from_the_other_half():
    s = _videos(n_videos=60)
    rng = np.random.default_rng(2)
    n, c = s.truth.shape
    dirs = np.eye(8)[: c + 1]  # one direction per class, the last for background
    h = np.where(s.truth.any(1, keepdims=True), s.truth.astype(float) @ dirs[:c], dirs[c])
    h = h + 0.3 * rng.standard_normal((n, 8))
    fold = video_folds(60, seed=0)
    assert fold.sum() == 30
    out = pair_aucs(centroid_scores(h.astype(np.float16), s, fold), s)
    assert out["action"]["mean"] > 0.99 and out["noncore"]["pairs"] == 60
    # a class whose only videos lie in one half has no centroid for that half's snippets
    only = np.flatnonzero(s.labels[:, 0])
    lone = Snippets(s.truth.copy(), s.video, s.labels, s.core)
    keep = np.isin(np.arange(60), only[fold[only]])  # class-0 videos of fold True only
    lone.truth[~keep[s.video], 0] = False
    scores = centroid_scores(h, lone, fold)
    assert np.isnan(scores[fold[s.video], 0]).all() and np.isfinite(scores[~fold[s.video], 0]).all()


def test_lbfgs_reaches_the_regularised_optimum():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 6))
    y = x @ rng.standard_normal(6) + rng.standard_normal(500) > 0
    sign, weight = np.where(y, 1.0, -1.0), np.full(500, 1 / 500)
    theta = _lbfgs(lambda t: _objective(t, x, sign, weight, 0.01), np.zeros(7), tol=1e-8)
    _f, grad = _objective(theta, x, sign, weight, 0.01)
    assert np.abs(grad).max() < 1e-6
    # the default tolerance (the probes'): the same optimum to a few digits
    loose = _lbfgs(lambda t: _objective(t, x, sign, weight, 0.01), np.zeros(7))
    assert np.abs(loose - theta).max() < 1e-3


def _probe_data(n_videos=40, length=50, signal=3.0, seed=0):
    rng = np.random.default_rng(seed)
    n = n_videos * length
    video = np.repeat(np.arange(n_videos), length)
    positive = rng.random(n) < 0.3
    x = rng.standard_normal((n, 12))
    x[:, 0] += signal * positive
    return x, positive, ~positive, video


def test_probe_separates_separable_data_and_not_noise():
    from wtalcli.evaluation.diagnostics import auc

    x, pos, neg, video = _probe_data(signal=6.0)
    fold = video_folds(40)
    scores, l2 = heldout_probe_scores(x, pos, neg, video, fold, seed=0)
    assert np.isfinite(scores).all() and len(l2) == 2
    assert auc(scores, pos) > 0.99
    scores0, _ = heldout_probe_scores(x, pos, neg, video, fold, seed=0)
    assert np.array_equal(scores, scores0)  # seeded
    x, pos, neg, video = _probe_data(signal=0.0)
    scores, _ = heldout_probe_scores(x, pos, neg, video, fold, seed=0)
    assert abs(auc(scores, pos) - 0.5) < 0.05


def test_a_probe_never_sees_the_videos_it_scores():
    x, pos, neg, video = _probe_data(signal=1.0)
    fold = video_folds(40)
    rows = np.arange(len(video))[::-1].copy()  # snippet i's features at row rows[i]
    base, _ = heldout_probe_scores(x[rows], pos, neg, video, fold, rows=rows, seed=0)
    plain, _ = heldout_probe_scores(x, pos, neg, video, fold, seed=0)
    assert np.allclose(base, plain)
    # new labels for fold True's videos: its scores come from the probe fitted (and its L2 strength
    # chosen) on fold False, so they stay exactly as they were; fold False's change
    a = fold[video]
    pos2 = pos.copy()
    pos2[a] = np.random.default_rng(5).random(a.sum()) < 0.5
    moved, _ = heldout_probe_scores(x, pos2, ~pos2, video, fold, seed=0)
    assert np.array_equal(moved[a], plain[a])
    assert not np.allclose(moved[~a], plain[~a])


def test_contrast_against_uniform():
    steps = np.arange(1, 301)
    log = pd.DataFrame(
        {
            "step": steps,
            "dcc": np.where(steps <= 50, 4.0, np.where(steps > 250, 1.0, 2.0)),
            "dcc_uniform": 4.0,
            "anchors": np.where(steps == 10, 0.0, 8.0),  # a step without anchors logs dcc 0
        }
    )
    log.loc[log["step"] == 10, "dcc"] = 0.0
    out = contrast_against_uniform(log.sample(frac=1.0, random_state=0))  # order does not matter
    # first 50 steps with anchors: 1-9, 11-51 -> 49 at 4.0 and step 51 at 2.0
    assert out["dcc_start"] == pytest.approx((49 * 4.0 + 2.0) / 50)
    assert out["dcc_end"] == 1.0 and out["dcc_end_ratio"] == 0.25
    assert out["dcc_uniform_start"] == 4.0
    # a control computes its contrast on a few diagnostic steps: the two windows do not overlap
    few = log.iloc[[0, 100, 200, 299]]
    out = contrast_against_uniform(few)
    assert out["dcc_start"] == pytest.approx(3.0) and out["dcc_end"] == pytest.approx(1.5)
    # a log from before dcc_uniform, and a baseline's
    old = contrast_against_uniform(log.drop(columns="dcc_uniform"))
    assert old["dcc_end"] == 1.0 and math.isnan(old["dcc_end_ratio"])
    assert all(
        math.isnan(v) for v in contrast_against_uniform(pd.DataFrame({"step": [1], "base": [1.0]})).values()
    )


def test_separation_columns_tolerate_old_summaries():
    flat = separation_columns(None)
    assert flat and all(math.isnan(v) for v in flat.values())
    summary = {"tcas": {"action": {"mean": 0.7, "median": 0.8, "pairs": 12}}, "probe_h": {}}
    flat = separation_columns(summary)
    assert flat["tcas_action_auc"] == 0.7 and flat["action_pairs"] == 12
    assert math.isnan(flat["tcas_noncore_auc"]) and math.isnan(flat["probe_h_action_auc"])


def test_separation_summary_on_constructed_snippets():
    s = _videos(n_videos=40)
    n, c = s.truth.shape
    rng = np.random.default_rng(3)
    cas = np.concatenate([s.truth.astype(np.float32), np.zeros((n, 1), np.float32)], axis=1)
    features = rng.standard_normal((n + 7, 10)).astype(np.float32)
    rows = np.arange(n) + 7
    features[rows, 0] += 5.0 * s.truth.any(1)  # the input carries actionness in one direction
    h = rng.standard_normal((n, 6)).astype(np.float16)  # the embedding carries nothing
    out = separation_summary(cas, h, features, rows, s, seed=0)
    json.dumps(out)  # what the manifest records
    assert out["core_known"] and out["videos"] == 40 and out["snippets"] == n
    assert out["tcas"]["noncore"]["mean"] == 1.0
    assert out["probe_input"]["noncore"]["mean"] > 0.97 and out["probe_input"]["pooled"]["core"] > 0.97
    assert abs(out["probe_h"]["pooled"]["noncore"] - 0.5) < 0.1
    assert abs(out["embedding"]["action"]["mean"] - 0.5) < 0.1


def test_hidden_core_is_the_generators_and_only_for_its_own_feature_sets(tmp_path):
    import shutil

    from wtalcli.core.store import Store
    from wtalcli.data import synthetic
    from wtalcli.data.feature_artifact import extract_synthetic
    from wtalcli.data.schema import FeatureSet
    from wtalcli.data.synthetic_truth import hidden_core
    from wtalcli.evaluation.diagnostics import snippet_truth

    art = extract_synthetic(Store(tmp_path / "wd"), "tiny", seed=3, log=lambda *a: None)
    fs = FeatureSet(art.path)
    core = hidden_core(fs.path, fs, fs.annotations)
    _cls, want = synthetic.stream(synthetic.get_preset("tiny"), 3).snippet_truth()
    assert core is not None and np.array_equal(core, want) and 0 < core.mean() < 0.3
    truth = snippet_truth(fs, fs.annotations, fs.classes).any(1)
    assert truth[core].all()  # cores lie inside the annotated instances
    # a copy without its manifest, or whose recorded seed does not reproduce its layout: unknown
    bare = tmp_path / "bare"
    shutil.copytree(art.path, bare)
    (bare / "manifest.json").unlink()
    assert hidden_core(bare, FeatureSet(bare), fs.annotations) is None
    other = tmp_path / "other"
    shutil.copytree(art.path, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["seed"] = 4
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert hidden_core(other, FeatureSet(other), fs.annotations) is None
    manifest["seed"], manifest["params"]["config"]["generator_version"] = 3, -1
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert hidden_core(other, FeatureSet(other), fs.annotations) is None
