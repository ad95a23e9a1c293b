"""Pseudo-label recall split on the instances' cores and non-core snippets
(wtalcli/evaluation/core_split.py), on constructed labels with known answers; the split of real
runs is checked in tests/test_ablate.py and tests/test_report.py."""

from __future__ import annotations

import math

import numpy as np

from wtalcli.evaluation.core_split import split_counts


def test_split_counts_each_group_on_the_labelled_classes_only():
    # one video carrying class 0 of two; snippets 0-3 background, 4-5 core, 6-9 non-core of class 0
    truth = np.zeros((10, 2), bool)
    truth[4:10, 0] = True
    core = np.zeros(10, bool)
    core[4:6] = True
    carries = np.zeros((10, 2), bool)
    carries[:, 0] = True
    labels = np.zeros((10, 3), np.uint8)
    labels[[1, 4, 5, 6], 0] = 1  # one background snippet, both cores, one non-core snippet
    labels[:, 1] = 1  # class 1 is not carried by the video: never read
    labels[:, 2] = 1 - labels[:, 0]
    out = split_counts(labels, truth, carries, core)
    assert out == {"recall_core": 1.0, "recall_noncore": 0.25, "background_labelled": 0.25}


def test_split_counts_is_nan_for_an_empty_group():
    truth = np.zeros((4, 1), bool)
    truth[1:3, 0] = True
    carries = np.ones((4, 1), bool)
    labels = np.array([[0, 1], [1, 0], [0, 1], [0, 1]], np.uint8)
    out = split_counts(labels, truth, carries, np.zeros(4, bool))  # no core known to lie here
    assert math.isnan(out["recall_core"]) and out["recall_noncore"] == 0.5
    assert out["background_labelled"] == 0.0
