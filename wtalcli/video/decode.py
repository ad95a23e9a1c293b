"""Streamed video decoding onto a snippet time grid (PyAV, optionally torchcodec).

Time semantics (the same for every backend):

- A source frame's time is its presentation timestamp (``pts * time_base``) minus the first
  decoded frame's, so the first frame is at 0 s whatever the container's start offset is.
  A frame without a pts is placed one nominal frame interval (``1 / average_rate``, else the
  last observed interval, else ``1 / fps``) after the previous frame; a pts that goes backwards
  is clamped to the previous frame's time (the newer frame then wins from that point on).
- The source *duration* ``D`` is the last frame's time plus its display duration (the frame's
  own duration when the container gives one, else the nominal interval).
- Output frame ``j`` (``j = 0, 1, ...`` while ``j / fps < D``) is the decoded frame whose time is
  nearest to ``j / fps``; a tie (within 1 microsecond) goes to the earlier frame. This resamples
  variable frame rate sources as well as constant ones: a 2 s clip at 30 fps gives exactly 50
  output frames at 25 fps.
- Clips follow :class:`~wtalcli.data.timegrid.TimeGrid`: clip ``t`` holds output frames
  ``[t*stride, t*stride + clip_len)``, so a video of ``n`` output frames yields exactly
  ``grid.n_snippets(n)`` clips; the trailing frames that do not fill a whole clip are dropped.

Memory does not depend on the video's length: the resampler holds one decoded frame (plus the one
being looked at), and the clip generator holds at most ``clip_len`` output frames
(``DecodeStats.max_window`` records the most it ever held). Frames are resized by FFmpeg's
swscale while they are converted to RGB (bilinear), using torchvision's ``resize_size`` rules:
``(s,)`` scales the shorter side to ``s`` (the longer one to ``int(s * long / short)``),
``(h, w)`` scales to exactly that size. Rotation metadata is ignored (frames are used as
stored). ``torchvision.io.read_video`` no longer exists in current torchvision, and it read whole
videos into memory; it is not used.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from wtalcli.core.errors import InputError
from wtalcli.data.timegrid import TimeGrid
from wtalcli.video.params import DECODERS

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts", ".mts"}
)
TIE_EPS = 1e-6  # seconds: output times this close to a midpoint count as ties (earlier frame wins)

P = TypeVar("P")


class VideoDecodeError(InputError):
    """A video that cannot be opened or decoded (corrupt, truncated, not a video).

    The extraction engine records it for that video and goes on with the others.
    """


@dataclass
class DecodeStats:
    """Counters of one decode: how many frames went in and out, and the largest frame window."""

    decoded_frames: int = 0
    output_frames: int = 0
    clips: int = 0
    max_window: int = 0  # most output frames the clip generator held at once


@dataclass
class SourceInfo:
    """What was learnt about the source while decoding it (complete once decoding has ended)."""

    path: Path
    backend: str
    width: int = 0
    height: int = 0
    codec: str = ""
    source_fps: float | None = None  # the container's average frame rate, if it states one
    decoded_frames: int = 0
    duration_s: float = 0.0  # D: last frame time + its duration (see the module docstring)
    n_frames: int = 0  # output frames at the target fps
    finished: bool = False

    def as_dict(self) -> dict:
        return {
            "path": str(self.path),
            "backend": self.backend,
            "width": self.width,
            "height": self.height,
            "codec": self.codec,
            "source_fps": self.source_fps,
            "decoded_frames": self.decoded_frames,
            "duration_s": self.duration_s,
            "n_frames": self.n_frames,
        }


# ------------------------------------------------------------------------------- resampling


class NearestResampler(Generic[P]):
    """Streams source frames ``(time, payload)`` into output frames at ``fps`` (nearest timestamp).

    :meth:`push` returns the payloads of the output frames that became final (each output frame
    is decided once its nearest source frame can no longer change); :meth:`finish` returns the
    rest. Only the previous payload is held.
    """

    def __init__(self, fps: float, nominal_interval: float | None = None):
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = float(fps)
        self.nominal = nominal_interval if nominal_interval and nominal_interval > 0 else None
        self._t0: float | None = None
        self._prev: P | None = None
        self._prev_r = 0.0
        self._last_interval: float | None = None
        self._have_prev = False
        self.j = 0  # next output frame index
        self.duration: float | None = None

    def _interval(self) -> float:
        return self.nominal or self._last_interval or 1.0 / self.fps

    def push(self, t: float | None, payload: P) -> list[P]:
        if not self._have_prev:
            self._t0 = 0.0 if t is None else t
            self._prev, self._prev_r, self._have_prev = payload, 0.0, True
            return []
        assert self._t0 is not None
        r = self._prev_r + self._interval() if t is None else t - self._t0
        if r < self._prev_r:
            r = self._prev_r
        elif r > self._prev_r:
            self._last_interval = r - self._prev_r
        mid = 0.5 * (self._prev_r + r)
        out: list[P] = []
        while self.j / self.fps <= mid + TIE_EPS:
            out.append(self._prev)  # type: ignore[arg-type]
            self.j += 1
        self._prev, self._prev_r = payload, r
        return out

    def finish(self, last_duration: float | None = None) -> list[P]:
        """Emit the frames up to the end of the last source frame; sets :attr:`duration`."""
        if not self._have_prev:
            self.duration = 0.0
            return []
        dt = last_duration if last_duration is not None and last_duration > 0 else self._interval()
        self.duration = self._prev_r + dt
        out: list[P] = []
        while self.j / self.fps < self.duration - TIE_EPS:
            out.append(self._prev)  # type: ignore[arg-type]
            self.j += 1
        return out


def n_output_frames(duration_s: float, fps: float) -> int:
    """Output frames of a source lasting ``duration_s``: the ``j`` with ``j / fps < duration_s``."""
    if duration_s <= 0:
        return 0
    n = math.ceil(duration_s * fps - 1e-9)
    while n > 0 and (n - 1) / fps >= duration_s - TIE_EPS:
        n -= 1
    return n


# ------------------------------------------------------------------------------- sizes


def resized_size(height: int, width: int, resize: tuple[int, ...] | None) -> tuple[int, int]:
    """Output ``(height, width)`` of torchvision's ``resize_size`` rule (``None`` keeps the size)."""
    if resize is None or len(resize) == 0:
        return height, width
    if len(resize) == 1:
        s = int(resize[0])
        if height <= width:
            return s, max(1, int(s * width / height))
        return max(1, int(s * height / width)), s
    if len(resize) == 2:
        return int(resize[0]), int(resize[1])
    raise ValueError(f"resize must be (short_side,) or (height, width), got {resize}")


