"""Frozen torchvision video backbones turned into snippet feature extractors (offline only).

Each registered model keeps torchvision's own preprocessing, read from its weights enum without
downloading anything (``weights.transforms()`` is a ``VideoClassification`` preset): the decoder
resizes frames to ``resize_size`` (see :func:`wtalcli.video.decode.resized_size`), the engine centre-
crops them to ``crop_size``, and :class:`Backbone` scales to [0, 1] and normalises with the preset's
mean/std. The classification head is taken off; the feature is the penultimate pooled vector:

============  ======  ====  =========================================================
name          resize  crop  feature (dim)
============  ======  ====  =========================================================
r2plus1d_18   128x171 112   global average pool before ``fc`` (512)
r3d_18        128x171 112   global average pool before ``fc`` (512)
s3d           256x256 224   ``avgpool`` output averaged over T, H, W (1024)
mvit_v2_s     256     224   class token after the final norm (768); exactly 16 frames
swin3d_t      256     224   global average pool before ``head`` (768)
============  ======  ====  =========================================================

(s3d's head is a 1x1x1 convolution applied before the spatio-temporal mean; both are affine, so
the head applied to the pooled feature gives the same logits as the full model.)

Weights: ``"random"`` (seeded initialisation, for tests), ``"hub"`` (torchvision's file name in
``torch.hub.get_dir()/checkpoints``, where torchvision itself caches it), or a path to a file (or
to a folder holding torchvision's file name) containing the model's raw ``state_dict``, loaded
with ``torch.load(..., weights_only=True)``. Nothing is ever downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision import models

from wtalcli.core.errors import InputError, WtalError
from wtalcli.core.files import file_sha256
from wtalcli.data.timegrid import TimeGrid
from wtalcli.video.params import BACKBONES

FEATURE_DIMS = {"r2plus1d_18": 512, "r3d_18": 512, "s3d": 1024, "mvit_v2_s": 768, "swin3d_t": 768}
RANDOM = "random"
HUB = "hub"
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Preprocess:
    """A backbone's input preparation (torchvision's ``VideoClassification`` preset values)."""

    resize: tuple[int, ...]  # (short_side,) or (height, width), applied by the decoder
    crop: tuple[int, int]  # (height, width) centre crop
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    min_frames: int  # shortest clip the network accepts
    exact_frames: int | None  # clip length the network requires (mvit_v2_s: 16), else None
    min_crop: int  # smallest crop side the network accepts

    def as_dict(self) -> dict:
        return {
            "resize": list(self.resize),
            "crop": list(self.crop),
            "mean": list(self.mean),
            "std": list(self.std),
        }


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    dim: int
    preprocess: Preprocess
    weights_file: str  # torchvision's file name, e.g. r3d_18-b3b3357e.pth
    weights_url: str
    categories: tuple[str, ...]  # Kinetics-400 class names, in the head's order


def _weights_enum(name: str):
    if name not in BACKBONES:
        raise InputError(f"unknown backbone {name!r}", f"use one of {', '.join(BACKBONES)}")
    return models.get_model_weights(name).KINETICS400_V1


def backbone_spec(name: str) -> BackboneSpec:
    """The registry entry of ``name``, read from torchvision's weights metadata (offline)."""
    w = _weights_enum(name)
    tf = w.transforms()
    meta = w.meta
    crop = (int(tf.crop_size[0]), int(tf.crop_size[1]))
    pre = Preprocess(
        resize=tuple(int(s) for s in tf.resize_size),
        crop=crop,
        mean=tuple(float(m) for m in tf.mean),  # type: ignore[arg-type]
        std=tuple(float(s) for s in tf.std),  # type: ignore[arg-type]
        min_frames=int(meta.get("min_temporal_size", 1)),
        exact_frames=int(meta["min_temporal_size"]) if name == "mvit_v2_s" else None,
        min_crop=int(meta.get("min_size", (1, 1))[0]),
    )
    return BackboneSpec(
        name=name,
        dim=FEATURE_DIMS[name],
        preprocess=pre,
        weights_file=Path(urlparse(w.url).path).name,
        weights_url=w.url,
        categories=tuple(meta["categories"]),
    )


