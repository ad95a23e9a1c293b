"""The annotation formats, one reader each: the importers (``wtal extract``) and the evaluation
(``wtal evaluate``, ``wtal report``) read ground truth through this module only, so a file that
imports cleanly also evaluates, and one that is refused is refused by both with the same message.

Formats (``docs/formats.md`` shows examples and the real files each was checked against):

- **ActivityNet-style JSON** (:func:`read_anet_json`): ``{"database": {video: {"subset": name,
  "duration"?: s, "fps"?: f, "annotations": [{"segment": [start, end], "label": name}, ...]}}}``.
  ActivityNet 1.2/1.3, BaS-Net's ``gt.json`` (segments written as strings), ActionFormer's files
  (extra keys are ignored) and our packaged ground truths (``wtalcli/data/datasets``).  A file
  ending in ``.gz`` or ``.xz`` is decompressed first.
- **THUMOS14 per-class txt folder** (:func:`read_thumos_txt`): files ``<Class>_val.txt`` /
  ``<Class>_test.txt``, one instance a line ``video start end`` (seconds).  ``Ambiguous_*.txt``
  holds the parts the annotators could not call action or background.
- **Class lists** (:func:`read_class_list`): a JSON list of names, or a text file with one name a
  line (leading integer ids as in ``detclasslist.txt`` are dropped, ``#`` lines skipped).

One strict rule set, for every format:

- JSON is read strictly: a key given twice in one object (a video listed twice) is an error
  (Python's ``json`` would silently keep the last one); the text must be UTF-8.
- Numbers: a segment bound, ``duration`` or ``fps`` is a number or a numeric string (BaS-Net
  writes ``"18.6"``) and finite; anything else is an error naming the file and the entry (video
  and annotation index, or line number).  ``duration``/``fps`` may be absent or ``null``; given,
  they must be positive.
- Segments need ``0 <= start <= end`` (zero-length instances are kept: ActivityNet has some).
  Identical instances are kept too (ActivityNet 1.3 lists 45 twice); nothing is de-duplicated.
- Labels and subset names are non-empty strings (readers of a subset match its name ignoring case
  when the exact name is absent: ActionFormer writes ``Test``/``Validation``).  The label ``Ambiguous`` (THUMOS14's
  ``Ambiguous_*.txt``, or that label in a JSON) marks an ambiguous segment, never a class.
- THUMOS14 folder search: the folder **and all its sub-folders** are searched (so both
  ``annotations_val/`` and ``annotations_test/`` under one parent are found); only file names
  ``<Class>_val.txt`` / ``<Class>_test.txt`` count, hidden files (``.*``) and everything else are
  ignored.  The file name gives the class and the subset (``val`` -> ``validation``).  The same
  class file found twice for one subset, or a video in files of both subsets, is an error.
  The videos of a subset are those with at least one class instance (THUMOS14's
  ``video_test_0001292`` has only Ambiguous segments, so it is not one of the 212 test videos).

Rows are kept in source order (JSON: video by video; txt: files sorted by name, each in line
order): the evaluation's class order and its reproduction of the reference's tie order rely on it.
"""

from __future__ import annotations

import gzip
import json
import lzma
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wtalcli.core.errors import InputError

AMBIGUOUS = "Ambiguous"
ROW_COLUMNS = ("video_id", "label", "start_s", "end_s", "source_subset", "ambiguous")
THUMOS_SUBSETS = {"val": "validation", "test": "test"}  # file-name suffix -> subset name
THUMOS_FILE = re.compile(r"^(?P<label>.+)_(?P<subset>val|test)\.txt$")
COMPRESSED = (".gz", ".xz")


# ---------------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class VideoInfo:
    """One video of an annotation source."""

    subset: str  # the source's own subset name (THUMOS14: validation / test)
    duration: float | None = None  # seconds, where the source gives it
    fps: float | None = None  # the source video's frame rate, where given


