"""Importers: the packaged real annotation files (and W-TALC's arrays under tests/data) with small
generated feature files."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wtalcli.core.errors import InputError
from wtalcli.data import named_gt
from wtalcli.data.annotations import read_bytes, read_thumos_txt
from wtalcli.data.importers import (
    ImportOptions,
    import_basnet,
    import_folder,
    import_wtalc,
    override_annotations,
    read_class_list,
    subset_map_for,
)
from wtalcli.data.named_gt import BASNET_THUMOS14, NAMES, PACKAGE_DIR
from wtalcli.data.schema import FeatureSet
from wtalcli.data.timegrid import TimeGrid
from wtalcli.data.unpickle import safe_load_object_npy

THUMOS_CLASSES = [
    "BaseballPitch", "BasketballDunk", "Billiards", "CleanAndJerk", "CliffDiving", "CricketBowling",
    "CricketShot", "Diving", "FrisbeeCatch", "GolfSwing", "HammerThrow", "HighJump", "JavelinThrow",
    "LongJump", "PoleVault", "Shotput", "SoccerPenalty", "TennisSwing", "ThrowDiscus", "VolleyballSpiking",
]  # fmt: skip


THUMOS14 = PACKAGE_DIR / "thumos14"  # annotations_val/, annotations_test/
TEST_DATA = Path(__file__).resolve().parent / "data"  # W-TALC's arrays, class lists (README.md there)


def n_snippets(vid: str) -> int:
    """A deterministic short length per video (2..5 snippets)."""
    return 2 + int(hashlib.sha256(vid.encode()).hexdigest(), 16) % 4


def feats(vid: str, d: int, salt: int = 0) -> np.ndarray:
    seed = int(hashlib.sha256(f"{vid}/{salt}".encode()).hexdigest()[:8], 16)
    return np.random.default_rng(seed).standard_normal((n_snippets(vid), d), dtype=np.float32)


def write_gt(path: Path, db: dict) -> Path:
    path.write_text(json.dumps({"database": db}))
    return path


def entry(subset: str, *anns: tuple[str, float, float], **extra) -> dict:
    return {"subset": subset, "annotations": [{"label": c, "segment": [s, e]} for c, s, e in anns], **extra}


class Evil:
    """Pickles to a call of os.system that would create ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---------------------------------------------------------------------------------- BaS-Net, real gt.json


@pytest.fixture(scope="module")
def basnet_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("basnet")
    (root / "gt.json").write_bytes(read_bytes(BASNET_THUMOS14 / "gt.json.xz", "gt"))
    for s in ("train", "test"):
        shutil.copy(BASNET_THUMOS14 / f"split_{s}.txt", root / f"split_{s}.txt")
    db = json.loads((root / "gt.json").read_text())["database"]
    # BaS-Net's download also holds video_test_0000270, which its split leaves out
    items = [*((v, e["subset"]) for v, e in db.items()), ("video_test_0000270", "test")]
    for vid, subset in items:
        for k, stream in enumerate(("rgb", "flow")):
            folder = root / "features" / subset / stream
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"{vid}.npy", feats(vid, 1024, k))
    return root


