"""The time grid: the one place where snippet indices and seconds are converted.

Snippet ``t`` covers frames ``[t*stride, t*stride + clip_len)`` at ``fps``; its centre is at
``(t*stride + clip_len/2) / fps`` seconds.  Localization works on a continuous snippet axis
where snippet ``t`` owns the cell ``[t, t+1)``; the cell boundaries are placed half a stride
either side of the snippet centres, so for the THUMOS14 I3D convention (clip_len = stride = 16,
fps = 25) position ``x`` maps to ``16 x / 25`` seconds, exactly as BaS-Net does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_FPS = 25.0
DEFAULT_STRIDE = 16
DEFAULT_CLIP_LEN = 16


@dataclass(frozen=True)
class TimeGrid:
    fps: float = DEFAULT_FPS
    stride: int = DEFAULT_STRIDE
    clip_len: int = DEFAULT_CLIP_LEN

    def __post_init__(self) -> None:
        if not (self.fps > 0 and self.stride > 0 and self.clip_len > 0):
            raise ValueError(
                f"invalid time grid fps={self.fps} stride={self.stride} clip_len={self.clip_len}"
            )

    @property
    def seconds_per_snippet(self) -> float:
        return self.stride / self.fps

    @property
    def _shift(self) -> float:
        # seconds from position x = t (cell start) to the start of frame t*stride
        return (self.clip_len - self.stride) / (2.0 * self.fps)

    def index_to_seconds(self, x):
        """Continuous snippet position (cell boundary units) -> seconds. Vectorised."""
        return np.asarray(x, dtype=np.float64) * self.seconds_per_snippet + self._shift

    def seconds_to_index(self, s):
        """Seconds -> continuous snippet position; the inverse of :meth:`index_to_seconds`."""
        return (np.asarray(s, dtype=np.float64) - self._shift) / self.seconds_per_snippet

    def snippet_centers(self, n: int) -> np.ndarray:
        t = np.arange(n, dtype=np.float64)
        return (t * self.stride + self.clip_len / 2.0) / self.fps

    def n_snippets(self, n_frames: int) -> int:
        """Number of whole clips of ``clip_len`` frames every ``stride`` frames in ``n_frames``."""
        if n_frames < self.clip_len:
            return 0
        return (n_frames - self.clip_len) // self.stride + 1

    def duration_of(self, n_snippets: int) -> float:
        """Seconds spanned by ``n_snippets`` cells (used when a source has no duration)."""
        return float(self.index_to_seconds(n_snippets) - self.index_to_seconds(0)) if n_snippets else 0.0

    def as_dict(self) -> dict:
        return {"fps": float(self.fps), "stride": int(self.stride), "clip_len": int(self.clip_len)}
