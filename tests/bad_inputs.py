"""Builders of bad inputs for ``tests/test_reliability.py``.

A :class:`World` is a workdir of good artifacts made once per test module on the tiny synthetic
preset (two feature sets, three baseline models, pseudo-labels, a confidence map, proposals) plus
a folder for input files.  Each :class:`Case` of :data:`CASES` damages a copy of it or writes a bad
input file, and returns the ``wtal`` command line that must then fail cleanly: the documented exit
code, one ``error:`` line naming the problem with a ``(fix: ...)``, no traceback, nothing new or
half-written in the workdir, every earlier file byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickletools
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

QUIET = {"log": lambda m: None}

# ---------------------------------------------------------------------------------- the world


@dataclass
class World:
    """A workdir ``root/wd`` of good artifacts, a folder ``root/inputs`` and the artifact ids."""

    root: Path
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def wd(self) -> Path:
        return self.root / "wd"

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    def art(self, name: str) -> Path:
        """The directory of the artifact the world calls ``name`` (e.g. ``features``, ``model_b``)."""
        return self.wd / self.ids[name]

    def clone(self, dest: Path) -> World:
        shutil.copytree(self.root, dest, symlinks=True)
        return World(dest, dict(self.ids))


def build_world(root: Path) -> World:
    """Make the shared good artifacts (in-process, a few training iterations each)."""
    from stages.baseline import baseline
    from stages.denoise import denoise
    from stages.localize import localize
    from stages.pseudolabel import pseudolabel
    from wtalcli.core.store import Store
    from wtalcli.data.feature_artifact import extract_synthetic
    from wtalcli.dcc.params import DenoiseParams
    from wtalcli.model.config import BaselineParams

    world = World(Path(root))
    world.inputs.mkdir(parents=True)
    store = Store(world.wd)
    fs = extract_synthetic(store, "tiny", seed=0, **QUIET)
    model, tcas = baseline(store, fs.id, BaselineParams(device="cpu", iterations=2), **QUIET)
    pl = pseudolabel(store, tcas.id, **QUIET)
    conf = denoise(store, pl.id, params=DenoiseParams(clusters=4, iterations=2, device="cpu"), **QUIET)
    model_b, tcas_b = baseline(store, fs.id, BaselineParams(device="cpu", iterations=2, seed=1), **QUIET)
    pl_b = pseudolabel(store, tcas_b.id, **QUIET)
    fs2 = extract_synthetic(store, "tiny", seed=1, **QUIET)
    model_c, tcas_c = baseline(store, fs2.id, BaselineParams(device="cpu", iterations=2), **QUIET)
    prop = localize(store, tcas.id, **QUIET)
    world.ids.update(
        features=fs.id,
        model=model.id,
        tcas=tcas.id,
        pseudolabels=pl.id,
        confidence=conf.id,
        model_b=model_b.id,
        tcas_b=tcas_b.id,
        pseudolabels_b=pl_b.id,
        features2=fs2.id,
        model_c=model_c.id,
        tcas_c=tcas_c.id,
        proposals=prop.id,
    )
    write_gt_from_features(world.art("features"), world.inputs / "gt.json")
    write_predictions_from_features(world.art("features"), world.inputs / "proposals.json")
    return world


def write_gt_from_features(fs_dir: Path, out: Path) -> None:
    """An ActivityNet-style ground-truth JSON of a feature set's test videos."""
    from wtalcli.data.schema import FeatureSet

    fs = FeatureSet(fs_dir)
    db: dict = {}
    for vid, subset, dur in fs.videos[["video_id", "subset", "duration_s"]].itertuples(index=False):
        db[vid] = {
            "subset": "validation" if subset == "test" else "training",
            "duration": dur,
            "annotations": [],
        }
    for vid, label, s, e in fs.annotations[["video_id", "label", "start_s", "end_s"]].itertuples(index=False):
        db[vid]["annotations"].append({"segment": [s, e], "label": label})
    out.write_text(json.dumps({"database": db}))


def write_predictions_from_features(fs_dir: Path, out: Path) -> None:
    """A valid ActivityNet results JSON: the test videos' ground-truth segments, slightly shifted."""
    from wtalcli.data.schema import FeatureSet

    fs = FeatureSet(fs_dir)
    test = set(fs.videos.loc[fs.videos["subset"] == "test", "video_id"])
    results: dict = {}
    for vid, label, s, e in fs.annotations[["video_id", "label", "start_s", "end_s"]].itertuples(index=False):
        if vid in test:
            results.setdefault(vid, []).append({"label": label, "score": 0.9, "segment": [s + 0.5, e + 0.5]})
    assert results
    out.write_text(json.dumps({"version": "VERSION 1.3", "results": results}))


