"""What an evaluation reads, each resolved once: the predictions (a results JSON, stdin or a
``proposals`` artifact), the feature set and T-CAS behind them, and the ground truth of the
evaluated subset (``--gt``, read once, or the feature set's annotations; then the protocol).
``wtal evaluate`` scores these; ``wtal report`` rebuilds an evaluation artifact's inputs from its
manifest (:func:`evaluation_inputs`) through the same functions, so its PR curves score exactly
what the artifact scored."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from wtalcli.core.errors import InputError, WtalError
from wtalcli.core.params import from_dict
from wtalcli.core.store import Artifact, Store
from wtalcli.data import named_gt
from wtalcli.data.annotations import AnnotationSet
from wtalcli.data.schema import FeatureSet, read_parquet
from wtalcli.evaluation.detection import Predictions, load_predictions, parse_tiou_thresholds
from wtalcli.evaluation.groundtruth import GroundTruth, apply_protocol, gt_from_annotations, gt_from_dataframe
from wtalcli.evaluation.params import EvalParams

PREDICTIONS = "proposals.json"  # the results JSON inside a proposals artifact


def artifact_by_id(store: Store, art_id: str | None) -> Artifact | None:
    """The artifact ``art_id`` of the workdir, or None when it is not named, gone or unreadable."""
    if not art_id or not (store.root / art_id).is_dir():
        return None
    try:
        return store.get(store.root / art_id)
    except WtalError:
        return None


def input_id(art: Artifact, role: str) -> str | None:
    """The id of ``art``'s input in ``role`` (``tcas``, ``proposals``, ...), as its manifest says."""
    return art.manifest.get("inputs", {}).get(role, {}).get("id")


def read_predictions(source: str | Path | None, store: Store, log) -> tuple[bytes, Artifact | None, str]:
    """The predictions' bytes, their proposals artifact (if any) and a printable name.

    ``source``: a JSON file, ``-`` for stdin, a proposals artifact id, or None (the newest)."""
    if source is None or (not Path(str(source)).exists() and str(source) != "-"):
        art = store.resolve("proposals", source, log)
        return (art.path / PREDICTIONS).read_bytes(), art, art.id
    if str(source) == "-":
        data = sys.stdin.buffer.read()
        if not data.strip():
            raise InputError("no predictions on stdin", "pipe `wtal localize` into `wtal evaluate -`")
        return data, None, "<stdin>"
    path = Path(source)
    if path.is_dir():
        art = store.get(path)
        return (art.path / PREDICTIONS).read_bytes(), art, art.id
    return path.read_bytes(), None, str(path)


def features_of(data: bytes, prop_art: Artifact | None, store: Store, log) -> Artifact:
    """The feature set the predictions were made on: the proposals artifact's lineage, else the
    results JSON's ``external_data.wtal.features``, else the newest feature set."""
    ref = prop_art.lineage.get("features") if prop_art is not None else None
    if ref is None:
        try:
            ext = json.loads(data).get("external_data", {})
            ref = ext.get("wtal", {}).get("features") if isinstance(ext, dict) else None
        except (ValueError, RecursionError, AttributeError):  # load_predictions reports it later
            ref = None
    if ref is not None and (store.root / ref).exists():
        return store.get(store.root / ref)
    return store.resolve("features", None, log)


def tcas_of(prop_art: Artifact | None, store: Store) -> Artifact | None:
    """The T-CAS artifact the proposals were localized from (None for a plain JSON file)."""
    if prop_art is None:
        return None
    ref = input_id(prop_art, "tcas")
    return store.get(store.root / ref) if ref and (store.root / ref).exists() else None


def scored_ground_truth(
    gt: AnnotationSet | None, fs_art: Artifact | None, p: EvalParams, tcas_art: Artifact | None = None
) -> GroundTruth:
    """The ground truth of the ``p.subset`` videos, ``p.protocol`` applied: from ``gt`` (the
    ``--gt`` annotations, read once) when given, else the feature set's annotations. Held-out
    training videos (``baseline --holdout``) are subset ``val`` in the T-CAS only, so the T-CAS's
    own subset column decides when it has any such video; otherwise the feature set's."""
    if gt is not None:
        truth = gt_from_annotations(gt, named_gt.source_subset(gt, p.subset))
    else:
        fs = FeatureSet(fs_art.path)
        ids = fs.videos["video_id"].to_numpy()[fs.rows_of(p.subset)].tolist()
        if tcas_art is not None:
            tv = read_parquet(tcas_art.path / "videos.parquet", "T-CAS videos table")
            held = tv.loc[tv["subset"] == p.subset, "video_id"].astype(str).tolist()
            if held:
                ids = held
        if not ids:
            raise InputError(
                f"the feature set has no {p.subset!r} videos", "pick another --subset", path=fs.path
            )
        # named relative to the workdir: the result must not depend on where the workdir lives
        truth = gt_from_dataframe(fs.annotations, ids, p.subset, source=f"{fs.path.name}/annotations.parquet")
    return apply_protocol(truth, p.protocol) if p.protocol != "all" else truth


@dataclass
class EvaluationInputs:
    """What one evaluation artifact scored."""

    truth: GroundTruth
    predictions: Predictions
    thresholds: np.ndarray
    params: EvalParams


def evaluation_inputs(store: Store, ev: Artifact) -> EvaluationInputs:
    """Rebuild an evaluation artifact's inputs from its manifest: the same predictions
    (``proposals.json`` of its proposals artifact), ground truth (its ``--gt`` or the feature set's
    annotations, with its protocol), thresholds and options."""
    known = {f.name for f in fields(EvalParams)}
    p = from_dict(EvalParams, {k: v for k, v in ev.params.items() if k in known}, ev.id)
    prop = artifact_by_id(store, input_id(ev, "proposals"))
    if prop is None:
        raise InputError(
            f"{ev.id}: its proposals artifact is gone", "rerun `wtal localize` and `wtal evaluate`"
        )
    fs_art = artifact_by_id(store, input_id(ev, "features"))
    if p.gt is None and fs_art is None:
        raise InputError(f"{ev.id}: its feature set is gone", "rerun `wtal extract` and `wtal evaluate`")
    gt = named_gt.read(p.gt) if p.gt is not None else None
    truth = scored_ground_truth(gt, fs_art, p, tcas_of(prop, store) if fs_art is not None else None)
    thresholds = np.asarray(ev.params.get("tiou_values") or parse_tiou_thresholds(p.tiou), np.float64)
    return EvaluationInputs(truth, load_predictions(prop.path / PREDICTIONS), thresholds, p)