@dataclass(frozen=True)
class AnnotationSet:
    """What an annotation source holds.

    ``rows``: one row per annotation, columns :data:`ROW_COLUMNS`, in source order; ambiguous
    segments have ``ambiguous=True`` (label ``Ambiguous``).  ``videos``: the source's videos in
    source order (JSON: every database entry, labelled or not; THUMOS14 txt: every video with a
    class instance).  ``files``: the files read, for provenance records."""

    rows: pd.DataFrame
    videos: dict[str, VideoInfo]
    source: Path
    files: tuple[Path, ...]
    name: str  # printable: file or folder name, or the packaged ground truth's name

    def __len__(self) -> int:
        return len(self.rows)

    def subsets(self) -> dict[str, int]:
        """Subset name -> number of videos, in order of first appearance."""
        counts: dict[str, int] = {}
        for info in self.videos.values():
            counts[info.subset] = counts.get(info.subset, 0) + 1
        return counts

    def instances(self) -> pd.DataFrame:
        """The class instances (no ambiguous rows): ``video_id, label, start_s, end_s, source_subset``."""
        return self.rows.loc[~self.rows["ambiguous"], list(ROW_COLUMNS[:5])].reset_index(drop=True)

    def ambiguous(self) -> pd.DataFrame:
        """The ambiguous segments: ``video_id, label, start_s, end_s, source_subset``."""
        return self.rows.loc[self.rows["ambiguous"], list(ROW_COLUMNS[:5])].reset_index(drop=True)

    def renamed(self, name: str) -> AnnotationSet:
        return replace(self, name=name)


def _frame(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(ROW_COLUMNS))  # text columns: pandas' default string dtype
    return df.astype({"start_s": np.float64, "end_s": np.float64, "ambiguous": bool})


# ---------------------------------------------------------------------------------- values


def short_repr(x: Any, limit: int = 60) -> str:
    """``repr(x)`` cut short (a bad value may be a 4000-digit integer or a long string)."""
    if isinstance(x, int) and not isinstance(x, bool) and abs(x) >= 10**limit:
        return f"<integer of {len(str(abs(x)))} digits>"
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_number(value: Any, what: str, path: str | Path) -> float:
    """A number or a numeric string, finite; else an :class:`InputError` naming ``what`` (the entry)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InputError(f"{what} {short_repr(value)} is not a number", "write seconds as numbers", path=path)
    try:
        v = float(value)
    except (ValueError, OverflowError):  # OverflowError: an integer beyond the float range
        raise InputError(
            f"{what} {short_repr(value)} is not a number", "write seconds as numbers", path=path
        ) from None
    if not math.isfinite(v):
        raise InputError(
            f"{what} {short_repr(value)} is not a finite number", "write finite numbers", path=path
        )
    return v


def _optional_positive(entry: dict, key: str, where: str, path: Path) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    v = parse_number(value, f"{where}: {key}", path)
    if v <= 0:
        raise InputError(
            f"{where}: {key} {short_repr(value)} is not positive", f"write a positive {key}", path=path
        )
    return v


def check_segment(start: float, end: float, where: str, path: str | Path) -> None:
    """Ground-truth segments need ``0 <= start <= end``."""
    if start < 0 or end < start:
        raise InputError(
            f"{where}: segment [{start}, {end}] is negative, reversed or not finite",
            "segments need 0 <= start <= end",
            path=path,
        )


# ---------------------------------------------------------------------------------- JSON


def _no_duplicates(path: Path):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise InputError(
                    f"duplicate key {short_repr(key)} (a video or field listed twice)",
                    "keep one entry per video",
                    path=path,
                )
            out[key] = value
        return out

    return hook


def read_bytes(path: Path, what: str) -> bytes:
    """A file's bytes, decompressed when its name ends in ``.gz`` or ``.xz``."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} not found", "check the path", path=path) from None
    except IsADirectoryError:
        raise InputError(f"{what} is a folder", "give the file", path=path) from None
    except OSError as exc:
        raise InputError(f"unreadable {what} ({exc.strerror or exc})", "check the file", path=path) from None
    try:
        if path.suffix == ".gz":
            return gzip.decompress(raw)
        if path.suffix == ".xz":
            return lzma.decompress(raw)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise InputError(
            f"unreadable compressed {what} ({exc})", "re-create or re-download the file", path=path
        ) from None
    return raw


def read_json(path: Path, what: str = "ground-truth file") -> Any:
    """Strict JSON (a key given twice in one object is an error), UTF-8, ``.gz``/``.xz`` allowed."""
    path = Path(path)
    raw = read_bytes(path, what)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} is not UTF-8 text ({exc.reason})", "give a JSON file", path=path) from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates(path))
    except (ValueError, RecursionError) as exc:  # also integers of > 4300 digits and absurd nesting
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise InputError(f"{what} is not valid JSON ({detail})", "fix the file", path=path) from None