# ---------------------------------------------------------------------------------- snapshots


def snapshot(wd: Path) -> dict[str, str]:
    """sha256 of every file under the workdir (lock files aside: a failed run may leave one)."""
    out = {}
    if not wd.exists():
        return out
    for p in sorted(wd.rglob("*")):
        rel = p.relative_to(wd)
        if rel.parts[0] == ".locks" or not p.is_file():
            continue
        out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def leftovers(wd: Path) -> list[str]:
    """Temporary or trash entries a crashed or failed build could leave behind."""
    if not wd.exists():
        return []
    return sorted(p.name for p in wd.iterdir() if p.name.startswith((".tmp-", ".trash-")))


# ---------------------------------------------------------------------------------- input files


class Marker:
    """Unpickling this calls ``open(path, "w")``: it creates ``path`` (a harmless stand-in for
    code execution).  Safe loaders must refuse it before the call."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def is_code_pickle(data: bytes) -> bool:
    """True when a pickle stream calls ``builtins.open`` (checked without unpickling it)."""
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(_payload(data))]
    names = [arg for name, arg in ops if name in ("GLOBAL", "SHORT_BINUNICODE", "BINUNICODE", "UNICODE")]
    return any("open" in str(n) for n in names) and any(name == "REDUCE" for name, _ in ops)


def _payload(data: bytes) -> bytes:
    """The pickle inside a ``.npy`` (after its header) or a torch zip checkpoint (``data.pkl``)."""
    if data.startswith(b"\x93NUMPY"):
        import io

        f = io.BytesIO(data)
        version = np.lib.format.read_magic(f)
        read = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        _, _, dtype = read(f)
        return data[f.tell() :] if dtype.hasobject else b"."
    if data.startswith(b"PK"):
        import io
        import zipfile

        with zipfile.ZipFile(io.BytesIO(data)) as z:
            name = next(n for n in z.namelist() if n.endswith("data.pkl"))
            return z.read(name)
    return data


def save_object_npy(path: Path, obj) -> None:
    """An ``np.save`` of a 1-element object array holding ``obj`` (a pickle inside a .npy)."""
    arr = np.empty(1, dtype=object)
    arr[0] = obj
    np.save(path, arr, allow_pickle=True)  # a pickle on purpose: the reader under test is the restricted one


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])


def nested_json(depth: int = 200_000) -> str:
    return "[" * depth + "]" * depth


def huge_int_json() -> str:
    return (
        '{"database": {"v": {"subset": "test", "annotations": [{"segment": [1, '
        + "9" * 5000
        + '], "label": "A"}]}}}'
    )


GOOD_VIDEOS = {  # id -> (subset, labels)
    "v_train_0": ("train", ["Jump"]),
    "v_train_1": ("train", ["Run"]),
    "v_train_2": ("train", ["Jump", "Run"]),
    "v_test_0": ("test", ["Jump"]),
    "v_test_1": ("test", ["Run"]),
}


def folder_dataset(root: Path, n: int = 8, dim: int = 4) -> Path:
    """A valid ``--from folder`` dataset: ``root/{train,test}/<vid>.npy`` + ``root/gt.json``."""
    rng = np.random.default_rng(0)
    db = {}
    for vid, (subset, labels) in GOOD_VIDEOS.items():
        (root / subset).mkdir(parents=True, exist_ok=True)
        np.save(root / subset / f"{vid}.npy", rng.normal(size=(n, dim)).astype(np.float32))
        db[vid] = {
            "subset": subset,
            "annotations": [{"segment": [0.5 + i, 2.0 + i], "label": lab} for i, lab in enumerate(labels)],
        }
    (root / "gt.json").write_text(json.dumps({"database": db}, indent=1))
    return root


def gt_of(root: Path) -> dict:
    return json.loads((root / "gt.json").read_text())


def set_gt(root: Path, gt: dict | str) -> None:
    (root / "gt.json").write_text(gt if isinstance(gt, str) else json.dumps(gt))


# ---------------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Case:
    """A bad input: ``make(world)`` prepares it and returns the command line (without
    ``--workdir``); the run must exit with ``code`` and its error line match ``says``."""

    name: str
    stage: str
    make: Callable[[World], list[str]]
    says: str
    code: int = 1
    marker: bool = False  # the input carries a Marker pickle: its file must never appear
    new_artifacts: bool = False  # a complete artifact may legitimately appear (see the case)


CASES: list[Case] = []


def case(stage: str, says: str, code: int = 1, **kw) -> Callable:
    def register(fn: Callable[[World], list[str]]) -> Callable:
        CASES.append(Case(fn.__name__.removeprefix("c_"), stage, fn, says, code, **kw))
        return fn

    return register


def marker_path(w: World) -> Path:
    return w.root / "PWNED"


# ---- extract: imports


def _folder(w: World) -> Path:
    return folder_dataset(w.inputs / "ds")


def _import(w: World, root: Path, *extra: str) -> list[str]:
    return ["extract", "--from", "folder", str(root), *extra]


@case("extract", r"truncated|corrupt")
def c_npy_truncated(w):
    root = _folder(w)
    truncate(root / "train" / "v_train_1.npy", 0.6)
    return _import(w, root)


@case("extract", r"not a readable \.npy")
def c_npy_garbage(w):
    root = _folder(w)
    (root / "train" / "v_train_1.npy").write_bytes(os.urandom(64) + b"\x93NUMPY" + os.urandom(64))
    return _import(w, root)


@case("extract", r"not a readable \.npy")
def c_npy_empty_file(w):
    root = _folder(w)
    (root / "test" / "v_test_0.npy").write_bytes(b"")
    return _import(w, root)


@case("extract", r"row \d+ holds NaN or Inf")
def c_nan_row(w):
    root = _folder(w)
    x = np.load(root / "train" / "v_train_2.npy")
    x[3, 1] = np.nan
    np.save(root / "train" / "v_train_2.npy", x)
    return _import(w, root)


@case("extract", r"row \d+ holds NaN or Inf")
def c_inf_row(w):
    root = _folder(w)
    x = np.load(root / "test" / "v_test_1.npy")
    x[0, 0] = -np.inf
    np.save(root / "test" / "v_test_1.npy", x)
    return _import(w, root)


@case("extract", r"0 snippets")
def c_zero_length_video(w):
    root = _folder(w)
    np.save(root / "train" / "v_train_0.npy", np.zeros((0, 4), np.float32))
    return _import(w, root)


@case("extract", r"must be 2-D")
def c_one_dimensional(w):
    root = _folder(w)
    np.save(root / "train" / "v_train_0.npy", np.zeros(8, np.float32))
    return _import(w, root)


@case("extract", r"must be 2-D")
def c_three_dimensional(w):
    root = _folder(w)
    np.save(root / "train" / "v_train_0.npy", np.zeros((8, 2, 2), np.float32))
    return _import(w, root)


@case("extract", r"pickled Python objects", marker=True)
def c_pickled_video_npy(w):
    root = _folder(w)
    save_object_npy(root / "train" / "v_train_0.npy", Marker(marker_path(w)))
    return _import(w, root)


@case("extract", r"not numeric")
def c_string_dtype(w):
    root = _folder(w)
    np.save(root / "train" / "v_train_0.npy", np.full((8, 4), "x"))
    return _import(w, root)


@case("extract", r"dim 3")
def c_dims_differ(w):
    root = _folder(w)
    np.save(root / "test" / "v_test_1.npy", np.zeros((8, 3), np.float32))
    return _import(w, root)


@case("extract", r"duplicate video id 'v_train_1'")
def c_duplicate_video_id(w):
    root = _folder(w)
    shutil.copyfile(root / "train" / "v_train_1.npy", root / "test" / "v_train_1.npy")
    return _import(w, root)


@case("extract", r"unsafe video id 'bad id'")
def c_video_id_with_space(w):
    root = _folder(w)
    np.save(root / "train" / "bad id.npy", np.zeros((8, 4), np.float32))
    return _import(w, root)


@case("extract", r"unsafe video id '\.\.hidden'")
def c_video_id_dotdot(w):
    root = _folder(w)
    np.save(root / "train" / "..hidden.npy", np.zeros((8, 4), np.float32))
    return _import(w, root)


@case("extract", r"\.\./\.\./etc/passwd")
def c_gt_video_id_path_separator(w):
    root = _folder(w)
    gt = gt_of(root)
    gt["database"]["../../etc/passwd"] = {
        "subset": "train",
        "annotations": [{"segment": [0, 1], "label": "Jump"}],
    }
    set_gt(root, gt)
    return _import(w, root)


@case("extract", r"not valid JSON")
def c_gt_truncated_json(w):
    root = _folder(w)
    truncate(root / "gt.json", 0.5)
    return _import(w, root)


@case("extract", r"JSON|digits|too")
def c_gt_huge_integer(w):
    root = _folder(w)
    set_gt(root, huge_int_json())
    return _import(w, root)


@case("extract", r"JSON|nest|deep")
def c_gt_deeply_nested(w):
    root = _folder(w)
    set_gt(root, '{"database": ' + nested_json() + "}")
    return _import(w, root)


@case("extract", r"not numeric|number")
def c_gt_overflowing_number(w):
    root = _folder(w)
    gt = gt_of(root)
    gt["database"]["v_train_0"]["annotations"][0]["segment"] = [0.5, 10**400]
    set_gt(root, gt)
    return _import(w, root)


@case("extract", r"negative, reversed")
def c_gt_start_after_end(w):
    root = _folder(w)
    gt = gt_of(root)
    gt["database"]["v_train_1"]["annotations"][0]["segment"] = [3.0, 1.0]
    set_gt(root, gt)
    return _import(w, root)


@case("extract", r"negative, reversed")
def c_gt_negative_time(w):
    root = _folder(w)
    gt = gt_of(root)
    gt["database"]["v_test_0"]["annotations"][0]["segment"] = [-2.0, 1.0]
    set_gt(root, gt)
    return _import(w, root)


@case("extract", r"duplicate key 'v_train_0'")
def c_gt_duplicate_video(w):
    root = _folder(w)
    text = (root / "gt.json").read_text()
    entry = json.dumps(gt_of(root)["database"]["v_train_0"])
    set_gt(root, text.replace('"database": {', '"database": {"v_train_0": ' + entry + ", ", 1))
    return _import(w, root)


@case("extract", r"no 'database' object")
def c_gt_not_an_object(w):
    root = _folder(w)
    set_gt(root, "[1, 2, 3]")
    return _import(w, root)


@case("extract", r"no 'subset' string")
def c_gt_entry_without_subset(w):
    root = _folder(w)
    gt = gt_of(root)
    del gt["database"]["v_test_1"]["subset"]
    set_gt(root, gt)
    return _import(w, root)


@case("extract", r"lacks a label")
def c_gt_annotation_without_label(w):
    root = _folder(w)
    gt = gt_of(root)
    gt["database"]["v_test_1"]["annotations"][0]["label"] = ""
    set_gt(root, gt)
    return _import(w, root)


@case("extract", r"label 'Jump' .* not in the class list")
def c_unknown_class_name(w):
    root = _folder(w)
    (w.inputs / "classes.txt").write_text("Run\nSwim\n")
    return _import(w, root, "--classes", str(w.inputs / "classes.txt"))


@case("extract", r"listed twice")
def c_class_list_duplicate(w):
    root = _folder(w)
    (w.inputs / "classes.txt").write_text("Jump\nRun\nJump\n")
    return _import(w, root, "--classes", str(w.inputs / "classes.txt"))


@case("extract", r"line 1 has 2 fields")
def c_thumos_txt_malformed(w):
    root = _folder(w)
    ann = w.inputs / "ann"
    ann.mkdir()
    (ann / "Jump_val.txt").write_text("v_train_0 1.0\n")
    return _import(w, root, "--annotations", str(ann))


@case("extract", r"refusing to unpickle (builtins|io)\.open", marker=True)
def c_wtalc_code_pickle(w):
    root = w.inputs / "wtalc"
    ann = root / "Thumos14reduced-Annotations"
    ann.mkdir(parents=True)
    save_object_npy(root / "Thumos14reduced-I3D-JOINTFeatures.npy", np.zeros((2, 4), np.float32))
    save_object_npy(ann / "videoname.npy", Marker(marker_path(w)))
    for name in ("subset", "segments", "labels", "classlist"):
        save_object_npy(ann / f"{name}.npy", "x")
    return ["extract", "--from", "wtalc", str(root)]


@case("extract", r"input folder not found")
def c_missing_input_folder(w):
    return ["extract", "--from", "basnet", str(w.inputs / "nowhere")]


@case("extract", r"no feature files found")
def c_empty_input_folder(w):
    root = w.inputs / "empty"
    root.mkdir()
    (root / "gt.json").write_text(json.dumps({"database": {}}))
    return _import(w, root)


@case("extract", r"has no flow features")
def c_basnet_stream_missing(w):
    root = w.inputs / "bas"
    for stream in ("rgb", "flow"):
        (root / "features" / "train" / stream).mkdir(parents=True)
    np.save(root / "features" / "train" / "rgb" / "v1.npy", np.zeros((4, 2), np.float32))
    (root / "gt.json").write_text(
        json.dumps({"database": {"v1": {"subset": "validation", "annotations": []}}})
    )
    return ["extract", "--from", "basnet", str(root)]


@case("extract", r"'float64' is not one of 'float32', 'float16'", code=2)
def c_bad_dtype(w):
    return ["extract", "--from", "synthetic", "--preset", "tiny", "--dtype", "float64"]


@case("extract", r"'huge' is not one of 'tiny', 'small'", code=2)
def c_bad_preset(w):
    return ["extract", "--from", "synthetic", "--preset", "huge"]


@case("extract", r"--from", code=2)
def c_bad_source(w):
    return ["extract", "--from", "youtube"]


@case("extract", r"needs the input folder", code=2)
def c_import_without_folder(w):
    return ["extract", "--from", "folder"]


@case("extract", r"time grid", code=2)
def c_zero_fps(w):
    return _import(w, _folder(w), "--fps", "0")


# ---- baseline


def _empty_workdir(w: World) -> None:
    shutil.rmtree(w.wd)
    w.wd.mkdir()


@case("baseline", r"no features artifact .*wtal extract --from synthetic")
def c_baseline_no_features(w):
    _empty_workdir(w)
    return ["baseline", "--device", "cpu"]


@case("baseline", r"is a tcas artifact, expected features")
def c_baseline_wrong_kind(w):
    return ["baseline", "--features", w.ids["tcas"], "--device", "cpu"]


@case("baseline", r"no artifact 'features-000000'")
def c_baseline_unknown_id(w):
    return ["baseline", "--features", "features-000000", "--device", "cpu"]


def _baseline(w: World, *extra: str, iterations: int = 3) -> list[str]:
    """A baseline run that is not skipped (the world's model was trained for 2 iterations)."""
    return [
        "baseline",
        "--features",
        w.ids["features"],
        "--device",
        "cpu",
        "--iterations",
        str(iterations),
        *extra,
    ]


@case("baseline", r"features\.npy.*(truncated|corrupt)")
def c_features_npy_truncated(w):
    truncate(w.art("features") / "features.npy", 0.7)
    return _baseline(w)


@case("baseline", r"pickled objects", marker=True)
def c_features_npy_pickled(w):
    save_object_npy(w.art("features") / "features.npy", Marker(marker_path(w)))
    return _baseline(w)


@case("baseline", r"has \d+ rows but videos\.parquet counts")
def c_features_rows_mismatch(w):
    x = np.load(w.art("features") / "features.npy")
    np.save(w.art("features") / "features.npy", x[:-5])
    return _baseline(w)


@case("baseline", r"features row \d+ holds NaN")
def c_features_nan_in_artifact(w):
    path = w.art("features") / "features.npy"
    x = np.load(path)
    x[7, 2] = np.nan
    np.save(path, x)
    return _baseline(w)


@case("baseline", r"corrupt manifest")
def c_damaged_manifest(w):
    truncate(w.art("features") / "manifest.json", 0.5)
    return _baseline(w)


@case("baseline", r"manifest lacks kind")
def c_manifest_without_kind(w):
    path = w.art("features") / "manifest.json"
    m = json.loads(path.read_text())
    del m["kind"]
    path.write_text(json.dumps(m))
    return _baseline(w)


@case("baseline", r"unreadable videos table")
def c_videos_parquet_garbage(w):
    (w.art("features") / "videos.parquet").write_bytes(b"PAR1 not really parquet")
    return _baseline(w)


@case("baseline", r"malformed class list")
def c_classes_json_malformed(w):
    (w.art("features") / "classes.json").write_text('{"a": 1}')
    return _baseline(w)


@case("baseline", r"class list not found")
def c_classes_json_missing(w):
    (w.art("features") / "classes.json").unlink()
    return _baseline(w)


@case("baseline", r"iterations=0 must be a positive integer")
def c_zero_iterations(w):
    return ["baseline", "--features", w.ids["features"], "--device", "cpu", "--iterations", "0"]


@case("baseline", r"--iterations", code=2)
def c_iterations_not_a_number(w):
    return ["baseline", "--iterations", "many"]


@case("baseline", r"batch_size=-1")
def c_negative_batch_size(w):
    return _baseline(w, "--batch-size", "-1")


@case("baseline", r"learning rate")
def c_zero_lr(w):
    return _baseline(w, "--lr", "0")


@case("baseline", r"--holdout 1\.5")
def c_holdout_out_of_range(w):
    return _baseline(w, "--holdout", "1.5")


@case("baseline", r"unknown device 'gpu0'")
def c_bad_device(w):
    return ["baseline", "--features", w.ids["features"], "--device", "gpu0", "--iterations", "3"]


@case("baseline", r"'giant' is not one of 'auto', 'tiny'", code=2)
def c_bad_model_preset(w):
    return _baseline(w, "--preset", "giant")


@case("baseline", r"'fp8' is not one of 'none', 'bf16'", code=2)
def c_bad_amp(w):
    return _baseline(w, "--amp", "fp8")


@case("baseline", r"seed -1")
def c_negative_seed(w):
    return _baseline(w, "--seed", "-1")


@case("baseline", r"unreadable training checkpoint", marker=True)
def c_resume_code_checkpoint(w):
    """A planted scratch checkpoint of the very run being resumed holds a code pickle."""
    import torch

    work = w.wd / ".work" / w.ids["model"]
    work.mkdir(parents=True)
    torch.save({"format": "x", "model": Marker(marker_path(w))}, work / "checkpoint.pt")
    for name in ("model", "tcas"):  # so that the run is not skipped
        shutil.rmtree(w.art(name))
    return _baseline(w, iterations=2)


# ---- pseudolabel


@case("pseudolabel", r"no tcas artifact .*wtal baseline")
def c_pseudolabel_no_tcas(w):
    _empty_workdir(w)
    return ["pseudolabel"]


@case("pseudolabel", r"'median!' is not one of 'mean'", code=2)
def c_bad_rule(w):
    return ["pseudolabel", "--tcas", w.ids["tcas"], "--rule", "median!"]


@case("pseudolabel", r"cas\.npy.*(truncated|corrupt)")
def c_cas_truncated(w):
    truncate(w.art("tcas") / "cas.npy", 0.5)
    return ["pseudolabel", "--tcas", w.ids["tcas"], "--force"]


@case("pseudolabel", r"do not match")
def c_cas_wrong_shape(w):
    path = w.art("tcas") / "cas.npy"
    np.save(path, np.load(path)[:, :-1])
    return ["pseudolabel", "--tcas", w.ids["tcas"], "--force"]


@case("pseudolabel", r"non-finite|NaN")
def c_cas_nan(w):
    path = w.art("tcas") / "cas.npy"
    x = np.load(path)
    videos = pd.read_parquet(w.art("tcas") / "videos.parquet")
    first = videos[videos["subset"] == "train"].iloc[0]  # a video pseudolabel reads (not a held-out one)
    x[int(first["offset"]) + 3] = np.nan
    np.save(path, x)
    return ["pseudolabel", "--tcas", w.ids["tcas"], "--force"]


@case("pseudolabel", r"missing video scores file")
def c_scores_missing(w):
    (w.art("tcas") / "scores.npy").unlink()
    return ["pseudolabel", "--tcas", w.ids["tcas"], "--force"]


@case("pseudolabel", r"is a model artifact, expected tcas")
def c_pseudolabel_wrong_kind(w):
    return ["pseudolabel", "--tcas", w.ids["model"]]


# ---- denoise


def _denoise(w: World, *extra: str) -> list[str]:
    return [
        "denoise",
        "--pseudolabels",
        w.ids["pseudolabels"],
        "--device",
        "cpu",
        "--iterations",
        "2",
        *extra,
    ]


@case("denoise", r"no pseudolabels artifact .*wtal pseudolabel")
def c_denoise_no_pseudolabels(w):
    for name in ("pseudolabels", "pseudolabels_b", "confidence"):
        shutil.rmtree(w.art(name))
    return ["denoise", "--device", "cpu"]


@case("denoise", r"--clusters 0")
def c_zero_clusters(w):
    return _denoise(w, "--clusters", "0")


@case("denoise", r"exceeds the \d+ training snippets")
def c_too_many_clusters(w):
    return _denoise(w, "--clusters", "1000000")


@case("denoise", r"--clusters", code=2)
def c_clusters_not_a_number(w):
    return ["denoise", "--clusters", "lots"]


@case("denoise", r"do not belong together: .*model")
def c_pseudolabels_of_another_model(w):
    return _denoise(w, "--clusters", "4", "--model", w.ids["model_b"])


@case("denoise", r"do not belong together: .*features")
def c_embeddings_of_another_feature_set(w):
    return _denoise(w, "--clusters", "4", "--model", w.ids["model_c"])


@case("denoise", r"embeddings hold NaN")
def c_embeddings_nan(w):
    path = w.art("model") / "embeddings.npy"
    h = np.load(path)
    h[5] = np.nan
    np.save(path, h)
    return _denoise(w, "--clusters", "4", "--force")


@case("denoise", r"model .* is gone")
def c_model_of_pseudolabels_gone(w):
    shutil.rmtree(w.art("model"))
    return _denoise(w, "--clusters", "4")


@case("denoise", r"'sklearn' is not one of 'auto', 'torch', 'faiss'", code=2)
def c_bad_backend(w):
    return _denoise(w, "--clusters", "4", "--backend", "sklearn")


@case("denoise", r"'kmeans\|\|' is not one of 'k-means\+\+', 'random'", code=2)
def c_bad_init(w):
    return _denoise(w, "--clusters", "4", "--init", "kmeans||")


@case("denoise", r"pickled objects", marker=True)
def c_pseudolabels_pickled(w):
    save_object_npy(w.art("pseudolabels") / "labels.npy", Marker(marker_path(w)))
    return _denoise(w, "--clusters", "4", "--force")


# ---- train-dcc


def _dcc(w: World, *extra: str) -> list[str]:
    return [
        "train-dcc",
        "--model",
        w.ids["model"],
        "--pseudolabels",
        w.ids["pseudolabels"],
        "--confidence",
        w.ids["confidence"],
        "--device",
        "cpu",
        "--iterations",
        "2",
        "--refresh-every",
        "0",
        *extra,
    ]


@case("train-dcc", r"no confidence artifact .*wtal denoise")
def c_dcc_no_confidence(w):
    shutil.rmtree(w.art("confidence"))
    return ["train-dcc", "--model", w.ids["model"], "--device", "cpu", "--iterations", "2"]


@case("train-dcc", r"do not belong together|was computed from")
def c_dcc_pseudolabels_of_another_model(w):
    args = _dcc(w)
    args[args.index("--pseudolabels") + 1] = w.ids["pseudolabels_b"]
    return args


@case("train-dcc", r"unreadable training checkpoint", marker=True)
def c_dcc_code_checkpoint(w):
    import torch

    torch.save({"format": "x", "model": Marker(marker_path(w))}, w.art("model") / "checkpoint.pt")
    return _dcc(w)


@case("train-dcc", r"unreadable training checkpoint")
def c_dcc_truncated_checkpoint(w):
    truncate(w.art("model") / "checkpoint.pt", 0.5)
    return _dcc(w)


@case("train-dcc", r"--tau 0")
def c_zero_tau(w):
    return _dcc(w, "--tau", "0")


@case("train-dcc", r"--contrast-scope", code=2)
def c_bad_scope(w):
    return _dcc(w, "--contrast-scope", "galaxy")


@case("train-dcc", r"'zigzag' is not one of 'constant', 'linear', 'exp'", code=2)
def c_bad_beta_shape(w):
    return _dcc(w, "--beta-shape", "zigzag")


@case("train-dcc", r"beta")
def c_nonpositive_exp_beta(w):
    return _dcc(w, "--beta-start", "0")


@case("train-dcc", r"'pretrained' is not one of 'baseline', 'scratch'", code=2)
def c_bad_dcc_init(w):
    return _dcc(w, "--init", "pretrained")


@case("train-dcc", r"--regions")
def c_zero_regions(w):
    return _dcc(w, "--regions", "0")


# ---- localize


def _localize(w: World, *extra: str) -> list[str]:
    return ["localize", "--tcas", w.ids["tcas"], *extra]


@case("localize", r"no tcas artifact .*wtal baseline")
def c_localize_no_tcas(w):
    _empty_workdir(w)
    return ["localize"]


@case("localize", r"cannot read activation thresholds 'abc'")
def c_threshold_not_a_number(w):
    return _localize(w, "--threshold", "abc")


@case("localize", r"empty threshold range")
def c_threshold_zero_step(w):
    return _localize(w, "--threshold", "0:1:0")


@case("localize", r"invalid activation thresholds")
def c_threshold_out_of_range(w):
    return _localize(w, "--threshold", "2")


@case("localize", r"threshold")
def c_threshold_huge_range(w):
    return _localize(w, "--threshold", "0:1:1e-13")


@case("localize", r"'dev' is not one of 'test', 'val', 'train', 'all'", code=2)
def c_bad_subset(w):
    return _localize(w, "--subset", "dev")


@case("localize", r"nms_tiou=0\.0")
def c_zero_nms(w):
    return _localize(w, "--nms", "0")


@case("localize", r"upsample=0")
def c_zero_upsample(w):
    return _localize(w, "--upsample", "0")


@case("localize", r"cannot write", new_artifacts=True)
def c_out_in_missing_folder(w):
    """The proposals artifact is complete before ``--out`` is written; only the copy fails."""
    return _localize(w, "--out", str(w.inputs / "no" / "such" / "p.json"))


# ---- evaluate


def _bad_predictions(w: World, text: str) -> list[str]:
    path = w.inputs / "bad.json"
    path.write_text(text)
    return ["evaluate", str(path)]


def _predictions_with(w: World, edit: Callable[[dict], None]) -> list[str]:
    data = json.loads((w.inputs / "proposals.json").read_text())
    edit(data)
    return _bad_predictions(w, json.dumps(data))


def _first(data: dict) -> dict:
    return next(p for items in data["results"].values() for p in items)


@case("evaluate", r"no proposals artifact .*wtal localize")
def c_evaluate_no_proposals(w):
    shutil.rmtree(w.art("proposals"))
    return ["evaluate"]


@case("evaluate", r"not valid JSON")
def c_predictions_truncated(w):
    return _bad_predictions(w, (w.inputs / "proposals.json").read_text()[:100])


@case("evaluate", r"JSON|digits|too")
def c_predictions_huge_integer(w):
    return _bad_predictions(
        w, '{"results": {"v": [{"label": "A", "score": ' + "7" * 5000 + ', "segment": [1, 2]}]}}'
    )


@case("evaluate", r"JSON|nest|deep")
def c_predictions_deeply_nested(w):
    return _bad_predictions(w, '{"results": ' + nested_json() + "}")


@case("evaluate", r"no 'results' object")
def c_predictions_not_an_object(w):
    return _bad_predictions(w, '"results"')


@case("evaluate", r"score '0\.9' is not a number")
def c_predictions_string_score(w):
    return _predictions_with(w, lambda d: _first(d).update(score="0.9"))


@case("evaluate", r"non-finite")
def c_predictions_nan_score(w):
    return _predictions_with(w, lambda d: _first(d).update(score=float("nan")))


@case("evaluate", r"not a number|overflow|finite")
def c_predictions_overflowing_bound(w):
    return _predictions_with(w, lambda d: _first(d).update(segment=[1, 10**400]))


@case("evaluate", r"--unknown-labels|unknown")
def c_predictions_unknown_class(w):
    return _predictions_with(w, lambda d: _first(d).update(label="Juggling"))


@case("evaluate", r"ground-truth file not found")
def c_gt_missing(w):
    return ["evaluate", str(w.inputs / "proposals.json"), "--gt", str(w.inputs / "nope.json")]


@case("evaluate", r"not valid JSON")
def c_gt_json_malformed(w):
    truncate(w.inputs / "gt.json", 0.3)
    return [
        "evaluate",
        str(w.inputs / "proposals.json"),
        "--gt",
        str(w.inputs / "gt.json"),
        "--subset",
        "validation",
    ]


@case("evaluate", r"start.*end|reversed")
def c_gt_json_start_after_end(w):
    gt = json.loads((w.inputs / "gt.json").read_text())
    entry = next(v for v in gt["database"].values() if v["annotations"] and v["subset"] == "validation")
    entry["annotations"][0]["segment"] = [50.0, 10.0]
    (w.inputs / "gt.json").write_text(json.dumps(gt))
    return [
        "evaluate",
        str(w.inputs / "proposals.json"),
        "--gt",
        str(w.inputs / "gt.json"),
        "--subset",
        "validation",
    ]


@case("evaluate", r"duration")
def c_gt_json_overflowing_duration(w):
    gt = json.loads((w.inputs / "gt.json").read_text())
    next(v for v in gt["database"].values() if v["subset"] == "validation")["duration"] = 10**400
    (w.inputs / "gt.json").write_text(json.dumps(gt))
    return [
        "evaluate",
        str(w.inputs / "proposals.json"),
        "--gt",
        str(w.inputs / "gt.json"),
        "--subset",
        "validation",
    ]


@case("evaluate", r"no video of subset 'testing'")
def c_gt_json_subset_absent(w):
    return [
        "evaluate",
        str(w.inputs / "proposals.json"),
        "--gt",
        str(w.inputs / "gt.json"),
        "--subset",
        "testing",
    ]


@case("evaluate", r"cannot read tIoU thresholds")
def c_bad_tiou(w):
    return ["evaluate", str(w.inputs / "proposals.json"), "--tiou", "strict"]


@case("evaluate", r"invalid tIoU thresholds")
def c_tiou_out_of_range(w):
    return ["evaluate", str(w.inputs / "proposals.json"), "--tiou", "0.5,1.5"]


@case("evaluate", r"tIoU|range")
def c_tiou_huge_range(w):
    return ["evaluate", str(w.inputs / "proposals.json"), "--tiou", "0.1:0.9:1e-13"]


@case("evaluate", r"--protocol", code=2)
def c_bad_protocol(w):
    return ["evaluate", str(w.inputs / "proposals.json"), "--protocol", "mine"]


@case("evaluate", r"'random' is not one of 'reference', 'stable'", code=2)
def c_bad_ties(w):
    return ["evaluate", str(w.inputs / "proposals.json"), "--ties", "random"]


@case("evaluate", r"not an artifact")
def c_predictions_folder_not_artifact(w):
    (w.inputs / "somedir").mkdir()
    return ["evaluate", str(w.inputs / "somedir")]


# ---- show


@case("show", r"no artifact 'model-ffffff'")
def c_show_unknown(w):
    return ["show", "model-ffffff"]


@case("show", r"corrupt manifest")
def c_show_damaged_manifest(w):
    (w.art("tcas") / "manifest.json").write_text("{")
    return ["show", str(w.art("tcas"))]
