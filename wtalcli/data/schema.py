"""The artifact schemas, defined once: feature sets and T-CAS (snippet-level class activations).

Feature set (an artifact directory of kind ``features``):

- ``videos.parquet``: one row per video, columns :data:`VIDEO_COLUMNS`. ``offset`` is the row of
  the video's first snippet in ``features.npy``; rows are stored in offset order, contiguous.
  ``subset`` is ``train`` (weak labels used for training), ``val`` (training videos held out for
  model selection, e.g. by ``baseline --holdout``) or ``test`` (evaluation); an importer keeps the
  source's own name in ``source_subset`` (THUMOS14 ``validation`` -> ``train``).
- ``features.npy``: ``(sum n_snippets, D)`` float32 or float16, memory-mapped on read.
- ``annotations.parquet``: ground-truth segments (``video_id, label, start_s, end_s``); may be empty.
- ``classes.json``: the ordered class list; a class's index is its position.

T-CAS (kind ``tcas``), written by ``baseline`` and ``train-dcc``, read by ``localize`` and
``pseudolabel``: ``videos.parquet`` (same columns, offsets into ``cas.npy``), ``cas.npy``
``(sum n_snippets, C+1)`` float32 suppression-branch class activations (softmax over C+1, last
channel background) at each video's own snippets, ``scores.npy`` ``(n_videos, C+1)`` video-level
class scores, ``classes.json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from wtalcli.core.errors import InputError
from wtalcli.data.annotations import read_class_list
from wtalcli.data.timegrid import TimeGrid

SUBSETS = ("train", "val", "test")  # val: training videos held out for model selection

VIDEO_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("subset", pa.string()),
        ("source_subset", pa.string()),
        ("n_snippets", pa.int64()),
        ("duration_s", pa.float64()),
        ("fps", pa.float64()),
        ("stride", pa.int64()),
        ("clip_len", pa.int64()),
        ("offset", pa.int64()),
        ("labels", pa.list_(pa.string())),
    ]
)
VIDEO_COLUMNS = tuple(VIDEO_SCHEMA.names)

ANNOTATION_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("label", pa.string()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
    ]
)
ANNOTATION_COLUMNS = tuple(ANNOTATION_SCHEMA.names)

FEATURE_DTYPES = ("float32", "float16")
BACKGROUND = "__background__"

_SAFE_ID = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")  # YouTube ids may start with "-"


def check_video_id(video_id: str, source: str | Path) -> None:
    """Refuse ids that could escape a directory or break file names."""
    if not isinstance(video_id, str) or not _SAFE_ID.match(video_id) or ".." in video_id:
        raise InputError(
            f"unsafe video id {video_id!r}",
            "video ids may hold letters, digits, '_', '-' and '.' (not first), without '..' or path separators",
            path=source,
        )


# ---------------------------------------------------------------------------------- tables


def videos_table(rows: pd.DataFrame) -> pa.Table:
    """Normalise a videos DataFrame to :data:`VIDEO_SCHEMA` (computing ``offset`` if absent)."""
    df = rows.copy()
    if "offset" not in df:
        n = df["n_snippets"].to_numpy(dtype=np.int64)
        df["offset"] = np.concatenate([[0], np.cumsum(n)[:-1]]) if len(n) else np.zeros(0, np.int64)
    if "source_subset" not in df:
        df["source_subset"] = df["subset"]
    df["labels"] = [sorted(set(map(str, x))) for x in df["labels"]]
    return pa.Table.from_pandas(df[list(VIDEO_COLUMNS)], schema=VIDEO_SCHEMA, preserve_index=False)


def annotations_table(rows: pd.DataFrame | None) -> pa.Table:
    if rows is None or len(rows) == 0:
        return ANNOTATION_SCHEMA.empty_table()
    df = rows[list(ANNOTATION_COLUMNS)].copy()
    return pa.Table.from_pandas(df, schema=ANNOTATION_SCHEMA, preserve_index=False)


def read_parquet(path: Path, what: str) -> pd.DataFrame:
    if not path.exists():
        raise InputError(
            f"missing {what} file", "rebuild the artifact (rerun its stage with --force)", path=path
        )
    try:
        return pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowException) as exc:
        raise InputError(
            f"unreadable {what} ({exc})", "rebuild the artifact (rerun its stage with --force)", path=path
        ) from exc


def read_classes(path: Path) -> list[str]:
    """An artifact's ``classes.json`` (:func:`wtalcli.data.annotations.read_class_list`)."""
    return read_class_list(path, fix="rebuild the artifact (rerun its stage with --force)", allow_empty=True)


