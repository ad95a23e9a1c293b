"""The parameters of ``extract``, declared once (:mod:`wtalcli.core.params`): the command line reads
this class and :func:`stages.extract.extract` dispatches it to the source's builder. They live with
the video package because the video source is the highest layer they name (the synthetic data and
the importers are below it, in :mod:`wtalcli.data`); so do the names of the decoders and backbones,
which :mod:`wtalcli.video.decode` and :mod:`wtalcli.video.backbones` (torchvision) check against.

Which of them enter the feature set's cache key depends on the source, because each source is keyed
by what determines its output: the synthetic set by its preset, seed and dtype; an import by its
folder, files (content hashes of the annotations, a size-and-mtime signature of the features), the
importer's options (``streams``, ``allow_missing``, ``keep_unlabeled``, the class list) as the
importer records them, the time grid and dtype; a video extraction by backbone, weights, grid,
crop size, decoder, seed, labels and the videos. The ``key`` flags here mark the fields that
enter some key; how the work runs (batch size, device, decoder threads, shard) never does.
This module imports no torch, so ``wtal --help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from wtalcli.core.errors import UsageError
from wtalcli.core.params import check_choices, device_param, param, seed_param
from wtalcli.data.importers import IMPORTERS, STREAMS
from wtalcli.data.schema import FEATURE_DTYPES
from wtalcli.data.synthetic import PRESETS as SYNTHETIC
from wtalcli.data.timegrid import DEFAULT_CLIP_LEN, DEFAULT_FPS, DEFAULT_STRIDE, TimeGrid

SOURCES = ("synthetic", *IMPORTERS, "videos")
DECODERS = ("pyav", "torchcodec")  # wtalcli/video/decode.py
BACKBONES = ("r2plus1d_18", "r3d_18", "s3d", "mvit_v2_s", "swin3d_t")  # wtalcli/video/backbones.py


@dataclass
class ExtractParams:
    """Everything ``extract`` can set. Options that only some sources read say which in their help."""

    source: str = param("synthetic", "Where the features come from.", flag="--from", choices=SOURCES)
    preset: str = param("small", "synthetic: the preset (docs/synthetic.md).", choices=tuple(SYNTHETIC))
    dtype: str = param("float32", "Stored feature dtype.", choices=FEATURE_DTYPES)
    gt: str | None = param(
        None,
        "Ground truth where the layout lacks its own (basnet: instead of gt.json; folder: instead of its "
        "JSON): a JSON, a THUMOS14 txt folder, or thumos14 / anet13 / anet12 (packaged).",
        flag="--gt",
    )
    annotations: str | None = param(
        None,
        "Replace the source's annotations: thumos14, anet13, anet12, a THUMOS14 txt folder or an "
        "ActivityNet-style JSON.",
    )
    classes: str | None = param(None, "Class list (JSON list or one name per line).")
    features_file: str | None = param(None, "wtalc: the joint features .npy, if not the default name.")
    streams: str = param("both", "basnet: both (rgb ++ flow), rgb or flow.", choices=STREAMS)
    fps: float = param(DEFAULT_FPS, "Feature time grid: frames per second.")
    stride: int = param(DEFAULT_STRIDE, "Feature time grid: frames between snippets.")
    clip_len: int = param(DEFAULT_CLIP_LEN, "Feature time grid: frames per snippet.")
    allow_missing: bool = param(False, "Warn (not fail) on ground-truth videos without features.")
    keep_unlabeled: bool = param(False, "Import videos with features but no labels.")
    backbone: str = param("r2plus1d_18", f"videos: {', '.join(BACKBONES[:-1])} or {BACKBONES[-1]}.")
    weights: str = param("hub", "videos: a weights file, 'hub' (torch hub cache) or 'random'.")
    batch_size: int = param(32, "videos: clips per forward pass.", key=False)
    device: str = device_param("videos")
    shard: str | None = param(None, "videos: extract only shard i/N (rerun without it to merge).", key=False)
    labels: str | None = param(None, "videos: CSV video_id,label of video-level labels.")
    size: int | None = param(None, "videos: crop side override (quick runs).")
    decoder: str = param("pyav", "videos: the decoding library.", choices=DECODERS)
    workers: int = param(1, "videos: decoder threads.", key=False)
    seed: int = seed_param()

    def grid(self) -> TimeGrid:
        try:
            return TimeGrid(self.fps, self.stride, self.clip_len)
        except ValueError as exc:
            raise UsageError(str(exc), "e.g. --fps 25 --stride 16 --clip-len 16") from None

    def validate(self) -> ExtractParams:
        check_choices(self)
        self.grid()
        if self.batch_size < 1 or self.workers < 1:
            raise UsageError("--batch-size and --workers must be >= 1", "e.g. the defaults 32 and 1")
        return self
