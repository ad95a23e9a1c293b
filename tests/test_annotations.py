"""The one reader per annotation format (``wtalcli/data/annotations.py``): every rule, and the
importers and the evaluation reading the same file alike (the same instances, the same errors)."""

from __future__ import annotations

import gzip
import json
import lzma
from pathlib import Path

import numpy as np
import pytest

from wtalcli.core.errors import InputError, WtalError
from wtalcli.data import named_gt
from wtalcli.data.annotations import (
    AMBIGUOUS,
    read_anet_json,
    read_annotations,
    read_class_list,
    read_thumos_txt,
)
from wtalcli.data.importers import ImportOptions, import_folder, override_annotations
from wtalcli.data.schema import read_classes
from wtalcli.evaluation.groundtruth import load_ground_truth


def gt_doc(db: dict) -> dict:
    return {"database": db}


def entry(subset: str, *anns, **extra) -> dict:
    return {"subset": subset, "annotations": [{"label": c, "segment": [s, e]} for c, s, e in anns], **extra}


def write(path: Path, doc) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def both_refuse(path: Path, subset: str = "test") -> str:
    """The importer's reader and the evaluation's loader refuse ``path`` with the same message."""
    with pytest.raises(WtalError) as imp:
        named_gt.read(path)
    with pytest.raises(WtalError) as ev:
        load_ground_truth(path, subset)
    assert imp.value.one_line() == ev.value.one_line()
    return imp.value.one_line()


# ---------------------------------------------------------------------------------- JSON rules


def test_duplicate_keys_are_refused_everywhere(tmp_path):
    one = json.dumps(entry("test", ("Jump", 1, 2)))
    path = write(tmp_path / "gt.json", '{"database": {"v1": ' + one + ', "v1": ' + one + "}}")
    msg = both_refuse(path)
    assert "duplicate key 'v1'" in msg and str(path) in msg
    # a field given twice inside an annotation is refused too (json would keep the last one)
    path = write(tmp_path / "gt2.json", '{"database": {"v1": {"subset": "test", "annotations": '
                 '[{"label": "Jump", "segment": [1, 2], "label": "Run"}]}}}')  # fmt: skip
    assert "duplicate key 'label'" in both_refuse(path)


@pytest.mark.parametrize(
    ("bound", "says"),
    [
        ("x", "'x' is not a number"),
        (True, "True is not a number"),
        (None, "None is not a number"),
        ("nan", "'nan' is not a finite number"),
        ("1e999", "'1e999' is not a finite number"),
        (10**400, "<integer of 401 digits> is not a number"),
        ([1], "[1] is not a number"),
    ],
)
def test_a_bad_number_is_an_error_naming_the_file_and_the_entry(tmp_path, bound, says):
    path = write(tmp_path / "gt.json", gt_doc({"v1": entry("test", ("Jump", 0, 1), ("Jump", bound, 3))}))
    msg = both_refuse(path)
    assert f"video 'v1' annotation 1: segment start {says}" in msg and str(path) in msg


def test_durations_and_fps_must_be_positive_numbers(tmp_path):
    ok = write(tmp_path / "ok.json", gt_doc({"v1": entry("test", ("Jump", 0, 1), duration=None, fps="25")}))
    assert read_anet_json(ok).videos["v1"].duration is None and read_anet_json(ok).videos["v1"].fps == 25.0
    for key, value, says in (("duration", "long", "is not a number"), ("fps", 0, "is not positive")):
        path = write(tmp_path / f"{key}.json", gt_doc({"v1": entry("test", ("Jump", 0, 1), **{key: value})}))
        assert f"video 'v1': {key} {value!r} {says}" in both_refuse(path)


def test_segments_need_zero_le_start_le_end(tmp_path):
    for seg in ([3, 1], [-1, 2]):
        path = write(tmp_path / "gt.json", gt_doc({"v1": entry("test", ("Jump", *seg))}))
        assert "negative, reversed" in both_refuse(path)
    path = write(tmp_path / "gt.json", gt_doc({"v1": entry("test", ("Jump", 2, 2), ("Jump", 2, 2))}))
    gt = load_ground_truth(path, "test")  # zero-length and repeated instances are kept
    assert len(gt) == 2 and gt.t_start.tolist() == gt.t_end.tolist() == [2.0, 2.0]