def load_npy(path: Path, what: str, mmap: bool = True) -> np.ndarray:
    """Load a ``.npy`` safely: never pickles, memory-mapped by default, clear errors."""
    if not path.exists():
        raise InputError(
            f"missing {what} file", "rebuild the artifact (rerun its stage with --force)", path=path
        )
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        msg = str(exc)
        if "mmap length" in msg or "reshape" in msg:  # fewer data bytes than the header promises
            raise InputError(
                f"cannot read {what}: truncated ({msg})", "rebuild or re-download the file", path=path
            ) from exc
        pickled = "pickle" in msg.lower() or "python objects" in msg.lower()  # np.load / its mmap path
        hint = "it holds pickled objects, which are never loaded" if pickled else msg
        raise InputError(
            f"cannot read {what}: {hint}", "write it as a plain numeric .npy", path=path
        ) from exc
    except (OSError, EOFError) as exc:
        raise InputError(
            f"cannot read {what}: truncated or corrupt ({exc})", "rebuild or re-download the file", path=path
        ) from exc


# ---------------------------------------------------------------------------------- checks


def check_finite_rows(x: np.ndarray, source: str | Path, what: str = "features", chunk: int = 65536) -> None:
    """Raise naming the first non-finite row (chunked, so memory stays bounded)."""
    for start in range(0, x.shape[0], chunk):
        block = np.asarray(x[start : start + chunk])
        ok = np.isfinite(block).all(axis=1)
        if not ok.all():
            row = start + int(np.flatnonzero(~ok)[0])
            raise InputError(
                f"{what} row {row} holds NaN or Inf",
                "recompute the features of that video or drop it",
                path=source,
            )


def validate_videos(videos: pd.DataFrame, classes: list[str], source: str | Path) -> None:
    dup = videos["video_id"][videos["video_id"].duplicated()]
    if len(dup):
        raise InputError(f"duplicate video id {dup.iloc[0]!r}", "each video may appear once", path=source)
    for vid in videos["video_id"]:
        check_video_id(vid, source)
    empty = videos.loc[videos["n_snippets"] < 1, "video_id"]
    if len(empty):
        raise InputError(
            f"video {empty.iloc[0]!r} has no snippets", "drop empty videos or re-extract them", path=source
        )
    bad_subset = set(videos["subset"]) - set(SUBSETS)
    if bad_subset:
        raise InputError(
            f"unknown subset {sorted(bad_subset)[0]!r}", f"subset must be one of {SUBSETS}", path=source
        )
    known = set(classes)
    for vid, labels in zip(videos["video_id"], videos["labels"], strict=True):
        unknown = set(labels) - known
        if unknown:
            raise InputError(
                f"video {vid!r} has unknown class {sorted(unknown)[0]!r}",
                "add the class to classes.json or fix the label",
                path=source,
            )


def validate_annotations(ann: pd.DataFrame, classes: list[str], source: str | Path) -> None:
    if len(ann) == 0:
        return
    unknown = set(ann["label"]) - set(classes)
    if unknown:
        raise InputError(
            f"annotation with unknown class {sorted(unknown)[0]!r}",
            "fix the label or the class list",
            path=source,
        )
    s, e = ann["start_s"].to_numpy(float), ann["end_s"].to_numpy(float)
    bad = ~np.isfinite(s) | ~np.isfinite(e) | (s < 0) | (e < s)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        row = ann.iloc[i]
        raise InputError(
            f"segment [{row.start_s}, {row.end_s}] of {row.video_id!r} is negative, reversed or not finite",
            "segments need 0 <= start <= end",
            path=source,
        )


# ---------------------------------------------------------------------------------- writing


