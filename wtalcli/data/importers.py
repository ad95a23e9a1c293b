"""Importers for feature sets in the layouts the field ships (docs/formats.md).

Each ``import_*`` function inspects a source folder (reading only ``.npy`` headers where it can)
and returns an :class:`ImportPlan`: the videos table, the annotations, the class list, warnings,
what could not be matched, provenance for the manifest, and a callable that streams each video's
``(n_snippets, D)`` feature array in row order, ready for :func:`wtalcli.data.schema.write_feature_set`.

Policies (the same for every layout):

- Subsets: the source's own name is kept in ``source_subset``; the mapping to ``train``/``test``
  is detected from the names present (:func:`subset_map_for`) or given explicitly.
  THUMOS14 ``validation`` -> ``train``, ``test`` -> ``test``; ActivityNet ``training`` -> ``train``,
  ``validation`` -> ``test``, ``testing`` -> not imported (no labels).
- Video-level labels: the set of the video's annotation labels (what BaS-Net trains with).
- Classes: an explicit class list if given (a label outside it is an error); else the source's own
  list where it has one (W-TALC ``classlist.npy``); else the sorted union of all labels in the
  ground-truth file (for THUMOS14 that is BaS-Net's and W-TALC's alphabetical order).
- Rows are ordered train first, then test, each by video id (independent of directory listing).
- ``fps``/``stride``/``clip_len`` of every row come from the time grid (the *feature* rate, from
  the options); a source's own video fps is kept in the extra column ``source_fps``.  ``duration_s``
  is the source's duration where it gives one, else the span of the snippets on the grid.
- Unmatched videos are listed in ``plan.unmatched`` and never dropped silently:

  ``features_without_gt``        features but no labelled ground-truth entry: left out with a
                                  warning (``keep_unlabeled=True`` imports them with no labels);
  ``gt_without_features``        ground truth but no features: an **error** (the evaluation would
                                  silently shrink); ``allow_missing=True`` makes it a warning;
  ``listed_without_features``    named in a split file, no features (same policy as above);
  ``features_not_in_split``      feature files a split file does not list: left out, warning;
  ``gt_not_in_split``            ground-truth videos a split file does not list: left out, warning.

- Ground truth (``gt.json``, ``--gt``, ``--annotations``) is read by :mod:`wtalcli.data.annotations`,
  the readers ``wtal evaluate`` uses too, under one strict rule set; a packaged name (``thumos14``,
  ``anet13``, ``anet12``: :mod:`wtalcli.data.named_gt`) stands wherever a ground-truth path does.
  W-TALC's numpy arrays are read here, with the same number and segment rules.
- Bad input (NaN/Inf rows, empty videos, duplicate or unsafe ids, pickled per-video arrays,
  unknown classes, reversed segments) raises :class:`~wtalcli.core.errors.InputError` naming the file.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wtalcli.core.errors import InputError
from wtalcli.core.files import file_record
from wtalcli.data import named_gt
from wtalcli.data.annotations import (
    AMBIGUOUS,
    AnnotationSet,
    check_segment,
    parse_number,
    read_class_list,
    read_segment_lines,
)
from wtalcli.data.schema import (
    ANNOTATION_COLUMNS,
    SUBSETS,
    check_finite_rows,
    check_video_id,
    load_npy,
    validate_annotations,
    write_feature_set,
)
from wtalcli.data.timegrid import TimeGrid
from wtalcli.data.unpickle import read_npy_header, safe_load_object_npy

STREAMS = ("both", "rgb", "flow")
__all__ = [  # read_class_list and AMBIGUOUS are re-exported from wtalcli.data.annotations
    "AMBIGUOUS",
    "ImportPlan",
    "import_basnet",
    "import_folder",
    "import_wtalc",
    "override_annotations",
    "read_class_list",
    "subset_map_for",
]
_EXAMPLES = 3  # how many ids a one-line message names

# ---------------------------------------------------------------------------------- the plan


def _empty_annotations() -> pd.DataFrame:
    return pd.DataFrame(
        {c: pd.Series(dtype=float if c.endswith("_s") else object) for c in ANNOTATION_COLUMNS}
    )


@dataclass
class ImportPlan:
    """Everything an import found; nothing heavy is loaded until :meth:`iter_features` runs."""

    videos: pd.DataFrame  # VIDEO_COLUMNS (without offset) + source_fps
    feature_fn: Callable[[], Iterator[np.ndarray]]  # a fresh per-video iterator, in row order
    annotations: pd.DataFrame  # video_id, label, start_s, end_s
    classes: list[str]
    dim: int
    warnings: list[str] = field(default_factory=list)
    unmatched: dict[str, list[str]] = field(default_factory=dict)
    source_info: dict[str, Any] = field(default_factory=dict)
    ambiguous: pd.DataFrame = field(default_factory=_empty_annotations)  # video_id, label, start_s, end_s

    def iter_features(self) -> Iterator[np.ndarray]:
        """Yield each video's ``(n_snippets, dim)`` float32 array, in the order of ``videos``."""
        return self.feature_fn()

    def write(self, out_dir: Path, dtype: str = "float32") -> None:
        """Stream the plan into a feature-set directory (see :func:`schema.write_feature_set`)."""
        write_feature_set(
            out_dir,
            self.videos,
            self.iter_features(),
            self.classes,
            self.annotations,
            dtype=dtype,
            source=self.source_info.get("root", "input"),
        )