def test_basnet_real_gt_counts(basnet_root):
    plan = import_basnet(ImportOptions(basnet_root))
    v = plan.videos
    assert len(v) == 410
    assert v["subset"].value_counts().to_dict() == {"train": 200, "test": 210}
    assert set(v.loc[v.subset == "train", "source_subset"]) == {"train"}  # BaS-Net's name for THUMOS val
    assert v["video_id"].iloc[0].startswith("video_validation_") and v["video_id"].iloc[-1].startswith(
        "video_test_"
    )
    per_subset = plan.annotations.merge(v[["video_id", "subset"]]).groupby("subset").size().to_dict()
    assert per_subset == {"train": 3007, "test": 3311}  # wtalcli/data/datasets/PROVENANCE.md
    assert plan.classes == THUMOS_CLASSES
    assert plan.dim == 2048
    # 27 validation videos carry more than one class (THUMOS14 validation)
    assert int((v.loc[v.subset == "train", "labels"].map(len) > 1).sum()) == 27
    counts = plan.annotations[plan.annotations.video_id.str.contains("validation")].label.value_counts()
    assert counts["BasketballDunk"] == 303 and counts["Diving"] == 499 and counts["BaseballPitch"] == 30
    db = json.loads((basnet_root / "gt.json").read_text())["database"]
    row = v.set_index("video_id").loc["video_test_0000004"]
    assert row["labels"] == sorted({a["label"] for a in db["video_test_0000004"]["annotations"]})
    assert row["n_snippets"] == n_snippets("video_test_0000004")
    assert row["fps"] == 25.0 and row["stride"] == 16 and row["clip_len"] == 16
    assert row["duration_s"] == pytest.approx(TimeGrid().duration_of(row["n_snippets"]))
    assert plan.unmatched == {"features_not_in_split": ["video_test_0000270"]}
    assert any("video_test_0000270" in w for w in plan.warnings)
    gt_sha = hashlib.sha256((basnet_root / "gt.json").read_bytes()).hexdigest()
    assert plan.source_info["files"]["gt"]["sha256"] == gt_sha
    # features stream in row order: rgb ++ flow
    first = next(plan.iter_features())
    vid0 = v["video_id"].iloc[0]
    np.testing.assert_array_equal(first, np.concatenate([feats(vid0, 1024, 0), feats(vid0, 1024, 1)], axis=1))


def test_basnet_plan_writes_a_feature_set(basnet_root, tmp_path):
    plan = import_basnet(ImportOptions(basnet_root))
    plan.write(tmp_path / "fs")
    fs = FeatureSet(tmp_path / "fs")
    assert len(fs) == 410 and fs.dim == 2048 and fs.classes == THUMOS_CLASSES
    assert fs.features.shape[0] == int(plan.videos["n_snippets"].sum())
    vid = "video_test_0001558"
    expected = np.concatenate([feats(vid, 1024, 0), feats(vid, 1024, 1)], axis=1)
    np.testing.assert_array_equal(fs.features_of(vid), expected)
    assert len(fs.annotations) == 6318


def test_basnet_gt_equals_thumos_txt_override(basnet_root):
    plan = import_basnet(ImportOptions(basnet_root))
    over = override_annotations(plan, named_gt.read("thumos14"))
    cols = ["video_id", "label", "start_s", "end_s"]
    a = plan.annotations.sort_values(cols).reset_index(drop=True)
    b = over.annotations.sort_values(cols).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)  # PROVENANCE: BaS-Net gt.json == txt on all 410 videos
    assert over.videos["labels"].tolist() == plan.videos["labels"].tolist()
    assert over.unmatched["override_gt_without_features"] == ["video_test_0000270", "video_test_0001496"]
    assert (over.ambiguous["video_id"].str.contains("validation")).sum() == 89
    assert set(over.ambiguous["label"]) == {"Ambiguous"}
    record = over.source_info["annotation_override"]
    assert record["name"] == "thumos14" and record["path"] == "thumos14"  # not the install path
    assert len(record["files"]) == 42 and record["instances"] == 6318
    amb = record["files"]["annotations_test/Ambiguous_test.txt"]
    assert amb == hashlib.sha256((THUMOS14 / "annotations_test/Ambiguous_test.txt").read_bytes()).hexdigest()


def test_basnet_with_a_named_ground_truth(basnet_root, tmp_path):
    """A BaS-Net folder without gt.json takes --gt thumos14 (the full THUMOS14 txt annotations)."""
    root = tmp_path / "b"
    shutil.copytree(basnet_root, root, ignore=shutil.ignore_patterns("gt.json"))
    with pytest.raises(InputError, match="missing BaS-Net ground truth") as err:
        import_basnet(ImportOptions(root))
    assert "thumos14" in str(err.value)
    plan = import_basnet(ImportOptions(root, gt="thumos14"))
    ref = import_basnet(ImportOptions(basnet_root))
    cols = ["video_id", "label", "start_s", "end_s"]
    pd.testing.assert_frame_equal(
        plan.annotations.sort_values(cols).reset_index(drop=True),
        ref.annotations.sort_values(cols).reset_index(drop=True),
    )
    assert plan.videos["labels"].tolist() == ref.videos["labels"].tolist()
    assert set(plan.videos["source_subset"]) == {"validation", "test"}  # the txt files' subset names
    assert plan.unmatched["gt_not_in_split"] == [
        "video_test_0000270",
        "video_test_0001496",
    ]  # not in the split
    assert plan.source_info["files"]["gt"]["name"] == "thumos14"
    assert len(plan.ambiguous) > 0 and set(plan.ambiguous["label"]) == {"Ambiguous"}


