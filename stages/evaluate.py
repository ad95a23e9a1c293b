"""``wtal evaluate``: the ActivityNet detection protocol (docs/method.md §7) on proposals, against
a feature set's annotations (default), an ActivityNet-style JSON, THUMOS14 txt files, or a packaged
public ground truth by name (``thumos14``, ``anet13``, ``anet12``)."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from wtalcli.core.console import log as _log
from wtalcli.core.errors import InputError
from wtalcli.core.params import param
from wtalcli.core.store import Artifact, Store, build_or_skip
from wtalcli.data import named_gt
from wtalcli.data.schema import FeatureSet, read_parquet

TIES = ("reference", "stable")
AMBIGUOUS_RULES = ("ignore", "exclude")
PROTOCOLS = ("all", "basnet", "opentad")
UNKNOWN_LABELS = ("error", "drop")
OUTSIDE_SUBSET = ("fp", "drop")


@dataclass
class EvalParams:
    """Everything ``evaluate`` can set, declared once (:mod:`wtalcli.core.params`)."""

    subset: str = param(
        "test",
        "Subset to evaluate (for thumos14/anet13/anet12 'test' is THUMOS14 test / ActivityNet validation).",
    )
    tiou: str = param(
        "thumos14",
        "tIoU thresholds: thumos14 (0.1..0.7), thumos14-basnet (0.1..0.9), anet (0.5..0.95), a comma "
        "list, or start:stop:step with the stop INCLUDED (0.1:0.7:0.1 = 0.1, 0.2, ..., 0.7).",
    )
    protocol: str = param(
        "all", "THUMOS14 test videos kept: all 212, basnet 210, opentad 211.", choices=PROTOCOLS
    )
    ties: str = param(
        "reference", "Order of equal scores: reference (the official evaluator's) or stable.", choices=TIES
    )
    ambiguous: str = param(
        "ignore",
        "THUMOS14 Ambiguous segments: ignore, or exclude overlapping false positives.",
        choices=AMBIGUOUS_RULES,
    )
    unknown_labels: str = param(
        "error",
        "Predictions of classes absent from the ground truth: error, or drop them.",
        choices=UNKNOWN_LABELS,
    )
    outside_subset: str = param(
        "fp",
        "Predictions on videos outside the subset: fp (false positives, the official rule) or drop.",
        choices=OUTSIDE_SUBSET,
    )


def read_predictions_source(
    source: str | Path | None, store: Store, log
) -> tuple[bytes, Artifact | None, str]:
    """The predictions' bytes, their proposals artifact (if any) and a printable name.

    ``source``: a JSON file, ``-`` for stdin, a proposals artifact id, or None (the newest)."""
    if source is None or (not Path(str(source)).exists() and str(source) != "-"):
        art = store.resolve("proposals", source, log)
        return (art.path / "proposals.json").read_bytes(), art, art.id
    if str(source) == "-":
        data = sys.stdin.buffer.read()
        if not data.strip():
            raise InputError("no predictions on stdin", "pipe `wtal localize` into `wtal evaluate -`")
        return data, None, "<stdin>"
    path = Path(source)
    if path.is_dir():
        art = store.get(path)
        return (art.path / "proposals.json").read_bytes(), art, art.id
    return path.read_bytes(), None, str(path)


def _features_of(data: bytes, art: Artifact | None, store: Store, log) -> Artifact:
    ref = art.lineage.get("features") if art is not None else None
    if ref is None:
        try:
            ext = json.loads(data).get("external_data", {})
            ref = ext.get("wtal", {}).get("features") if isinstance(ext, dict) else None
        except (ValueError, RecursionError, AttributeError):  # load_predictions reports it later
            ref = None
    if ref is not None and (store.root / ref).exists():
        return store.get(store.root / ref)
    return store.resolve("features", None, log)


def _tcas_of(prop_art: Artifact | None, store: Store) -> Artifact | None:
    """The T-CAS artifact the proposals were localized from (None for a plain JSON file)."""
    if prop_art is None:
        return None
    ref = prop_art.manifest.get("inputs", {}).get("tcas", {}).get("id")
    return store.get(store.root / ref) if ref and (store.root / ref).exists() else None


def ground_truth(
    gt_path: str | Path | None, fs_art: Artifact | None, subset: str, tcas_art: Artifact | None = None
):
    """The ground truth of the ``subset`` videos: from ``gt_path`` (a file, a THUMOS14 txt folder or
    a packaged name) when given, else the feature set's annotations. Held-out training videos
    (``baseline --holdout``) are subset ``val`` in the T-CAS only, so the T-CAS's own subset column
    decides when it has any such video; otherwise the feature set's."""
    from wtalcli.evaluation.groundtruth import gt_from_dataframe, load_ground_truth

    if gt_path is not None:
        return load_ground_truth(gt_path, subset)
    fs = FeatureSet(fs_art.path)
    ids = fs.videos["video_id"].to_numpy()[fs.rows_of(subset)].tolist()
    if tcas_art is not None:
        tv = read_parquet(tcas_art.path / "videos.parquet", "T-CAS videos table")
        held = tv.loc[tv["subset"] == subset, "video_id"].astype(str).tolist()
        if held:
            ids = held
    if not ids:
        raise InputError(f"the feature set has no {subset!r} videos", "pick another --subset", path=fs.path)
    # named relative to the workdir: the result must not depend on where the workdir lives
    return gt_from_dataframe(fs.annotations, ids, subset, source=f"{fs.path.name}/annotations.parquet")


