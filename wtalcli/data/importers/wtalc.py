"""The W-TALC / CO2-Net layout (``--from wtalc``): one pickled joint feature file
``<Name>-I3D-JOINTFeatures.npy`` and the ``<Name>-Annotations/`` arrays, read through the
restricted unpickler (:mod:`wtalcli.data.unpickle`), videos matched by position."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wtalcli.core.errors import InputError
from wtalcli.core.files import file_record
from wtalcli.data.annotations import AMBIGUOUS, check_segment, read_segment_lines
from wtalcli.data.importers.assemble import Found, assemble
from wtalcli.data.importers.common import (
    VIDEO_LABELS,
    Feat,
    GtEntry,
    ImportOptions,
    ImportPlan,
    empty_annotations,
    examples,
    in_memory,
    number,
    subset_map_for,
)
from wtalcli.data.schema import ANNOTATION_COLUMNS, check_video_id
from wtalcli.data.unpickle import safe_load_object_npy

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
    v = number(value[0], f"{name} of {vid!r}", path)
    if v <= 0:
        raise InputError(f"{name} of {vid!r} is {v}, not positive", "fix the file", path=path)
    return v


def _text(values: np.ndarray) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def import_wtalc(opts: ImportOptions) -> ImportPlan:
    """W-TALC / CO2-Net layout: ``root/<Name>-I3D-JOINTFeatures.npy`` (object array of ``T x D``)
    and ``root/<Name>-Annotations/*.npy`` (videoname, subset, segments, labels, classlist, ...),
    all read through the restricted unpickler.  Videos are matched by position.

    The joint feature file is one pickle, so it is held in memory while the plan lives.
    ``video_labels``: ``segments`` (default, the set of segment labels, as for the other layouts),
    ``labels_all`` (W-TALC's own video-level list) or ``union``.  ``extracted_fps.npy`` is recorded
    but not used: W-TALC evaluates I3D features at 25/16 (its value, 10, is for UNT features).
    """
    root = opts.root
    if opts.video_labels not in VIDEO_LABELS:
        raise InputError(f"unknown video_labels {opts.video_labels!r}", "use segments, labels_all or union")
    feat_path = Path(opts.features_file) if opts.features_file is not None else None
    if feat_path is not None and not feat_path.is_absolute() and not feat_path.exists():
        feat_path = root / feat_path
    if feat_path is None:
        feat_path = _find_one(root, "*Features.npy", "W-TALC joint feature file", "the features file option")
    if opts.annotations_dir is not None:
        ann_dir = Path(opts.annotations_dir)
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
    smap = subset_map_for(set(source_subsets), opts.subset_map)
    class_origin = "given" if opts.classes is not None else "classlist.npy"
    classes = list(opts.classes) if opts.classes is not None else _text(arrays["classlist"])

    warnings: list[str] = []
    gt: dict[str, GtEntry] = {}
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
            s, e = number(seg[0], f"{where}: start", seg_path), number(seg[1], f"{where}: end", seg_path)
            check_segment(s, e, where, seg_path)
            anns.append((lab, s, e))
        gt[vid] = GtEntry(
            source_subsets[i],
            anns,
            _wtalc_positive(arrays, "duration", i, vid, ann_dir),
            _wtalc_positive(arrays, "original_fps", i, vid, ann_dir),
        )
        if "labels_all" in arrays and set(labs) != {str(x) for x in arrays["labels_all"][i]}:
            differ.append(vid)

    if differ:
        warnings.append(
            f"{len(differ)} videos' labels_all.npy differ from their segment labels: {examples(differ)}; "
            f"video labels taken from {opts.video_labels}"
        )

    features = safe_load_object_npy(feat_path)
    if features.ndim != 1 or len(features) != n_videos:
        raise InputError(
            f"holds {features.shape} feature arrays but videoname.npy names {n_videos} videos",
            "use the feature file that belongs to these annotations",
            path=feat_path,
        )
    feats: dict[str, Feat] = {}
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
        load = functools.partial(in_memory, x, feat_path, f"features of {vid!r}")
        feats[vid] = Feat(vid, None, None, int(x.shape[0]), int(x.shape[1]), load, feat_path)

    source_info = {
        "files": files,
        "features_file": {"path": str(feat_path), "bytes": feat_path.stat().st_size},
        "options": {
            "video_labels": opts.video_labels,
            "keep_unlabeled": opts.keep_unlabeled,
            "classes": class_origin,
        },
        "extracted_fps_unused": sorted({int(v) for v in arrays.get("extracted_fps", [])}),
    }
    plan = assemble(Found("wtalc", feats, gt, ann_dir, smap, classes, None, warnings, source_info), opts)
    # video-level labels other than the segment labels replace them after matching
    if opts.video_labels != "segments" and "labels_all" in arrays:
        index = {v: i for i, v in enumerate(vids)}
        extra = [{str(x) for x in arrays["labels_all"][index[v]]} for v in plan.videos["video_id"]]
        base = plan.videos["labels"].map(set)
        merged = [
            sorted(e if opts.video_labels == "labels_all" else b | e)
            for b, e in zip(base, extra, strict=True)
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
        plan.ambiguous = pd.DataFrame(rows, columns=list(ANNOTATION_COLUMNS)) if rows else empty_annotations()
        plan.source_info["files"]["Ambiguous_test"] = file_record(amb_path)
    return plan