def center_crop(frame: np.ndarray, crop: tuple[int, int] | None) -> np.ndarray:
    """Central ``crop = (height, width)`` window of an ``H x W x 3`` frame (a view, no copy).

    Like torchvision's ``center_crop``: the top/left offset is ``round((size - crop) / 2)``.
    """
    if crop is None:
        return frame
    ch, cw = crop
    h, w = frame.shape[:2]
    if ch > h or cw > w:
        raise ValueError(f"crop {crop} is larger than the frame {(h, w)}")
    top = int(round((h - ch) / 2.0))
    left = int(round((w - cw) / 2.0))
    return frame[top : top + ch, left : left + cw]


# ------------------------------------------------------------------------------- streams


@dataclass
class VideoStream:
    """One video, decoded lazily to RGB frames at ``fps`` (``H x W x 3`` uint8 arrays).

    ``info`` and ``stats`` fill in while :meth:`frames` is consumed. Iterate once.
    """

    path: Path
    fps: float
    resize: tuple[int, ...] | None = None
    backend: str = "pyav"
    stats: DecodeStats = field(default_factory=DecodeStats)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.backend not in DECODERS:
            raise InputError(f"unknown video backend {self.backend!r}", f"use one of {DECODERS}")
        self.info = SourceInfo(path=self.path, backend=self.backend)

    def frames(self) -> Iterator[np.ndarray]:
        if self.backend == "pyav":
            yield from self._frames_pyav()
        else:
            yield from self._frames_torchcodec()

    def clips(self, grid: TimeGrid, crop: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
        """Clips ``(clip_len, H, W, 3)`` uint8 on ``grid`` (``grid.fps`` must equal ``self.fps``)."""
        if abs(grid.fps - self.fps) > 1e-9:
            raise ValueError(f"grid fps {grid.fps} differs from the stream's {self.fps}")
        return iter_clips(self.frames(), grid, crop, self.stats)

    # -- PyAV -------------------------------------------------------------------------------

    def _frames_pyav(self) -> Iterator[np.ndarray]:
        av = _import_av()
        from av.video.reformatter import VideoReformatter

        try:
            container = av.open(str(self.path), mode="r")
        except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
            raise VideoDecodeError(
                f"cannot open video ({_short(exc)})", "check or re-encode the file", path=self.path
            ) from exc
        try:
            if not container.streams.video:
                raise VideoDecodeError("no video stream", "check the file is a video", path=self.path)
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate
            info = self.info
            info.codec = stream.codec_context.name
            info.source_fps = float(rate) if rate else None
            tb = stream.time_base
            resampler: NearestResampler[list] = NearestResampler(
                self.fps, 1.0 / float(rate) if rate else None
            )
            reformatter = VideoReformatter()
            size: tuple[int, int] | None = None
            last_duration: float | None = None

            def to_rgb(item: list) -> np.ndarray:
                # item = [av frame, cached array]: convert each decoded frame at most once
                if item[1] is None:
                    frame = item[0]
                    rgb = reformatter.reformat(
                        frame,
                        width=size[1],
                        height=size[0],
                        format="rgb24",
                        interpolation="BILINEAR",
                        threads=1,
                    )
                    item[1] = rgb.to_ndarray()
                    item[0] = None
                return item[1]

            try:
                for frame in container.decode(stream):
                    if size is None:
                        info.height, info.width = frame.height, frame.width
                        size = resized_size(frame.height, frame.width, self.resize)
                    self.stats.decoded_frames += 1
                    t = float(frame.pts * tb) if frame.pts is not None and tb is not None else None
                    last_duration = float(frame.duration * tb) if frame.duration and tb is not None else None
                    for item in resampler.push(t, [frame, None]):
                        self.stats.output_frames += 1
                        yield to_rgb(item)
            except av.FFmpegError as exc:
                raise VideoDecodeError(
                    f"decoding failed after {self.stats.decoded_frames} frames ({_short(exc)})",
                    "check or re-encode the file",
                    path=self.path,
                ) from exc
            if self.stats.decoded_frames == 0:
                raise VideoDecodeError(
                    "no frame could be decoded", "check or re-encode the file", path=self.path
                )
            for item in resampler.finish(last_duration):
                self.stats.output_frames += 1
                yield to_rgb(item)
            self._finish(resampler)
        finally:
            container.close()

    # -- torchcodec -------------------------------------------------------------------------

    def _frames_torchcodec(self) -> Iterator[np.ndarray]:
        if not torchcodec_available():
            raise InputError(
                "the torchcodec backend is not usable here (torchcodec or its FFmpeg libraries are missing)",
                "install torchcodec and FFmpeg's shared libraries, or use --backend pyav",
            )
        import torch
        from torchcodec.decoders import VideoDecoder

        try:
            dec = VideoDecoder(
                str(self.path), dimension_order="NCHW", seek_mode="exact", num_ffmpeg_threads=0
            )
            meta = dec.metadata
            h, w = int(meta.height), int(meta.width)
            n = len(dec)
        except (RuntimeError, ValueError, OSError) as exc:
            raise VideoDecodeError(
                f"cannot open video ({_short(exc)})", "check or re-encode the file", path=self.path
            ) from exc
        size = resized_size(h, w, self.resize)
        info = self.info
        info.height, info.width, info.codec = h, w, str(meta.codec or "")
        info.source_fps = float(meta.average_fps) if meta.average_fps else None
        resampler: NearestResampler[np.ndarray] = NearestResampler(
            self.fps, 1.0 / info.source_fps if info.source_fps else None
        )
        last_duration = None
        chunk = 8  # frames per torchcodec call: bounds memory at the source resolution
        for start in range(0, n, chunk):
            try:
                batch = dec.get_frames_in_range(start, min(n, start + chunk))
            except (RuntimeError, ValueError, IndexError) as exc:
                raise VideoDecodeError(
                    f"decoding failed after {self.stats.decoded_frames} frames ({_short(exc)})",
                    "check or re-encode the file",
                    path=self.path,
                ) from exc
            data = batch.data  # (B, 3, h, w) uint8
            if size != (h, w):
                # torchcodec's own Resize transform is far slower than this; bilinear without
                # antialiasing, as torchvision's video presets resize (uint8 kernel, one op)
                data = torch.nn.functional.interpolate(data, size=size, mode="bilinear", align_corners=False)
            data = data.permute(0, 2, 3, 1).contiguous().numpy()  # (B, H, W, 3)
            pts = batch.pts_seconds.tolist()
            durs = batch.duration_seconds.tolist()
            for k in range(data.shape[0]):
                self.stats.decoded_frames += 1
                last_duration = durs[k] if durs[k] > 0 else None
                for arr in resampler.push(pts[k], data[k]):
                    self.stats.output_frames += 1
                    yield arr
        if self.stats.decoded_frames == 0:
            raise VideoDecodeError("no frame could be decoded", "check or re-encode the file", path=self.path)
        for arr in resampler.finish(last_duration):
            self.stats.output_frames += 1
            yield arr
        self._finish(resampler)

    def _finish(self, resampler: NearestResampler) -> None:
        self.info.decoded_frames = self.stats.decoded_frames
        self.info.duration_s = float(resampler.duration or 0.0)
        self.info.n_frames = resampler.j
        self.info.finished = True


def iter_clips(
    frames: Iterator[np.ndarray],
    grid: TimeGrid,
    crop: tuple[int, int] | None = None,
    stats: DecodeStats | None = None,
) -> Iterator[np.ndarray]:
    """Group frames into clips of ``grid.clip_len`` every ``grid.stride`` frames (``T x H x W x 3``).

    Holds at most ``clip_len`` frames; frames between clips (``stride > clip_len``) are skipped.
    """
    stats = stats if stats is not None else DecodeStats()
    window: deque[np.ndarray] = deque()
    start = 0  # first frame of the next clip
    for j, frame in enumerate(frames):
        if j < start:
            continue
        window.append(center_crop(frame, crop))
        stats.max_window = max(stats.max_window, len(window))
        if j == start + grid.clip_len - 1:
            stats.clips += 1
            yield np.stack(window)
            start += grid.stride
            for _ in range(min(grid.stride, len(window))):
                window.popleft()


def probe_duration(path: Path) -> float | None:
    """The video's stated duration in seconds (header only, no decoding), if any.

    The video stream's own duration comes first: the container's is that of its longest stream,
    and an audio track often outlasts the video (by 32 ms in a 5.28 s h264 + AAC test clip).
    """
    av = _import_av()

    try:
        with av.open(str(path), mode="r") as container:
            stream = container.streams.video[0] if container.streams.video else None
            if stream is not None and stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / 1_000_000
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoDecodeError(
            f"cannot open video ({_short(exc)})", "check or re-encode the file", path=path
        ) from exc
    return None


def torchcodec_available() -> bool:
    """Whether the torchcodec backend can decode here (the package and its FFmpeg libraries load)."""
    try:
        import torchcodec
    except (ImportError, OSError, RuntimeError):
        return False
    # torchcodec imports without FFmpeg and only fails when decoding; it records what it loaded
    return getattr(torchcodec, "ffmpeg_major_version", None) is not None


def _import_av():
    try:
        import av
    except ImportError as exc:
        raise InputError("PyAV (the av package) is not installed", "pip install 'wtal[video]'") from exc
    return av


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