def scaled_preprocess(pre: Preprocess, crop: int | None) -> Preprocess:
    """``pre`` with a square crop of side ``crop`` and the resize scaled by the same factor."""
    if crop is None or (pre.crop == (crop, crop)):
        return pre
    f = crop / pre.crop[0]
    resize = tuple(max(crop, int(round(s * f))) for s in pre.resize)
    return Preprocess(resize, (crop, crop), pre.mean, pre.std, pre.min_frames, pre.exact_frames, pre.min_crop)


# ------------------------------------------------------------------------------- weights


def default_weights_path(name: str) -> Path:
    """Where torchvision caches ``name``'s weights: ``torch.hub.get_dir()/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / backbone_spec(name).weights_file


def resolve_weights(name: str, weights: str | Path) -> Path | None:
    """The weights file for ``weights`` (``None`` for random); a missing file is a WtalError."""
    if str(weights) == RANDOM:
        return None
    spec = backbone_spec(name)
    path = default_weights_path(name) if str(weights) == HUB else Path(weights).expanduser()
    if path.is_dir():
        path = path / spec.weights_file
    if not path.is_file():
        raise WtalError(
            f"weights for {name} not found: {path.resolve()} does not exist",
            f"put torchvision's file {spec.weights_file} (from {spec.weights_url}) at "
            f"{default_weights_path(name)} or pass --weights /path/to/{spec.weights_file}; nothing is downloaded",
        )
    return path


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for bad files
        raise InputError(
            f"cannot load weights ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})",
            "the file must be a torchvision state_dict saved with torch.save (no pickled objects)",
            path=path,
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(
            "weights file holds no state_dict of tensors",
            "save model.state_dict() with torch.save",
            path=path,
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


# ------------------------------------------------------------------------------- the model


class Backbone(nn.Module):
    """A frozen video network: uint8 clips in, pooled features out.

    ``forward(clips)``: ``(B, T, H, W, 3)`` uint8 (already resized and centre-cropped) ->
    ``(B, dim)`` float32. ``logits(features)``: ``(B, dim)`` -> ``(B, 400)`` Kinetics-400 scores
    from the kept head.
    """

    def __init__(self, spec: BackboneSpec, trunk: nn.Module, head: nn.Module, pre: Preprocess, info: dict):
        super().__init__()
        self.spec = spec
        self.name = spec.name
        self.dim = spec.dim
        self.preprocess = pre
        self.info = info
        self.trunk = trunk
        self.head = head
        self.register_buffer(
            "mean", torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1, 1), persistent=False
        )
        self.precision = "fp32"

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def normalise(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W, 3) uint8 -> (B, 3, T, H, W) float32, scaled to [0, 1] and normalised."""
        x = clips.to(self.device, non_blocking=True).permute(0, 4, 1, 2, 3).float().div_(255.0)
        return (x - self.mean) / self.std

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = self.normalise(clips)  # (B, 3, T, H, W)
        if self.precision == "bf16":
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                y = self.trunk(x)
        else:
            y = self.trunk(x)
        return y.float()  # (B, dim)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        if self.name == "s3d":
            return self.head(features[:, :, None, None, None]).flatten(1)  # (B, 400)
        return self.head(features)  # (B, 400)