@dataclass
class _Feat:
    """One video's features as found on disk: ``load()`` returns ``(n, dim)`` float32."""

    video_id: str
    folder_subset: str | None
    folder_name: str | None
    n: int
    dim: int
    load: Callable[[], np.ndarray]
    where: Path


@dataclass
class _Gt:
    """One video's ground-truth entry."""

    source_subset: str
    annotations: list[tuple[str, float, float]]
    duration: float | None = None
    fps: float | None = None


# ---------------------------------------------------------------------------------- small helpers


def _examples(ids: list[str]) -> str:
    shown = ", ".join(ids[:_EXAMPLES])
    return shown + (f" and {len(ids) - _EXAMPLES} more" if len(ids) > _EXAMPLES else "")


def _number(value: Any, what: str, path: Path) -> float:
    """:func:`~wtalcli.data.annotations.parse_number` of a value that may be a numpy scalar."""
    return parse_number(value.item() if isinstance(value, np.generic) else value, what, path)


def subset_map_for(names: set[str], override: dict[str, str] | None = None) -> dict[str, str | None]:
    """Map a source's subset names to ``train``/``test`` (``None``: not imported, e.g. unlabeled).

    THUMOS14 (``validation``/``test``): validation -> train, test -> test.  ActivityNet
    (``training``/``validation``/``testing``): training -> train, validation -> test, testing ->
    None.  ``train``/``test``: as they are.  Names are compared ignoring case (ActionFormer writes
    ``Validation``/``Test``).  Anything else needs ``override``.
    """
    if override:
        bad = {v for v in override.values() if v is not None and v not in SUBSETS}
        if bad:
            raise InputError(f"subset map targets {sorted(bad)} are not in {SUBSETS}", "map to train or test")
        return {name: override.get(name) for name in names}
    lower = {n.lower() for n in names}
    known: dict[str, str | None] | None = None
    if lower <= set(SUBSETS):
        known = {n: n for n in SUBSETS}
    elif "training" in lower and lower <= {"training", "validation", "testing"}:
        known = {"training": "train", "validation": "test", "testing": None}
    elif lower <= {"validation", "test", "testing"}:
        known = {"validation": "train", "test": "test", "testing": "test"}
    if known is not None:
        return {n: known[n.lower()] for n in sorted(names)}
    raise InputError(
        f"cannot tell which of the subsets {sorted(names)} are for training and which for testing",
        "pass a subset map, e.g. validation=train,test=test",
    )


def _gt_entries(aset: AnnotationSet) -> dict[str, _Gt]:
    """Each video of an annotation source with its class instances (source order)."""
    gt = {vid: _Gt(info.subset, [], info.duration, info.fps) for vid, info in aset.videos.items()}
    inst = aset.instances()
    for vid, label, s, e in zip(
        inst["video_id"], inst["label"], inst["start_s"].tolist(), inst["end_s"].tolist(), strict=True
    ):
        gt[vid].annotations.append((label, s, e))
    return gt


def _ambiguous_rows(aset: AnnotationSet, videos: set[str]) -> pd.DataFrame:
    amb = aset.ambiguous()
    amb = amb[amb["video_id"].isin(videos)]
    return amb[list(ANNOTATION_COLUMNS)].reset_index(drop=True) if len(amb) else _empty_annotations()


# ---------------------------------------------------------------------------------- features on disk


def _feature_header(path: Path) -> tuple[int, int]:
    """``(n_snippets, dim)`` of a per-video feature file, from its header only."""
    header = read_npy_header(path)
    if header.dtype.hasobject:
        raise InputError(
            "holds pickled Python objects (an object array); per-video features are never unpickled",
            "re-save it as a numeric array: np.save(path, np.asarray(x, dtype=np.float32))",
            path=path,
        )
    if header.dtype.kind not in "fiu":
        raise InputError(f"has dtype {header.dtype}, not numeric", "save features as float32", path=path)
    if len(header.shape) != 2:
        raise InputError(
            f"has shape {header.shape}; features must be 2-D (snippets x dim)",
            "save one (T, D) array per video",
            path=path,
        )
    n, d = header.shape
    if n == 0:
        raise InputError(
            "has 0 snippets (an empty video)", "re-extract the video or delete its file", path=path
        )
    if d == 0:
        raise InputError("has feature dimension 0", "re-extract the features", path=path)
    return int(n), int(d)