def parse_anet_database(data: Any, path: Path, name: str | None = None) -> AnnotationSet:
    """An :class:`AnnotationSet` from a parsed ActivityNet-style document (see the module rules)."""
    path = Path(path)
    db = data.get("database") if isinstance(data, dict) else None
    if not isinstance(db, dict):
        raise InputError(
            "ground truth has no 'database' object",
            "give an ActivityNet-style JSON {'database': {video: {subset, annotations}}}",
            path=path,
        )
    rows: list[tuple] = []
    videos: dict[str, VideoInfo] = {}
    for vid, entry in db.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("subset"), str) or not entry["subset"]:
            raise InputError(
                f"video {short_repr(vid)} has no 'subset' string", "give every video a subset", path=path
            )
        subset = entry["subset"]
        where = f"video {short_repr(vid)}"
        videos[vid] = VideoInfo(
            subset,
            _optional_positive(entry, "duration", where, path),
            _optional_positive(entry, "fps", where, path),
        )
        anns = entry.get("annotations", [])
        if not isinstance(anns, list):
            raise InputError(
                f"{where}: 'annotations' is not a list", "write a list of {segment, label}", path=path
            )
        for k, ann in enumerate(anns):
            # the common case is checked inline; the messages are built only for a bad entry
            label = ann.get("label") if isinstance(ann, dict) else None
            seg = ann.get("segment") if isinstance(ann, dict) else None
            if (
                isinstance(label, str)
                and label
                and type(seg) is list
                and len(seg) == 2
                and type(seg[0]) in _PLAIN
                and type(seg[1]) in _PLAIN
            ):
                try:
                    s, e = float(seg[0]), float(seg[1])
                except OverflowError:  # an integer beyond the float range: the careful path says so
                    s = e = math.nan
                if 0 <= s <= e < math.inf:
                    rows.append((vid, label, s, e, subset, label == AMBIGUOUS))
                    continue
            rows.append(_checked_annotation(vid, ann, subset, f"{where} annotation {k}", path))
    return AnnotationSet(_frame(rows), videos, path, (path,), name or path.name)


_PLAIN = (float, int)  # exact types: bool (an int subclass) and strings take the careful path


def _checked_annotation(vid: str, ann: Any, subset: str, at: str, path: Path) -> tuple:
    """One annotation's row under the full rules, with a message naming it when it breaks one."""
    label = ann.get("label") if isinstance(ann, dict) else None
    if not isinstance(label, str) or not label:
        raise InputError(f"{at} lacks a label (a class name)", "write {segment: [s, e], label}", path=path)
    if "segment" not in ann:
        raise InputError(f"{at} lacks a [start, end] segment", "write {segment: [s, e], label}", path=path)
    seg = ann["segment"]
    if not isinstance(seg, list | tuple) or len(seg) != 2:
        raise InputError(
            f"{at}: segment {short_repr(seg)} is not [start, end]", "write [start, end]", path=path
        )
    s = parse_number(seg[0], f"{at}: segment start", path)
    e = parse_number(seg[1], f"{at}: segment end", path)
    check_segment(s, e, at, path)
    return (vid, label, s, e, subset, label == AMBIGUOUS)


def read_anet_json(path: Path) -> AnnotationSet:
    """An ActivityNet-style ground-truth JSON (``.json``, ``.json.gz`` or ``.json.xz``)."""
    path = Path(path)
    return parse_anet_database(read_json(path), path)


# ---------------------------------------------------------------------------------- THUMOS14 txt