def test_basnet_split_without_features_is_an_error(basnet_root, tmp_path):
    root = tmp_path / "b"
    shutil.copytree(basnet_root, root, ignore=shutil.ignore_patterns("video_test_0000004.npy"))
    with pytest.raises(InputError, match="video_test_0000004") as err:
        import_basnet(ImportOptions(root))
    assert "no features" in str(err.value) and "fix:" in str(err.value)
    plan = import_basnet(ImportOptions(root, allow_missing=True))
    assert len(plan.videos) == 409
    assert plan.unmatched["gt_without_features"] == ["video_test_0000004"]
    assert "video_test_0000004" not in set(plan.annotations["video_id"])


# ---------------------------------------------------------------------------------- BaS-Net, small cases


def small_basnet(root: Path, lengths: dict[str, tuple[int, int]], db: dict) -> Path:
    for vid, (n_rgb, n_flow) in lengths.items():
        subset = db[vid]["subset"] if vid in db else "train"
        for stream, n in (("rgb", n_rgb), ("flow", n_flow)):
            folder = root / "features" / subset / stream
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"{vid}.npy", np.full((n, 4), 1.0 if stream == "rgb" else 2.0, np.float32))
    write_gt(root / "gt.json", db)
    return root


def test_basnet_stream_length_mismatch_truncates_with_warning(tmp_path):
    db = {"va": entry("train", ("A", "1.0", "2.5")), "vb": entry("test", ("B", "0.0", "1.0"))}
    plan = import_basnet(ImportOptions(small_basnet(tmp_path, {"va": (5, 4), "vb": (3, 3)}, db)))
    assert plan.videos.set_index("video_id")["n_snippets"].to_dict() == {"va": 4, "vb": 3}
    assert [w for w in plan.warnings if "va" in w and "truncated to 4" in w]
    assert not [w for w in plan.warnings if w.startswith("vb")]
    x = next(plan.iter_features())
    assert x.shape == (4, 8) and (x[:, :4] == 1).all() and (x[:, 4:] == 2).all()
    assert plan.annotations.iloc[0][["start_s", "end_s"]].tolist() == [1.0, 2.5]  # segments were strings


def test_basnet_single_stream_and_missing_stream(tmp_path):
    db = {"va": entry("train", ("A", 1, 2))}
    root = small_basnet(tmp_path, {"va": (3, 3)}, db)
    (root / "features/train/flow/va.npy").unlink()
    with pytest.raises(InputError, match="no flow features"):
        import_basnet(ImportOptions(root))
    assert import_basnet(ImportOptions(root, streams="rgb")).dim == 4


def test_basnet_duplicate_id_across_subsets(tmp_path):
    db = {"va": entry("train", ("A", 1, 2))}
    root = small_basnet(tmp_path, {"va": (3, 3)}, db)
    for stream in ("rgb", "flow"):
        (root / "features/test" / stream).mkdir(parents=True)
        shutil.copy(root / "features/train" / stream / "va.npy", root / "features/test" / stream / "va.npy")
    with pytest.raises(InputError, match="duplicate video id 'va'"):
        import_basnet(ImportOptions(root))


def test_basnet_unsafe_id_in_split_file(tmp_path):
    root = small_basnet(tmp_path, {"va": (3, 3)}, {"va": entry("train", ("A", 1, 2))})
    (root / "split_train.txt").write_text("va\n../../etc/passwd\n")
    with pytest.raises(InputError, match="unsafe video id") as err:
        import_basnet(ImportOptions(root))
    assert "split_train.txt" in str(err.value)


def test_unknown_class_against_given_list(tmp_path):
    root = small_basnet(tmp_path, {"va": (3, 3)}, {"va": entry("train", ("Zumba", 1, 2))})
    with pytest.raises(InputError, match="'Zumba'.*not in the class list"):
        import_basnet(ImportOptions(root, classes=["A", "B"]))
    assert import_basnet(ImportOptions(root)).classes == ["Zumba"]


