"""``wtal evaluate``: the ActivityNet detection protocol (docs/method.md §7) on proposals, against
a feature set's annotations (default), an ActivityNet-style JSON, THUMOS14 txt files, or a packaged
public ground truth by name (``thumos14``, ``anet13``, ``anet12``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from wtalcli.core.console import log as _log
from wtalcli.core.params import record_dict
from wtalcli.core.store import Store, build_or_skip
from wtalcli.data import named_gt
from wtalcli.evaluation.inputs import features_of, read_predictions, scored_ground_truth, tcas_of
from wtalcli.evaluation.params import EvalParams


def evaluate(
    store: Store,
    source: str | Path | None = None,
    params: EvalParams | None = None,
    force: bool = False,
    log=_log,
):
    """Evaluate proposals; returns ``(EvalResult, evaluation artifact)``."""
    from wtalcli.evaluation.detection import evaluate_detection, load_predictions, parse_tiou_thresholds

    p = params or EvalParams()
    data, prop_art, name = read_predictions(source, store, log)
    gt = named_gt.read(p.gt) if p.gt is not None else None  # read once: its identity, then its instances
    fs_art = None if gt is not None else features_of(data, prop_art, store, log)
    thresholds = parse_tiou_thresholds(p.tiou)
    pdict = {k: v for k, v in record_dict(p).items() if k != "gt"}
    pdict["tiou_values"] = [float(x) for x in thresholds]
    inputs = {}
    if prop_art is not None:
        inputs["proposals"] = prop_art
    else:
        pdict["predictions_sha256"] = hashlib.sha256(data).hexdigest()
    if fs_art is not None:
        inputs["features"] = fs_art
    else:
        pdict["gt"] = p.gt  # a packaged name stays a name: the key does not depend on the install
        pdict["gt_identity"] = named_gt.identity(gt)
    plan = store.plan("evaluation", "evaluate", pdict, inputs)
    log(f"predictions: {name}; ground truth: {p.gt or fs_art.id} (subset {p.subset})")

    def work(tmp: Path) -> dict:
        truth = scored_ground_truth(gt, fs_art, p, tcas_of(prop_art, store) if fs_art else None)
        res = evaluate_detection(truth, load_predictions(data), thresholds, **p.options())
        out = res.to_json()
        out["protocol"] = p.protocol
        (tmp / "result.json").write_text(json.dumps(out, indent=1))
        rows = [
            (c, float(t), float(a))
            for c, row in zip(res.classes, res.ap, strict=True)
            for t, a in zip(res.tiou_thresholds, row, strict=True)
        ]
        pd.DataFrame(rows, columns=["class", "tiou", "ap"]).to_parquet(tmp / "ap.parquet")
        return {
            "average_map": res.average_map,
            "map_per_tiou": dict(
                zip([f"{t:.2f}" for t in res.tiou_thresholds], map(float, res.map_per_tiou), strict=True)
            ),
            "ground_truth": res.ground_truth,
            "protocol": p.protocol,
        }

    art = build_or_skip(store, plan, force, log, work)
    return json.loads((art.path / "result.json").read_text()), art


def result_table(result: dict):
    """A Rich table: mAP (%) per tIoU and the average."""
    from rich.markup import escape
    from rich.table import Table

    thr = result["tiou_thresholds"]
    # escaped: "[test]" in the ground-truth summary is text, not Rich markup
    table = Table(
        title=escape(f"mAP (%) — {result['ground_truth']}; protocol {result.get('protocol', 'all')}")
    )
    for t in thr:
        table.add_column(f"{t:.2f}".rstrip("0").rstrip("."), justify="right")
    table.add_column("avg", justify="right", style="bold")
    table.add_row(*[f"{100 * m:.1f}" for m in result["map_per_tiou"]], f"{100 * result['average_map']:.1f}")
    return table
