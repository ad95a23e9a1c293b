"""Matching what a layout found (features, ground truth, an optional split) into an
:class:`~wtalcli.data.importers.common.ImportPlan`, under the policies every layout shares."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wtalcli.core.errors import InputError
from wtalcli.data.importers.common import (
    Feat,
    GtEntry,
    ImportOptions,
    ImportPlan,
    empty_annotations,
    examples,
)
from wtalcli.data.schema import ANNOTATION_COLUMNS, SUBSETS, validate_annotations
from wtalcli.data.timegrid import TimeGrid


@dataclass
class Found:
    """What a layout found before matching: each video's features and ground-truth entry, the
    subset map, the class list (None: the sorted union of the ground-truth labels), the split files'
    selection (None: every video), warnings so far and provenance for the manifest."""

    fmt: str
    feats: dict[str, Feat]
    gt: dict[str, GtEntry]
    gt_path: Path
    smap: dict[str, str | None]
    classes: list[str] | None = None
    selection: dict[str, list[str]] | None = None
    warnings: list[str] = field(default_factory=list)
    source_info: dict[str, Any] = field(default_factory=dict)


def _resolve_classes(gt: dict[str, GtEntry], classes: list[str] | None, gt_path: Path) -> list[str]:
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


def assemble(found: Found, opts: ImportOptions) -> ImportPlan:
    """Match what a layout found with its ground truth under the shared policies (module docstring
    of :mod:`wtalcli.data.importers`); returns the plan."""
    fmt, feats, gt, gt_path, smap = found.fmt, found.feats, found.gt, found.gt_path, found.smap
    root, grid, selection, warnings = opts.root, opts.grid, found.selection, found.warnings
    classes = _resolve_classes(gt, found.classes, gt_path)
    unmatched: dict[str, list[str]] = {
        "features_without_gt": [],
        "gt_without_features": [],
        "listed_without_features": [],
        "features_not_in_split": [],
        "gt_not_in_split": [],
    }

    def labelled(vid: str) -> GtEntry | None:
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
            if opts.keep_unlabeled:
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
        msg = f"{len(missing)} videos have ground truth or a split entry but no features: {examples(missing)}"
        if not opts.allow_missing:
            raise InputError(
                msg, "add their feature files, or allow missing videos to import without them", path=root
            )
        warnings.append(msg + "; left out (allow_missing)")
    if unmatched["features_without_gt"]:
        ids = unmatched["features_without_gt"]
        verb = "imported without labels" if opts.keep_unlabeled else "left out (keep_unlabeled imports them)"
        warnings.append(
            f"{len(ids)} videos have features but no labelled ground-truth entry: {examples(ids)}; {verb}"
        )
    for key, what in (("features_not_in_split", "feature files"), ("gt_not_in_split", "ground-truth videos")):
        if unmatched[key]:
            ids = unmatched[key]
            warnings.append(
                f"{len(ids)} {what} are not in the split files and were left out: {examples(ids)}"
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
        warnings.append(f"{len(no_labels)} training videos carry no labels: {examples(no_labels)}")

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
        pd.DataFrame(ann_rows, columns=list(ANNOTATION_COLUMNS)) if ann_rows else empty_annotations()
    )
    validate_annotations(annotations, classes, gt_path)

    order_ids = videos["video_id"].tolist()

    def feature_fn() -> Iterator[np.ndarray]:
        for vid in order_ids:
            yield feats[vid].load()

    source_info = found.source_info
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
    vid: str, subset: str, source_subset: str, f: Feat, g: GtEntry | None, grid: TimeGrid
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
