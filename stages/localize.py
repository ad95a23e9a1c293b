"""``wtal localize``: BaS-Net inference (docs/method.md §3) on a T-CAS artifact; ActivityNet
results JSON to stdout or a file, and a ``proposals`` artifact for caching and inspection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from wtalcli.core.console import log as _log
from wtalcli.core.errors import InputError
from wtalcli.core.store import Artifact, Store, build_or_skip
from wtalcli.data.schema import TCAS

RESULTS = "proposals.json"


def holds_probabilities(cas: np.ndarray) -> bool:
    """True when every row of ``cas`` is a probability vector: a T-CAS written before the T-CAS
    held the raw activations (a raw CAS essentially never has rows in [0, 1] summing to 1)."""
    x = np.asarray(cas, dtype=np.float64)
    return bool(
        x.size and x.min() >= 0 and x.max() <= 1 and np.allclose(x.sum(axis=1), 1.0, rtol=0, atol=1e-4)
    )


def localize(
    store: Store,
    tcas: str | None = None,
    params=None,
    force: bool = False,
    log=_log,
) -> Artifact:
    """Proposals for the ``params.subset`` videos (``all`` for every video) of a T-CAS artifact."""
    from wtalcli.evaluation.localization import LocalizeParams, localize_all

    p = params or LocalizeParams()
    subset = p.subset
    tcas_art = store.resolve("tcas", tcas, log)
    plan = store.plan("proposals", "localize", p.as_dict(), {"tcas": tcas_art})

    def work(tmp: Path) -> dict:
        t = TCAS(tcas_art.path)
        rows = t.rows_of(None if subset == "all" else subset)
        if len(rows) == 0:
            raise InputError(f"the T-CAS has no {subset!r} videos", "pick another --subset")
        cas = [t.cas[t.span(int(r))] for r in rows]
        if holds_probabilities(np.concatenate(cas)):
            raise InputError(
                f"the T-CAS {tcas_art.id} holds softmax probabilities, not raw class activations "
                "(written by an older wtal)",
                "rebuild it (wtal baseline --force, or wtal train-dcc --force)",
                path=tcas_art.path,
            )
        det = localize_all(cas, t.scores[rows], [t.grid(int(r)) for r in rows], p)
        ids = t.videos["video_id"].to_numpy()[rows].tolist()
        external = {
            "wtal": {"tcas": tcas_art.id, "features": tcas_art.lineage.get("features"), "subset": subset}
        }
        results = det.to_results_json(ids, t.classes, external_data=external)
        (tmp / RESULTS).write_text(json.dumps(results))
        pd.DataFrame(
            {
                "video_id": [ids[i] for i in det.video],
                "label": [t.classes[i] for i in det.label],
                "score": det.score,
                "start_s": det.t_start,
                "end_s": det.t_end,
            }
        ).to_parquet(tmp / "proposals.parquet")
        return {"videos": len(ids), "proposals": len(det)}

    art = build_or_skip(store, plan, force, log, work)
    log(f"{art.manifest['summary']['proposals']} proposals for {art.manifest['summary']['videos']} videos")
    return art
