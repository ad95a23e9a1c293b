"""Score a T-CAS held in memory: localize, then mAP against a feature set's annotations.

Used to choose a training length on held-out training videos (``--select-every``) without writing
any artifact; the same localization and the same mAP as ``wtal localize`` + ``wtal evaluate``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from wtalcli.data.timegrid import TimeGrid
from wtalcli.evaluation.detection import EvalResult, Predictions, evaluate_detection
from wtalcli.evaluation.groundtruth import gt_from_dataframe
from wtalcli.evaluation.localization import LocalizeParams, localize_all


def score_tcas(
    cas: np.ndarray,
    scores: np.ndarray,
    videos: pd.DataFrame,
    classes: list[str],
    annotations: pd.DataFrame,
    tiou: str = "thumos14",
    params: LocalizeParams | None = None,
    subset: str = "val",
) -> EvalResult:
    """mAP of the videos in ``videos`` (rows with ``offset`` into ``cas`` and a time grid each):
    ``cas`` (N, C+1), ``scores`` (V, C+1) in the order of ``videos``."""
    off = videos["offset"].to_numpy(np.int64)
    n = videos["n_snippets"].to_numpy(np.int64)
    grids = [
        TimeGrid(fps=float(f), stride=int(s), clip_len=int(c))
        for f, s, c in zip(videos["fps"], videos["stride"], videos["clip_len"], strict=True)
    ]
    det = localize_all([cas[o : o + k] for o, k in zip(off, n, strict=True)], scores, grids, params)
    ids = videos["video_id"].astype(str).to_numpy()
    names = np.asarray(classes, dtype=object)
    preds = Predictions.from_arrays(
        ids[det.video], names[det.label], det.score, det.t_start, det.t_end, source="held-out T-CAS"
    )
    gt = gt_from_dataframe(annotations, ids.tolist(), subset, source="held-out videos")
    return evaluate_detection(gt, preds, tiou, unknown_labels="drop")