def read_segment_lines(path: Path, label: str, subset: str) -> list[tuple]:
    """The rows of one THUMOS14 txt file (lines ``video start end``; blank lines skipped)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(
            "not a UTF-8 text file", "give the THUMOS14 annotation txt files", path=path
        ) from None
    except OSError as exc:
        raise InputError(
            f"unreadable annotation file ({exc.strerror or exc})", "check the file", path=path
        ) from None
    rows = []
    ambiguous = label == AMBIGUOUS
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise InputError(
                f"line {n} has {len(parts)} fields, expected 'video start end'", "fix that line", path=path
            )
        s = parse_number(parts[1], f"line {n}: start", path)
        e = parse_number(parts[2], f"line {n}: end", path)
        check_segment(s, e, f"line {n}", path)
        rows.append((parts[0], label, s, e, subset, ambiguous))
    return rows


def thumos_files(folder: Path) -> list[tuple[Path, str, str]]:
    """``(path, label, subset)`` of the THUMOS14 annotation files under ``folder`` (the search
    rule of the module docstring), sorted by file name."""
    found: dict[tuple[str, str], Path] = {}
    for p in sorted(folder.rglob("*_*.txt")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        m = THUMOS_FILE.match(p.name)
        if m is None:
            continue
        key = (m["label"], THUMOS_SUBSETS[m["subset"]])
        if key in found:
            raise InputError(
                f"{p.name} is found twice ({found[key].relative_to(folder)} and {rel})",
                "keep one copy of each annotation file under the folder",
                path=folder,
            )
        found[key] = p
    return sorted(((p, label, subset) for (label, subset), p in found.items()), key=lambda t: t[0].name)


def read_thumos_txt(folder: Path) -> AnnotationSet:
    """THUMOS14's per-class annotation files under ``folder`` (searched recursively, see the
    module docstring), both subsets; ``Ambiguous_*.txt`` rows have ``ambiguous=True``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(
            "not a folder of THUMOS14 annotation files",
            "give the folder holding the <Class>_val.txt / <Class>_test.txt files",
            path=folder,
        )
    files = thumos_files(folder)
    if not files:
        raise InputError(
            "no '<Class>_val.txt' / '<Class>_test.txt' annotation files found",
            "give the folder holding THUMOS14's per-class txt files",
            path=folder,
        )
    rows: list[tuple] = []
    subset_of: dict[str, tuple[str, Path]] = {}
    videos: dict[str, VideoInfo] = {}
    for path, label, subset in files:
        for row in read_segment_lines(path, label, subset):
            vid = row[0]
            first = subset_of.setdefault(vid, (subset, path))
            if first[0] != subset:
                raise InputError(
                    f"video {vid!r} is in {first[1].name} ({first[0]}) and in {path.name} ({subset})",
                    "a video belongs to one subset: fix the files",
                    path=path,
                )
            if not row[5] and vid not in videos:
                videos[vid] = VideoInfo(subset)
            rows.append(row)
    return AnnotationSet(_frame(rows), videos, folder, tuple(p for p, _, _ in files), folder.name)


# ---------------------------------------------------------------------------------- dispatch


def is_json_name(path: Path) -> bool:
    """``x.json``, ``x.json.gz`` or ``x.json.xz``."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] == ".json"


def read_annotations(path: Path) -> AnnotationSet:
    """A folder of THUMOS14 txt files, or an ActivityNet-style JSON (by the path)."""
    path = Path(path)
    if path.is_dir():
        return read_thumos_txt(path)
    if is_json_name(path):
        return read_anet_json(path)
    if not path.exists():
        raise InputError("ground-truth path not found", "check the path", path=path)
    raise InputError(
        "unrecognised ground-truth format",
        "give an ActivityNet-style .json (.json.gz, .json.xz) or a folder of THUMOS14 <Class>_test.txt files",
        path=path,
    )


# ---------------------------------------------------------------------------------- class lists


def read_class_list(path: Path, fix: str = "fix the file", allow_empty: bool = False) -> list[str]:
    """A class list: a JSON list of names (``.json``, also compressed), or a text file with one
    class a line (leading integer ids, as in ``detclasslist.txt``, and ``#`` lines are skipped).
    Names must be non-empty and distinct; the list may be empty only with ``allow_empty`` (an
    artifact of unlabelled videos).  ``fix`` is the advice the errors give."""
    path = Path(path)
    if is_json_name(path):
        data = read_json(path, "class list")
        if not isinstance(data, list) or not all(isinstance(c, str) and c for c in data):
            raise InputError("malformed class list: not a JSON list of non-empty names", fix, path=path)
        classes = list(data)
    else:
        try:
            text = read_bytes(path, "class list").decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("malformed class list: not UTF-8 text", fix, path=path) from None
        classes = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            classes.append(re.sub(r"^(?:\d+\s+)+", "", line))
    if not classes and not allow_empty:
        raise InputError("empty class list", "list one class a line", path=path)
    seen: set[str] = set()
    for c in classes:
        if c in seen:
            raise InputError(f"class {c!r} is listed twice", "list each class once", path=path)
        seen.add(c)
    return classes