class _S3DTrunk(nn.Module):
    """s3d without its classifier: the mean over (T, H, W) of ``avgpool(features(x))``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net.avgpool(self.net.features(x))  # (B, 1024, T', 1, 1)
        return y.mean(dim=(2, 3, 4))  # (B, 1024)


_HEAD_ATTR = {
    "r2plus1d_18": "fc",
    "r3d_18": "fc",
    "s3d": "classifier",
    "mvit_v2_s": "head",
    "swin3d_t": "head",
}


def _split_head(name: str, model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """Take the classification head off ``model``: returns ``(head, trunk)``."""
    head = getattr(model, _HEAD_ATTR[name])
    setattr(model, _HEAD_ATTR[name], nn.Identity())
    return head, (_S3DTrunk(model) if name == "s3d" else model)


def check_grid(name: str, grid: TimeGrid, pre: Preprocess, weights_path: Path | None) -> None:
    """Refuse clip lengths and crop sizes the network cannot take."""
    if name == "mvit_v2_s":
        # torchvision builds it for one input size (its relative-position tables): 16 x 224 x 224
        if grid.clip_len != pre.exact_frames or pre.crop[0] != pre.min_crop:
            raise InputError(
                f"{name} takes clips of exactly {pre.exact_frames} frames of {pre.min_crop} px, "
                f"not {grid.clip_len} frames of {pre.crop[0]} px",
                f"use --clip-len {pre.exact_frames} and no --size",
            )
        return
    if grid.clip_len < pre.min_frames:
        raise InputError(
            f"{name} needs clips of at least {pre.min_frames} frames, not {grid.clip_len}",
            f"use --clip-len {pre.min_frames} or more",
        )
    if pre.crop[0] < pre.min_crop:
        raise InputError(
            f"{name} needs a crop of at least {pre.min_crop} px, not {pre.crop[0]}",
            f"use --size {pre.min_crop}",
        )


def build_backbone(
    name: str,
    weights: str | Path,
    grid: TimeGrid,
    device: str | torch.device = "cpu",
    size: int | None = None,
    seed: int = 0,
    precision: str = "fp32",
) -> Backbone:
    """Build a frozen backbone in eval mode on ``device``.

    ``size`` overrides the crop side (the resize scales with it); ``None`` keeps torchvision's.
    ``seed`` seeds the random initialisation (``weights="random"``) without touching the global RNG.
    """
    spec = backbone_spec(name)
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}", f"use one of {PRECISIONS}")
    pre = scaled_preprocess(spec.preprocess, size)
    path = resolve_weights(name, weights)
    check_grid(name, grid, pre, path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = models.get_model(name, weights=None)
    sha = None
    if path is not None:
        state = _load_state_dict(path)
        fix = f"use torchvision's {spec.weights_file} or a state_dict of torchvision's {name}"
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches
            first = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc))
            raise InputError(f"weights do not fit {name}: {first[:200]}", fix, path=path) from exc
        if result.missing_keys or result.unexpected_keys:
            miss, extra = result.missing_keys, result.unexpected_keys
            raise InputError(
                f"weights do not fit {name}: {len(miss)} missing keys (e.g. {miss[:2]}), "
                f"{len(extra)} unexpected (e.g. {extra[:2]})",
                fix,
                path=path,
            )
        sha = file_sha256(path)
        expected = spec.weights_file.rsplit("-", 1)[-1].split(".")[0]
        if path.name == spec.weights_file and not sha.startswith(expected):
            raise InputError(
                f"weights file is damaged: sha256 starts {sha[:8]}, torchvision's starts {expected}",
                "download it again",
                path=path,
            )
    head, trunk = _split_head(name, model)
    info = {
        "backbone": name,
        "weights": RANDOM if path is None else str(path.resolve()),
        "weights_sha256": sha,
        "seed": seed if path is None else None,
        "feature_dim": spec.dim,
        "precision": precision,
        **grid.as_dict(),
        **pre.as_dict(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
    bb = Backbone(spec, trunk, head, pre, info)
    bb.precision = precision
    bb.eval().requires_grad_(False)
    return bb.to(resolve_device(device))


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda`` without a GPU is a WtalError."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise WtalError("--device cuda was asked for, but torch sees no CUDA GPU", "use --device cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"unknown device {device!r}", "use auto, cpu or cuda")
    return torch.device(device)
