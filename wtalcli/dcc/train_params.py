"""The parameters of ``train-dcc``, declared once (:mod:`wtalcli.core.params`): DCC's options, and
the training options it sets on the baseline's configuration, declared as
:class:`~wtalcli.model.config.TrainConfig`'s and :class:`~wtalcli.model.config.BaselineParams`'
own fields. The command line, the cache key, ``run`` and ``ablate`` read this class. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass

from wtalcli.core.errors import InputError
from wtalcli.core.params import check_choices, like, param, preset_default
from wtalcli.dcc.params import (
    BACKGROUNDS,
    BETA_SHAPES,
    BRANCHES,
    DCC_INITS,
    HEADS,
    POOLINGS,
    SCOPES,
    TARGETS,
)
from wtalcli.dcc.schedule import beta_at
from wtalcli.model.config import BaselineParams, TrainConfig


@dataclass
class DCCParams:
    """Everything ``train-dcc`` can set (the refresh rounds' pseudo-label and denoise settings are
    those of the input artifacts, not set here)."""

    iterations: int | None = preset_default(TrainConfig, "iterations", "the baseline's")
    init: str = param(
        "baseline",
        "Start from the baseline's weights, or from scratch (the beta schedule then spans the whole run).",
        choices=DCC_INITS,
    )
    scope: str = param("bank", "Where contrast pairs come from.", flag="--contrast-scope", choices=SCOPES)
    denoise: bool = param(True, "Weight region features by the confidence map S (off: S = 1).")
    targets: str = param(
        "pseudo",
        "Snippet targets: pseudo (pseudo-labels of the T-CAS), or oracle (a diagnostic: the training "
        "videos' ground-truth snippet labels, S = 1).",
        choices=TARGETS,
    )
    regions: int = param(5, "M, regions per video.")
    pooling: str = param(
        "mean",
        "Region pooling: mean (the plain average of A*S*X over the region, zeros included) or weighted "
        "(sum A*S*X / sum A*S, then L2-normalised).",
        choices=POOLINGS,
    )
    background: str = param(
        "class",
        "Background regions of class c: class (snippets not pseudo-labelled c) or video (also not any of "
        "the video's other labelled classes).",
        choices=BACKGROUNDS,
    )
    head: str = param(
        "linear", "Projection head: linear (one layer), mlp (two layers) or none.", choices=HEADS
    )
    branch: str = param(
        "base",
        "Embedding the contrast acts on: base (unfiltered input), suppression (attention-weighted input, "
        "the branch inference reads) or both.",
        choices=BRANCHES,
    )
    tau: float = param(
        0.2, "InfoNCE temperature (chosen on held-out videos of both synthetic presets; docs/ablation.md)."
    )
    proj_dim: int = param(
        256,
        "Projection width (linear and mlp heads; 256 and 512 tie on held-out videos of both synthetic "
        "presets, 256 costs half the head; docs/ablation.md).",
    )
    beta_start: float = param(0.1, "Contrast weight at the start.")
    beta_end: float = param(1.0, "Contrast weight at the end.")
    beta_shape: str = param("exp", "Contrast weight schedule.", choices=BETA_SHAPES)
    momentum: float = param(0.0, "Memory-bank momentum (0: overwrite).")
    refresh_every: int = param(
        -1,
        "Recompute pseudo-labels and confidence every N iterations (-1: once per pass over the training "
        "videos, at most --max-rounds times; 0: never).",
    )
    max_rounds: int = param(
        5,
        "With --refresh-every -1: the most refresh rounds (5 and 10 tie on held-out videos; "
        "docs/ablation.md).",
    )
    grad_every: int = param(
        0,
        "Every N iterations log beta*|grad L_dcc|/|grad L_base| and their cosine on the shared CAS layers "
        "(a diagnostic; 0: never).",
    )
    select_every: int = like(BaselineParams, "select_every")
    seed: int = like(TrainConfig, "seed")
    device: str = like(TrainConfig, "device")
    num_workers: int = like(TrainConfig, "num_workers")
    checkpoint_every: int = like(BaselineParams, "checkpoint_every")

    def validate(self) -> DCCParams:
        check_choices(self)
        if self.regions < 1 or self.proj_dim < 1:
            raise InputError("--regions and --proj-dim must be >= 1", "e.g. the defaults 5 and 256")
        if not self.tau > 0:
            raise InputError(f"--tau {self.tau} must be > 0", "e.g. --tau 0.2")
        if not 0.0 <= self.momentum < 1.0:
            raise InputError(f"--momentum {self.momentum} must be in [0, 1)", "e.g. 0 (overwrite) or 0.5")
        if min(self.grad_every, self.select_every or 0, self.max_rounds) < 0:
            raise InputError("--grad-every, --select-every and --max-rounds must be >= 0", "e.g. 0")
        try:
            beta_at(0, 10, self.beta_start, self.beta_end, self.beta_shape)  # raises on a bad schedule
        except ValueError as exc:
            raise InputError(
                f"bad beta schedule: {exc}", "use --beta-shape constant, linear or exp (exp needs beta > 0)"
            ) from None
        return self

    def branches(self) -> tuple[str, ...]:
        return ("base", "suppression") if self.branch == "both" else (self.branch,)


def control_of(p: DCCParams) -> DCCParams:
    """The same-length control of a DCC run: the same start, batches and length, the contrast
    weighted 0 throughout and no refresh rounds (they could change nothing). It separates what
    training on brings from what the contrast brings."""
    from dataclasses import replace

    return replace(p, beta_start=0.0, beta_end=0.0, beta_shape="constant", refresh_every=0)
