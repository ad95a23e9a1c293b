"""The extraction engine: raw videos -> per-video feature cache -> a feature set.

``extract`` decodes each video as a stream (:mod:`wtalcli.video.decode`), batches its clips through a
frozen backbone (:mod:`wtalcli.video.backbones`) and writes ``<cache_dir>/<video_id>.npy``
(``n_snippets x D`` float32) and then ``<cache_dir>/<video_id>.json``, each atomically (temporary
file + rename). A video whose json names the same configuration is finished and is skipped, so an
interrupted run resumes where it stopped, and shards (``sorted(ids)[i::N]``) can run at the same
time on one cache folder. ``<cache_dir>/extract.json`` records the configuration; a cache made
with another backbone, weights file, grid, input size, decoder or precision is refused.

A video that cannot be decoded is recorded (``<video_id>.failed.json`` and the report) and the
others go on; a rerun tries it again. Decoding runs in ``workers`` threads that overlap with the
network through a bounded queue, so memory stays bounded whatever the videos' lengths. Batches
never mix videos, so a video's features do not depend on which other videos (or shard) ran.

``assemble`` turns a finished cache into a normal feature set with
:func:`wtalcli.data.schema.write_feature_set`. Videos shorter than one clip have zero snippets; they are
left out of the feature set (a feature set cannot hold empty videos) and listed in the report.

Input lists (:func:`list_videos`): a folder (searched recursively for video extensions) or a text
file with one video per line: ``PATH`` or ``PATH<TAB>SUBSET``, ``#`` comments and blank lines
ignored, relative paths taken from the list file's folder. ``SUBSET`` is ``train`` or ``test``
(``validation``/``val`` count as ``train`` and are kept as the source subset); without one a video
is ``test``. Video ids are the file stems. Labels come from an optional CSV
(:func:`read_labels_csv`): columns ``video_id,label``, one row per (video, label) pair.
"""

from __future__ import annotations

import ctypes
import functools
import json
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from wtalcli.core.errors import InputError, MismatchError
from wtalcli.core.files import atomic_write, atomic_write_bytes

if TYPE_CHECKING:
    from wtalcli.video.backbones import Backbone
from wtalcli.data.schema import check_video_id, load_npy, write_feature_set
from wtalcli.data.timegrid import TimeGrid
from wtalcli.video.decode import VIDEO_EXTENSIONS, VideoDecodeError, VideoStream

CACHE_FORMAT = 1
CONFIG_FILE = "extract.json"
SUBSET_ALIASES = {"train": "train", "test": "test", "validation": "train", "val": "train"}


# ------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class VideoItem:
    video_id: str
    path: Path
    subset: str = "test"
    source_subset: str = "test"


def _item(path: Path, subset: str, source: Path) -> VideoItem:
    vid = path.stem
    check_video_id(vid, path)
    key = subset.strip().lower()
    if key not in SUBSET_ALIASES:
        raise InputError(
            f"unknown subset {subset!r} for {path.name}",
            "use train or test (validation/val mean train)",
            path=source,
        )
    return VideoItem(vid, path, SUBSET_ALIASES[key], key)


def list_videos(source: Path) -> list[VideoItem]:
    """Videos of a folder (recursive) or of a list file, sorted by id; duplicate ids are refused."""
    source = Path(source)
    items: list[VideoItem] = []
    if source.is_dir():
        for p in sorted(source.rglob("*")):
            if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
                items.append(_item(p, "test", source))
        if not items:
            raise InputError(
                "no video files found",
                f"the folder needs files ending in {', '.join(sorted(VIDEO_EXTENSIONS))}",
                path=source,
            )
    elif source.is_file():
        try:
            lines = source.read_text().splitlines()
        except UnicodeDecodeError as exc:
            raise InputError(
                "video list is not text", "give a folder or a text file of paths", path=source
            ) from exc
        for n, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) > 2:
                raise InputError(
                    f"line {n} has {len(parts)} tab-separated fields",
                    "write PATH or PATH<TAB>SUBSET",
                    path=source,
                )
            p = Path(parts[0].strip()).expanduser()
            p = p if p.is_absolute() else source.parent / p
            if not p.is_file():
                raise InputError(
                    f"line {n}: video {p} not found",
                    "fix the path (relative paths start at the list's folder)",
                    path=source,
                )
            items.append(_item(p, parts[1] if len(parts) == 2 else "test", source))
        if not items:
            raise InputError("video list is empty", "write one video path per line", path=source)
    else:
        raise InputError("video input not found", "give a folder of videos or a list file", path=source)
    seen: dict[str, Path] = {}
    for it in items:
        if it.video_id in seen:
            raise InputError(
                f"two videos share the id {it.video_id!r}: {seen[it.video_id]} and {it.path}",
                "rename one (ids are file names without extension)",
                path=source,
            )
        seen[it.video_id] = it.path
    return sorted(items, key=lambda it: it.video_id)