def test_string_segments_as_basnet_writes_them(tmp_path):
    path = write(
        tmp_path / "gt.json", gt_doc({"v1": entry("test", ("Jump", "18.6", "24.8"), ("Run", 1, "2"))})
    )
    gt = load_ground_truth(path, "test")
    assert gt.t_start.tolist() == [18.6, 1.0] and gt.t_end.tolist() == [24.8, 2.0]
    assert read_anet_json(path).rows[["start_s", "end_s"]].to_numpy().tolist() == [[18.6, 24.8], [1.0, 2.0]]


@pytest.mark.parametrize(
    ("ann", "says"),
    [
        ({"segment": [0, 1]}, "annotation 0 lacks a label"),
        ({"segment": [0, 1], "label": ""}, "annotation 0 lacks a label"),
        ({"label": "Jump"}, "annotation 0 lacks a [start, end] segment"),
        ({"label": "Jump", "segment": [0, 1, 2]}, "segment [0, 1, 2] is not [start, end]"),
        ("Jump", "annotation 0 lacks a label"),
    ],
)
def test_malformed_annotations(tmp_path, ann, says):
    path = write(tmp_path / "gt.json", gt_doc({"v1": {"subset": "test", "annotations": [ann]}}))
    assert says in both_refuse(path)


def test_structure_errors(tmp_path):
    assert "no 'database' object" in both_refuse(write(tmp_path / "a.json", "[1, 2]"))
    assert "has no 'subset' string" in both_refuse(
        write(tmp_path / "b.json", gt_doc({"v1": {"annotations": []}}))
    )
    assert "is not valid JSON" in both_refuse(write(tmp_path / "c.json", '{"database": {'))
    (tmp_path / "d.json").write_bytes(b'{"database": {"\xff": 1}}')
    assert "not UTF-8" in both_refuse(tmp_path / "d.json")
    assert "not found" in both_refuse(tmp_path / "missing.json")
    assert "unrecognised ground-truth format" in both_refuse(write(tmp_path / "gt.csv", "a,b"))


def test_compressed_json(tmp_path):
    doc = json.dumps(gt_doc({"v1": entry("test", ("Jump", 1, 2))})).encode()
    (tmp_path / "gt.json.gz").write_bytes(gzip.compress(doc))
    (tmp_path / "gt.json.xz").write_bytes(lzma.compress(doc))
    for name in ("gt.json.gz", "gt.json.xz"):
        gt = load_ground_truth(tmp_path / name, "test")
        assert gt.labels.tolist() == ["Jump"] and gt.source == name
    (tmp_path / "bad.json.xz").write_bytes(b"not xz")
    assert "unreadable compressed ground-truth file" in both_refuse(tmp_path / "bad.json.xz")


def test_ambiguous_label_in_json_is_no_class(tmp_path):
    path = write(tmp_path / "gt.json", gt_doc({"v1": entry("test", ("Jump", 1, 2), (AMBIGUOUS, 5, 6))}))
    gt = load_ground_truth(path, "test")
    assert gt.classes == ["Jump"] and len(gt.ambiguous) == 1 and gt.ambiguous.t_start.tolist() == [5.0]
    aset = read_anet_json(path)
    assert aset.instances()["label"].tolist() == ["Jump"] and aset.ambiguous()["label"].tolist() == [
        AMBIGUOUS
    ]


# ---------------------------------------------------------------------------------- THUMOS14 txt rules


def thumos_tree(root: Path) -> Path:
    """``root/ann/{annotations_val,annotations_test}/`` plus files the search must ignore."""
    (root / "ann" / "annotations_val").mkdir(parents=True)
    (root / "ann" / "annotations_test" / "deeper").mkdir(parents=True)
    (root / "ann" / "annotations_val" / "Jump_val.txt").write_text("video_validation_1 1.0 2.0\n\n")
    (root / "ann" / "annotations_val" / "Ambiguous_val.txt").write_text("video_validation_1 3.0 4.0\n")
    (root / "ann" / "annotations_test" / "Jump_test.txt").write_text(
        "video_test_1 1.5 2.5\nvideo_test_2 0 1\n"
    )
    (root / "ann" / "annotations_test" / "deeper" / "Run_test.txt").write_text("video_test_1  5.0 6.0\n")
    (root / "ann" / "annotations_test" / "Ambiguous_test.txt").write_text("video_test_3 7 8\n")
    (root / "ann" / "annotations_test" / "readme.txt").write_text("THUMOS readme\n")
    (root / "ann" / ".hidden").mkdir()
    (root / "ann" / ".hidden" / "Jump_test.txt").write_text("not read at all\n")
    (root / "ann" / "._Run_test.txt").write_bytes(b"\x00\x05\x16\x07 resource fork")
    return root / "ann"