def _load_rows(path: Path, n: int) -> np.ndarray:
    x = load_npy(path, "features", mmap=True)
    out = np.array(x[:n], dtype=np.float32)
    del x
    check_finite_rows(out, path)
    return out


def _load_streams(paths: tuple[Path, ...], n: int) -> np.ndarray:
    parts = [_load_rows(p, n) for p in paths]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def _in_memory(array: np.ndarray, source: Path, what: str) -> np.ndarray:
    out = np.asarray(array, dtype=np.float32)
    check_finite_rows(out, source, what=what)
    return out


def _stems(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.glob("*.npy"))} if folder.is_dir() else {}


def _add_feat(feats: dict[str, _Feat], feat: _Feat) -> None:
    check_video_id(feat.video_id, feat.where)
    if feat.video_id in feats:
        raise InputError(
            f"duplicate video id {feat.video_id!r} (also in {feats[feat.video_id].where})",
            "keep each video's features in one place only",
            path=feat.where,
        )
    feats[feat.video_id] = feat


def _read_split(path: Path) -> list[str]:
    ids: list[str] = []
    seen: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        vid = line.strip()
        if not vid:
            continue
        check_video_id(vid, path)
        if vid in seen:
            raise InputError(f"video {vid!r} is listed twice", "list each video once", path=path)
        seen.add(vid)
        ids.append(vid)
    return ids


# ---------------------------------------------------------------------------------- assembling


def _resolve_classes(gt: dict[str, _Gt], classes: list[str] | None, gt_path: Path) -> list[str]:
    labels = {lab for g in gt.values() for lab, _, _ in g.annotations}
    if classes is None:
        return sorted(labels)
    if len(set(classes)) != len(classes):
        raise InputError("the class list names a class twice", "list each class once")
    unknown = sorted(labels - set(classes))
    if unknown:
        vid = next(v for v, g in gt.items() if any(lab == unknown[0] for lab, _, _ in g.annotations))
        raise InputError(
            f"label {unknown[0]!r} (e.g. in {vid!r}) is not in the class list ({len(unknown)} unknown labels)",
            "fix the label or pass a class list that contains it",
            path=gt_path,
        )
    return list(classes)