def test_duplicate_key_in_gt_json(tmp_path):
    root = small_basnet(tmp_path, {"va": (3, 3)}, {"va": entry("train", ("A", 1, 2))})
    text = '{"database": {"va": {"subset": "train", "annotations": []}, "va": {"subset": "test", "annotations": []}}}'
    (root / "gt.json").write_text(text)
    with pytest.raises(InputError, match="duplicate key 'va'"):
        import_basnet(ImportOptions(root))


def test_reversed_segment_is_refused(tmp_path):
    root = small_basnet(tmp_path, {"va": (3, 3)}, {"va": entry("train", ("A", 5, 2))})
    with pytest.raises(InputError, match="reversed"):
        import_basnet(ImportOptions(root))


# ---------------------------------------------------------------------------------- W-TALC, real arrays


@pytest.fixture(scope="module")
def wtalc_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wtalc")
    ann = root / "Thumos14reduced-Annotations"
    ann.mkdir()
    for packed in sorted((TEST_DATA / "wtalc_thumos14").glob("*.npy.gz")):
        (ann / packed.name.removesuffix(".gz")).write_bytes(gzip.decompress(packed.read_bytes()))
    shutil.copy(THUMOS14 / "annotations_test" / "Ambiguous_test.txt", ann / "Ambiguous_test.txt")
    names = [v.decode() for v in np.load(ann / "videoname.npy")]
    arr = np.empty(len(names), dtype=object)
    for i, vid in enumerate(names):
        arr[i] = feats(vid, 16)
    np.save(
        root / "Thumos14reduced-I3D-JOINTFeatures.npy", arr, allow_pickle=True
    )  # a pickle on purpose: the reader under test is the restricted one
    return root


def test_wtalc_real_arrays(wtalc_root):
    plan = import_wtalc(ImportOptions(wtalc_root))
    v = plan.videos
    assert len(v) == 412
    assert v["subset"].value_counts().to_dict() == {"train": 200, "test": 212}
    assert set(v.loc[v.subset == "train", "source_subset"]) == {"validation"}
    per_subset = plan.annotations.merge(v[["video_id", "subset"]]).groupby("subset").size().to_dict()
    assert per_subset == {"train": 3007, "test": 3358}  # W-TALC keeps 270 and 1496
    assert plan.classes == THUMOS_CLASSES  # classlist.npy order
    assert plan.dim == 16
    row = v.set_index("video_id").loc["video_validation_0000051"]
    assert row["duration_s"] == pytest.approx(169.794) and row["source_fps"] == 30.0
    assert row["fps"] == 25.0  # the grid, not the source's video fps
    # labels_all.npy disagrees with the segment labels on 28 videos; the default uses the segments
    assert [w for w in plan.warnings if w.startswith("28 videos' labels_all.npy differ")]
    assert v.set_index("video_id").loc["video_test_0001496", "labels"] == ["CricketShot"]
    assert plan.unmatched == {}
    assert len(plan.ambiguous) > 0 and set(plan.ambiguous["video_id"]) <= set(
        v.loc[v.subset == "test", "video_id"]
    )
    xs = list(plan.iter_features())
    assert len(xs) == 412
    np.testing.assert_array_equal(xs[0], feats(v["video_id"].iloc[0], 16))
    alt = import_wtalc(ImportOptions(wtalc_root, video_labels="labels_all"))
    assert alt.videos.set_index("video_id").loc["video_test_0001496", "labels"] == ["FrisbeeCatch"]


def test_wtalc_feature_count_mismatch_and_file_choice(wtalc_root, tmp_path):
    root = tmp_path / "w"
    shutil.copytree(wtalc_root / "Thumos14reduced-Annotations", root / "Thumos14reduced-Annotations")
    short = np.empty(3, dtype=object)
    for i in range(3):
        short[i] = np.zeros((2, 4), np.float32)
    np.save(
        root / "Thumos14reduced-I3D-JOINTFeatures.npy", short, allow_pickle=True
    )  # a pickle on purpose: the reader under test is the restricted one
    with pytest.raises(InputError, match="412 videos"):
        import_wtalc(ImportOptions(root))
    shutil.copy(root / "Thumos14reduced-I3D-JOINTFeatures.npy", root / "Other-I3D-JOINTFeatures.npy")
    with pytest.raises(InputError, match="several"):
        import_wtalc(ImportOptions(root))
    with pytest.raises(InputError, match="412 videos"):  # an explicit choice is honoured
        import_wtalc(ImportOptions(root, features_file=Path("Other-I3D-JOINTFeatures.npy")))