def read_labels_csv(path: Path) -> dict[str, list[str]]:
    """``video_id,label`` rows (one per pair) -> ``{video_id: sorted labels}``."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError as exc:
        raise InputError(
            "labels file not found", "give a CSV with columns video_id,label", path=path
        ) from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(
            f"unreadable labels CSV ({exc})", "give a CSV with columns video_id,label", path=path
        ) from exc
    if not {"video_id", "label"} <= set(df.columns):
        raise InputError(
            f"labels CSV has columns {list(df.columns)}", "it needs the columns video_id,label", path=path
        )
    out: dict[str, set[str]] = {}
    for vid, label in zip(df["video_id"], df["label"], strict=True):
        vid, label = vid.strip(), label.strip()
        if not vid or not label:
            raise InputError(
                "labels CSV has an empty video_id or label", "fill or remove that row", path=path
            )
        out.setdefault(vid, set()).add(label)
    return {k: sorted(v) for k, v in out.items()}


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/N"`` -> ``(i, N)`` with ``0 <= i < N``."""
    if text is None or text == "":
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise InputError(f"bad shard {text!r}", "write --shard i/N, e.g. 0/4") from None
    return _check_shard((i, n))


def _check_shard(shard: tuple[int, int] | None) -> tuple[int, int] | None:
    if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise InputError(f"bad shard {shard[0]}/{shard[1]}", "shard i/N needs 0 <= i < N")
    return shard


def video_ids(paths: Sequence[Path]) -> dict[str, Path]:
    """File stems as video ids (validated, unique)."""
    out: dict[str, Path] = {}
    for p in paths:
        p = Path(p)
        check_video_id(p.stem, p)
        if p.stem in out:
            raise InputError(
                f"two videos share the id {p.stem!r}: {out[p.stem]} and {p}", "rename one", path=p
            )
        out[p.stem] = p
    return out


# ------------------------------------------------------------------------------- reports


@dataclass
class VideoFailure:
    video_id: str
    path: str
    message: str


@dataclass
class ExtractEvent:
    """One progress step: ``kind`` is ``done``, ``cached`` or ``failed``."""

    kind: str
    video_id: str
    index: int  # 1-based position among this run's videos
    total: int
    n_snippets: int = 0
    message: str = ""


@dataclass
class ExtractReport:
    selected: list[str] = field(default_factory=list)  # this run's (shard's) videos
    computed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)  # already finished, not recomputed
    failed: list[VideoFailure] = field(default_factory=list)
    short: list[str] = field(default_factory=list)  # zero snippets (shorter than one clip)
    snippets: int = 0  # computed in this run
    decoded_frames: int = 0  # in this run
    seconds: float = 0.0  # the whole call
    setup_seconds: float = 0.0  # of which building the network and scanning the cache
    source: dict = field(default_factory=dict)  # backbone + grid + decoder description

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class AssembleReport:
    videos: int
    snippets: int
    dim: int
    skipped_short: list[str]
    source: dict


# ------------------------------------------------------------------------------- cache files