def _assemble(
    fmt: str,
    root: Path,
    feats: dict[str, _Feat],
    gt: dict[str, _Gt],
    gt_path: Path,
    grid: TimeGrid,
    classes: list[str] | None,
    smap: dict[str, str | None],
    selection: dict[str, list[str]] | None,
    allow_missing: bool,
    keep_unlabeled: bool,
    warnings: list[str],
    source_info: dict[str, Any],
) -> ImportPlan:
    classes = _resolve_classes(gt, classes, gt_path)
    unmatched: dict[str, list[str]] = {
        "features_without_gt": [],
        "gt_without_features": [],
        "listed_without_features": [],
        "features_not_in_split": [],
        "gt_not_in_split": [],
    }

    def labelled(vid: str) -> _Gt | None:
        g = gt.get(vid)
        return g if g is not None and smap.get(g.source_subset) is not None else None

    if selection is not None:
        candidates = [(vid, subset) for subset, ids in selection.items() for vid in ids]
        chosen = {vid for vid, _ in candidates}
        unmatched["features_not_in_split"] = sorted(set(feats) - chosen)
        unmatched["gt_not_in_split"] = sorted(v for v in gt if labelled(v) is not None and v not in chosen)
    else:
        ids = set(feats) | {v for v in gt if labelled(v) is not None}
        candidates = [(vid, None) for vid in sorted(ids)]

    rows: list[dict[str, Any]] = []
    for vid, hint in candidates:
        f, g = feats.get(vid), labelled(vid)
        if f is not None and g is not None:
            subset = smap[g.source_subset]
            for other, what in (
                (f.folder_subset, f"its feature folder {f.folder_name!r}"),
                (hint, "its split file"),
            ):
                if other is not None and other != subset:
                    raise InputError(
                        f"video {vid!r} is in subset {g.source_subset!r} ({subset}) in the ground truth "
                        f"but {what} says {other}",
                        "move the file or fix the ground truth",
                        path=f.where,
                    )
            rows.append(_row(vid, subset, g.source_subset, f, g, grid))
        elif f is not None:
            unmatched["features_without_gt"].append(vid)
            if keep_unlabeled:
                subset = f.folder_subset or hint
                if subset is None:
                    raise InputError(
                        f"video {vid!r} has no ground-truth entry and its folder does not name a subset",
                        "put it under train/ or test/, or add it to the ground truth",
                        path=f.where,
                    )
                rows.append(_row(vid, subset, f.folder_name or subset, f, None, grid))
        elif g is not None:
            unmatched["gt_without_features"].append(vid)
        else:
            unmatched["listed_without_features"].append(vid)

    missing = unmatched["gt_without_features"] + unmatched["listed_without_features"]
    if missing:
        msg = (
            f"{len(missing)} videos have ground truth or a split entry but no features: {_examples(missing)}"
        )
        if not allow_missing:
            raise InputError(
                msg, "add their feature files, or allow missing videos to import without them", path=root
            )
        warnings.append(msg + "; left out (allow_missing)")
    if unmatched["features_without_gt"]:
        ids = unmatched["features_without_gt"]
        verb = "imported without labels" if keep_unlabeled else "left out (keep_unlabeled imports them)"
        warnings.append(
            f"{len(ids)} videos have features but no labelled ground-truth entry: {_examples(ids)}; {verb}"
        )
    for key, what in (("features_not_in_split", "feature files"), ("gt_not_in_split", "ground-truth videos")):
        if unmatched[key]:
            ids = unmatched[key]
            warnings.append(
                f"{len(ids)} {what} are not in the split files and were left out: {_examples(ids)}"
            )
    if not rows:
        raise InputError(
            "no videos to import (no video has both features and ground truth)",
            f"check the folder layout for --from {fmt} and the ground-truth subsets",
            path=root,
        )

    order = {s: i for i, s in enumerate(SUBSETS)}
    rows.sort(key=lambda r: (order[r["subset"]], r["video_id"]))
    videos = pd.DataFrame(rows)
    no_labels = videos.loc[
        (videos["subset"] == "train") & (videos["labels"].map(len) == 0), "video_id"
    ].tolist()
    if no_labels:
        warnings.append(f"{len(no_labels)} training videos carry no labels: {_examples(no_labels)}")

    dims = {feats[v].dim for v in videos["video_id"]}
    if len(dims) > 1:
        first = feats[videos["video_id"].iloc[0]]
        odd = next(feats[v] for v in videos["video_id"] if feats[v].dim != first.dim)
        raise InputError(
            f"features of {odd.video_id!r} have dim {odd.dim}, but {first.video_id!r} has {first.dim}",
            "all videos need features of the same dimension",
            path=odd.where,
        )
    _check_coverage(videos, grid, warnings)

    imported = set(videos["video_id"])
    ann_rows = [(v, lab, s, e) for v in sorted(imported) if v in gt for lab, s, e in gt[v].annotations]
    annotations = (
        pd.DataFrame(ann_rows, columns=list(ANNOTATION_COLUMNS)) if ann_rows else _empty_annotations()
    )
    validate_annotations(annotations, classes, gt_path)

    order_ids = videos["video_id"].tolist()

    def feature_fn() -> Iterator[np.ndarray]:
        for vid in order_ids:
            yield feats[vid].load()

    source_info.update(
        {
            "format": fmt,
            "root": str(root),
            "grid": grid.as_dict(),
            "subset_map": {k: v for k, v in sorted(smap.items())},
            "counts": {
                **{s: int((videos["subset"] == s).sum()) for s in SUBSETS},
                "annotations": len(annotations),
                "snippets": int(videos["n_snippets"].sum()),
                "dim": int(dims.pop()),
                "classes": len(classes),
            },
        }
    )
    return ImportPlan(
        videos=videos,
        feature_fn=feature_fn,
        annotations=annotations,
        classes=classes,
        dim=int(source_info["counts"]["dim"]),
        warnings=warnings,
        unmatched={k: v for k, v in unmatched.items() if v},
        source_info=source_info,
    )


def _row(
    vid: str, subset: str, source_subset: str, f: _Feat, g: _Gt | None, grid: TimeGrid
) -> dict[str, Any]:
    duration = g.duration if g is not None and g.duration is not None else grid.duration_of(f.n)
    return {
        "video_id": vid,
        "subset": subset,
        "source_subset": source_subset,
        "n_snippets": f.n,
        "duration_s": float(duration),
        "fps": float(grid.fps),
        "stride": int(grid.stride),
        "clip_len": int(grid.clip_len),
        "labels": sorted({lab for lab, _, _ in g.annotations}) if g is not None else [],
        "source_fps": float(g.fps) if g is not None and g.fps is not None else math.nan,
    }


def _check_coverage(videos: pd.DataFrame, grid: TimeGrid, warnings: list[str]) -> None:
    """Warn once when the snippets span a very different time than the source's durations: the
    usual sign of a wrong ``fps``/``stride`` for these features."""
    n = videos["n_snippets"].to_numpy(np.int64)
    dur = videos["duration_s"].to_numpy(float)
    span = np.array([grid.duration_of(int(k)) for k in n])
    ok = dur > 0
    if not ok.any():
        return
    ratio = float(np.median(span[ok] / dur[ok]))
    if not 0.75 <= ratio <= 1.33:
        warnings.append(
            f"the snippets span {ratio:.2f}x the source durations (median) on the grid "
            f"fps={grid.fps:g} stride={grid.stride} clip_len={grid.clip_len}: check the grid options"
        )


# ---------------------------------------------------------------------------------- BaS-Net


