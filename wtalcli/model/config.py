"""Training configuration: :class:`TrainConfig` (everything that determines a run, recorded in
checkpoints and manifests), the scale presets (the one table of model and training sizes) and
:class:`BaselineParams`, what ``wtal baseline`` lets a user set. No torch import here."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from wtalcli.core.errors import InputError
from wtalcli.core.params import (
    device_param,
    like,
    loader_threads_param,
    param,
    preset_default,
    seed_param,
    spec,
)

AMP_CHOICES = ("none", "bf16")


@dataclass
class TrainConfig:
    """Everything that determines a training run (recorded in checkpoints and manifests)."""

    iterations: int = param(1500, "Training iterations.")
    batch_size: int = param(16, "Videos per batch (the global batch under torchrun).")
    lr: float = param(1e-4, "Adam learning rate.")
    weight_decay: float = param(5e-4, "Adam weight decay.")
    num_segments: int = param(750, "T: snippets sampled per training video.")
    topk_div: int = param(8, "Top-k pooling with k = max(1, T // topk_div).")
    hidden: int = param(2048, "Embedding width of the CAS module.")
    attn_hidden: int = param(512, "Filtering-module width.")
    dropout: float = param(0.7, "Dropout before the classifier.")
    attn_l1: float = param(1e-4, "Weight of mean_b ||w_b||_1.")
    seed: int = seed_param()
    device: str = device_param()
    num_workers: int = loader_threads_param()
    amp: str = param("none", "Mixed precision on GPU.", choices=AMP_CHOICES)
    tf32: bool = param(False, "Allow TF32 GEMMs/convolutions on CUDA when amp == none.")
    compile: bool = param(False, "torch.compile the model (the same mathematics).", key=False)
    deterministic: bool = param(True, "Deterministic kernels while training.")
    checkpoint_every: int = param(
        0, "Save a resumable checkpoint every N iterations (0: only when training returns).", key=False
    )

    def validate(self) -> TrainConfig:
        """Raise :class:`InputError` on an impossible setting; return ``self``."""
        positive = ("iterations", "batch_size", "num_segments", "topk_div", "hidden", "attn_hidden")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(
                    f"training option {name}={value!r} must be a positive integer",
                    "use a whole number >= 1",
                )
        for name in ("num_workers", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InputError(
                    f"training option {name}={value!r} must be a non-negative integer", "pass 0 or more"
                )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"learning rate {self.lr!r} must be positive", "e.g. --lr 1e-4")
        if not (self.weight_decay >= 0 and self.attn_l1 >= 0):
            raise InputError("weight_decay and attn_l1 must be >= 0", "pass --weight-decay 0 or more")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"dropout {self.dropout!r} must be in [0, 1)", "e.g. 0.7 (BaS-Net's)")
        if self.amp not in AMP_CHOICES:
            raise InputError(f"unknown amp mode {self.amp!r}", f"use one of {AMP_CHOICES}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"seed {self.seed!r} must be a non-negative integer", "pass --seed 0 or more")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | Path = "config") -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"unknown training options {sorted(unknown)}", "remove them", path=source)
        return cls(**dict(data)).validate()


# options that may differ between a checkpoint and the run that resumes it: those outside the cache
# key, and the length of the run
RESUMABLE_CHANGES = frozenset({"iterations"} | {f.name for f in fields(TrainConfig) if not spec(f).key})

# Model/training sizes per feature-set scale; a field a preset does not name keeps TrainConfig's
# default (the official BaS-Net setting: hidden 2048, lr 1e-4, 1500 iterations).
_SMALL = MappingProxyType({"hidden": 256, "attn_hidden": 128, "iterations": 600, "num_segments": 128})
PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        # CPU-sized presets for the built-in synthetic data (docs/synthetic.md)
        "tiny": MappingProxyType(
            {"hidden": 64, "attn_hidden": 32, "iterations": 300, "num_segments": 64, "lr": 1e-3}
        ),
        "small": _SMALL,
        # the synthetic preset calibrated to real-world difficulty: small's sizes (docs/synthetic.md)
        "realistic": _SMALL,
        # the positive control for embedding methods (non-core evidence not linear): the same sizes
        "entangled": _SMALL,
        # official BaS-Net THUMOS14 setting
        "thumos": MappingProxyType({"num_segments": 750}),
        # ActivityNet: 50 to 75 sampled snippets are used in the field; 50 is the low end (k = 6)
        "anet": MappingProxyType({"num_segments": 50}),
    }
)


def preset_config(name: str, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a named preset plus explicit overrides (``None`` values are
    left to the preset)."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}", f"use one of {', '.join(PRESETS)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return TrainConfig.from_dict({**PRESETS[name], **given}, source=f"preset {name}")


def _preset_choices() -> tuple[str, ...]:
    return ("auto", *PRESETS)


def resolve_preset(features_params: Mapping[str, Any], preset: str = "auto") -> str:
    """The scale preset of a run on the feature set whose parameters are ``features_params``:
    ``preset`` when named, else (``auto``) the synthetic feature set's own preset, else thumos."""
    if preset != "auto":
        if preset not in PRESETS:
            raise InputError(f"unknown preset {preset!r}", f"use one of auto, {', '.join(PRESETS)}")
        return preset
    synthetic = features_params.get("preset") if features_params.get("source") == "synthetic" else None
    return synthetic if synthetic in PRESETS else "thumos"


# The default share of training videos held out to choose the training length (docs/method.md):
# a fifth, e.g. 40 of THUMOS14's 200 validation videos (about 600 instances) to rank checkpoints by.
HOLDOUT = 0.2


@dataclass
class BaselineParams:
    """Everything ``wtal baseline`` can set: the scale preset, the held-out split, and the training
    options, each :class:`TrainConfig`'s own field (``None``: the preset's value)."""

    preset: str = param(
        "auto",
        "Model/training scale (auto: the synthetic feature set's own preset, else thumos).",
        choices=_preset_choices(),
    )
    iterations: int | None = preset_default(TrainConfig, "iterations")
    batch_size: int = like(TrainConfig, "batch_size")
    lr: float | None = preset_default(TrainConfig, "lr")
    weight_decay: float = like(TrainConfig, "weight_decay")
    num_segments: int | None = preset_default(TrainConfig, "num_segments")
    hidden: int | None = preset_default(TrainConfig, "hidden")
    attn_hidden: int | None = preset_default(TrainConfig, "attn_hidden")
    holdout: float | None = param(
        None,
        "Share of training videos held out as subset 'val', on which the training length is chosen "
        "(default: 0.2 when the training videos have temporal annotations, else 0; 0: train on every "
        "training video and keep the last iteration; docs/method.md).",
    )
    holdout_seed: int = param(0, "Seed of the held-out draw.")
    select_every: int | None = param(
        None,
        "Score the held-out training videos (baseline --holdout) every N iterations and keep the best "
        "iteration's weights (default: every 50 when there are held-out videos; 0: the last iteration).",
    )
    amp: str = like(TrainConfig, "amp")
    compile: bool = like(TrainConfig, "compile")
    num_workers: int = like(TrainConfig, "num_workers")
    checkpoint_every: int = like(TrainConfig, "checkpoint_every", 100, cli=False)
    seed: int = like(TrainConfig, "seed")
    device: str = like(TrainConfig, "device")

    def train_config(self, preset: str) -> TrainConfig:
        """The run's :class:`TrainConfig`: the preset's values, then those set here."""
        train = {f.name for f in fields(TrainConfig)}
        return preset_config(
            preset, **{f.name: getattr(self, f.name) for f in fields(self) if f.name in train}
        )
