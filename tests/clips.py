"""A test helper: every clip of a short video at once (the library streams them one by one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wtalcli.data.timegrid import TimeGrid
from wtalcli.video.decode import SourceInfo, VideoStream, resized_size


def read_clips(
    path: Path,
    grid: TimeGrid,
    resize: tuple[int, ...] | None = None,
    crop: tuple[int, int] | None = None,
    backend: str = "pyav",
) -> tuple[np.ndarray, SourceInfo]:
    """All clips of a (short) video at once, ``(n_snippets, clip_len, H, W, 3)``."""
    stream = VideoStream(path, grid.fps, resize, backend)
    clips = list(stream.clips(grid, crop))
    if clips:
        return np.stack(clips), stream.info
    h, w = crop if crop is not None else resized_size(stream.info.height, stream.info.width, resize)
    return np.zeros((0, grid.clip_len, h, w, 3), np.uint8), stream.info