def test_wtalc_nan_row_names_the_video(wtalc_root, tmp_path):
    root = tmp_path / "w"
    shutil.copytree(wtalc_root / "Thumos14reduced-Annotations", root / "Thumos14reduced-Annotations")
    arr = safe_load_object_npy(wtalc_root / "Thumos14reduced-I3D-JOINTFeatures.npy")
    arr[0] = arr[0].copy()
    arr[0][1, 3] = np.inf
    np.save(
        root / "Thumos14reduced-I3D-JOINTFeatures.npy", arr, allow_pickle=True
    )  # a pickle on purpose: the reader under test is the restricted one
    plan = import_wtalc(ImportOptions(root))
    with pytest.raises(InputError, match="video_validation_0000051.*row 1"):
        list(plan.iter_features())


# ---------------------------------------------------------------------------------- THUMOS txt


def test_thumos_txt_counts():
    test = read_thumos_txt(THUMOS14 / "annotations_test")
    ann, amb = test.instances(), test.ambiguous()
    assert (len(ann), ann["video_id"].nunique()) == (3358, 212)
    assert (len(amb), amb["video_id"].nunique()) == (99, 37)
    assert set(ann["source_subset"]) == {"test"} and sorted(set(ann["label"])) == THUMOS_CLASSES
    assert "video_test_0001292" in set(amb["video_id"]) and "video_test_0001292" not in set(ann["video_id"])
    assert list(test.subsets().items()) == [("test", 212)]
    val = read_thumos_txt(THUMOS14 / "annotations_val")
    vann, vamb = val.instances(), val.ambiguous()
    assert (len(vann), vann["video_id"].nunique(), len(vamb), vamb["video_id"].nunique()) == (
        3007,
        200,
        89,
        35,
    )
    first = ann[ann.video_id == "video_test_0000324"].sort_values("start_s").iloc[0]
    assert (first.label, first.start_s, first.end_s) == ("BaseballPitch", 49.2, 53.5)
    both = read_thumos_txt(THUMOS14)  # the parent folder: both subsets, found recursively
    assert both.subsets() == {"test": 212, "validation": 200} and len(both.files) == 42


def test_thumos_txt_errors(tmp_path):
    with pytest.raises(InputError, match="no '<Class>_val.txt'"):
        read_thumos_txt(tmp_path)
    (tmp_path / "Diving_test.txt").write_text("video_test_1 1.0 2.0\nvideo_test_2 3.0\n")
    with pytest.raises(InputError, match="line 2 has 2 fields"):
        read_thumos_txt(tmp_path)


def test_class_lists():
    assert read_class_list(TEST_DATA / "thumos14_detclasslist.txt") == THUMOS_CLASSES
    assert (
        read_class_list(TEST_DATA / "thumos14_classes.txt") == THUMOS_CLASSES
    )  # '# comment', two id columns


# ---------------------------------------------------------------------------------- per-video folders


def test_folder_with_the_named_thumos14_ground_truth(tmp_path):
    aset = named_gt.read("thumos14")
    for vid, info in aset.videos.items():
        folder = tmp_path / ("train" if info.subset == "validation" else "test")
        folder.mkdir(exist_ok=True)
        np.save(folder / f"{vid}.npy", feats(vid, 8))
    plan = import_folder(ImportOptions(tmp_path, gt="thumos14"))
    v = plan.videos
    assert len(v) == 412 and v["subset"].value_counts().to_dict() == {"train": 200, "test": 212}
    per_subset = plan.annotations.merge(v[["video_id", "subset"]]).groupby("subset").size().to_dict()
    assert per_subset == {"train": 3007, "test": 3358}
    assert plan.classes == THUMOS_CLASSES and "Ambiguous" not in set(plan.annotations["label"])
    assert len(plan.ambiguous) == 89 + 99 - 3  # video_test_0001292's 3 segments: not an imported video
    assert plan.source_info["subset_map"] == {"test": "test", "validation": "train"}
    row = v.set_index("video_id").loc["video_validation_0000051"]
    assert row["source_subset"] == "validation" and np.isnan(row["source_fps"])  # txt: no fps
    assert row["duration_s"] == pytest.approx(TimeGrid().duration_of(row["n_snippets"]))  # nor durations
    assert plan.unmatched == {}