def write_feature_set(
    out_dir: Path,
    videos: pd.DataFrame,
    features: Iterable[np.ndarray],
    classes: list[str],
    annotations: pd.DataFrame | None = None,
    dtype: str = "float32",
    source: str | Path = "input",
) -> None:
    """Write a feature set into ``out_dir`` (a fresh directory, e.g. a store's temporary one).

    ``features`` yields one ``(n_snippets, D)`` array per row of ``videos``, in order; they are
    streamed into ``features.npy`` so the whole set never needs to fit in memory.
    """
    if dtype not in FEATURE_DTYPES:
        raise InputError(f"unsupported feature dtype {dtype!r}", f"use one of {FEATURE_DTYPES}")
    if len(videos) == 0:
        raise InputError("no videos to write", "check the input folder and the split files", path=source)
    table = videos_table(videos)
    vdf = table.to_pandas()
    validate_videos(vdf, classes, source)
    ann = annotations if annotations is not None else pd.DataFrame(columns=list(ANNOTATION_COLUMNS))
    validate_annotations(ann, classes, source)
    total = int(vdf["n_snippets"].sum())
    out_dir.mkdir(parents=True, exist_ok=True)
    mm = None
    it: Iterator[np.ndarray] = iter(features)
    for row in vdf.itertuples(index=False):
        try:
            x = next(it)
        except StopIteration:
            raise InputError(
                f"features missing for video {row.video_id!r}",
                "every video needs a feature array",
                path=source,
            ) from None
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[0] != row.n_snippets:
            raise InputError(
                f"features of {row.video_id!r} have shape {x.shape}, expected ({row.n_snippets}, D)",
                "features must be a 2-D (snippets x dim) array",
                path=source,
            )
        if mm is None:
            mm = np.lib.format.open_memmap(
                out_dir / "features.npy", mode="w+", dtype=dtype, shape=(total, x.shape[1])
            )
        elif x.shape[1] != mm.shape[1]:
            raise InputError(
                f"features of {row.video_id!r} have dim {x.shape[1]}, others {mm.shape[1]}",
                "all videos need the same feature dimension",
                path=source,
            )
        if not np.isfinite(x).all():
            bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
            raise InputError(
                f"features of {row.video_id!r} hold NaN or Inf (snippet {bad})",
                "recompute or drop that video",
                path=source,
            )
        mm[row.offset : row.offset + row.n_snippets] = x
    assert mm is not None
    mm.flush()
    del mm
    pq.write_table(table, out_dir / "videos.parquet")
    pq.write_table(annotations_table(ann), out_dir / "annotations.parquet")
    (out_dir / "classes.json").write_text(json.dumps(list(classes), indent=1) + "\n")


# ---------------------------------------------------------------------------------- reading


@dataclass
class SnippetTable:
    """A ragged per-video view over a snippet-stacked array (``videos`` rows with ``offset``)."""

    videos: pd.DataFrame

    def __post_init__(self) -> None:
        self.videos = self.videos.reset_index(drop=True)
        self._index = {v: i for i, v in enumerate(self.videos["video_id"])}
        # per-row lookups read these arrays, not pandas rows (``span``/``grid`` run once per video
        # in per-round diagnostics); the table is read-only once built
        v = self.videos
        self._offset = v["offset"].to_numpy(np.int64)
        self._count = v["n_snippets"].to_numpy(np.int64)
        cols = ("fps", "stride", "clip_len")
        self._grid = [v[c].to_numpy() for c in cols] if set(cols) <= set(v.columns) else None

    def __len__(self) -> int:
        return len(self.videos)

    def row(self, video: str | int) -> int:
        if isinstance(video, str):
            try:
                return self._index[video]
            except KeyError:
                raise InputError(f"unknown video {video!r}", "check the video id") from None
        return int(video)

    def find(self, video_id: str) -> int | None:
        """The row of ``video_id``, or None when the table does not hold it."""
        return self._index.get(video_id)

    def span(self, video: str | int) -> slice:
        r = self.row(video)
        start = int(self._offset[r])
        return slice(start, start + int(self._count[r]))

    def grid(self, video: str | int) -> TimeGrid:
        if self._grid is None:
            raise InputError(
                "videos table lacks its time grid (fps, stride, clip_len)", "rebuild the artifact"
            )
        r = self.row(video)
        fps, stride, clip_len = (a[r] for a in self._grid)
        return TimeGrid(fps=float(fps), stride=int(stride), clip_len=int(clip_len))

    def rows_of(self, subset: str | None) -> np.ndarray:
        if subset is None:
            return np.arange(len(self.videos))
        return np.flatnonzero(self.videos["subset"].to_numpy() == subset)

    def snippet_rows(self, rows: np.ndarray) -> np.ndarray:
        """All snippet indices of the given video rows, concatenated in row order."""
        off = self.videos["offset"].to_numpy(np.int64)[rows]
        n = self.videos["n_snippets"].to_numpy(np.int64)[rows]
        if len(rows) == 0:
            return np.zeros(0, np.int64)
        starts = np.repeat(off - np.concatenate([[0], np.cumsum(n)[:-1]]), n)
        return starts + np.arange(int(n.sum()), dtype=np.int64)