def import_basnet(
    root: Path,
    grid: TimeGrid = TimeGrid(),
    *,
    gt_json: str | Path | None = None,
    classes: list[str] | None = None,
    streams: str = "both",
    use_splits: bool = True,
    allow_missing: bool = False,
    keep_unlabeled: bool = False,
) -> ImportPlan:
    """BaS-Net layout: ``root/features/{train,test}/{rgb,flow}/<vid>.npy`` (each ``T x 1024``,
    joined rgb ++ flow), ``root/gt.json`` and optionally ``root/split_{train,test}.txt``.

    ``gt_json`` replaces ``root/gt.json``: an ActivityNet-style JSON, a THUMOS14 txt folder or a
    packaged name (``thumos14``).  The feature folder decides ``train``/``test`` (as in BaS-Net's
    loader); the ground truth's subset must agree.  Split files, when present and ``use_splits``,
    select the videos.  An RGB and flow file of different lengths are cut to the shorter, with a
    warning naming the video.
    """
    root = Path(root)
    if streams not in STREAMS:
        raise InputError(f"unknown stream choice {streams!r}", f"use one of {STREAMS}")
    if gt_json is None and not (root / "gt.json").exists():
        raise InputError(
            "missing BaS-Net ground truth",
            "pass the BaS-Net dataset folder (with gt.json and features/) or give the ground truth "
            "(a file, or a packaged name such as thumos14)",
            path=root / "gt.json",
        )
    aset = named_gt.read(gt_json if gt_json is not None else root / "gt.json")
    gt = _gt_entries(aset)
    smap = subset_map_for({g.source_subset for g in gt.values()})
    names = ("rgb", "flow") if streams == "both" else (streams,)
    warnings: list[str] = []
    feats: dict[str, _Feat] = {}
    for subset in SUBSETS:
        base = root / "features" / subset
        found = {name: _stems(base / name) for name in names}
        for vid in sorted(set().union(*found.values())):
            paths = []
            for name in names:
                if vid not in found[name]:
                    raise InputError(
                        f"video {vid!r} has no {name} features",
                        "restore the file, or import one stream only (streams='rgb' or 'flow')",
                        path=base / name / f"{vid}.npy",
                    )
                paths.append(found[name][vid])
            shapes = [_feature_header(p) for p in paths]
            n = min(s[0] for s in shapes)
            if len({s[0] for s in shapes}) > 1:
                lens = ", ".join(f"{name} {s[0]}" for name, s in zip(names, shapes, strict=True))
                warnings.append(f"{vid}: stream lengths differ ({lens}); truncated to {n} snippets")
            dim = sum(s[1] for s in shapes)
            load = functools.partial(_load_streams, tuple(paths), n)
            _add_feat(feats, _Feat(vid, subset, subset, n, dim, load, paths[0]))
    if not feats:
        raise InputError(
            "no feature files found",
            f"expected features/{{train,test}}/{{{','.join(names)}}}/<video>.npy under the folder",
            path=root / "features",
        )

    selection: dict[str, list[str]] | None = None
    split_files = {s: root / f"split_{s}.txt" for s in SUBSETS}
    present = {s: p for s, p in split_files.items() if p.exists()}
    if use_splits and present:
        selection = {s: _read_split(p) for s, p in present.items()}
        # a subset without a split file keeps all of its feature files
        for s in SUBSETS:
            if s not in selection:
                selection[s] = sorted(v for v, f in feats.items() if f.folder_subset == s)
    files = {"gt": named_gt.identity(aset)}
    files.update({f"split_{s}": file_record(p) for s, p in present.items()})
    source_info = {
        "files": files,
        "options": {
            "streams": streams,
            "use_splits": use_splits,
            "allow_missing": allow_missing,
            "keep_unlabeled": keep_unlabeled,
            "classes": "given" if classes is not None else "sorted union of ground-truth labels",
        },
        "feature_files": sum(len(_stems(root / "features" / s / n)) for s in SUBSETS for n in names),
    }
    plan = _assemble(
        "basnet",
        root,
        feats,
        gt,
        aset.source,
        grid,
        classes,
        smap,
        selection,
        allow_missing,
        keep_unlabeled,
        warnings,
        source_info,
    )
    plan.ambiguous = _ambiguous_rows(aset, set(plan.videos["video_id"]))
    return plan


# ---------------------------------------------------------------------------------- W-TALC / CO2-Net


_WTALC_REQUIRED = ("videoname", "subset", "segments", "labels", "classlist")


def _find_one(root: Path, pattern: str, what: str, option: str) -> Path:
    hits = sorted(root.glob(pattern))
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise InputError(f"no {what} ({pattern}) found", f"pass {option}", path=root)
    names = ", ".join(p.name for p in hits)
    raise InputError(f"several {what} found ({names})", f"pick one with {option}", path=root)


