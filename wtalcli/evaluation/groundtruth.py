"""Ground truth for evaluation: the :class:`GroundTruth` structure and the THUMOS14 protocols.

A :class:`GroundTruth` is columnar (one row per action instance, in source order: the order
matters for exact reproduction of the reference evaluator, see :mod:`wtalcli.evaluation.detection`) and
holds only the instances of one subset.  It is built from

- any annotation source the importers read too (an ActivityNet-style JSON, a folder of THUMOS14
  per-class txt files, or a packaged ground truth by name: ``thumos14``, ``anet13``, ``anet12``),
  parsed by :mod:`wtalcli.data.annotations` under its one rule set: :func:`load_ground_truth`
  (a name or a path) and :func:`gt_from_annotations` (an annotation set already read);
- a DataFrame ``video_id, label, start_s, end_s`` plus the subset's video ids (a feature set's
  ``annotations.parquet``): :func:`gt_from_dataframe`.

THUMOS14's ``Ambiguous`` segments are kept apart in ``ambiguous``.  Evaluation protocols that drop
videos (THUMOS14: :data:`THUMOS14_PROTOCOLS`) are applied with :func:`apply_protocol`; the dropped
videos are remembered in ``excluded_videos`` so that predictions on them are dropped too (that is
what the codebases that use those protocols do: they never predict on those videos).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from wtalcli.core.errors import InputError
from wtalcli.data import named_gt
from wtalcli.data.annotations import AnnotationSet

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

_SUBSET_ALIASES = {"val": "validation"}  # THUMOS14 file names say "val"


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


def gt_from_annotations(aset: AnnotationSet, subset: str) -> GroundTruth:
    """The ``subset`` part of an :class:`~wtalcli.data.annotations.AnnotationSet`: its class
    instances (source order), its videos (with or without instances), its ambiguous segments and
    durations.  ``val`` stands for ``validation`` where the source has no subset named ``val``, and
    a subset name matches ignoring case when the exact name is absent."""
    subsets = aset.subsets()
    key = subset if subset in subsets else _SUBSET_ALIASES.get(subset, subset)
    if key not in subsets:  # ActionFormer writes "Test" / "Validation"
        same = [s for s in subsets if s.lower() == key.lower()]
        key = same[0] if len(same) == 1 else key
    if key not in subsets:
        raise InputError(
            f"no video of subset {subset!r}",
            f"choose one of the subsets in the ground truth: {list(subsets)}",
            path=aset.source,
        )
    rows = aset.rows[aset.rows["source_subset"].to_numpy() == key]
    amb_mask = rows["ambiguous"].to_numpy(bool)
    inst, amb = rows[~amb_mask], rows[amb_mask]
    videos = [v for v, info in aset.videos.items() if info.subset == key]
    durations = {v: aset.videos[v].duration for v in videos if aset.videos[v].duration is not None}
    return _build(
        inst["video_id"].tolist(),
        inst["label"].tolist(),
        inst["start_s"].to_numpy(np.float64),
        inst["end_s"].to_numpy(np.float64),
        videos,
        key,
        aset.name,
        Segments(
            amb["video_id"].to_numpy(object),
            amb["start_s"].to_numpy(np.float64),
            amb["end_s"].to_numpy(np.float64),
        ),
        durations or None,
    )


def load_ground_truth(source: str | Path, subset: str) -> GroundTruth:
    """Ground truth from a packaged name (``thumos14``, ``anet13``, ``anet12``: ``subset`` in
    their own names or ours, see :mod:`wtalcli.data.named_gt`), a folder of THUMOS14 txt files,
    or an ActivityNet-style JSON."""
    aset = named_gt.read(source)
    return gt_from_annotations(aset, named_gt.source_subset(aset, subset))


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


# ---------------------------------------------------------------------------------- protocols


def apply_protocol(gt: GroundTruth, protocol: str) -> GroundTruth:
    """Apply a THUMOS14 test-set protocol (:data:`THUMOS14_PROTOCOLS`); returns a new object."""
    if protocol not in THUMOS14_PROTOCOLS:
        raise InputError(
            f"unknown THUMOS14 protocol {protocol!r}", f"use one of {sorted(THUMOS14_PROTOCOLS)}"
        )
    return gt.drop_videos(THUMOS14_PROTOCOLS[protocol], protocol=THUMOS14_PROTOCOL_NOTES[protocol])