def test_folder_with_the_named_anet12_ground_truth_keeps_its_durations(tmp_path):
    aset = named_gt.read("anet12")
    picked = ["--0edUL8zmA", next(v for v, i in aset.videos.items() if i.subset == "validation")]
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    for vid in picked:
        subset = "train" if aset.videos[vid].subset == "training" else "test"
        np.save(tmp_path / subset / f"{vid}.npy", feats(vid, 8))
    with pytest.raises(InputError, match="7200 videos have ground truth .* but no features"):
        import_folder(ImportOptions(tmp_path, gt="anet12"))
    plan = import_folder(ImportOptions(tmp_path, gt="anet12", allow_missing=True))
    v = plan.videos.set_index("video_id")
    assert v.loc["--0edUL8zmA", "duration_s"] == 92.18 and v.loc["--0edUL8zmA", "labels"] == ["Dodgeball"]
    assert (
        v.loc[picked[1], "subset"] == "test"
        and v.loc[picked[1], "duration_s"] == aset.videos[picked[1]].duration
    )
    assert len(plan.classes) == 100  # the sorted union over the whole ground truth
    assert plan.source_info["files"]["gt"]["path"] == "gt.json.xz"
    assert (
        plan.source_info["files"]["gt"]["sha256"]
        == hashlib.sha256(NAMES["anet12"].path.read_bytes()).hexdigest()
    )


def test_folder_unmatched_videos(tmp_path):
    db = {"a": entry("training", ("X", 0, 1)), "b": entry("validation", ("Y", 0, 1)), "c": entry("testing")}
    gt = write_gt(tmp_path / "gt.json", db)
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    np.save(tmp_path / "train/a.npy", np.ones((3, 5), np.float32))
    np.save(tmp_path / "test/b.npy", np.ones((2, 5), np.float32))
    np.save(tmp_path / "test/stray.npy", np.ones((2, 5), np.float32))
    plan = import_folder(ImportOptions(tmp_path))  # finds gt.json; ActivityNet names: validation -> test
    assert plan.videos["video_id"].tolist() == ["a", "b"]
    assert plan.videos["subset"].tolist() == ["train", "test"]
    assert plan.unmatched == {"features_without_gt": ["stray"]}
    assert [w for w in plan.warnings if "stray" in w and "left out" in w]
    kept = import_folder(ImportOptions(tmp_path, gt=gt, keep_unlabeled=True))
    assert kept.videos.set_index("video_id").loc["stray", "labels"] == []
    assert kept.videos.set_index("video_id").loc["stray", "subset"] == "test"
    (tmp_path / "test/b.npy").unlink()
    with pytest.raises(InputError, match="1 videos have ground truth .* but no features: b"):
        import_folder(ImportOptions(tmp_path, gt=gt))
    plan = import_folder(ImportOptions(tmp_path, gt=gt, allow_missing=True))
    assert plan.unmatched["gt_without_features"] == ["b"] and plan.videos["video_id"].tolist() == ["a"]


def test_folder_input_errors(tmp_path):
    gt = write_gt(tmp_path / "gt.json", {"a": entry("train", ("X", 0, 1)), "b": entry("test", ("X", 0, 1))})
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    x = np.ones((3, 4), np.float32)
    np.save(tmp_path / "train/a.npy", x)
    np.save(tmp_path / "test/b.npy", x)
    assert len(import_folder(ImportOptions(tmp_path, gt=gt)).videos) == 2

    np.save(tmp_path / "test/a.npy", x)  # same id in two folders
    with pytest.raises(InputError, match="duplicate video id 'a'"):
        import_folder(ImportOptions(tmp_path, gt=gt))
    (tmp_path / "test/a.npy").unlink()

    np.save(tmp_path / "train/b.npy", x)  # ground truth says test
    (tmp_path / "test/b.npy").unlink()
    with pytest.raises(InputError, match="feature folder 'train' says train"):
        import_folder(ImportOptions(tmp_path, gt=gt))
    (tmp_path / "train/b.npy").rename(tmp_path / "test/b.npy")

    np.save(tmp_path / "test/b.npy", np.zeros((0, 4), np.float32))
    with pytest.raises(InputError, match="0 snippets") as err:
        import_folder(ImportOptions(tmp_path, gt=gt))
    assert "b.npy" in str(err.value)

    bad = x.copy()
    bad[2, 1] = np.nan
    np.save(tmp_path / "test/b.npy", bad)
    plan = import_folder(ImportOptions(tmp_path, gt=gt))  # headers only: the NaN is found while streaming
    with pytest.raises(InputError, match="row 2 holds NaN") as err:
        list(plan.iter_features())
    assert "b.npy" in str(err.value)

    np.save(tmp_path / "test/b.npy", np.ones((3, 6), np.float32))
    with pytest.raises(InputError, match="dim 6"):
        import_folder(ImportOptions(tmp_path, gt=gt))
    np.save(tmp_path / "test/b.npy", x)

    np.save(tmp_path / "test/bad..id.npy", x)
    with pytest.raises(InputError, match="unsafe video id 'bad..id'"):
        import_folder(ImportOptions(tmp_path, gt=gt))


