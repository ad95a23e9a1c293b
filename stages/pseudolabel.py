"""``wtal pseudolabel``: snippet-wise pseudo-labels of the training videos from a T-CAS
(method.md 3.1), as a dense ``uint8`` array plus a long Parquet view for inspection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from wtalcli.core.console import log as _log
from wtalcli.core.errors import InputError
from wtalcli.core.store import Artifact, Store, build_or_skip
from wtalcli.data.schema import BACKGROUND, TCAS, SnippetTable, label_matrix, rebase, write_videos


def long_view(table: SnippetTable, classes: list[str], columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per (video, snippet, channel) for each video's labelled classes and the background.

    ``columns`` maps a column name to an ``(N, C+1)`` array aligned with ``table``."""
    c = len(classes)
    names = np.array(list(classes) + [BACKGROUND])
    index = {k: i for i, k in enumerate(classes)}
    parts = []
    for r, (vid, labels) in enumerate(zip(table.videos["video_id"], table.videos["labels"], strict=True)):
        span = table.span(r)
        chans = np.array(sorted(index[x] for x in labels) + [c], np.int64)
        n = span.stop - span.start
        t = np.repeat(np.arange(n), len(chans))
        ch = np.tile(chans, n)
        frame = {"video_id": vid, "t": t.astype(np.int32), "class": names[ch]}
        for name, arr in columns.items():
            frame[name] = np.asarray(arr[span])[t, ch]
        parts.append(pd.DataFrame(frame))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def pseudolabel(
    store: Store,
    tcas: str | None = None,
    rule: str = "mean",
    subset: str = "train",
    force: bool = False,
    log=_log,
    tag: str | None = None,
) -> Artifact:
    """Pseudo-labels ``A`` for the ``subset`` videos of a T-CAS artifact (default: the newest)."""
    from wtalcli.dcc.pseudolabels import RULES, mean_threshold_labels

    if rule not in RULES:
        raise InputError(f"unknown pseudo-label rule {rule!r}", f"use one of {', '.join(RULES)}")
    tcas_art = store.resolve("tcas", tcas, log)
    params = {"rule": rule, "subset": subset}
    if tag:
        params["tag"] = tag
    plan = store.plan("pseudolabels", "pseudolabel", params, {"tcas": tcas_art})

    def work(tmp: Path) -> dict:
        t = TCAS(tcas_art.path)
        rows = t.rows_of(subset)
        if len(rows) == 0:
            raise InputError(f"the T-CAS has no {subset!r} videos", "train with a feature set that has them")
        videos = rebase(t.videos.iloc[rows])
        sub = SnippetTable(videos)
        cas = np.asarray(t.cas[t.snippet_rows(rows)], dtype=np.float32)
        y = label_matrix(videos["labels"], t.classes, np.uint8, t.path)
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
        pos = a[:, :-1][y[np.repeat(np.arange(len(rows)), videos["n_snippets"].to_numpy())] > 0]
        return {
            "videos": int(len(rows)),
            "snippets": int(len(a)),
            "action_share_labelled_classes": float(pos.mean()) if pos.size else None,
            "background_share": float(a[:, -1].mean()),
        }

    return build_or_skip(store, plan, force, log, work)
