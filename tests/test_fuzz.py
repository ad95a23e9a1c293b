"""Fuzzing the readers of user-written text: ground-truth JSON (importer and evaluator), results
JSON (``evaluate``) and threshold specs (``localize --threshold``, ``evaluate --tiou``).

The importers and the evaluation read ground truth through one reader
(:mod:`wtalcli.data.annotations`): on every damaged document they accept the same files, keep
the same instances, and refuse the same files with the same message.

Property: a reader returns a well-formed value or raises a :class:`WtalError` (a one-line error
with a fix); never another exception.  Inputs are nearly valid documents with one part replaced
by junk (wrong types, huge or non-finite numbers, reversed segments, deep nesting, cut text,
bytes that are not UTF-8), so that the fuzzing reaches past the first check.  The search is
derandomised (the same examples every run) and bounded (200 examples a property).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wtalcli.core.errors import WtalError
from wtalcli.data.named_gt import read as read_annotations
from wtalcli.evaluation.detection import load_predictions, parse_tiou_thresholds
from wtalcli.evaluation.groundtruth import load_ground_truth
from wtalcli.evaluation.localization import parse_act_thresholds

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# ---------------------------------------------------------------------------------- strategies

HUGE = 10**400  # beyond the float range: float() raises OverflowError
numbers = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([HUGE, -HUGE, 0, -0.0, 1e308, 5e-324]),
)
junk = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    st.text(max_size=8),
    st.sampled_from(["1.5", "nan", "inf", "-3", "", "1e999"]),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
maybe_number = st.one_of(numbers, numbers, junk)
segment = st.one_of(st.lists(maybe_number, min_size=2, max_size=2), junk)
label = st.one_of(st.sampled_from(["Jump", "Run", "Swim"]), junk)
annotation = st.one_of(
    st.fixed_dictionaries({"segment": segment, "label": label}),
    st.fixed_dictionaries({"segment": segment}),
    junk,
)
entry = st.one_of(
    st.fixed_dictionaries(
        {"subset": st.sampled_from(["training", "validation"])},
        optional={"annotations": st.one_of(st.lists(annotation, max_size=4), junk), "duration": maybe_number},
    ),
    junk,
)
video_id = st.one_of(st.sampled_from(["v1", "v2", "v3", "../x", "a/b"]), st.text(max_size=6))
gt_document = st.one_of(
    st.fixed_dictionaries({"database": st.dictionaries(video_id, entry, max_size=4)}),
    st.fixed_dictionaries({"database": junk}),
    junk,
)

prediction = st.one_of(
    st.fixed_dictionaries({"label": label, "score": maybe_number, "segment": segment}),
    st.fixed_dictionaries({"label": label, "score": maybe_number}),
    junk,
)
results_document = st.one_of(
    st.fixed_dictionaries(
        {"results": st.dictionaries(video_id, st.one_of(st.lists(prediction, max_size=4), junk), max_size=4)},
        optional={"version": junk, "external_data": junk},
    ),
    st.fixed_dictionaries({"results": junk}),
    junk,
)


def _dumps(doc) -> str:
    return json.dumps(doc, allow_nan=True)  # NaN/Infinity tokens: Python's json reads them back


@st.composite
def damaged(draw, documents) -> bytes:
    """A document's JSON text, maybe cut, spliced with junk, deeply nested or not UTF-8."""
    text = _dumps(draw(documents))
    how = draw(st.sampled_from(["as is", "as is", "cut", "splice", "nest", "digits", "bytes"]))
    if how == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif how == "splice":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(max_size=6)) + text[at:]
    elif how == "nest":
        depth = draw(st.sampled_from([10, 1000, 100_000]))
        text = text.replace("[", "[" * depth, 1).replace("]", "]" * depth, 1) if "[" in text else "[" * depth
    elif how == "digits":
        text = text.replace("1", "1" * 5000, 1) if "1" in text else "1" * 5000  # > 4300 digits
    elif how == "bytes":
        return text.encode() + draw(st.binary(min_size=1, max_size=4)) + b"\xff\xfe"
    return text.encode()


# ---------------------------------------------------------------------------------- ground truth


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(data=damaged(gt_document))
def test_import_and_evaluate_agree_on_every_file(data, scratch):
    path = scratch / "gt_both.json"
    path.write_bytes(data)
    try:
        aset, refused = read_annotations(path), None  # what the importers call
    except WtalError as exc:
        aset, refused = None, exc.one_line()
    if aset is not None:
        df = aset.rows
        assert list(df.columns) == ["video_id", "label", "start_s", "end_s", "source_subset", "ambiguous"]
        assert np.isfinite(df[["start_s", "end_s"]].to_numpy(float)).all()
        assert (df["start_s"] >= 0).all() and (df["start_s"] <= df["end_s"]).all()
        assert set(df["video_id"]) <= set(aset.videos)
    for subset in ("training", "validation"):
        try:
            gt, error = load_ground_truth(path, subset), None
        except WtalError as exc:
            gt, error = None, exc.one_line()
        if refused is not None:
            assert error == refused  # the same file refused with the same message
        elif subset not in aset.subsets():
            assert error is not None and f"no video of subset {subset!r}" in error
        else:
            assert error is None
            mine = aset.rows[(aset.rows["source_subset"] == subset) & ~aset.rows["ambiguous"]]
            assert gt.video_ids.tolist() == mine["video_id"].tolist()
            assert (
                gt.t_start.tolist() == mine["start_s"].tolist()
                and gt.t_end.tolist() == mine["end_s"].tolist()
            )
            assert list(gt.videos) == [v for v, i in aset.videos.items() if i.subset == subset]