def test_pickled_per_video_features_are_refused_unexecuted(tmp_path):
    gt = write_gt(tmp_path / "gt.json", {"a": entry("train", ("X", 0, 1))})
    (tmp_path / "train").mkdir()
    marker = tmp_path / "pwned"
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = Evil(marker), np.ones(3)
    np.save(
        tmp_path / "train/a.npy", arr, allow_pickle=True
    )  # a pickle on purpose: the reader under test is the restricted one
    with pytest.raises(InputError, match="pickled Python objects") as err:
        import_folder(ImportOptions(tmp_path, gt=gt))
    assert "a.npy" in str(err.value) and "np.float32" in str(err.value)
    assert not marker.exists()


def test_subset_map_detection():
    assert subset_map_for({"validation", "test"}) == {"validation": "train", "test": "test"}
    assert subset_map_for({"training", "validation", "testing"}) == {
        "training": "train",
        "validation": "test",
        "testing": None,
    }
    assert subset_map_for({"train", "test"}) == {"train": "train", "test": "test"}
    with pytest.raises(InputError, match="subset map"):
        subset_map_for({"train", "validation"})
    assert (
        subset_map_for({"train", "validation"}, {"train": "train", "validation": "test"})["validation"]
        == "test"
    )


def test_read_annotations_dispatch():
    bas = named_gt.read(BASNET_THUMOS14 / "gt.json.xz")  # a compressed JSON, string segments
    assert len(bas) == 6318 and len(bas.videos) == 410 and not bas.rows["ambiguous"].any()
    assert bas.subsets() == {"test": 210, "train": 200}
    txt = named_gt.read("thumos14")
    assert len(txt.instances()) == 6365 and len(txt.ambiguous()) == 188 and txt.name == "thumos14"
    assert named_gt.read(THUMOS14).rows.equals(txt.rows)  # the name is the packaged folder


# ---------------------------------------------------------------------------------- restricted unpickler


def write_raw_npy(path: Path, payload: bytes, shape: tuple[int, ...] = (1,)) -> Path:
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": shape})
        f.write(payload)
    return path


def test_malicious_pickles_are_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    arr = np.empty(1, dtype=object)
    arr[0] = Evil(marker)
    np.save(
        tmp_path / "evil.npy", arr, allow_pickle=True
    )  # a pickle on purpose: the reader under test is the restricted one
    with pytest.raises(InputError, match=r"refusing to unpickle (posix|nt|os)\.system") as err:
        safe_load_object_npy(tmp_path / "evil.npy")
    assert "evil.npy" in str(err.value)
    write_raw_npy(tmp_path / "bare.npy", pickle.dumps(Evil(marker), protocol=4))
    with pytest.raises(InputError, match="refusing to unpickle"):
        safe_load_object_npy(tmp_path / "bare.npy")
    with pytest.raises(InputError, match=r"builtins\.eval"):
        safe_load_object_npy(write_raw_npy(tmp_path / "eval.npy", pickle.dumps(eval)))
    rot13 = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(InputError, match=r"_codecs\.encode"):  # only encode(str, 'latin1') is allowed
        safe_load_object_npy(write_raw_npy(tmp_path / "rot13.npy", rot13))
    assert not marker.exists()


