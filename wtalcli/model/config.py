"""Training configuration: :class:`TrainConfig` (everything that determines a run, recorded in
checkpoints and manifests) and the scale presets, the one table of model and training sizes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from wtalcli.core.errors import InputError

AMP_CHOICES = ("none", "bf16")


@dataclass
class TrainConfig:
    """Everything that determines a training run (recorded in checkpoints and manifests)."""

    iterations: int = 1500
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 5e-4
    num_segments: int = 750  # T: every training video is sampled to this many snippets
    topk_div: int = 8  # top-k pooling with k = max(1, T // topk_div)
    hidden: int = 2048
    attn_hidden: int = 512
    dropout: float = 0.7
    attn_l1: float = 1e-4  # weight of mean_b ||w_b||_1
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = 0  # background loader threads (0: load in the training thread)
    amp: str = "none"  # none | bf16
    tf32: bool = False  # allow TF32 GEMMs/convolutions on CUDA when amp == "none"
    compile: bool = False  # torch.compile the model
    deterministic: bool = True
    checkpoint_every: int = 0  # save every N steps (0: only when train() returns)

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


# options that may differ between a checkpoint and the run that resumes it
RESUMABLE_CHANGES = frozenset({"iterations", "device", "num_workers", "compile", "checkpoint_every"})

# Model/training sizes per feature-set scale; a field a preset does not name keeps TrainConfig's
# default (the official BaS-Net setting: hidden 2048, lr 1e-4, 1500 iterations).
PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        # CPU-sized presets for the built-in synthetic data (docs/synthetic.md)
        "tiny": MappingProxyType(
            {"hidden": 64, "attn_hidden": 32, "iterations": 300, "num_segments": 64, "lr": 1e-3}
        ),
        "small": MappingProxyType(
            {"hidden": 256, "attn_hidden": 128, "iterations": 600, "num_segments": 128}
        ),
        # the synthetic preset calibrated to real-world difficulty: small's sizes (docs/synthetic.md)
        "realistic": MappingProxyType(
            {"hidden": 256, "attn_hidden": 128, "iterations": 600, "num_segments": 128}
        ),
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
