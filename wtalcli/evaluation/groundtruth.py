"""Ground truth for evaluation: loaders for the annotation formats met in practice.

A :class:`GroundTruth` is columnar (one row per action instance, in source order: the order
matters for exact reproduction of the reference evaluator, see :mod:`wtalcli.evaluation.detection`) and
holds only the instances of one subset.  It is built from

- an ActivityNet-style JSON (``database[vid] = {subset, duration?, annotations: [{segment, label}]}``;
  segments may be numbers or numeric strings as in BaS-Net's ``gt.json``): :func:`load_gt_json`;
- a folder of THUMOS14 per-class files ``<Class>_{val,test}.txt`` (lines ``video start end``;
  ``Ambiguous_*.txt`` is kept apart as ambiguous segments): :func:`load_gt_thumos_txt`;
- a DataFrame ``video_id, label, start_s, end_s`` plus the subset's video ids (a feature set's
  ``annotations.parquet``): :func:`gt_from_dataframe`.

Evaluation protocols that drop videos (THUMOS14: :data:`THUMOS14_PROTOCOLS`) are applied with
:func:`apply_protocol`; the dropped videos are remembered in ``excluded_videos`` so that
predictions on them are dropped too (that is what the codebases that use those protocols do:
they never predict on those videos).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from wtalcli.core.errors import InputError

# THUMOS14 test-set protocols.  "basnet": Pilhyeon/BaSNet-pytorch dataset/THUMOS14/gt.json and
# split_test.txt (210 videos; 270 and 1496 have wrong annotations, 1292 only Ambiguous ones).
# "opentad": sming256/OpenTAD tools/prepare_data/thumos/README.md (commit 86873e51): "two videos are
# removed ... video_test_0000270 due to wrong annotations, video_test_0001292 due to empty
# annotations ... 211 videos left in test subset" (following G-TAD/VSGN).  1292 carries no
# 20-class instance, so of the 212 annotated test videos OpenTAD drops exactly one, 270.
THUMOS14_PROTOCOLS: dict[str, tuple[str, ...]] = {
    "all": (),
    "basnet": ("video_test_0000270", "video_test_0001292", "video_test_0001496"),
    "opentad": ("video_test_0000270", "video_test_0001292"),
}

THUMOS14_PROTOCOL_NOTES: dict[str, str] = {
    "all": "THUMOS14 protocol 'all': every annotated test video is kept (212 videos)",
    "basnet": "THUMOS14 protocol 'basnet': video_test_0000270, _0001292, _0001496 dropped "
    "from ground truth and predictions (210 videos, as BaS-Net/UM/CoLA)",
    "opentad": "THUMOS14 protocol 'opentad': video_test_0000270 (wrong annotations) and "
    "_0001292 (no 20-class instance) dropped from ground truth and predictions (211 videos, "
    "as G-TAD/VSGN/OpenTAD)",
}

_THUMOS_SUBSETS = {"val": "val", "validation": "val", "test": "test"}
AMBIGUOUS = "Ambiguous"


@dataclass(frozen=True)
class Segments:
    """Columnar segments of videos (used for THUMOS14 ``Ambiguous`` parts)."""

    video_ids: np.ndarray  # (n,) object: video id of each segment
    t_start: np.ndarray  # (n,) float64 seconds
    t_end: np.ndarray  # (n,) float64 seconds

    def __len__(self) -> int:
        return len(self.video_ids)

    @staticmethod
    def empty() -> Segments:
        return Segments(np.zeros(0, object), np.zeros(0), np.zeros(0))


@dataclass(frozen=True)
class GroundTruth:
    """Action instances of one subset, columnar, in source order."""

    video_ids: np.ndarray  # (n,) object: video of each instance
    labels: np.ndarray  # (n,) object: class name of each instance
    t_start: np.ndarray  # (n,) float64 seconds
    t_end: np.ndarray  # (n,) float64 seconds
    videos: tuple[str, ...]  # the subset's videos (with or without instances), source order
    subset: str
    source: str  # where it came from, for messages
    excluded_videos: frozenset[str] = frozenset()  # dropped by a protocol: predictions dropped too
    ambiguous: Segments = field(default_factory=Segments.empty)
    protocol: str | None = None
    durations: dict[str, float] | None = None

    def __len__(self) -> int:
        return len(self.video_ids)

    @property
    def classes(self) -> list[str]:
        """Classes present, in order of first appearance (the reference's activity index)."""
        return [str(c) for c in pd.unique(self.labels)]

    @property
    def videos_with_instances(self) -> list[str]:
        return [str(v) for v in pd.unique(self.video_ids)]

    def drop_videos(self, video_ids, protocol: str | None = None) -> GroundTruth:
        """A copy without the given videos (instances, subset membership and ambiguous parts)."""
        drop = frozenset(str(v) for v in video_ids)
        keep = ~np.isin(self.video_ids, list(drop)) if drop else np.ones(len(self), bool)
        amb = self.ambiguous
        akeep = ~np.isin(amb.video_ids, list(drop)) if drop else np.ones(len(amb), bool)
        return replace(
            self,
            video_ids=self.video_ids[keep],
            labels=self.labels[keep],
            t_start=self.t_start[keep],
            t_end=self.t_end[keep],
            videos=tuple(v for v in self.videos if v not in drop),
            excluded_videos=self.excluded_videos | drop,
            ambiguous=Segments(amb.video_ids[akeep], amb.t_start[akeep], amb.t_end[akeep]),
            protocol=protocol if protocol is not None else self.protocol,
        )

    def summary(self) -> str:
        """One line: subset, videos, instances, classes, protocol."""
        text = (
            f"{self.source} [{self.subset}]: {len(self.videos)} videos, "
            f"{len(self.videos_with_instances)} with instances, {len(self)} instances, "
            f"{len(self.classes)} classes"
        )
        if len(self.ambiguous):
            text += f", {len(self.ambiguous)} ambiguous segments"
        if self.protocol:
            text += f"; {self.protocol}"
        return text


# ---------------------------------------------------------------------------------- helpers


def _clip(x, limit: int = 60) -> str:
    """``repr(x)`` cut short (a bad value may be a 4000-digit integer)."""
    text = (
        repr(x) if not isinstance(x, int) or abs(x) < 10**limit else f"<integer of {len(str(abs(x)))} digits>"
    )
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _to_float(x, where: str, path: str | Path) -> float:
    """A segment bound: a number or a numeric string (BaS-Net writes strings), finite."""
    if isinstance(x, bool) or not isinstance(x, (int, float, str)):
        raise InputError(
            f"{where}: segment bound {x!r} is not a number", "write seconds as numbers", path=path
        )
    try:
        v = float(x)
    except (ValueError, OverflowError):  # OverflowError: an integer beyond the float range
        raise InputError(
            f"{where}: segment bound {_clip(x)} is not a number", "write seconds as numbers", path=path
        ) from None
    if not math.isfinite(v):
        raise InputError(f"{where}: segment bound {x!r} is not finite", "write finite seconds", path=path)
    return v


def _check_segment(s: float, e: float, where: str, path: str | Path) -> None:
    """Ground-truth segments need ``0 <= start <= end`` (none of THUMOS14's or ActivityNet's break it)."""
    if s < 0 or e < s:
        raise InputError(
            f"{where}: segment [{s}, {e}] is negative or reversed",
            "segments need 0 <= start <= end",
            path=path,
        )


def _build(
    vids: list[str],
    labels: list[str],
    starts: list[float],
    ends: list[float],
    videos: list[str],
    subset: str,
    source: str,
    ambiguous: Segments | None = None,
    durations: dict[str, float] | None = None,
) -> GroundTruth:
    return GroundTruth(
        video_ids=np.array(vids, dtype=object),
        labels=np.array(labels, dtype=object),
        t_start=np.asarray(starts, dtype=np.float64).reshape(-1),
        t_end=np.asarray(ends, dtype=np.float64).reshape(-1),
        videos=tuple(videos),
        subset=subset,
        source=source,
        ambiguous=ambiguous if ambiguous is not None else Segments.empty(),
        durations=durations,
    )


# ---------------------------------------------------------------------------------- loaders


def json_subsets(path: str | Path) -> dict[str, int]:
    """Subset name -> number of videos in an ActivityNet-style ground-truth JSON."""
    db = _read_database(Path(path))
    counts: dict[str, int] = {}
    for v in db.values():
        if isinstance(v, dict) and isinstance(v.get("subset"), str):
            counts[v["subset"]] = counts.get(v["subset"], 0) + 1
    return counts


def _read_database(path: Path) -> dict:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise InputError("ground-truth file not found", "check the path", path=path) from None
    except IsADirectoryError:
        raise InputError("ground truth is a folder", "give the JSON file", path=path) from None
    except (ValueError, RecursionError) as exc:  # also > 4300-digit integers and absurd nesting
        raise InputError(
            f"ground truth is not valid JSON ({exc})", "give an ActivityNet-style JSON", path=path
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise InputError(
            "ground truth has no 'database' object",
            "give an ActivityNet-style JSON {'database': {video: {subset, annotations}}}",
            path=path,
        )
    return data["database"]


def load_gt_json(path: str | Path, subset: str, ambiguous_label: str | None = None) -> GroundTruth:
    """Instances of ``subset`` from an ActivityNet-style JSON (ActivityNet, BaS-Net, ActionFormer).

    Annotations labelled ``ambiguous_label`` (if given) go to ``ambiguous`` instead of the classes.
    """
    path = Path(path)
    db = _read_database(path)
    vids: list[str] = []
    labels: list[str] = []
    starts: list[float] = []
    ends: list[float] = []
    videos: list[str] = []
    durations: dict[str, float] = {}
    amb_v: list[str] = []
    amb_s: list[float] = []
    amb_e: list[float] = []
    seen_subsets: set[str] = set()
    for vid, entry in db.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("subset"), str):
            raise InputError(
                f"video {vid!r} has no 'subset' string", "every database entry needs a subset", path=path
            )
        seen_subsets.add(entry["subset"])
        if entry["subset"] != subset:
            continue
        videos.append(vid)
        if entry.get("duration") is not None:
            try:
                durations[vid] = float(entry["duration"])
            except (TypeError, ValueError, OverflowError):
                raise InputError(
                    f"video {vid!r} has a non-numeric duration {_clip(entry['duration'])}",
                    "write the duration in seconds",
                    path=path,
                ) from None
        anns = entry.get("annotations", [])
        if not isinstance(anns, list):
            raise InputError(
                f"video {vid!r}: 'annotations' is not a list", "write a list of {segment, label}", path=path
            )
        for k, ann in enumerate(anns):
            where = f"video {vid!r} annotation {k}"
            if not isinstance(ann, dict) or "segment" not in ann or "label" not in ann:
                raise InputError(
                    f"{where} lacks 'segment' or 'label'", "write {segment: [s, e], label}", path=path
                )
            seg, label = ann["segment"], ann["label"]
            if not isinstance(seg, (list, tuple)) or len(seg) != 2:
                raise InputError(
                    f"{where}: segment {seg!r} is not [start, end]", "write [start, end]", path=path
                )
            if not isinstance(label, str) or not label:
                raise InputError(f"{where}: label {label!r} is not a name", "write the class name", path=path)
            s, e = _to_float(seg[0], where, path), _to_float(seg[1], where, path)
            _check_segment(s, e, where, path)
            if ambiguous_label is not None and label == ambiguous_label:
                amb_v.append(vid)
                amb_s.append(s)
                amb_e.append(e)
                continue
            vids.append(vid)
            labels.append(label)
            starts.append(s)
            ends.append(e)
    if not videos:
        raise InputError(
            f"no video of subset {subset!r}",
            f"choose one of the subsets in the file: {sorted(seen_subsets)}",
            path=path,
        )
    amb = Segments(np.array(amb_v, dtype=object), np.array(amb_s, float), np.array(amb_e, float))
    return _build(vids, labels, starts, ends, videos, subset, path.name, amb, durations or None)


def _read_txt(file: Path) -> tuple[list[str], list[float], list[float]]:
    vids, starts, ends = [], [], []
    try:
        text = file.read_text()
    except UnicodeDecodeError:
        raise InputError("not a text file", "give the THUMOS14 annotation txt files", path=file) from None
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise InputError(
                f"line {n} has {len(parts)} fields, expected 'video start end'", "fix that line", path=file
            )
        where = f"line {n}"
        vids.append(parts[0])
        starts.append(_to_float(parts[1], where, file))
        ends.append(_to_float(parts[2], where, file))
        _check_segment(starts[-1], ends[-1], where, file)
    return vids, starts, ends


def load_gt_thumos_txt(folder: str | Path, subset: str = "test") -> GroundTruth:
    """THUMOS14 original annotations: ``<Class>_<val|test>.txt`` files; ``Ambiguous`` kept apart.

    Classes are taken in sorted file-name order; instances in file order.  The subset's videos are
    those with at least one class instance (``video_test_0001292``, which has only Ambiguous
    segments, is therefore not one of the 212 test videos).
    """
    folder = Path(folder)
    key = _THUMOS_SUBSETS.get(subset)
    if key is None:
        raise InputError(f"unknown THUMOS14 subset {subset!r}", "use 'test' or 'val'", path=folder)
    if not folder.is_dir():
        raise InputError(
            "annotation folder not found", "give the folder of <Class>_test.txt files", path=folder
        )
    files = sorted(folder.glob(f"*_{key}.txt"))
    class_files = [f for f in files if f.name != f"{AMBIGUOUS}_{key}.txt"]
    if not class_files:
        raise InputError(
            f"no <Class>_{key}.txt files",
            f"give the folder holding the THUMOS14 {key} annotations",
            path=folder,
        )
    vids: list[str] = []
    labels: list[str] = []
    starts: list[float] = []
    ends: list[float] = []
    for f in class_files:
        v, s, e = _read_txt(f)
        label = f.name[: -len(f"_{key}.txt")]
        vids += v
        labels += [label] * len(v)
        starts += s
        ends += e
    amb = Segments.empty()
    amb_file = folder / f"{AMBIGUOUS}_{key}.txt"
    if amb_file.exists():
        v, s, e = _read_txt(amb_file)
        amb = Segments(np.array(v, dtype=object), np.array(s, float), np.array(e, float))
    videos = [str(x) for x in pd.unique(np.array(vids, dtype=object))] if vids else []
    subset_name = "test" if key == "test" else "validation"
    return _build(vids, labels, starts, ends, videos, subset_name, folder.name, amb)


def gt_from_dataframe(
    annotations: pd.DataFrame,
    videos: list[str] | tuple[str, ...] | np.ndarray,
    subset: str = "test",
    source: str = "annotations.parquet",
) -> GroundTruth:
    """Ground truth from a feature set's annotations (``video_id, label, start_s, end_s``).

    Only rows whose video is in ``videos`` (the subset's video ids) are kept.
    """
    need = {"video_id", "label", "start_s", "end_s"}
    missing = need - set(annotations.columns)
    if missing:
        raise InputError(
            f"annotations lack columns {sorted(missing)}",
            "columns: video_id, label, start_s, end_s",
            path=source,
        )
    video_list = [str(v) for v in videos]
    df = annotations[annotations["video_id"].isin(video_list)]
    s = df["start_s"].to_numpy(np.float64)
    e = df["end_s"].to_numpy(np.float64)
    bad = ~(np.isfinite(s) & np.isfinite(e))
    if bad.any():
        row = df.iloc[int(np.flatnonzero(bad)[0])]
        raise InputError(
            f"segment of {row['video_id']!r} is not finite", "fix or drop that annotation", path=source
        )
    return _build(
        df["video_id"].astype(str).tolist(),
        df["label"].astype(str).tolist(),
        s,
        e,
        video_list,
        subset,
        str(source),
    )


def load_ambiguous_json(gt: GroundTruth, path: str | Path, subset: str | None = None) -> GroundTruth:
    """Attach ambiguous segments from ``{"ambiguous": {subset: {video: [[s, e], ...]}}}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
        table = data["ambiguous"][subset or gt.subset]
        items = [
            (str(v), _to_float(s, str(v), path), _to_float(e, str(v), path))
            for v, segs in table.items()
            for s, e in segs
        ]
    except FileNotFoundError:
        raise InputError("ambiguous-segment file not found", "check the path", path=path) from None
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
        raise InputError(
            f"malformed ambiguous-segment file ({type(exc).__name__}: {exc})",
            "expected {'ambiguous': {subset: {video: [[start, end], ...]}}}",
            path=path,
        ) from None
    amb = Segments(
        np.array([i[0] for i in items], dtype=object),
        np.array([i[1] for i in items], dtype=np.float64),
        np.array([i[2] for i in items], dtype=np.float64),
    )
    keep = ~np.isin(amb.video_ids, list(gt.excluded_videos)) if gt.excluded_videos else slice(None)
    return replace(gt, ambiguous=Segments(amb.video_ids[keep], amb.t_start[keep], amb.t_end[keep]))


def load_ground_truth(path: str | Path, subset: str) -> GroundTruth:
    """Dispatch on the path: a folder of THUMOS14 txt files, or an ActivityNet-style JSON."""
    p = Path(path)
    if p.is_dir():
        return load_gt_thumos_txt(p, subset)
    if p.suffix.lower() == ".json":
        return load_gt_json(p, subset)
    if not p.exists():
        raise InputError("ground-truth path not found", "check the path", path=p)
    raise InputError(
        "unrecognised ground-truth format",
        "give an ActivityNet-style .json or a folder of THUMOS14 <Class>_test.txt files",
        path=p,
    )


# ---------------------------------------------------------------------------------- protocols


def apply_protocol(gt: GroundTruth, protocol: str) -> GroundTruth:
    """Apply a THUMOS14 test-set protocol (:data:`THUMOS14_PROTOCOLS`); returns a new object."""
    if protocol not in THUMOS14_PROTOCOLS:
        raise InputError(
            f"unknown THUMOS14 protocol {protocol!r}", f"use one of {sorted(THUMOS14_PROTOCOLS)}"
        )
    return gt.drop_videos(THUMOS14_PROTOCOLS[protocol], protocol=THUMOS14_PROTOCOL_NOTES[protocol])


def describe_protocol(protocol: str) -> str:
    """The one-line description to print for a protocol name."""
    if protocol not in THUMOS14_PROTOCOL_NOTES:
        raise InputError(
            f"unknown THUMOS14 protocol {protocol!r}", f"use one of {sorted(THUMOS14_PROTOCOLS)}"
        )
    return THUMOS14_PROTOCOL_NOTES[protocol]