def test_truncated_and_non_array_payloads(tmp_path):
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = [1.0, 2.0], "a"
    np.save(
        tmp_path / "ok.npy", arr, allow_pickle=True
    )  # a pickle on purpose: the reader under test is the restricted one
    data = (tmp_path / "ok.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) - 10])
    with pytest.raises(InputError, match="cannot decode"):
        safe_load_object_npy(tmp_path / "cut.npy")
    write_raw_npy(tmp_path / "list.npy", pickle.dumps([1, 2]))
    with pytest.raises(InputError, match="not a numpy array"):
        safe_load_object_npy(tmp_path / "list.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(InputError, match="not a readable .npy"):
        safe_load_object_npy(tmp_path / "junk.npy")


def py2_object_array_pickle(arrays: list[np.ndarray]) -> bytes:
    """A protocol-2 pickle as Python 2 numpy wrote it: byte strings are py2 ``str`` (SHORT_BINSTRING /
    BINSTRING), which only decode with ``encoding='latin1'`` (the W-TALC joint feature files)."""
    out = bytearray(b"\x80\x02")

    def glob(mod: str, name: str) -> None:
        out.extend(b"c" + mod.encode() + b"\n" + name.encode() + b"\n")

    def py2str(b: bytes) -> None:
        out.extend((b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<i", len(b))) + b)

    def dtype(code: bytes, order: bytes, flags: int) -> None:
        glob("numpy", "dtype")
        py2str(code)
        out.extend(b"K\x00K\x01\x87R(K\x03")  # dtype(code, 0, 1); state (3, order, None x3, -1, -1, flags)
        py2str(order)
        out.extend(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK" + bytes([flags]) + b"tb")

    def new_array(shape: tuple[int, ...]) -> None:
        glob("numpy.core.multiarray", "_reconstruct")
        glob("numpy", "ndarray")
        out.extend(b"K\x00\x85")
        py2str(b"b")
        out.extend(b"\x87R(K\x01")
        out.extend(b"".join(b"K" + bytes([s]) for s in shape) + (b"\x85" if len(shape) == 1 else b"\x86"))

    new_array((len(arrays),))
    dtype(b"O8", b"|", 63)
    out.extend(b"\x89](")
    for a in arrays:
        new_array(a.shape)
        dtype(b"f4", b"<", 0)
        out.extend(b"\x89")
        py2str(np.ascontiguousarray(a, "<f4").tobytes())
        out.extend(b"tb")
    out.extend(b"etb.")
    return bytes(out)


def test_restricted_unpickler_reads_py2_and_py3_numpy_pickles(tmp_path):
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((70, 2)).astype(np.float32)]
    got = safe_load_object_npy(write_raw_npy(tmp_path / "py2.npy", py2_object_array_pickle(xs), (2,)))
    assert got.dtype == object and len(got) == 2
    for a, b in zip(got, xs, strict=True):
        np.testing.assert_array_equal(a, b)
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = xs
    for protocol in (2, 3, 5):  # 2: _codecs.encode, 3: np.save's own, 5: _frombuffer
        got = safe_load_object_npy(
            write_raw_npy(tmp_path / f"p{protocol}.npy", pickle.dumps(arr, protocol), (2,))
        )
        np.testing.assert_array_equal(got[1], xs[1])
    scal = np.empty(1, dtype=object)
    scal[0] = [np.float64(1.5), np.int64(3)]
    np.save(
        tmp_path / "scalars.npy", scal, allow_pickle=True
    )  # a pickle on purpose: the reader under test is the restricted one
    assert safe_load_object_npy(tmp_path / "scalars.npy")[0] == [1.5, 3]
    plain = np.arange(6.0).reshape(2, 3)
    np.save(tmp_path / "plain.npy", plain)
    np.testing.assert_array_equal(safe_load_object_npy(tmp_path / "plain.npy"), plain)


def test_real_wtalc_annotation_arrays(wtalc_root):
    base = wtalc_root / "Thumos14reduced-Annotations"
    names = safe_load_object_npy(base / "videoname.npy")
    segments = safe_load_object_npy(base / "segments.npy")
    labels = safe_load_object_npy(base / "labels.npy")
    assert len(names) == len(segments) == len(labels) == 412
    assert sum(len(s) for s in segments) == 3007 + 3358
    assert segments[0][0] == [67.5, 75.9] and labels[0][0] == "Billiards"
