"""The parameters of ``evaluate``, declared once (:mod:`wtalcli.core.params`): the command line,
``run``, ``ablate`` and the cache key read this class. No torch, no pandas."""

from __future__ import annotations

from dataclasses import dataclass

from wtalcli.core.params import param
from wtalcli.evaluation.groundtruth import THUMOS14_PROTOCOLS

TIES = ("reference", "stable")
AMBIGUOUS_RULES = ("ignore", "exclude")
UNKNOWN_LABELS = ("error", "drop")
OUTSIDE_SUBSET = ("fp", "drop")


@dataclass
class EvalParams:
    """Everything ``evaluate`` can set. ``gt`` enters the cache key by its identity (the files read
    and their hashes, :func:`wtalcli.data.named_gt.identity`) beside the name it was given."""

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
        "all",
        "THUMOS14 test videos kept: all 212, basnet 210, opentad 211.",
        choices=tuple(THUMOS14_PROTOCOLS),
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
    gt: str | None = param(
        None,
        "Ground truth: thumos14, anet13 or anet12 (packaged public annotations), an ActivityNet-style "
        "JSON (.json, .json.gz, .json.xz) or a THUMOS14 txt folder (default: the feature set's).",
        flag="--gt",
        key=False,
    )

    def options(self) -> dict[str, str]:
        """The options of :func:`wtalcli.evaluation.detection.evaluate_detection`."""
        return {
            "ties": self.ties,
            "ambiguous": self.ambiguous,
            "unknown_labels": self.unknown_labels,
            "outside_subset": self.outside_subset,
        }
