"""The ``pseudolabels`` artifact (``wtal pseudolabel`` and DCC's refresh rounds): the snippet-wise
pseudo-labels of a T-CAS's training videos (:func:`wtalcli.dcc.pseudolabels.mean_threshold_labels`)
as a dense ``uint8`` array plus a long Parquet view for inspection, and, where the feature set has
ground truth, their quality against it (a diagnostic, never used in training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from wtalcli.core.errors import InputError
from wtalcli.core.params import record_dict
from wtalcli.core.store import Artifact, Store, build_or_skip
from wtalcli.data.schema import BACKGROUND, TCAS, FeatureSet, SnippetTable, label_matrix, rebase, write_videos
from wtalcli.dcc.params import PseudolabelParams
from wtalcli.dcc.pseudolabels import mean_threshold_labels
from wtalcli.evaluation.diagnostics import pseudolabel_quality, truth_with_background


def long_view(table: SnippetTable, classes: list[str], columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per (video, snippet, channel) for each video's labelled classes and the background,
    in video, snippet, channel order (vectorised: one ``nonzero`` over the snippets' channel masks).

    ``columns`` maps a column name to an ``(N, C+1)`` array aligned with ``table``."""
    videos = table.videos
    if len(videos) == 0:
        return pd.DataFrame()
    names = np.array(list(classes) + [BACKGROUND], dtype=object)
    chans = np.ones((len(videos), len(classes) + 1), dtype=bool)  # (V, C+1): labelled classes + bg
    chans[:, :-1] = label_matrix(videos["labels"], classes, bool)
    n = videos["n_snippets"].to_numpy(np.int64)
    off = videos["offset"].to_numpy(np.int64)
    video_of = np.repeat(np.arange(len(videos)), n)  # (N,) in table order
    rows = np.concatenate([np.arange(o, o + k) for o, k in zip(off, n, strict=True)])
    snip, ch = np.nonzero(chans[video_of])  # (L,) pairs, snippets in order, channels ascending
    v = video_of[snip]
    frame = {
        "video_id": videos["video_id"].to_numpy(dtype=object)[v],
        "t": (snip - np.repeat(np.cumsum(n) - n, n)[snip]).astype(np.int32),
        "class": names[ch],
    }
    for name, arr in columns.items():
        frame[name] = np.asarray(arr)[rows[snip], ch]
    return pd.DataFrame(frame)


def ground_truth_of(store: Store, art: Artifact, table: SnippetTable) -> np.ndarray | None:
    """Ground-truth snippet labels ``(N, C+1)`` of ``table``'s videos from the feature set ``art``
    derives from (background = no action), or None without annotations or when it is gone."""
    fs_id = art.lineage.get("features")
    if fs_id is None or not (store.root / fs_id).is_dir():
        return None
    fs = FeatureSet(store.get(store.root / fs_id).path)
    return truth_with_background(table, fs.annotations, fs.classes) if len(fs.annotations) else None


def build_pseudolabels(
    store: Store, tcas_art: Artifact, p: PseudolabelParams, force: bool, log, tag: str | None = None
) -> Artifact:
    """Pseudo-labels ``A`` for the ``p.subset`` videos of ``tcas_art`` (built, or found in the
    cache); ``tag`` names a refresh round in the manifest."""
    rule, subset = p.rule, p.subset
    plan = store.plan("pseudolabels", "pseudolabel", record_dict(p), {"tcas": tcas_art}, tag=tag)

    def work(tmp: Path) -> dict:
        t = TCAS(tcas_art.path)
        rows = t.rows_of(subset)
        if len(rows) == 0:
            raise InputError(f"the T-CAS has no {subset!r} videos", "train with a feature set that has them")
        videos = rebase(t.videos.iloc[rows])
        sub = SnippetTable(videos)
        cas = np.asarray(t.cas[t.snippet_rows(rows)], dtype=np.float32)
        y = label_matrix(videos["labels"], t.classes, bool, t.path)
        a = mean_threshold_labels(
            cas,
            videos["offset"].to_numpy(),
            videos["n_snippets"].to_numpy(),
            y,
            rule=rule,
            source=str(t.path),
        )
        np.save(tmp / "labels.npy", a)
        write_videos(tmp, videos)
        (tmp / "classes.json").write_text(json.dumps(list(t.classes), indent=1) + "\n")
        long_view(sub, t.classes, {"cas": cas, "label": a}).to_parquet(tmp / "labels.parquet")
        carries = np.repeat(y, videos["n_snippets"].to_numpy(), axis=0)  # (N, C)
        pos = a[:, :-1][carries]
        summary = {
            "videos": int(len(rows)),
            "snippets": int(len(a)),
            "action_share_labelled_classes": float(pos.mean()) if pos.size else None,
            "background_share": float(a[:, -1].mean()),
        }
        truth = ground_truth_of(store, tcas_art, sub)
        if truth is not None:  # a diagnostic against the ground truth; never used for training
            summary["quality"] = pseudolabel_quality(a, truth, carries)
        return summary

    return build_or_skip(store, plan, force, log, work)