def _wtalc_positive(
    arrays: dict[str, np.ndarray], name: str, i: int, vid: str, ann_dir: Path
) -> float | None:
    """Entry ``i`` of an optional per-video number array (``duration``, ``original_fps``): positive."""
    if name not in arrays:
        return None
    path = ann_dir / f"{name}.npy"
    value = np.ravel(arrays[name][i])
    if value.size != 1:
        raise InputError(f"entry {i} ({vid!r}) holds {value.size} values, not one", "fix the file", path=path)
    v = _number(value[0], f"{name} of {vid!r}", path)
    if v <= 0:
        raise InputError(f"{name} of {vid!r} is {v}, not positive", "fix the file", path=path)
    return v


def _text(values: np.ndarray) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def import_wtalc(
    root: Path,
    grid: TimeGrid = TimeGrid(),
    *,
    features_file: Path | None = None,
    annotations_dir: Path | None = None,
    classes: list[str] | None = None,
    subset_map: dict[str, str] | None = None,
    video_labels: str = "segments",
    keep_unlabeled: bool = False,
) -> ImportPlan:
    """W-TALC / CO2-Net layout: ``root/<Name>-I3D-JOINTFeatures.npy`` (object array of ``T x D``)
    and ``root/<Name>-Annotations/*.npy`` (videoname, subset, segments, labels, classlist, ...),
    all read through the restricted unpickler.  Videos are matched by position.

    The joint feature file is one pickle, so it is held in memory while the plan lives.
    ``video_labels``: ``segments`` (default, the set of segment labels, as for the other layouts),
    ``labels_all`` (W-TALC's own video-level list) or ``union``.  ``extracted_fps.npy`` is recorded
    but not used: W-TALC evaluates I3D features at 25/16 (its value, 10, is for UNT features).
    """
    root = Path(root)
    if video_labels not in ("segments", "labels_all", "union"):
        raise InputError(f"unknown video_labels {video_labels!r}", "use segments, labels_all or union")
    feat_path = Path(features_file) if features_file is not None else None
    if feat_path is not None and not feat_path.is_absolute() and not feat_path.exists():
        feat_path = root / feat_path
    if feat_path is None:
        feat_path = _find_one(root, "*Features.npy", "W-TALC joint feature file", "the features file option")
    if annotations_dir is not None:
        ann_dir = Path(annotations_dir)
        if not ann_dir.is_absolute() and not ann_dir.exists():
            ann_dir = root / ann_dir
    else:
        prefix = feat_path.name.split("-")[0]
        ann_dir = root / f"{prefix}-Annotations"
        if not ann_dir.is_dir():
            ann_dir = _find_one(
                root, "*-Annotations", "W-TALC annotation folder", "the annotations folder option"
            )
    arrays: dict[str, np.ndarray] = {}
    files: dict[str, dict[str, Any]] = {}
    for name in (*_WTALC_REQUIRED, "labels_all", "duration", "original_fps", "extracted_fps"):
        path = ann_dir / f"{name}.npy"
        if not path.exists():
            if name in _WTALC_REQUIRED:
                raise InputError(
                    f"missing W-TALC annotation array {name}.npy", "pass the -Annotations folder", path=path
                )
            continue
        arrays[name] = safe_load_object_npy(path)
        files[name] = file_record(path)

    vids = _text(arrays["videoname"])
    n_videos = len(vids)
    for name, arr in arrays.items():
        if name != "classlist" and len(arr) != n_videos:
            raise InputError(
                f"{name}.npy has {len(arr)} entries but videoname.npy has {n_videos}",
                "use annotation arrays from one release",
                path=ann_dir / f"{name}.npy",
            )
    source_subsets = _text(arrays["subset"])
    smap = subset_map_for(set(source_subsets), subset_map)
    class_origin = "given" if classes is not None else "classlist.npy"
    classes = list(classes) if classes is not None else _text(arrays["classlist"])

    warnings: list[str] = []
    gt: dict[str, _Gt] = {}
    differ: list[str] = []
    for i, vid in enumerate(vids):
        check_video_id(vid, ann_dir / "videoname.npy")
        if vid in gt:
            raise InputError(
                f"duplicate video id {vid!r}", "each video may appear once", path=ann_dir / "videoname.npy"
            )
        segs, labs = list(arrays["segments"][i]), [str(x) for x in arrays["labels"][i]]
        if len(segs) != len(labs):
            raise InputError(
                f"video {vid!r} has {len(segs)} segments but {len(labs)} labels",
                "use segments.npy and labels.npy from one release",
                path=ann_dir / "segments.npy",
            )
        anns = []
        seg_path = ann_dir / "segments.npy"
        for k, (seg, lab) in enumerate(zip(segs, labs, strict=True)):
            where = f"video {vid!r} segment {k}"
            if not isinstance(seg, list | tuple | np.ndarray) or len(seg) != 2:
                raise InputError(f"{where}: {seg!r} is not [start, end]", "fix the file", path=seg_path)
            s, e = _number(seg[0], f"{where}: start", seg_path), _number(seg[1], f"{where}: end", seg_path)
            check_segment(s, e, where, seg_path)
            anns.append((lab, s, e))
        gt[vid] = _Gt(
            source_subsets[i],
            anns,
            _wtalc_positive(arrays, "duration", i, vid, ann_dir),
            _wtalc_positive(arrays, "original_fps", i, vid, ann_dir),
        )
        if "labels_all" in arrays and set(labs) != {str(x) for x in arrays["labels_all"][i]}:
            differ.append(vid)

    if differ:
        warnings.append(
            f"{len(differ)} videos' labels_all.npy differ from their segment labels: {_examples(differ)}; "
            f"video labels taken from {video_labels}"
        )

    features = safe_load_object_npy(feat_path)
    if features.ndim != 1 or len(features) != n_videos:
        raise InputError(
            f"holds {features.shape} feature arrays but videoname.npy names {n_videos} videos",
            "use the feature file that belongs to these annotations",
            path=feat_path,
        )
    feats: dict[str, _Feat] = {}
    for i, vid in enumerate(vids):
        x = features[i]
        if not isinstance(x, np.ndarray) or x.dtype.hasobject or x.dtype.kind not in "fiu" or x.ndim != 2:
            raise InputError(
                f"entry {i} ({vid!r}) is not a 2-D numeric array",
                "use a W-TALC joint feature file (object array of T x D arrays)",
                path=feat_path,
            )
        if x.shape[0] == 0:
            raise InputError(
                f"video {vid!r} (entry {i}) has 0 snippets", "re-extract it or drop it", path=feat_path
            )
        load = functools.partial(_in_memory, x, feat_path, f"features of {vid!r}")
        feats[vid] = _Feat(vid, None, None, int(x.shape[0]), int(x.shape[1]), load, feat_path)

    source_info = {
        "files": files,
        "features_file": {"path": str(feat_path), "bytes": feat_path.stat().st_size},
        "options": {"video_labels": video_labels, "keep_unlabeled": keep_unlabeled, "classes": class_origin},
        "extracted_fps_unused": sorted({int(v) for v in arrays.get("extracted_fps", [])}),
    }
    plan = _assemble(
        "wtalc",
        root,
        feats,
        gt,
        ann_dir,
        grid,
        classes,
        smap,
        None,
        False,
        keep_unlabeled,
        warnings,
        source_info,
    )
    # video-level labels other than the segment labels replace them after matching
    if video_labels != "segments" and "labels_all" in arrays:
        index = {v: i for i, v in enumerate(vids)}
        extra = [{str(x) for x in arrays["labels_all"][index[v]]} for v in plan.videos["video_id"]]
        base = plan.videos["labels"].map(set)
        merged = [
            sorted(e if video_labels == "labels_all" else b | e) for b, e in zip(base, extra, strict=True)
        ]
        unknown = sorted({c for labs in merged for c in labs} - set(plan.classes))
        if unknown:
            raise InputError(
                f"labels_all.npy names unknown class {unknown[0]!r}", "fix the class list", path=ann_dir
            )
        plan.videos["labels"] = merged
    amb_path = ann_dir / "Ambiguous_test.txt"
    if amb_path.exists():
        known = set(plan.videos["video_id"])
        rows = [r[:4] for r in read_segment_lines(amb_path, AMBIGUOUS, "test") if r[0] in known]
        plan.ambiguous = (
            pd.DataFrame(rows, columns=list(ANNOTATION_COLUMNS)) if rows else _empty_annotations()
        )
        plan.source_info["files"]["Ambiguous_test"] = file_record(amb_path)
    return plan