@FUZZ
@given(data=damaged(gt_document), subset=st.sampled_from(["training", "validation", "testing"]))
def test_gt_json_for_evaluation(data, subset, scratch):
    path = scratch / "gt_eval.json"
    path.write_bytes(data)
    try:
        gt = load_ground_truth(path, subset)
    except WtalError:
        return
    assert len(gt.videos) > 0
    assert np.isfinite(gt.t_start).all() and np.isfinite(gt.t_end).all()
    assert (gt.t_start >= 0).all() and (gt.t_start <= gt.t_end).all()


# ---------------------------------------------------------------------------------- predictions


@FUZZ
@given(data=damaged(results_document))
def test_results_json_for_evaluate(data):
    try:
        preds = load_predictions(data)
    except WtalError:
        return
    n = len(preds)
    assert len(preds.video_index) == len(preds.label_index) == len(preds.t_start) == len(preds.t_end) == n
    assert (
        np.isfinite(preds.scores).all()
        and np.isfinite(preds.t_start).all()
        and np.isfinite(preds.t_end).all()
    )
    assert all(isinstance(x, str) and x for x in preds.label_names)


# ---------------------------------------------------------------------------------- thresholds

spec_number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["0", "0.1", "1", "1e-13", "5e-324", "-0.1", "1e999", "nan", "", " ", "x", "0x1p-3"]),
)
range_spec = st.builds(  # mostly plausible parts, so that the range arithmetic is reached
    lambda a, b, c: f"{a}:{b}:{c}",
    st.one_of(st.sampled_from(["0", "0.1", "-0.1", "nan"]), spec_number),
    st.one_of(st.sampled_from(["0.25", "1", "inf", "1e999"]), spec_number),
    st.one_of(st.sampled_from(["0.025", "0.1", "1e-13", "5e-324", "0", "-0.1", "nan"]), spec_number),
)
list_spec = st.lists(spec_number, max_size=5).map(",".join)
spec = st.one_of(
    range_spec, list_spec, st.text(max_size=12), st.sampled_from(["thumos14", "anet", "0:0.25:0.025"])
)


@FUZZ
@given(text=spec)
def test_localize_threshold_specs(text):
    try:
        values = parse_act_thresholds(text)
    except WtalError:
        return
    assert 0 < len(values) <= 10_000
    assert list(values) == sorted(set(values)) and all(0 <= v <= 1 for v in values)


@FUZZ
@given(text=spec)
def test_evaluate_tiou_specs(text):
    try:
        values = parse_tiou_thresholds(text)
    except WtalError:
        return
    assert 0 < len(values) <= 10_001
    assert all(0 < v <= 1 and math.isfinite(v) for v in values)


@FUZZ
@given(
    values=st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)), max_size=5)
)
def test_threshold_sequences(values):
    """Thresholds given as numbers (the library API) follow the same rules."""
    for parse in (parse_act_thresholds, parse_tiou_thresholds):
        try:
            parse(values)
        except WtalError:
            pass


def test_known_nasty_inputs_are_clean_errors(scratch):
    """The cases that once escaped as ValueError, RecursionError or OverflowError."""
    bad_json = [
        b'{"database": {"v": {"subset": "training", "annotations": [{"segment": [0, '
        + b"9" * 5000
        + b'], "label": "A"}]}}}',
        b'{"database": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"database": {"v": {"subset": "training", "duration": '
        + str(HUGE).encode()
        + b', "annotations": []}}}',
        b'{"database": {"v": {"subset": "training", "annotations": [{"segment": [0, '
        + str(HUGE).encode()
        + b'], "label": "A"}]}}}',
        b'{"database": {"v": {"subset": "training", "annotations": [{"segment": [5, 1], "label": "A"}]}}}',
    ]
    path = scratch / "nasty.json"
    for data in bad_json:
        path.write_bytes(data)
        with pytest.raises(WtalError) as ev:
            load_ground_truth(path, "training")
        with pytest.raises(WtalError) as imp:  # the importers refuse every one too, alike
            read_annotations(path)
        assert imp.value.one_line() == ev.value.one_line()
    for data in (
        b'{"results": {"v": [{"label": "A", "score": ' + b"7" * 5000 + b', "segment": [1, 2]}]}}',
        b'{"results": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"results": {"v": [{"label": "A", "score": ' + str(HUGE).encode() + b', "segment": [1, 2]}]}}',
        b'{"results": {"v": [{"label": "A", "score": 1, "segment": [1, ' + str(HUGE).encode() + b"]}]}}",
    ):
        with pytest.raises(WtalError):
            load_predictions(data)
    for text in ("0:1:1e-13", "0:inf:0.1", "0:1:5e-324"):
        with pytest.raises(WtalError):
            parse_act_thresholds(text)
        with pytest.raises(WtalError):
            parse_tiou_thresholds(text)
