"""The packaged public ground truths (``wtalcli/data/datasets``): intact, counted, reachable by
name from ``evaluate`` and ``extract``; and nothing in the repository points outside it."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from stages.evaluate import evaluate
from wtalcli.core.errors import InputError
from wtalcli.core.store import Store
from wtalcli.data import named_gt
from wtalcli.data.annotations import read_bytes
from wtalcli.data.feature_artifact import extract_import
from wtalcli.data.importers import ImportOptions, read_class_list
from wtalcli.data.schema import FeatureSet
from wtalcli.evaluation.detection import results_dict
from wtalcli.evaluation.groundtruth import load_ground_truth
from wtalcli.evaluation.params import EvalParams

REPO = Path(__file__).resolve().parents[1]
QUIET = {"log": lambda m: None}


def test_every_packaged_file_matches_its_checksum():
    listed = {}
    for line in (named_gt.PACKAGE_DIR / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split("  ", 1)
        listed[rel] = digest
    present = {
        p.relative_to(named_gt.PACKAGE_DIR).as_posix()
        for p in named_gt.PACKAGE_DIR.rglob("*")
        if p.is_file() and p.name not in ("SHA256SUMS", "PROVENANCE.md")
    }
    assert set(listed) == present and len(present) == 49
    for rel, digest in listed.items():
        assert hashlib.sha256(read_bytes(named_gt.PACKAGE_DIR / rel, rel)).hexdigest() == digest, rel
    # BaS-Net's gt.json is the original file, compressed (PROVENANCE.md gives its sha256)
    provenance = (named_gt.PACKAGE_DIR / "PROVENANCE.md").read_text()
    assert listed["basnet_thumos14/gt.json.xz"].startswith("09ec867173d8532c")
    for folder in ("thumos14/annotations_val", "basnet_thumos14", "anet13", "anet12"):
        assert f"`{folder}/" in provenance


def test_pyproject_ships_the_package_data():
    text = (REPO / "pyproject.toml").read_text()
    assert '"wtalcli.data" = ["datasets/*", "datasets/**/*"]' in text


@pytest.mark.parametrize(
    ("name", "subset", "videos", "instances", "classes", "ambiguous"),
    [
        ("thumos14", "test", 212, 3358, 20, 99),
        ("thumos14", "validation", 200, 3007, 20, 89),
        ("anet13", "training", 9649, 14859, 200, 0),
        ("anet13", "validation", 4728, 7293, 200, 0),
        ("anet12", "training", 4819, 7151, 100, 0),
        ("anet12", "validation", 2383, 3582, 100, 0),
    ],
)
def test_named_ground_truth_counts(name, subset, videos, instances, classes, ambiguous):
    gt = load_ground_truth(name, subset)
    assert (len(gt.videos), len(gt), len(gt.classes), len(gt.ambiguous)) == (
        videos,
        instances,
        classes,
        ambiguous,
    )
    assert gt.source == name and gt.subset == subset
    assert len(gt.videos_with_instances) == videos  # every video of these subsets has instances


def test_basnet_files_and_the_basnet_protocol():
    bas = load_ground_truth(named_gt.BASNET_THUMOS14 / "gt.json.xz", "test")
    assert (len(bas.videos), len(bas)) == (210, 3311)
    assert (len(load_ground_truth(named_gt.BASNET_THUMOS14 / "gt.json.xz", "train")), len(bas.classes)) == (
        3007,
        20,
    )
    split = (named_gt.BASNET_THUMOS14 / "split_test.txt").read_text().split()
    assert sorted(split) == sorted(bas.videos)
    assert len((named_gt.BASNET_THUMOS14 / "split_train.txt").read_text().split()) == 200


def test_names_subsets_and_paths(tmp_path, monkeypatch):
    assert set(named_gt.NAMES) == {"thumos14", "anet13", "anet12"}
    assert named_gt.is_name("thumos14") and not named_gt.is_name("./thumos14") and not named_gt.is_name(None)
    path, g = named_gt.locate("anet13")
    assert g is not None and path == named_gt.PACKAGE_DIR / "anet13" / "gt.json.xz"
    assert named_gt.locate(tmp_path / "x.json") == (tmp_path / "x.json", None)
    # our subset names: test = the evaluation subset, train = the training subset
    assert load_ground_truth("anet13", "test").subset == "validation"
    assert load_ground_truth("anet12", "train").subset == "training"
    assert load_ground_truth("thumos14", "train").subset == "validation"
    with pytest.raises(InputError, match=r"no video of subset 'testing'"):
        load_ground_truth("anet13", "testing")
    with pytest.raises(InputError, match="unknown packaged ground truth 'anet14'"):
        named_gt.get("anet14")
    # a local folder of the same name is reached as a path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "thumos14").mkdir()
    (tmp_path / "thumos14" / "Jump_test.txt").write_text("v1 1 2\n")
    assert load_ground_truth("./thumos14", "test").classes == ["Jump"]
    assert len(load_ground_truth("thumos14", "test")) == 3358


# ---------------------------------------------------------------------------------- stages


def predictions_of(gt, path: Path) -> Path:
    doc = results_dict(gt.video_ids, gt.labels, np.ones(len(gt)), gt.t_start, gt.t_end)
    path.write_text(json.dumps(doc))
    return path


def test_evaluate_stage_with_a_named_ground_truth(tmp_path):
    store = Store(tmp_path / "wd")
    bas = load_ground_truth(named_gt.BASNET_THUMOS14 / "gt.json.xz", "test")
    preds = predictions_of(bas, tmp_path / "p.json")
    result, art = evaluate(store, preds, EvalParams(protocol="basnet", gt="thumos14"), **QUIET)
    assert result["average_map"] == 1.0 and result["protocol"] == "basnet"
    assert result["ground_truth"].startswith("thumos14 [test]: 210 videos")
    identity = art.params["gt_identity"]  # the files the reader read, by name, not the install path
    assert art.params["gt"] == "thumos14" and identity["path"] == identity["name"] == "thumos14"
    assert len(identity["files"]) == 42 and all(len(h) == 64 for h in identity["files"].values())
    # the Ambiguous segments come with the name: --ambiguous exclude has them to use
    result, _ = evaluate(
        store, preds, EvalParams(protocol="basnet", ambiguous="exclude", gt="thumos14"), **QUIET
    )
    assert result["average_map"] == 1.0 and result["options"]["ambiguous"] == "exclude"
    # without the protocol, 270 and 1496 hold instances nobody predicted: recall falls below 1
    result, _ = evaluate(store, preds, EvalParams(gt="thumos14"), **QUIET)
    assert result["ground_truth"].startswith("thumos14 [test]: 212 videos") and result["average_map"] < 1.0
    # ActivityNet: the default subset "test" is its validation subset
    anet = load_ground_truth("anet12", "validation")
    result, art = evaluate(
        store, predictions_of(anet, tmp_path / "a.json"), EvalParams(tiou="anet", gt="anet12"), **QUIET
    )
    assert result["average_map"] == 1.0 and result["ground_truth"].startswith(
        "anet12 [validation]: 2383 videos"
    )
    with pytest.raises(InputError, match="ground-truth file not found.*thumos14, anet13, anet12"):
        evaluate(store, preds, EvalParams(gt=str(tmp_path / "missing.json")), **QUIET)


def test_evaluation_key_is_the_ground_truth_files_read(tmp_path):
    """A file the reader skips (a README beside THUMOS14's txt files) keeps the evaluation; an
    edited annotation file rebuilds it."""
    store = Store(tmp_path / "wd")
    folder = tmp_path / "th14"
    shutil.copytree(named_gt.PACKAGE_DIR / "thumos14", folder)
    preds = predictions_of(load_ground_truth("thumos14", "test"), tmp_path / "p.json")
    _, first = evaluate(store, preds, EvalParams(gt=str(folder)), **QUIET)
    (folder / "README.md").write_text("notes\n")
    _, again = evaluate(store, preds, EvalParams(gt=str(folder)), **QUIET)
    assert again.id == first.id and "README.md" not in first.params["gt_identity"]["files"]
    jump = folder / "annotations_test" / "CliffDiving_test.txt"
    jump.write_text(jump.read_text() + "\n")  # a blank line: the same instances, other bytes
    _, edited = evaluate(store, preds, EvalParams(gt=str(folder)), **QUIET)
    assert edited.id != first.id


def test_extract_stage_with_a_named_ground_truth(tmp_path):
    """`--from folder DIR --gt thumos14` where the folder has no ground truth of its own, and
    `--annotations thumos14` over a folder that has one."""
    root = tmp_path / "feats"
    picked = {"video_validation_0000051": "train", "video_test_0000004": "test", "video_test_0000324": "test"}
    for vid, subset in picked.items():
        (root / subset).mkdir(parents=True, exist_ok=True)
        np.save(root / subset / f"{vid}.npy", np.ones((5, 4), np.float32))
    store = Store(tmp_path / "wd")
    opts = ImportOptions(root, gt="thumos14", allow_missing=True)
    art = extract_import(store, "folder", opts, **QUIET, warn=lambda m: None)
    fs = FeatureSet(art.path)
    gt = load_ground_truth("thumos14", "test")
    want = int(np.isin(gt.video_ids, ["video_test_0000004", "video_test_0000324"]).sum())
    got = fs.annotations.merge(fs.videos[["video_id", "subset"]])
    assert int((got["subset"] == "test").sum()) == want and len(fs.classes) == 20
    assert art.params["source_info"]["files"]["gt"]["name"] == "thumos14"
    # the same videos with a JSON without instances, replaced by --annotations thumos14
    (root / "gt.json").write_text(
        json.dumps(
            {
                "database": {
                    v: {"subset": "validation" if s == "train" else "test", "annotations": []}
                    for v, s in picked.items()
                }
            }
        )
    )
    classes = REPO / "tests" / "data" / "thumos14_detclasslist.txt"  # the JSON names no class at all
    opts = ImportOptions(root, classes=read_class_list(classes))
    art2 = extract_import(store, "folder", opts, annotations="thumos14", **QUIET, warn=lambda m: None)
    fs2 = FeatureSet(art2.path)
    assert art2.params["annotations"] == "thumos14"
    assert len(fs2.annotations) == len(fs.annotations)
    assert fs2.annotations.sort_values(["video_id", "start_s", "label"]).values.tolist() == (
        fs.annotations.sort_values(["video_id", "start_s", "label"]).values.tolist()
    )


# ---------------------------------------------------------------------------------- no outside paths

# built from pieces, so that this file does not match itself
OUTSIDE = re.compile(
    "|".join(
        [
            re.escape(".." + "/shared"),
            "(?<![A-Za-z0-9_./-])" + re.escape("shared" + "/datasets"),  # the sibling folder, named bare
            re.escape("/" + "work/"),
            "/" + "home/[A-Za-z0-9_.-]+",
            "/" + "Users/[A-Za-z0-9_.-]+",
            "/" + "root/",
        ]
    )
)


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60
        ).stdout
        return [REPO / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):  # no git (an unpacked archive): every file
        return [
            p
            for p in REPO.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(REPO).parts)
        ]


def test_nothing_in_the_repository_points_outside_it():
    hits = []
    files = tracked_files()
    assert len(files) > 100
    for path in files:
        if not path.is_file():  # deleted in the working tree
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()[:100]}")
    assert hits == [], "paths outside the repository:\n" + "\n".join(hits)