# ---------------------------------------------------------------------------------- per-video folders


def _find_gt_json(root: Path) -> Path:
    if (root / "gt.json").exists():
        return root / "gt.json"
    hits = sorted(root.glob("*.json"))
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise InputError(
            "no ground-truth JSON found", "pass the ActivityNet-style ground-truth file", path=root
        )
    names = ", ".join(p.name for p in hits)
    raise InputError(
        f"several JSON files ({names}); which is the ground truth?", "pass it explicitly", path=root
    )


def import_folder(
    root: Path,
    gt_json: str | Path | None = None,
    grid: TimeGrid = TimeGrid(),
    *,
    classes: list[str] | None = None,
    subset_map: dict[str, str] | None = None,
    allow_missing: bool = False,
    keep_unlabeled: bool = False,
) -> ImportPlan:
    """ACM-Net / ASM-Loc layout: ``root/{train,test}/<vid>.npy`` (``T x D``; sub-folders named
    after the source's subsets, e.g. ``validation/``, and flat ``root/<vid>.npy`` also work) plus
    the ground truth: ``gt_json`` (an ActivityNet-style JSON, a THUMOS14 txt folder or a packaged
    name such as ``anet13``), else ``root/gt.json``, else the only ``*.json`` in ``root``.

    The ground truth decides each video's subset; a feature folder naming a different one is an
    error.  ``duration``/``fps`` of the JSON are recorded (``fps`` as ``source_fps``).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a folder", "pass the folder holding the per-video .npy files", path=root)
    aset = named_gt.read(gt_json if gt_json is not None else _find_gt_json(root))
    gt = _gt_entries(aset)
    smap = subset_map_for({g.source_subset for g in gt.values()}, subset_map)
    warnings: list[str] = []
    feats: dict[str, _Feat] = {}
    folders: list[tuple[Path, str | None]] = [(root, None)]
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if sub.name in SUBSETS:
            folders.append((sub, sub.name))
        elif sub.name in smap:
            target = smap[sub.name]
            if target is None:
                n = len(list(sub.glob("*.npy")))
                if n:
                    warnings.append(
                        f"{n} files in {sub.name}/ belong to an unlabeled subset and were left out"
                    )
                continue
            folders.append((sub, target))
        elif any(sub.glob("*.npy")):
            warnings.append(f"folder {sub.name}/ names no subset; its .npy files were ignored")
    for folder, subset in folders:
        for vid, path in _stems(folder).items():
            n, d = _feature_header(path)
            load = functools.partial(_load_streams, (path,), n)
            name = folder.name if subset is not None else None
            _add_feat(feats, _Feat(vid, subset, name, n, d, load, path))
    if not feats:
        raise InputError(
            "no feature files found", "expected train/<video>.npy and test/<video>.npy", path=root
        )
    source_info = {
        "files": {"gt": named_gt.identity(aset)},
        "options": {
            "allow_missing": allow_missing,
            "keep_unlabeled": keep_unlabeled,
            "subset_map": "given" if subset_map else "detected",
            "classes": "given" if classes is not None else "sorted union of ground-truth labels",
        },
        "feature_files": len(feats),
    }
    plan = _assemble(
        "folder",
        root,
        feats,
        gt,
        aset.source,
        grid,
        classes,
        smap,
        None,
        allow_missing,
        keep_unlabeled,
        warnings,
        source_info,
    )
    plan.ambiguous = _ambiguous_rows(aset, set(plan.videos["video_id"]))
    return plan


# ---------------------------------------------------------------------------------- overrides


def override_annotations(plan: ImportPlan, aset: AnnotationSet) -> ImportPlan:
    """Replace a plan's ground truth with ``aset`` (:func:`~wtalcli.data.named_gt.read` of ``--annotations``).

    Video labels become the set of the new labels; ambiguous segments go to ``plan.ambiguous``.
    An imported video absent from ``aset`` keeps no labels (listed, warning); ``aset`` videos that
    were not imported are listed with a warning (a full THUMOS14 txt set covers videos BaS-Net
    leaves out).  A label outside the plan's classes, or a video whose subset in ``aset`` maps to a
    different subset than the plan's, is an error.
    """
    source = aset.source
    classes_ann = aset.instances()
    imported = plan.videos["video_id"].tolist()
    known = set(imported)
    validate_annotations(classes_ann[list(ANNOTATION_COLUMNS)], plan.classes, source)
    smap = subset_map_for(set(aset.subsets()))
    plan_subset = dict(zip(plan.videos["video_id"], plan.videos["subset"], strict=True))
    for vid, info in aset.videos.items():
        target = smap.get(info.subset)
        if vid in plan_subset and target is not None and target != plan_subset[vid]:
            raise InputError(
                f"video {vid!r} is in {info.subset!r} ({target}) here but {plan_subset[vid]} in the import",
                "use annotations of the same split",
                path=source,
            )
    mine = classes_ann[classes_ann["video_id"].isin(known)]
    labels = mine.groupby("video_id")["label"].agg(lambda x: sorted(set(x))).to_dict()
    videos = plan.videos.copy()
    videos["labels"] = [labels.get(v, []) for v in imported]
    without = [v for v in imported if v not in labels]
    extra = sorted(set(classes_ann["video_id"]) - known)
    warnings = list(plan.warnings)
    unmatched = dict(plan.unmatched)
    if without:
        unmatched["videos_without_override_gt"] = without
        warnings.append(f"{len(without)} imported videos have no entry in {aset.name}: {_examples(without)}")
    if extra:
        unmatched["override_gt_without_features"] = extra
        warnings.append(f"{len(extra)} videos in {aset.name} were not imported: {_examples(extra)}")
    info = dict(plan.source_info)
    info["annotation_override"] = {**named_gt.identity(aset), "instances": len(mine)}
    cols = list(ANNOTATION_COLUMNS)
    return replace(
        plan,
        videos=videos,
        annotations=mine[cols]
        .sort_values(["video_id", "start_s", "label"], kind="stable")
        .reset_index(drop=True),
        ambiguous=_ambiguous_rows(aset, known),
        warnings=warnings,
        unmatched=unmatched,
        source_info=info,
    )
