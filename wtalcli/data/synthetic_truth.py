"""The synthetic generator's hidden truth for a feature set it made: which action snippets lie in
their instance's discriminative core (``docs/synthetic.md``), a diagnostic never used in training.

A synthetic feature set's manifest records the generator's configuration and seed (the ``extract``
stage's parameters, :func:`wtalcli.data.feature_artifact.extract_synthetic`); the generator plans a
dataset's layout (videos, instances, cores) without generating a feature, in a fraction of a
second, so the core mask is re-derived from that record rather than stored: the feature-set
artifacts, their files and their ids stay as they are. The re-derived plan is used only when its
videos and ground truth equal the feature set's exactly (and its generator version is the
recorded one); anything else, an imported feature set included, has no known core (``None``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from wtalcli.core.errors import InputError, WtalError
from wtalcli.core.store import read_manifest
from wtalcli.data.schema import SnippetTable


def hidden_core(path: Path, table: SnippetTable, annotations: pd.DataFrame) -> np.ndarray | None:
    """``(N,)`` bool over the feature rows of the feature set at ``path`` (snippet t of ``table``'s
    row r at ``table.span(r)``): the snippet lies in an action instance's discriminative core.
    ``None`` when the feature set is not one the synthetic generator made, or when the generator's
    plan from the recorded configuration does not reproduce its videos and ``annotations``
    exactly."""
    from wtalcli.data import synthetic

    try:
        manifest = read_manifest(Path(path))
    except WtalError:  # not an artifact (a feature set written by hand), or a damaged manifest
        return None
    params = manifest.get("params")
    if not isinstance(params, dict) or params.get("source") != "synthetic":
        return None
    recorded = dict(params.get("config") or {})
    if recorded.pop("generator_version", None) != synthetic.GENERATOR_VERSION:
        return None
    try:
        stream = synthetic.stream(synthetic.SyntheticConfig(**recorded), int(manifest.get("seed")))
    except (TypeError, ValueError, InputError):  # knobs of another generator, a missing seed
        return None
    if not _same_layout(stream.videos, stream.annotations, table.videos, annotations):
        return None
    _cls, core = stream.snippet_truth()  # in the plan's own (cumulative) offsets
    out = np.zeros(int(table.videos["n_snippets"].sum()), bool)
    planned = stream.videos["offset"].to_numpy(np.int64)
    for r, (start, n) in enumerate(zip(planned, stream.videos["n_snippets"], strict=True)):
        out[table.span(r)] = core[start : start + int(n)]
    return out


def _same_layout(
    planned_videos: pd.DataFrame,
    planned_annotations: pd.DataFrame,
    videos: pd.DataFrame,
    annotations: pd.DataFrame,
) -> bool:
    """The plan has the feature set's videos (ids, lengths, in row order) and ground truth."""
    if len(planned_videos) != len(videos) or len(planned_annotations) != len(annotations):
        return False
    for col in ("video_id", "n_snippets"):
        if not np.array_equal(planned_videos[col].to_numpy(), videos[col].to_numpy()):
            return False
    cols = ["video_id", "label", "start_s", "end_s"]

    def rows(df: pd.DataFrame) -> list[tuple]:
        return sorted(zip(*(df[c].tolist() for c in cols), strict=True))

    return rows(planned_annotations) == rows(annotations)