class FeatureSet(SnippetTable):
    """A feature-set artifact opened for reading (features memory-mapped)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.classes = read_classes(self.path / "classes.json")
        videos = read_parquet(self.path / "videos.parquet", "videos table")
        missing = set(VIDEO_COLUMNS) - set(videos.columns)
        if missing:
            raise InputError(
                f"videos table lacks columns {sorted(missing)}",
                "rebuild the feature set",
                path=self.path / "videos.parquet",
            )
        videos["labels"] = [list(x) for x in videos["labels"]]
        super().__init__(videos)
        self.annotations = read_parquet(self.path / "annotations.parquet", "annotations")
        self.features = load_npy(self.path / "features.npy", "features")
        if self.features.ndim != 2 or self.features.dtype.name not in FEATURE_DTYPES:
            raise InputError(
                f"features.npy has shape {self.features.shape} and dtype {self.features.dtype}",
                "features must be a 2-D float32/float16 array",
                path=self.path / "features.npy",
            )
        n_total = int(self.videos["n_snippets"].sum())
        if self.features.shape[0] != n_total:
            raise InputError(
                f"features.npy has {self.features.shape[0]} rows but videos.parquet counts {n_total} snippets",
                "the artifact is damaged: rebuild it with --force",
                path=self.path / "features.npy",
            )

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def features_of(self, video: str | int) -> np.ndarray:
        return self.features[self.span(video)]

    def label_matrix(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Multi-hot video-level labels ``(len(rows), C)`` float32 (:func:`label_matrix`)."""
        labels = self.videos["labels"].to_numpy()
        return label_matrix(labels if rows is None else labels[rows], self.classes, source=self.path)


def label_matrix(
    labels: Iterable[Iterable[str]], classes: list[str], dtype=np.float32, source: str | Path | None = None
) -> np.ndarray:
    """Multi-hot video-level labels ``(n_videos, C)``: row ``k`` has a 1 in the column of each
    class named in ``labels[k]`` (columns in ``classes`` order).  A name outside ``classes`` is an
    :class:`InputError` (artifacts are validated when written, so it means a damaged one)."""
    labels = list(labels)
    index = {c: i for i, c in enumerate(classes)}
    y = np.zeros((len(labels), len(classes)), dtype)
    for k, names in enumerate(labels):
        for name in names:
            j = index.get(name)
            if j is None:
                raise InputError(
                    f"video label {name!r} is not one of the {len(classes)} classes",
                    "rebuild the artifact (rerun its stage with --force)",
                    path=source,
                )
            y[k, j] = 1
    return y


def rebase(videos: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``videos`` whose offsets index a new array holding just these videos, in order."""
    out = videos.reset_index(drop=True).copy()
    n = out["n_snippets"].to_numpy(np.int64)
    out["offset"] = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64) if len(n) else n
    return out


def write_videos(out_dir: Path, videos: pd.DataFrame) -> None:
    pq.write_table(videos_table(videos), out_dir / "videos.parquet")


def write_tcas(
    out_dir: Path, videos: pd.DataFrame, cas: np.ndarray, scores: np.ndarray, classes: list[str]
) -> None:
    """Write a T-CAS artifact's files (``videos`` with offsets into ``cas``; see the module doc)."""
    n = int(videos["n_snippets"].sum())
    if cas.shape != (n, len(classes) + 1) or scores.shape != (len(videos), len(classes) + 1):
        raise ValueError(
            f"T-CAS shapes {cas.shape}/{scores.shape} do not match {len(videos)} videos, {n} snippets"
        )
    write_videos(out_dir, videos)
    np.save(out_dir / "cas.npy", np.ascontiguousarray(cas, dtype=np.float32))
    np.save(out_dir / "scores.npy", np.ascontiguousarray(scores, dtype=np.float32))
    (out_dir / "classes.json").write_text(json.dumps(list(classes), indent=1) + "\n")


class TCAS(SnippetTable):
    """A T-CAS artifact opened for reading."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.classes = read_classes(self.path / "classes.json")
        videos = read_parquet(self.path / "videos.parquet", "videos table")
        videos["labels"] = [list(x) for x in videos["labels"]]
        super().__init__(videos)
        self.cas = load_npy(self.path / "cas.npy", "T-CAS")
        self.scores = load_npy(self.path / "scores.npy", "video scores", mmap=False)
        c1 = len(self.classes) + 1
        n = int(self.videos["n_snippets"].sum())
        if self.cas.shape != (n, c1) or self.scores.shape != (len(self.videos), c1):
            raise InputError(
                f"T-CAS arrays {self.cas.shape}/{self.scores.shape} do not match {len(self.videos)} videos, "
                f"{n} snippets and {c1 - 1} classes",
                "the artifact is damaged: rebuild it with --force",
                path=self.path,
            )

    def cas_of(self, video: str | int) -> np.ndarray:
        return self.cas[self.span(video)]
