"""What the importers share: the options of an import (:class:`ImportOptions`), the plan it
returns (:class:`ImportPlan`), one video's features and ground-truth entry as found, the subset
map, and the checks and loaders of feature files on disk."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wtalcli.core.errors import InputError
from wtalcli.data.annotations import AnnotationSet, parse_number
from wtalcli.data.schema import (
    ANNOTATION_COLUMNS,
    SUBSETS,
    check_finite_rows,
    check_video_id,
    load_npy,
    write_feature_set,
)
from wtalcli.data.timegrid import TimeGrid
from wtalcli.data.unpickle import read_npy_header

STREAMS = ("both", "rgb", "flow")
VIDEO_LABELS = ("segments", "labels_all", "union")
EXAMPLES = 3  # how many ids a one-line message names


@dataclass
class ImportOptions:
    """What an import is asked for. The folder and the feature time grid; ``gt``, the ground truth
    where the layout lacks its own (basnet: instead of ``gt.json``; folder: instead of its JSON), a
    path or a packaged name; ``classes``, an explicit class order; then the matching policies
    (module docstring) and the options only one layout reads, which the others ignore."""

    root: Path
    grid: TimeGrid = field(default_factory=TimeGrid)
    gt: str | Path | None = None
    classes: list[str] | None = None
    subset_map: dict[str, str] | None = None  # wtalc, folder: source subset -> train / test
    allow_missing: bool = False
    keep_unlabeled: bool = False
    streams: str = "both"  # basnet: both (rgb ++ flow), rgb or flow
    use_splits: bool = True  # basnet: split_{train,test}.txt select the videos
    features_file: Path | None = None  # wtalc: the joint features .npy, if not the only *Features.npy
    annotations_dir: Path | None = None  # wtalc: the -Annotations folder, if not the features' own
    video_labels: str = "segments"  # wtalc: segments, labels_all or union

    def __post_init__(self) -> None:
        self.root = Path(self.root)


def empty_annotations() -> pd.DataFrame:
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
    ambiguous: pd.DataFrame = field(default_factory=empty_annotations)  # video_id, label, start_s, end_s

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
class Feat:
    """One video's features as found on disk: ``load()`` returns ``(n, dim)`` float32."""

    video_id: str
    folder_subset: str | None
    folder_name: str | None
    n: int
    dim: int
    load: Callable[[], np.ndarray]
    where: Path


@dataclass
class GtEntry:
    """One video's ground-truth entry."""

    source_subset: str
    annotations: list[tuple[str, float, float]]
    duration: float | None = None
    fps: float | None = None


# ---------------------------------------------------------------------------------- small helpers


def examples(ids: list[str]) -> str:
    shown = ", ".join(ids[:EXAMPLES])
    return shown + (f" and {len(ids) - EXAMPLES} more" if len(ids) > EXAMPLES else "")


def number(value: Any, what: str, path: Path) -> float:
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


def gt_entries(aset: AnnotationSet) -> dict[str, GtEntry]:
    """Each video of an annotation source with its class instances (source order)."""
    gt = {vid: GtEntry(info.subset, [], info.duration, info.fps) for vid, info in aset.videos.items()}
    inst = aset.instances()
    for vid, label, s, e in zip(
        inst["video_id"], inst["label"], inst["start_s"].tolist(), inst["end_s"].tolist(), strict=True
    ):
        gt[vid].annotations.append((label, s, e))
    return gt


def ambiguous_rows(aset: AnnotationSet, videos: set[str]) -> pd.DataFrame:
    amb = aset.ambiguous()
    amb = amb[amb["video_id"].isin(videos)]
    return amb[list(ANNOTATION_COLUMNS)].reset_index(drop=True) if len(amb) else empty_annotations()


# ---------------------------------------------------------------------------------- features on disk


def feature_header(path: Path) -> tuple[int, int]:
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


def load_rows(path: Path, n: int) -> np.ndarray:
    x = load_npy(path, "features", mmap=True)
    out = np.array(x[:n], dtype=np.float32)
    del x
    check_finite_rows(out, path)
    return out


def load_streams(paths: tuple[Path, ...], n: int) -> np.ndarray:
    parts = [load_rows(p, n) for p in paths]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def in_memory(array: np.ndarray, source: Path, what: str) -> np.ndarray:
    out = np.asarray(array, dtype=np.float32)
    check_finite_rows(out, source, what=what)
    return out


def stems(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.glob("*.npy"))} if folder.is_dir() else {}


def add_feat(feats: dict[str, Feat], feat: Feat) -> None:
    check_video_id(feat.video_id, feat.where)
    if feat.video_id in feats:
        raise InputError(
            f"duplicate video id {feat.video_id!r} (also in {feats[feat.video_id].where})",
            "keep each video's features in one place only",
            path=feat.where,
        )
    feats[feat.video_id] = feat


def read_split(path: Path) -> list[str]:
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
