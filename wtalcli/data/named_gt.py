"""Packaged public ground truths, by name: ``thumos14``, ``anet13``, ``anet12``.

The files live in ``wtalcli/data/datasets/`` (sources, commits, licence notes and checksums in its
``PROVENANCE.md``) and are read by the ordinary readers of :mod:`wtalcli.data.annotations`, so a
name can stand wherever a ground-truth path is accepted: ``wtal evaluate --gt thumos14``,
``wtal extract --from folder DIR --gt anet13``, ``--annotations thumos14``.

Each name has an evaluation subset (used when the subset asked for is ``test``, the default of
``wtal evaluate``) and accepts our feature-set subset names: ``train`` means the source's training
subset (THUMOS14 ``validation``, ActivityNet ``training``), ``test`` its evaluation subset
(THUMOS14 ``test``, ActivityNet ``validation``), as the importers map them.

A value is a name only when it is exactly one of :data:`NAMES` (no folder part); a local file or
folder of the same name is reached by writing a path, e.g. ``./thumos14``.

A ground truth's identity (:func:`identity`: its name or path and the sha256 of every file the
reader read) is what the importers record in a feature set's key and ``wtal evaluate`` in an
evaluation's: the same files give the same identity, and a file the reader skips (a README beside
THUMOS14's txt files) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wtalcli.core.errors import InputError
from wtalcli.core.files import file_record, file_sha256
from wtalcli.data.annotations import AnnotationSet, read_annotations

PACKAGE_DIR = Path(__file__).resolve().parent / "datasets"


@dataclass(frozen=True)
class NamedGT:
    """One packaged ground truth."""

    name: str
    relpath: str  # under PACKAGE_DIR: a THUMOS14 txt folder or an ActivityNet-style JSON
    title: str
    subsets: dict[str, str] = field(default_factory=dict)  # accepted names -> the source's subset

    @property
    def path(self) -> Path:
        return PACKAGE_DIR / self.relpath

    def subset(self, subset: str) -> str:
        """The source's name for ``subset`` (``test`` -> the evaluation subset, ...)."""
        return self.subsets.get(subset, subset)


_ANET_SUBSETS = {
    "test": "validation",
    "val": "validation",
    "train": "training",
}
NAMES: dict[str, NamedGT] = {
    g.name: g
    for g in (
        NamedGT(
            "thumos14",
            "thumos14",
            "THUMOS14 temporal annotations, validation 200 + test 212 videos, 20 classes, with Ambiguous",
            {"test": "test", "val": "validation", "train": "validation"},
        ),
        NamedGT(
            "anet13",
            "anet13/gt.json.xz",
            "ActivityNet 1.3 ground truth, training 9649 + validation 4728 videos, 200 classes",
            _ANET_SUBSETS,
        ),
        NamedGT(
            "anet12",
            "anet12/gt.json.xz",
            "ActivityNet 1.2 ground truth, training 4819 + validation 2383 videos, 100 classes",
            _ANET_SUBSETS,
        ),
    )
}
# Packaged files that are not a name of their own (BaS-Net's THUMOS14 ground truth and split).
BASNET_THUMOS14 = PACKAGE_DIR / "basnet_thumos14"


def is_name(value: str | Path | None) -> bool:
    return value is not None and str(value) in NAMES


def get(name: str) -> NamedGT:
    if name not in NAMES:
        raise InputError(f"unknown packaged ground truth {name!r}", f"use one of {', '.join(NAMES)}")
    return NAMES[name]


def locate(value: str | Path) -> tuple[Path, NamedGT | None]:
    """The path behind a ground-truth argument: a packaged name's file, or the path itself."""
    if is_name(value):
        g = NAMES[str(value)]
        if not g.path.exists():
            raise InputError(
                f"the packaged ground truth {g.name!r} is missing from this installation",
                "reinstall wtal (the package data under wtalcli/data/datasets was not installed)",
                path=g.path,
            )
        return g.path, g
    return Path(value), None


def read(value: str | Path) -> AnnotationSet:
    """The annotations behind a ground-truth argument (a packaged name or a path), resolved once."""
    path, named = locate(value)
    if not path.exists():
        raise InputError(
            "ground-truth file not found",
            f"give an ActivityNet-style JSON, a THUMOS14 txt folder or a packaged name ({', '.join(NAMES)})",
            path=value,
        )
    aset = read_annotations(path)
    return aset.renamed(named.name) if named is not None else aset


def packaged(aset: AnnotationSet) -> NamedGT | None:
    """The packaged ground truth ``aset`` was read from (by name or by its install path), if any."""
    g = NAMES.get(aset.name)
    return g if g is not None and Path(aset.source).resolve() == g.path else None


def source_subset(aset: AnnotationSet, subset: str) -> str:
    """The source's name for ``subset``: a packaged ground truth maps ours (``test`` -> its
    evaluation subset, ``train`` -> its training subset); any other source keeps it."""
    g = packaged(aset)
    return g.subset(subset) if g is not None else subset


def identity(aset: AnnotationSet) -> dict[str, Any]:
    """What identifies a ground truth: the files the reader read with their sha256 (a THUMOS14
    folder: by name relative to it; a single file: its size and hash), under the packaged name
    instead of the install path."""
    named = packaged(aset)
    source = Path(aset.source)
    if source.is_dir():
        rec: dict[str, Any] = {
            "path": named.name if named else str(source),
            "files": {str(p.relative_to(source)): file_sha256(p) for p in aset.files},
        }
    else:
        rec = file_record(source)
        if named:
            rec["path"] = source.name
    if named:
        rec["name"] = named.name
    return rec