def _write_json(path: Path, obj: dict) -> None:
    data = (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()
    atomic_write_bytes(path, data)


def _read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def cache_key(source: dict, backend: str) -> dict:
    """What must match for cached features to be reused."""
    keys = ("backbone", "weights_sha256", "seed", "fps", "stride", "clip_len", "resize", "crop", "precision")
    return {"format": CACHE_FORMAT, "decoder": backend, **{k: source.get(k) for k in keys}}


def _open_cache(cache_dir: Path, key: dict, source: dict) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = cache_dir / CONFIG_FILE
    cfg = _read_json(cfg_path)
    if cfg is not None:
        if cfg.get("key") != key:
            old = cfg.get("key") or {}
            diff = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
            raise MismatchError(
                f"feature cache {cache_dir} was made with other settings (differs in {', '.join(diff)})",
                "use another --cache-dir, or delete that folder to start over",
            )
        return
    if cfg_path.exists():
        raise InputError(
            "unreadable cache configuration", "delete the cache folder to start over", path=cfg_path
        )
    _write_json(cfg_path, {"key": key, "source": source})


def is_finished(cache_dir: Path, video_id: str, key: dict) -> dict | None:
    """The video's cache record if its features are complete for ``key``, else ``None``."""
    rec = _read_json(cache_dir / f"{video_id}.json")
    if rec is None or rec.get("key") != key:
        return None
    npy = cache_dir / f"{video_id}.npy"
    try:
        arr = np.load(npy, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if arr.ndim != 2 or arr.shape[0] != rec.get("n_snippets"):
        return None
    return rec


# ------------------------------------------------------------------------------- the engine


@functools.cache
def _malloc_trim() -> Callable[[], None]:
    """glibc's ``malloc_trim(0)``, or a no-op where there is none.

    Each batch allocates and frees tens of MB (input, activations); glibc's adaptive mmap threshold
    then serves them from the heap, and the small feature arrays that survive pin it: without a
    trim, RSS grew by ~1.2 MB per clip (r3d_18, 32 px) over a 10-minute video. Trimming after each
    batch gives the freed pages back and keeps RSS flat.
    """
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int

    def trim() -> None:
        fn(0)

    return trim


_END = "end"
_BATCH = "batch"
_ERROR = "error"


class _Stop(Exception):
    pass


def _decode_worker(
    jobs: queue.Queue,
    out: queue.Queue,
    stop: threading.Event,
    grid: TimeGrid,
    resize: tuple[int, ...],
    crop: tuple[int, int],
    batch_size: int,
    backend: str,
) -> None:
    """Decode videos from ``jobs``; put ``(kind, video_id, payload)`` items on ``out``."""

    def put(item: tuple) -> None:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stop

    try:
        while not stop.is_set():
            try:
                vid, path = jobs.get_nowait()
            except queue.Empty:
                return
            stream = VideoStream(path, grid.fps, resize, backend)
            batch: list[np.ndarray] = []
            try:
                for clip in stream.clips(grid, crop):
                    batch.append(clip)
                    if len(batch) == batch_size:
                        put((_BATCH, vid, np.stack(batch)))
                        batch = []
                if batch:
                    put((_BATCH, vid, np.stack(batch)))
                put((_END, vid, (stream.info.as_dict(), stream.stats.decoded_frames)))
            except VideoDecodeError as exc:
                put((_ERROR, vid, exc.one_line()))
    except _Stop:
        return
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
        try:
            out.put(("crash", "", exc), timeout=1.0)
        except queue.Full:
            pass


def extract(
    paths: Sequence[Path],
    cache_dir: Path,
    backbone: str | Backbone,
    weights: str | Path | None,
    grid: TimeGrid,
    batch_size: int = 32,
    device: str = "auto",
    shard: tuple[int, int] | None = None,
    progress: Callable[[ExtractEvent], None] | None = None,
    *,
    size: int | None = None,
    backend: str = "pyav",
    workers: int = 1,
    precision: str = "fp32",
    seed: int = 0,
    queue_batches: int = 4,
) -> ExtractReport:
    """Extract features of ``paths`` (or of shard ``(i, N)`` of them) into ``cache_dir``; resumable.

    ``backbone`` is a registry name, built here from ``weights`` (``None`` means ``"hub"``) on
    ``device``, or an already built :class:`~wtalcli.video.backbones.Backbone` (whose own weights, size,
    seed, precision and device then apply). ``size`` overrides the crop side (tests, quick runs);
    ``workers`` decoder threads (one video each at a time) feed the
    network through a queue of at most ``queue_batches`` batches.
    """
    try:
        import torch

        from wtalcli.video.backbones import HUB, Backbone, build_backbone
    except ImportError as exc:
        raise InputError(f"video extraction needs torchvision ({exc})", "pip install 'wtal[video]'") from exc

    t_start = time.perf_counter()
    if batch_size < 1 or workers < 1 or queue_batches < 1:
        raise InputError("batch size, workers and queue size must be at least 1", "fix the option")
    ids = video_ids(paths)
    shard = _check_shard(shard)
    selected = sorted(ids)
    if shard is not None:
        selected = selected[shard[0] :: shard[1]]
    if isinstance(backbone, Backbone):
        net = backbone  # already built (tests, notebooks): its own weights, size and device
        if TimeGrid(net.info["fps"], net.info["stride"], net.info["clip_len"]) != grid:
            raise InputError("the backbone was built for another time grid", "build it with the same grid")
    else:
        weights = HUB if weights is None else weights
        net = build_backbone(backbone, weights, grid, device, size=size, seed=seed, precision=precision)
    source = {**net.info, "decoder": backend}
    key = cache_key(source, backend)
    cache_dir = Path(cache_dir)
    _open_cache(cache_dir, key, source)
    report = ExtractReport(selected=selected, source=source)
    total = len(selected)
    position = {vid: k + 1 for k, vid in enumerate(selected)}

    def emit(kind: str, vid: str, n: int = 0, message: str = "") -> None:
        if progress is not None:
            progress(ExtractEvent(kind, vid, position[vid], total, n, message))

    todo: list[str] = []
    for vid in selected:
        rec = is_finished(cache_dir, vid, key)
        if rec is not None:
            report.cached.append(vid)
            if rec["n_snippets"] == 0:
                report.short.append(vid)
            emit("cached", vid, int(rec["n_snippets"]))
        else:
            todo.append(vid)
    report.setup_seconds = time.perf_counter() - t_start
    if not todo:
        report.seconds = report.setup_seconds
        return report

    jobs: queue.Queue = queue.Queue()
    for vid in todo:
        jobs.put((vid, ids[vid]))
    out: queue.Queue = queue.Queue(maxsize=queue_batches)
    stop = threading.Event()
    pre = net.preprocess
    threads = [
        threading.Thread(
            target=_decode_worker,
            args=(jobs, out, stop, grid, pre.resize, pre.crop, batch_size, backend),
            name=f"wtal-decode-{w}",
            daemon=True,
        )
        for w in range(min(workers, len(todo)))
    ]
    for th in threads:
        th.start()
    feats: dict[str, list[np.ndarray]] = {}
    remaining = len(todo)
    trim = _malloc_trim()
    try:
        with torch.inference_mode():
            while remaining:
                try:
                    kind, vid, payload = out.get(timeout=1.0)
                except queue.Empty:
                    if not any(th.is_alive() for th in threads) and out.empty():
                        raise RuntimeError("video decoder threads ended early") from None
                    continue
                if kind == _BATCH:
                    y = net(torch.from_numpy(payload))  # (B, D)
                    feats.setdefault(vid, []).append(y.cpu().numpy().astype(np.float32, copy=True))
                    del y, payload
                    trim()
                elif kind == _END:
                    info, decoded = payload
                    x = np.concatenate(feats.pop(vid)) if vid in feats else np.zeros((0, net.dim), np.float32)
                    _save_video(cache_dir, vid, x, info, key, grid)
                    remaining -= 1
                    report.computed.append(vid)
                    report.snippets += x.shape[0]
                    report.decoded_frames += decoded
                    if x.shape[0] == 0:
                        report.short.append(vid)
                    emit("done", vid, x.shape[0])
                elif kind == _ERROR:
                    feats.pop(vid, None)
                    remaining -= 1
                    report.failed.append(VideoFailure(vid, str(ids[vid]), payload))
                    _write_json(
                        cache_dir / f"{vid}.failed.json",
                        {"video_id": vid, "path": str(ids[vid]), "message": payload},
                    )
                    emit("failed", vid, 0, payload)
                else:
                    raise payload
    finally:
        stop.set()
        while any(th.is_alive() for th in threads):
            try:
                out.get_nowait()
            except queue.Empty:
                pass
            for th in threads:
                th.join(timeout=0.05)
    report.seconds = time.perf_counter() - t_start
    return report


def _save_video(cache_dir: Path, vid: str, x: np.ndarray, info: dict, key: dict, grid: TimeGrid) -> None:
    n = int(x.shape[0])
    if n != grid.n_snippets(int(info["n_frames"])):  # the decoder's contract; cheap to keep honest
        raise RuntimeError(f"{vid}: {n} clips for {info['n_frames']} frames")
    atomic_write(cache_dir / f"{vid}.npy", lambda f: np.save(f, np.ascontiguousarray(x, np.float32)))
    rec = {
        "video_id": vid,
        "key": key,
        "n_snippets": n,
        "n_frames": int(info["n_frames"]),
        "duration_s": float(info["duration_s"]),
        "source_fps": info["source_fps"],
        "decoded_frames": int(info["decoded_frames"]),
        "width": int(info["width"]),
        "height": int(info["height"]),
        "codec": info["codec"],
        "path": info["path"],
    }
    _write_json(cache_dir / f"{vid}.json", rec)
    failed = cache_dir / f"{vid}.failed.json"
    if failed.exists():
        failed.unlink()


# ------------------------------------------------------------------------------- merge


def assemble(
    cache_dir: Path,
    video_ids: Sequence[str],
    subset_map: Mapping[str, str] | None,
    labels: Mapping[str, Sequence[str]] | None,
    out_dir: Path,
    *,
    classes: Sequence[str] | None = None,
    annotations: pd.DataFrame | None = None,
    source_subsets: Mapping[str, str] | None = None,
    dtype: str = "float32",
) -> AssembleReport:
    """Write the feature set of ``video_ids`` from a finished cache (all shards) into ``out_dir``.

    ``subset_map`` gives each video's subset (``test`` when absent), ``labels`` its labels;
    ``classes`` defaults to the sorted labels. Missing or failed videos are an error that lists
    them; zero-snippet videos are left out and listed in the report.
    """
    cache_dir = Path(cache_dir)
    cfg = _read_json(cache_dir / CONFIG_FILE)
    if cfg is None or "key" not in cfg:
        raise InputError("not a feature cache (no extract.json)", "run the extraction first", path=cache_dir)
    key, source = cfg["key"], cfg.get("source", {})
    grid = TimeGrid(float(key["fps"]), int(key["stride"]), int(key["clip_len"]))
    subset_map = subset_map or {}
    labels = labels or {}
    missing: list[str] = []
    failed: list[str] = []
    rows: list[dict] = []
    skipped: list[str] = []
    for vid in sorted(set(video_ids)):
        rec = is_finished(cache_dir, vid, key)
        if rec is None:
            (failed if (cache_dir / f"{vid}.failed.json").exists() else missing).append(vid)
            continue
        if rec["n_snippets"] == 0:
            skipped.append(vid)
            continue
        subset = subset_map.get(vid, "test")
        rows.append(
            {
                "video_id": vid,
                "subset": SUBSET_ALIASES.get(subset, subset),
                "source_subset": (source_subsets or {}).get(vid, subset),
                "n_snippets": int(rec["n_snippets"]),
                "duration_s": float(rec["duration_s"]),
                "fps": grid.fps,
                "stride": grid.stride,
                "clip_len": grid.clip_len,
                "labels": list(labels.get(vid, [])),
            }
        )
    if failed or missing:
        parts = []
        if failed:
            parts.append(f"{len(failed)} failed to decode ({_some(failed)})")
        if missing:
            parts.append(f"{len(missing)} not extracted yet ({_some(missing)})")
        raise InputError(
            f"feature cache is incomplete: {'; '.join(parts)}",
            "run the extraction (every shard) again; drop videos that cannot be decoded from the list",
            path=cache_dir,
        )
    if not rows:
        raise InputError(
            f"no video has a snippet: all {len(skipped)} are shorter than one clip ({_some(skipped)})",
            "use a shorter --clip-len",
            path=cache_dir,
        )
    if classes is None:
        found = {c for r in rows for c in r["labels"]}
        if annotations is not None and len(annotations):
            found |= set(map(str, annotations["label"]))
        classes = sorted(found)
    videos = pd.DataFrame(rows)
    if annotations is not None and len(annotations):
        annotations = annotations[annotations["video_id"].isin(set(videos["video_id"]))]

    def arrays():
        for vid in videos["video_id"]:
            yield load_npy(cache_dir / f"{vid}.npy", f"cached features of {vid}")

    write_feature_set(Path(out_dir), videos, arrays(), list(classes), annotations, dtype, cache_dir)
    dim = int(np.load(cache_dir / f"{rows[0]['video_id']}.npy", mmap_mode="r", allow_pickle=False).shape[1])
    return AssembleReport(len(rows), int(videos["n_snippets"].sum()), dim, skipped, source)


def _some(ids: list[str], k: int = 5) -> str:
    return ", ".join(ids[:k]) + (f" and {len(ids) - k} more" if len(ids) > k else "")