def test_txt_folder_search_rule_recursive_hidden_skipped(tmp_path):
    ann = thumos_tree(tmp_path)
    aset = read_thumos_txt(ann)
    assert sorted(p.name for p in aset.files) == [
        "Ambiguous_test.txt", "Ambiguous_val.txt", "Jump_test.txt", "Jump_val.txt", "Run_test.txt",
    ]  # fmt: skip
    assert aset.subsets() == {"test": 2, "validation": 1}  # video_test_3: only Ambiguous, no video
    test = load_ground_truth(ann, "test")
    assert test.classes == ["Jump", "Run"] and test.videos == ("video_test_1", "video_test_2")
    assert test.ambiguous.video_ids.tolist() == ["video_test_3"]
    assert load_ground_truth(ann / "annotations_test", "test").video_ids.tolist() == test.video_ids.tolist()
    val = load_ground_truth(ann, "val")
    assert val.subset == "validation" and len(val) == 1 and len(val.ambiguous) == 1


def test_txt_duplicate_files_and_mixed_subsets_are_errors(tmp_path):
    ann = thumos_tree(tmp_path)
    (ann / "copy").mkdir()
    (ann / "copy" / "Jump_test.txt").write_text("video_test_1 1.5 2.5\n")
    msg = both_refuse(ann)
    assert "Jump_test.txt is found twice" in msg
    (ann / "copy" / "Jump_test.txt").unlink()
    (ann / "copy" / "Swim_val.txt").write_text("video_test_2 0 1\n")
    assert "video 'video_test_2' is in Jump_test.txt (test) and in Swim_val.txt (validation)" in both_refuse(
        ann
    )


def test_txt_bad_lines_name_the_file_and_line(tmp_path):
    (tmp_path / "Jump_test.txt").write_text("v1 1.0 2.0\nv2 abc 3.0\n")
    msg = both_refuse(tmp_path)
    assert "line 2: start 'abc' is not a number" in msg and "Jump_test.txt" in msg
    (tmp_path / "Jump_test.txt").write_text("v1 1.0 2.0 extra\n")
    assert "line 1 has 4 fields, expected 'video start end'" in both_refuse(tmp_path)
    (tmp_path / "Jump_test.txt").write_text("v1 4.0 2.0\n")
    assert "line 1: segment [4.0, 2.0] is negative, reversed" in both_refuse(tmp_path)
    (tmp_path / "Jump_test.txt").write_bytes(b"v1 1.0 2.0\n\xff\n")
    assert "not a UTF-8 text file" in both_refuse(tmp_path)


# ---------------------------------------------------------------------------------- class lists


def test_class_lists(tmp_path):
    assert read_class_list(write(tmp_path / "c.json", ["b", "a"])) == ["b", "a"]
    assert read_class_list(write(tmp_path / "c.txt", "# ids\n1 b\n\n2 a\n")) == ["b", "a"]
    with pytest.raises(InputError, match="class 'a' is listed twice"):
        read_class_list(write(tmp_path / "d.txt", "a\na\n"))
    with pytest.raises(InputError, match="empty class list"):
        read_class_list(write(tmp_path / "e.txt", "# nothing\n"))
    with pytest.raises(InputError, match="malformed class list"):
        read_class_list(write(tmp_path / "f.json", {"a": 1}))
    with pytest.raises(InputError, match="class list not found"):
        read_class_list(tmp_path / "none.txt")
    # an artifact's classes.json goes through the same reader, with the artifact's fix
    with pytest.raises(InputError, match=r"malformed class list.*rebuild the artifact"):
        read_classes(write(tmp_path / "classes.json", '["a", 3]'))


# ---------------------------------------------------------------------------------- import = evaluate


def folder_with_features(root: Path, videos: dict[str, str]) -> Path:
    for vid, subset in videos.items():
        (root / subset).mkdir(parents=True, exist_ok=True)
        np.save(root / subset / f"{vid}.npy", np.ones((4, 3), np.float32))
    return root


