import numpy as np
import pandas as pd
import pytest

from wtalcli.core.errors import InputError
from wtalcli.data.schema import FeatureSet, load_npy, write_feature_set


def videos(n=(3, 5), subsets=("train", "test"), labels=(["a"], ["b"]), ids=("v1", "v2")):
    return pd.DataFrame(
        {
            "video_id": list(ids),
            "subset": list(subsets),
            "n_snippets": list(n),
            "duration_s": [x * 0.64 for x in n],
            "fps": 25.0,
            "stride": 16,
            "clip_len": 16,
            "labels": [list(x) for x in labels],
        }
    )


def feats(n=(3, 5), d=4, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(k, d)).astype(np.float32) for k in n]


def test_round_trip(tmp_path):
    ann = pd.DataFrame({"video_id": ["v1"], "label": ["a"], "start_s": [0.1], "end_s": [1.0]})
    xs = feats()
    write_feature_set(tmp_path, videos(), iter(xs), ["a", "b"], ann)
    fs = FeatureSet(tmp_path)
    assert fs.videos["offset"].tolist() == [0, 3]
    assert isinstance(fs.features, np.memmap)
    np.testing.assert_array_equal(fs.features_of("v2"), xs[1])
    assert fs.label_matrix().tolist() == [[1, 0], [0, 1]]
    assert fs.rows_of("test").tolist() == [1]
    assert fs.snippet_rows(np.array([1, 0])).tolist() == [3, 4, 5, 6, 7, 0, 1, 2]
    assert fs.grid("v1").seconds_per_snippet == pytest.approx(0.64)
    assert fs.annotations["label"].tolist() == ["a"]


def test_float16(tmp_path):
    write_feature_set(tmp_path, videos(), iter(feats()), ["a", "b"], dtype="float16")
    assert FeatureSet(tmp_path).features.dtype == np.float16


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda v, x: (v.assign(video_id=["v1", "v1"]), x), "duplicate video id"),
        (lambda v, x: (v.assign(video_id=["../up", "v2"]), x), "unsafe video id"),
        (lambda v, x: (v.assign(video_id=["a/b", "v2"]), x), "unsafe video id"),
        (lambda v, x: (v.assign(labels=[["zzz"], ["b"]]), x), "unknown class 'zzz'"),
        (lambda v, x: (v.assign(subset=["train", "dev"]), x), "unknown subset"),
        (lambda v, x: (v.assign(n_snippets=[0, 5]), [x[0][:0], x[1]]), "has no snippets"),
        (lambda v, x: (v, [x[0], np.full((5, 4), np.nan, np.float32)]), "NaN or Inf"),
        (lambda v, x: (v, [x[0], x[1][:, :3]]), "dim 3"),
        (lambda v, x: (v, [x[0], x[1][:4]]), "expected \\(5, D\\)"),
    ],
)
def test_bad_inputs_are_refused(tmp_path, mutate, match):
    v, x = mutate(videos(), feats())
    with pytest.raises(InputError, match=match):
        write_feature_set(tmp_path / "out", v, iter(x), ["a", "b"])


def test_bad_annotations(tmp_path):
    ann = pd.DataFrame({"video_id": ["v1"], "label": ["a"], "start_s": [2.0], "end_s": [1.0]})
    with pytest.raises(InputError, match="reversed"):
        write_feature_set(tmp_path, videos(), iter(feats()), ["a", "b"], ann)
    ann = pd.DataFrame({"video_id": ["v1"], "label": ["q"], "start_s": [0.0], "end_s": [1.0]})
    with pytest.raises(InputError, match="unknown class"):
        write_feature_set(tmp_path, videos(), iter(feats()), ["a", "b"], ann)


def test_pickled_and_truncated_npy_refused(tmp_path):
    p = tmp_path / "obj.npy"
    np.save(p, np.array([np.zeros(3), np.zeros(2)], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="pickled"):
        load_npy(p, "features", mmap=False)
    q = tmp_path / "trunc.npy"
    np.save(q, np.zeros((100, 8), np.float32))
    q.write_bytes(q.read_bytes()[:300])
    with pytest.raises(InputError, match="trunc|corrupt|cannot read"):
        load_npy(q, "features")


def test_damaged_feature_set(tmp_path):
    write_feature_set(tmp_path, videos(), iter(feats()), ["a", "b"])
    np.save(tmp_path / "features.npy", np.zeros((7, 4), np.float32))
    with pytest.raises(InputError, match="7 rows"):
        FeatureSet(tmp_path)


def _table(videos: list[tuple[str, int, float, int, int]]):
    from wtalcli.data.schema import SnippetTable

    rows, offset = [], 0
    for vid, n, fps, stride, clip in videos:
        rows.append(
            {
                "video_id": vid,
                "n_snippets": n,
                "offset": offset,
                "fps": fps,
                "stride": stride,
                "clip_len": clip,
            }
        )
        offset += n
    return SnippetTable(pd.DataFrame(rows))


def test_snippet_table_lookups():
    t = _table([("a", 4, 25.0, 16, 16), ("b", 3, 30.0, 8, 16)])
    assert t.span("b") == slice(4, 7) and t.span(0) == slice(0, 4)
    assert t.find("b") == 1 and t.find("zz") is None
    g = t.grid("b")
    assert (g.fps, g.stride, g.clip_len) == (30.0, 8, 16)
    with pytest.raises(InputError, match="unknown video"):
        t.span("zz")


def test_snippet_truth_by_hand():
    from wtalcli.evaluation.diagnostics import snippet_truth, truth_with_background

    # video a: centres (16 t + 8) / 25 = 0.32, 0.96, 1.60, 2.24 s; b: (8 t + 8) / 30 = 0.267, 0.533, 0.8 s
    t = _table([("a", 4, 25.0, 16, 16), ("b", 3, 30.0, 8, 16)])
    ann = pd.DataFrame(
        {
            "video_id": ["a", "a", "b", "b", "gone"],
            "label": ["x", "y", "y", "unknown", "x"],
            "start_s": [0.96, 0.0, 0.5, 0.0, 0.0],  # "a"/"x" starts exactly on a centre: inside
            "end_s": [1.6, 0.5, 0.9, 9.0, 9.0],
        }
    )
    truth = snippet_truth(t, ann, ["x", "y"])
    expected = np.zeros((7, 2), bool)
    expected[[1, 2], 0] = True  # a: 0.96 and 1.60 lie in [0.96, 1.6]
    expected[0, 1] = True  # a: 0.32 in [0, 0.5]
    expected[[5, 6], 1] = True  # b: 0.533 and 0.8 in [0.5, 0.9]; unknown label and video ignored
    np.testing.assert_array_equal(truth, expected)
    with_bg = truth_with_background(t, ann, ["x", "y"])
    np.testing.assert_array_equal(with_bg[:, 2], [0, 0, 0, 1, 1, 0, 0])