def evaluate(
    store: Store,
    source: str | Path | None = None,
    gt_path: str | Path | None = None,
    params: EvalParams | None = None,
    force: bool = False,
    log=_log,
):
    """Evaluate proposals; returns ``(EvalResult, evaluation artifact)``."""
    from wtalcli.evaluation.detection import evaluate_detection, load_predictions, parse_tiou_thresholds
    from wtalcli.evaluation.groundtruth import apply_protocol

    p = params or EvalParams()
    data, prop_art, name = read_predictions_source(source, store, log)
    fs_art = None if gt_path is not None else _features_of(data, prop_art, store, log)
    thresholds = parse_tiou_thresholds(p.tiou)
    pdict = {**asdict(p), "tiou_values": [float(x) for x in thresholds]}
    inputs = {}
    if prop_art is not None:
        inputs["proposals"] = prop_art
    else:
        pdict["predictions_sha256"] = hashlib.sha256(data).hexdigest()
    if fs_art is not None:
        inputs["features"] = fs_art
    else:
        gt_file, _ = named_gt.locate(gt_path)
        if not gt_file.exists():
            raise InputError(
                "ground-truth file not found",
                f"give an ActivityNet-style JSON, a THUMOS14 txt folder or a packaged name "
                f"({', '.join(named_gt.NAMES)})",
                path=gt_path,
            )
        pdict["gt"] = str(gt_path)  # a packaged name stays a name: the key does not depend on the install
        pdict["gt_sha256"] = _path_digest(gt_file)
    plan = store.plan("evaluation", "evaluate", pdict, inputs)
    log(f"predictions: {name}; ground truth: {gt_path or fs_art.id} (subset {p.subset})")

    def work(tmp: Path) -> dict:
        gt = ground_truth(gt_path, fs_art, p.subset, _tcas_of(prop_art, store) if fs_art else None)
        if p.protocol != "all":
            gt = apply_protocol(gt, p.protocol)
        preds = load_predictions(data)
        res = evaluate_detection(
            gt,
            preds,
            thresholds,
            ties=p.ties,
            ambiguous=p.ambiguous,
            unknown_labels=p.unknown_labels,
            outside_subset=p.outside_subset,
        )
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


def _path_digest(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


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