@pytest.mark.parametrize("form", ["json", "txt"])
def test_import_and_evaluate_agree_on_the_same_file(tmp_path, form):
    if form == "json":
        gt_path = write(
            tmp_path / "gt.json",
            gt_doc(
                {
                    "t1": entry("test", ("Run", "3.5", 4), ("Jump", 0, 1), (AMBIGUOUS, 6, 7)),
                    "t2": entry("test", ("Jump", 2, 2)),
                    "a1": entry("validation", ("Jump", 1, 2)),
                }
            ),
        )
        feats = folder_with_features(tmp_path / "f", {"t1": "test", "t2": "test", "a1": "train"})
    else:
        gt_path = thumos_tree(tmp_path)
        feats = folder_with_features(
            tmp_path / "f", {"video_test_1": "test", "video_test_2": "test", "video_validation_1": "train"}
        )
    plan = import_folder(ImportOptions(feats, gt=gt_path))
    gt = load_ground_truth(gt_path, "test")
    imported = plan.annotations.merge(plan.videos[["video_id", "subset"]])
    imported = imported[imported["subset"] == "test"]
    key = ["video_id", "label", "start_s", "end_s"]
    assert sorted(imported[key].itertuples(index=False, name=None)) == sorted(
        zip(gt.video_ids, gt.labels, gt.t_start, gt.t_end, strict=True)
    )
    assert sorted(plan.videos.loc[plan.videos["subset"] == "test", "video_id"]) == sorted(gt.videos)
    amb = plan.ambiguous[plan.ambiguous["video_id"].isin(gt.videos)]
    assert sorted(amb["start_s"]) == sorted(gt.ambiguous.t_start[np.isin(gt.ambiguous.video_ids, gt.videos)])
    assert AMBIGUOUS not in plan.classes and AMBIGUOUS not in gt.classes
    # the same file as --annotations of the import gives the same instances again
    again = override_annotations(plan, read_annotations(gt_path))
    assert sorted(again.annotations[key].itertuples(index=False, name=None)) == sorted(
        plan.annotations[key].itertuples(index=False, name=None)
    )


def test_a_file_refused_by_one_is_refused_by_the_other(tmp_path):
    """Both readers used to differ here: the evaluation kept the last of two equal keys, a bad
    number was NaN in one and an error in the other, and txt files in sub-folders were found by
    the importer only."""
    feats = folder_with_features(tmp_path / "f", {"v1": "test"})
    one = json.dumps(entry("test", ("Jump", 1, 2)))
    cases = {
        "dup.json": '{"database": {"v1": ' + one + ', "v1": ' + one + "}}",
        "nan.json": json.dumps(gt_doc({"v1": entry("test", ("Jump", "n/a", 2))})),
        "neg_dur.json": json.dumps(gt_doc({"v1": entry("test", ("Jump", 1, 2), duration=-5)})),
    }
    for name, text in cases.items():
        path = write(tmp_path / name, text)
        with pytest.raises(WtalError) as imp:
            import_folder(ImportOptions(feats, gt=path))
        with pytest.raises(WtalError) as ev:
            load_ground_truth(path, "test")
        assert imp.value.one_line() == ev.value.one_line(), name


def test_actionformer_style_json_capitalised_subsets_and_extra_keys(tmp_path):
    ann = {"label": "Jump", "segment": [0.2, 1.1], "segment(frames)": [6.0, 33.0], "label_id": 5}
    doc = gt_doc(
        {
            "video_test_1": {"subset": "Test", "duration": 33.83, "fps": 30.0, "annotations": [ann]},
            "video_validation_1": {
                "subset": "Validation",
                "duration": 9.5,
                "fps": 25.0,
                "annotations": [ann],
            },
        }
    )
    path = write(tmp_path / "thumos14.json", doc)
    gt = load_ground_truth(path, "test")
    assert gt.subset == "Test" and gt.videos == ("video_test_1",) and gt.durations == {"video_test_1": 33.83}
    feats = folder_with_features(tmp_path / "f", {"video_test_1": "test", "video_validation_1": "train"})
    plan = import_folder(ImportOptions(feats, gt=path))
    v = plan.videos.set_index("video_id")
    assert v.loc["video_validation_1", "subset"] == "train" and v.loc["video_test_1", "subset"] == "test"
    assert v.loc["video_test_1", "source_fps"] == 30.0 and v.loc["video_test_1", "duration_s"] == 33.83


def test_an_artifact_may_list_no_class(tmp_path):
    assert read_classes(write(tmp_path / "classes.json", "[]")) == []  # videos without labels
    with pytest.raises(InputError, match="empty class list"):
        read_class_list(tmp_path / "classes.json")  # but --classes must name some
