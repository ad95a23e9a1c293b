"""Raw-video extraction: streamed decoding, time grid, backbones, resumable cache, shards, merge.

Needs the ``video`` extra (torchvision + av); skipped without it. Videos are generated here.
"""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
av = pytest.importorskip("av")

from clips import read_clips  # noqa: E402
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from wtalcli.core.errors import InputError, MismatchError, WtalError  # noqa: E402
from wtalcli.data.schema import FeatureSet  # noqa: E402
from wtalcli.data.timegrid import TimeGrid  # noqa: E402
from wtalcli.video.backbones import (  # noqa: E402
    BACKBONES,
    FEATURE_DIMS,
    backbone_spec,
    build_backbone,
    default_weights_path,
    resolve_device,
)
from wtalcli.video.decode import (  # noqa: E402
    TIE_EPS,
    DecodeStats,
    NearestResampler,
    VideoDecodeError,
    VideoStream,
    iter_clips,
    n_output_frames,
    probe_duration,
    resized_size,
    torchcodec_available,
)
from wtalcli.video.extract import (  # noqa: E402
    ExtractEvent,
    assemble,
    extract,
    list_videos,
    parse_shard,
    read_labels_csv,
)

GRID = TimeGrid(fps=25.0, stride=8, clip_len=8)  # small clips keep the CPU tests fast
SIZE = 16  # r3d_18 crop side for the tests (its forward then costs ~0.1 s on 2 cores)


def make_video(
    path: Path,
    n_frames: int,
    fps: int,
    width: int = 64,
    height: int = 48,
    times_ms: list[int] | None = None,
) -> Path:
    """An mpeg4 video of a square moving over a background whose grey level encodes the frame index.

    ``times_ms`` gives explicit presentation times (variable frame rate, millisecond time base).
    """
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        if times_ms is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        for i in range(n_frames):
            a = np.full((height, width, 3), 16 + (3 * i) % 224, np.uint8)
            x = (2 * i) % (width - 8)
            a[height // 3 : height // 3 + 8, x : x + 8] = (255, 40, 40)
            f = av.VideoFrame.from_ndarray(a, format="rgb24")
            if times_ms is not None:
                f.pts, f.time_base = times_ms[i], Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def decoded_reference(path: Path) -> tuple[list[float], list[np.ndarray], float]:
    """Every decoded frame with its time (relative to the first) and the source duration."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        times, frames, last_dur = [], [], 0.0
        for f in c.decode(s):
            times.append(float(f.pts * s.time_base))
            frames.append(f.to_ndarray(format="rgb24"))
            last_dur = float(f.duration * s.time_base)
    t0 = times[0]
    times = [t - t0 for t in times]
    return times, frames, times[-1] + last_dur


def nearest_reference(times: list[float], t: float) -> int:
    """Index of the source time nearest to ``t``, earlier one on ties (brute force)."""
    d = [abs(x - t) for x in times]
    best = min(d)
    # the resampler's tie rule: t within TIE_EPS of a midpoint, i.e. distances within 2 * TIE_EPS
    return min(i for i, x in enumerate(d) if x <= best + 2 * TIE_EPS)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    out = {
        "v30": make_video(d / "v30.mp4", 60, 30),  # 2 s at 30 fps -> 50 frames at 25 fps
        "v25": make_video(d / "v25.mp4", 75, 25),  # 3 s at 25 fps
        "w30": make_video(d / "w30.mp4", 100, 30, width=48, height=64),  # portrait, 3.33 s
    }
    bad = d / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    out["bad"] = bad
    truncated = d / "trunc.mp4"
    truncated.write_bytes(out["v25"].read_bytes()[:600])
    out["trunc"] = truncated
    return out


# ------------------------------------------------------------------------------- time grid


def test_30fps_two_seconds_gives_50_frames_at_25fps(videos):
    stream = VideoStream(videos["v30"], 25.0)
    frames = list(stream.frames())
    assert len(frames) == 50 == stream.info.n_frames
    assert stream.info.duration_s == pytest.approx(2.0)
    assert stream.info.decoded_frames == 60 and stream.info.source_fps == pytest.approx(30.0)
    clips, info = read_clips(videos["v30"], GRID)
    assert clips.shape == (GRID.n_snippets(50), 8, 48, 64, 3) == (6, 8, 48, 64, 3)
    grid16 = TimeGrid(25.0, 16, 16)
    assert read_clips(videos["v30"], grid16)[0].shape[0] == grid16.n_snippets(50) == 3


@pytest.mark.parametrize("fps", [25.0, 12.5, 50.0, 30000 / 1001])
def test_resampled_frames_are_the_nearest_decoded_ones(videos, fps):
    times, frames, duration = decoded_reference(videos["v30"])
    out = list(VideoStream(videos["v30"], fps).frames())
    assert len(out) == n_output_frames(duration, fps)
    for j, frame in enumerate(out):
        assert np.array_equal(frame, frames[nearest_reference(times, j / fps)]), j


def test_variable_frame_rate_is_resampled_by_timestamp(tmp_path):
    times_ms = [0, 30, 70, 80, 150, 160, 170, 260, 300, 310, 400, 405, 520]
    path = make_video(tmp_path / "vfr.mkv", len(times_ms), 30, times_ms=times_ms)
    times, frames, duration = decoded_reference(path)
    assert times == pytest.approx([t / 1000 for t in times_ms])
    out = list(VideoStream(path, 25.0).frames())
    assert len(out) == n_output_frames(duration, 25.0) > 0
    chosen = [nearest_reference(times, j / 25.0) for j in range(len(out))]
    assert len(set(chosen)) < len(times)  # some source frames are skipped, some repeated
    for j, frame in enumerate(out):
        assert np.array_equal(frame, frames[chosen[j]])


@settings(max_examples=150, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=0, max_value=90), min_size=1, max_size=40),
    missing=st.lists(st.booleans(), min_size=40, max_size=40),
    fps=st.sampled_from([10.0, 24.0, 25.0, 29.97, 30.0, 60.0]),
    start=st.integers(min_value=-50, max_value=500),
)
# found by hypothesis: an output time 1e-6 s past a midpoint (a tie by the resampler's rule)
@example(gaps=[0, 25, 90, 90, 90, 90, 90, 51], missing=[False] * 40, fps=29.97, start=0)
def test_resampler_picks_nearest_time_property(gaps, missing, fps, start):
    nominal = 1 / 30
    raw = list(np.cumsum([0, *gaps[1:]]) / 1000.0 + start / 1000.0)
    given_t = [None if (missing[i] and i > 0) else t for i, t in enumerate(raw)]
    rs: NearestResampler[int] = NearestResampler(fps, nominal)
    out: list[int] = []
    for i, t in enumerate(given_t):
        out += rs.push(t, i)
    out += rs.finish(nominal)
    # the reference: fill missing times, make times relative and monotone, then brute force
    eff: list[float] = []
    for i, t in enumerate(given_t):
        if i == 0:
            eff.append(0.0)
        elif t is None:
            eff.append(eff[-1] + nominal)
        else:
            eff.append(max(eff[-1], t - given_t[0]))
    duration = eff[-1] + nominal
    assert rs.duration == pytest.approx(duration)
    assert len(out) == n_output_frames(duration, fps)
    assert out == sorted(out)
    for j, i in enumerate(out):
        t = j / fps
        best = min(abs(e - t) for e in eff)
        assert abs(eff[i] - t) <= best + 2 * TIE_EPS  # ties as the resampler defines them
        assert eff[i] == pytest.approx(eff[nearest_reference(eff, t)])  # ties: the earlier time


@pytest.mark.parametrize("stride,clip_len", [(8, 8), (4, 8), (16, 8), (16, 16), (3, 5)])
@pytest.mark.parametrize("n", [0, 4, 5, 8, 31, 64])
def test_clip_windows_follow_the_time_grid(n, stride, clip_len):
    grid = TimeGrid(25.0, stride, clip_len)
    frames = (np.full((2, 3, 3), j % 256, np.uint8) for j in range(n))
    stats = DecodeStats()
    clips = list(iter_clips(frames, grid, stats=stats))
    assert len(clips) == grid.n_snippets(n)
    for t, clip in enumerate(clips):
        assert clip.shape == (clip_len, 2, 3, 3)
        assert clip[:, 0, 0, 0].tolist() == [(t * stride + k) % 256 for k in range(clip_len)]
    assert stats.max_window <= clip_len and stats.clips == len(clips)


def test_frame_window_stays_bounded_on_a_long_video(tmp_path):
    fps, seconds = 25, 90
    path = make_video(tmp_path / "long.mp4", fps * seconds, fps, width=32, height=24)
    grid = TimeGrid(25.0, 16, 16)
    stream = VideoStream(path, grid.fps)
    tracemalloc.start()
    n_clips = sum(1 for _ in stream.clips(grid))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert stream.info.n_frames == fps * seconds
    assert n_clips == grid.n_snippets(fps * seconds)
    assert stream.stats.max_window <= grid.clip_len
    # all 2250 RGB frames would take 5.2 MB; a bounded window needs a few clips' worth
    assert peak < 1_000_000, peak


def test_resize_in_decoder_follows_torchvision_rules(videos):
    from torchvision.transforms import functional as F

    for h, w in [(48, 64), (64, 48), (100, 100), (37, 211)]:
        for resize in [(32,), (20, 30), (128, 171)]:
            expect = tuple(F.resize(torch.zeros(1, h, w), list(resize), antialias=False).shape[1:])
            assert resized_size(h, w, resize) == expect
    frames = list(VideoStream(videos["w30"], 25.0, (32,)).frames())
    assert frames[0].shape == (42, 32, 3)  # portrait: width is the short side
    full = list(VideoStream(videos["w30"], 25.0).frames())
    assert len(frames) == len(full)
    small = torch.from_numpy(np.stack(full[:5])).permute(0, 3, 1, 2).float()
    ref = F.resize(small, [42, 32], antialias=True).permute(0, 2, 3, 1).numpy()
    assert np.abs(np.stack(frames[:5]).astype(float) - ref).mean() < 6.0


def test_crop_is_central(videos):
    clips, _ = read_clips(videos["v30"], GRID, resize=(32,), crop=(32, 32))
    frames = list(VideoStream(videos["v30"], 25.0, (32,)).frames())
    assert clips.shape[2:] == (32, 32, 3)
    left = round((42 - 32) / 2)
    assert np.array_equal(clips[1, 0], frames[8][:, left : left + 32])


@pytest.mark.skipif(not torchcodec_available(), reason="torchcodec or its FFmpeg libraries are missing")
def test_torchcodec_backend_matches_pyav(videos, tmp_path):
    times_ms = [0, 30, 70, 80, 150, 160, 170, 260, 300, 310]
    vfr = make_video(tmp_path / "vfr.mkv", len(times_ms), 30, times_ms=times_ms)
    for path in (videos["v30"], videos["v25"], vfr):
        a = np.stack(list(VideoStream(path, 25.0, backend="pyav").frames()))
        s = VideoStream(path, 25.0, backend="torchcodec")
        b = np.stack(list(s.frames()))
        assert np.array_equal(a, b)
        assert s.info.n_frames == len(a)
    # resized: swscale (PyAV) and torch's bilinear kernel (torchcodec) differ only slightly
    a = np.stack(list(VideoStream(videos["w30"], 25.0, (32,), backend="pyav").frames())).astype(float)
    b = np.stack(list(VideoStream(videos["w30"], 25.0, (32,), backend="torchcodec").frames())).astype(float)
    assert a.shape == b.shape == (84, 42, 32, 3)
    assert np.abs(a - b).mean() < 6.0


@pytest.mark.parametrize("name", ["bad", "trunc"])
def test_corrupt_video_raises_decode_error(videos, name):
    with pytest.raises(VideoDecodeError) as err:
        list(VideoStream(videos[name], 25.0).frames())
    assert str(videos[name]) in str(err.value)


def test_not_a_video_and_missing_file(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("hello\n" * 50)
    with pytest.raises(VideoDecodeError):
        list(VideoStream(text, 25.0).frames())
    with pytest.raises(VideoDecodeError):
        list(VideoStream(tmp_path / "absent.mp4", 25.0).frames())


# ------------------------------------------------------------------------------- backbones


def test_registry_reads_torchvision_presets():
    r3d = backbone_spec("r3d_18")
    assert r3d.preprocess.crop == (112, 112) and r3d.preprocess.resize == (128, 171)
    assert r3d.weights_file == "r3d_18-b3b3357e.pth" and len(r3d.categories) == 400
    mvit = backbone_spec("mvit_v2_s")
    assert mvit.preprocess.exact_frames == 16 and mvit.preprocess.resize == (256,)
    assert mvit.preprocess.mean == (0.45, 0.45, 0.45)
    assert backbone_spec("s3d").preprocess.min_frames == 14
    assert backbone_spec("swin3d_t").preprocess.std == (0.229, 0.224, 0.225)
    with pytest.raises(InputError):
        backbone_spec("resnet50")


def _full_model(name: str, seed: int):
    from torchvision import models

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return models.get_model(name, weights=None).eval()


def _torchvision_state(net) -> dict:
    """The state_dict of the torchvision r3d_18 that ``net`` was cut from (trunk + ``fc`` head)."""
    return {**net.trunk.state_dict(), **{f"fc.{k}": v for k, v in net.head.state_dict().items()}}


def _check_backbone(name: str, grid: TimeGrid, size: int | None, batch: int = 2) -> None:
    net = build_backbone(name, "random", grid, "cpu", size=size, seed=3)
    h, w = net.preprocess.crop
    clips = torch.randint(
        0, 256, (batch, grid.clip_len, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        feats = net(clips)
        full = _full_model(name, 3)(net.normalise(clips))
        logits = net.logits(feats)
    assert feats.shape == (batch, FEATURE_DIMS[name]) and feats.dtype == torch.float32
    assert torch.allclose(logits, full, atol=1e-4, rtol=1e-4)  # the head was split off correctly


def test_r3d_features_and_kept_head_match_the_full_model(net):
    clips = torch.randint(
        0, 256, (3, 8, SIZE, SIZE, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        feats = net(clips)
        full = _full_model("r3d_18", 0)(net.normalise(clips))  # the fixture's seed
        logits = net.logits(feats)
    assert feats.shape == (3, 512) and feats.dtype == torch.float32
    assert torch.allclose(logits, full, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", [b for b in BACKBONES if b != "r3d_18"])
def test_every_backbone_builds_and_gives_its_dim(name):
    spec = backbone_spec(name)
    clip_len = spec.preprocess.exact_frames or max(8, spec.preprocess.min_frames)
    size = None if name in ("s3d", "mvit_v2_s") else SIZE  # these two need 224 px
    _check_backbone(name, TimeGrid(25.0, clip_len, clip_len), size, batch=1)


def test_normalisation_uses_the_preset_mean_and_std(net):
    clips = torch.full((1, 8, SIZE, SIZE, 3), 255, dtype=torch.uint8)
    x = net.normalise(clips)
    assert x.shape == (1, 3, 8, SIZE, SIZE)
    expect = [(1 - m) / s for m, s in zip(net.preprocess.mean, net.preprocess.std, strict=True)]
    assert torch.allclose(x[0, :, 0, 0, 0], torch.tensor(expect))


def test_random_weights_are_seeded(net):
    clips = torch.randint(
        0, 256, (1, 8, SIZE, SIZE, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    state = torch.random.get_rng_state()
    with torch.inference_mode():
        outs = [net(clips)] + [
            build_backbone("r3d_18", "random", GRID, "cpu", size=SIZE, seed=s)(clips) for s in (0, 1)
        ]
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is left alone


def test_weights_from_a_state_dict_file(tmp_path, net):
    path = tmp_path / "mine.pth"
    torch.save(_torchvision_state(net), path)
    loaded = build_backbone("r3d_18", path, GRID, "cpu", size=SIZE, seed=7)
    clips = torch.randint(
        0, 256, (1, 8, SIZE, SIZE, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2)
    )
    with torch.inference_mode():
        assert torch.equal(loaded(clips), net(clips))
    assert loaded.info["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.info["weights"] == str(path.resolve()) and loaded.info["seed"] is None
    assert loaded.info["backbone"] == "r3d_18" and loaded.info["clip_len"] == 8 and loaded.info["fps"] == 25.0
    # a folder holding torchvision's file name works too
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "other.pth").write_bytes(path.read_bytes())
    with pytest.raises(WtalError, match="r3d_18-b3b3357e.pth"):
        build_backbone("r3d_18", tmp_path / "dir", GRID, "cpu", size=SIZE)


def test_missing_weights_say_where_to_put_them(tmp_path, monkeypatch, net):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    expected = tmp_path / "th" / "hub" / "checkpoints" / "r3d_18-b3b3357e.pth"
    assert default_weights_path("r3d_18") == expected
    with pytest.raises(WtalError) as err:
        build_backbone("r3d_18", "hub", GRID, "cpu", size=SIZE)
    assert str(expected) in str(err.value) and "nothing is downloaded" in str(err.value)
    # torchvision's file name carries a hash prefix: a damaged copy is caught
    expected.parent.mkdir(parents=True)
    torch.save(_torchvision_state(net), expected)
    with pytest.raises(InputError, match="damaged"):
        build_backbone("r3d_18", "hub", GRID, "cpu", size=SIZE)


def test_bad_weights_files_are_refused(tmp_path, net):
    wrong = tmp_path / "wrong.pth"
    torch.save({**_torchvision_state(net), "stem.0.weight": torch.zeros(45, 3, 1, 7, 7)}, wrong)
    with pytest.raises(InputError, match="do not fit r3d_18: size mismatch for stem.0.weight"):
        build_backbone("r3d_18", wrong, GRID, "cpu", size=SIZE)
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in _torchvision_state(net).items() if not k.startswith("layer4")}, partial)
    with pytest.raises(InputError, match="missing keys"):
        build_backbone("r3d_18", partial, GRID, "cpu", size=SIZE)
    pickled = tmp_path / "pickled.pth"
    torch.save({"fc.weight": torch.zeros(1), "extra": Fraction(1, 3)}, pickled)
    with pytest.raises(InputError, match="cannot load weights"):
        build_backbone("r3d_18", pickled, GRID, "cpu", size=SIZE)


def test_network_limits_are_checked():
    with pytest.raises(InputError, match="exactly 16 frames"):
        build_backbone("mvit_v2_s", "random", GRID, "cpu")
    with pytest.raises(InputError, match="at least 224"):
        build_backbone("s3d", "random", TimeGrid(25.0, 16, 16), "cpu", size=112)
    with pytest.raises(InputError, match="at least 14 frames"):
        build_backbone("s3d", "random", GRID, "cpu")
    with pytest.raises(InputError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(WtalError):
            resolve_device("cuda")
        assert resolve_device("auto") == torch.device("cpu")


@dataclass
class ClipPrediction:
    index: int  # snippet index
    start_s: float
    end_s: float
    top: list[tuple[str, float]]  # (Kinetics-400 class, softmax probability), best first


def top_classes(
    path: Path,
    backbone,
    grid: TimeGrid,
    n_clips: int = 3,
    top: int = 5,
    backend: str = "pyav",
) -> list[ClipPrediction]:
    """Top-``top`` Kinetics-400 classes for ``n_clips`` clips spread over the video: the backbone's
    classifier head read on the decoded clips (a sanity check of decoding and preprocessing).

    The clips are spread over the snippet count the container's header implies; the whole video
    is still decoded once, as a stream.
    """
    dur = probe_duration(path)
    n_est = grid.n_snippets(n_output_frames(dur, grid.fps)) if dur else n_clips
    wanted = set(np.linspace(0, max(n_est - 1, 0), num=max(1, n_clips)).round().astype(int).tolist())
    stream = VideoStream(path, grid.fps, backbone.preprocess.resize, backend)
    out: list[ClipPrediction] = []
    cats = backbone.spec.categories
    with torch.inference_mode():
        for t, clip in enumerate(stream.clips(grid, backbone.preprocess.crop)):
            if t not in wanted:
                continue
            feat = backbone(torch.from_numpy(clip[None]))
            prob = torch.softmax(backbone.logits(feat).float(), dim=1)[0].cpu()
            p, idx = prob.topk(min(top, prob.numel()))
            start = t * grid.stride / grid.fps
            out.append(
                ClipPrediction(
                    t,
                    start,
                    start + grid.clip_len / grid.fps,
                    [(cats[i], float(q)) for q, i in zip(p.tolist(), idx.tolist(), strict=True)],
                )
            )
    return out


def test_top_classes_lists_kinetics_classes(videos, net):
    preds = top_classes(videos["v25"], net, GRID, n_clips=3)
    categories = set(backbone_spec("r3d_18").categories)
    assert [p.index for p in preds] == [0, 4, 8]  # 75 frames -> 9 snippets, spread
    for p in preds:
        assert len(p.top) == 5 and all(c in categories for c, _ in p.top)
        probs = [q for _, q in p.top]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert p.end_s - p.start_s == pytest.approx(8 / 25)


# ------------------------------------------------------------------------------- engine


@pytest.fixture(scope="module")
def net():
    """r3d_18, random weights (seed 0), tiny crops: shared, since building one takes a second."""
    return build_backbone("r3d_18", "random", GRID, "cpu", size=SIZE, seed=0)


def run(paths, cache, net, **kw):
    # a CPU forward costs about the same for 1 or 16 tiny clips: one batch per video keeps it fast
    kw.setdefault("batch_size", 16)
    return extract(list(paths), cache, net, None, GRID, **kw)


def cache_arrays(cache: Path, ids) -> dict[str, np.ndarray]:
    return {v: np.load(cache / f"{v}.npy", allow_pickle=False) for v in ids}


GOOD = ("v25", "v30", "w30")


def test_extract_writes_features_and_reports_corrupt_videos(videos, tmp_path, net):
    events: list[ExtractEvent] = []
    paths = [videos[k] for k in (*GOOD, "bad")]
    rep = run(paths, tmp_path / "cache", net, progress=events.append, workers=2)
    assert sorted(rep.computed) == list(GOOD) and [f.video_id for f in rep.failed] == ["bad"]
    assert "bad.mp4" in rep.failed[0].message and not rep.ok
    assert sorted(e.video_id for e in events if e.kind == "done") == list(GOOD)
    assert (
        rep.source["backbone"] == "r3d_18" and rep.source["stride"] == 8 and rep.source["weights"] == "random"
    )
    expect_frames = {"v25": 75, "v30": 50, "w30": 84}  # 100 frames at 30 fps = 3.33 s -> 84 at 25 fps
    for vid in GOOD:
        rec = json.loads((tmp_path / "cache" / f"{vid}.json").read_text())
        assert rec["n_frames"] == expect_frames[vid]
        x = np.load(tmp_path / "cache" / f"{vid}.npy")
        assert x.shape == (GRID.n_snippets(expect_frames[vid]), 512) == (rec["n_snippets"], 512)
    # the cached features are the network's output on the video's clips (one video: CPU forwards are slow)
    clips, _ = read_clips(videos["w30"], GRID, net.preprocess.resize, net.preprocess.crop)
    with torch.inference_mode():
        direct = net(torch.from_numpy(clips)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "cache" / "w30.npy"), direct, rtol=1e-4, atol=1e-4)
    assert (tmp_path / "cache" / "bad.failed.json").exists()
    assert rep.snippets == sum(GRID.n_snippets(n) for n in expect_frames.values())


def test_resume_after_a_crash_recomputes_nothing_finished(videos, tmp_path, net):
    paths = [videos[k] for k in GOOD]
    cache = tmp_path / "cache"

    def crash_after_first(event: ExtractEvent) -> None:
        if event.kind == "done":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(paths, cache, net, progress=crash_after_first)
    finished = [v for v in GOOD if (cache / f"{v}.json").exists()]
    assert finished == ["v25"]  # the first video in id order
    assert not list(cache.glob(".*.part")) and not (cache / "v30.npy").exists()
    stamp = (cache / "v25.npy").stat().st_mtime_ns
    rep = run(paths, cache, net)
    assert rep.cached == ["v25"] and sorted(rep.computed) == ["v30", "w30"]
    assert (cache / "v25.npy").stat().st_mtime_ns == stamp
    clean = tmp_path / "clean"
    run(paths, clean, net)
    a, b = cache_arrays(cache, GOOD), cache_arrays(clean, GOOD)
    assert all(np.array_equal(a[v], b[v]) for v in GOOD)


def test_shards_merge_to_the_single_run_bitwise(videos, tmp_path, net):
    paths = [videos[k] for k in GOOD]
    labels = {"v25": ["jump"], "v30": ["run", "jump"]}
    subsets = {"v25": "train", "v30": "validation"}
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    run(paths, single, net)
    r0 = run(paths, sharded, net, shard=parse_shard("0/2"))
    r1 = run(paths, sharded, net, shard=parse_shard("1/2"), workers=2)
    assert r0.selected == ["v25", "w30"] and r1.selected == ["v30"]
    out_a, out_b = tmp_path / "fs_single", tmp_path / "fs_sharded"
    assemble(single, list(GOOD), subsets, labels, out_a)
    rep = assemble(sharded, list(GOOD), subsets, labels, out_b)
    fa, fb = FeatureSet(out_a), FeatureSet(out_b)
    assert np.array_equal(np.asarray(fa.features), np.asarray(fb.features))
    assert rep.videos == 3 and rep.dim == 512 and rep.snippets == fb.features.shape[0]
    assert fb.classes == ["jump", "run"]
    v = fb.videos.set_index("video_id")
    assert v.loc["v25", "subset"] == "train" and v.loc["w30", "subset"] == "test"
    assert v.loc["v30", "subset"] == "train" and v.loc["v30", "source_subset"] == "validation"
    assert v.loc["v30", "duration_s"] == pytest.approx(2.0) and v.loc["v30", "stride"] == 8
    assert list(v.loc["v30", "labels"]) == ["jump", "run"]


def test_assemble_skips_short_videos_and_refuses_incomplete_caches(videos, tmp_path, net):
    short = make_video(tmp_path / "short.mp4", 5, 30)  # 0.17 s: 4 frames at 25 fps < one clip
    cache = tmp_path / "cache"
    rep = run([videos["v25"], short, videos["bad"]], cache, net)
    assert rep.short == ["short"] and np.load(cache / "short.npy").shape == (0, 512)
    with pytest.raises(InputError, match="1 failed to decode \\(bad\\)"):
        assemble(cache, ["v25", "short", "bad"], None, None, tmp_path / "fs")
    with pytest.raises(InputError, match="not extracted yet \\(v30\\)"):
        assemble(cache, ["v25", "v30"], None, None, tmp_path / "fs")
    out = assemble(cache, ["v25", "short"], None, None, tmp_path / "fs")
    assert out.skipped_short == ["short"] and out.videos == 1
    assert FeatureSet(tmp_path / "fs").videos["subset"].tolist() == ["test"]


def test_cache_made_with_other_settings_is_refused(videos, tmp_path, net):
    cache = tmp_path / "cache"
    run([videos["v30"]], cache, net)
    with pytest.raises(MismatchError, match="seed"):
        extract([videos["v30"]], cache, "r3d_18", "random", GRID, device="cpu", size=SIZE, seed=1)
    with pytest.raises(InputError, match="another time grid"):
        extract([videos["v30"]], cache, net, None, TimeGrid(25.0, 8, 16))


def test_video_lists(tmp_path, videos):
    root = tmp_path / "data"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "x1.mp4").write_bytes(b"")
    (root / "a" / "b" / "x2.MKV").write_bytes(b"")
    (root / "a" / "notes.txt").write_text("no")
    assert [(i.video_id, i.subset) for i in list_videos(root)] == [("x1", "test"), ("x2", "test")]
    (root / "x1.avi").write_bytes(b"")
    with pytest.raises(InputError, match="share the id 'x1'"):
        list_videos(root)
    lst = tmp_path / "list.txt"
    lst.write_text(f"# videos\n{videos['v30']}\ttrain\n\ndata/a/x1.mp4\tvalidation\ndata/a/b/x2.MKV\n")
    items = list_videos(lst)
    assert [(i.video_id, i.subset, i.source_subset) for i in items] == [
        ("v30", "train", "train"),
        ("x1", "train", "validation"),
        ("x2", "test", "test"),
    ]
    assert items[1].path == root / "a" / "x1.mp4"
    lst.write_text("data/a/x1.mp4\tholdout\n")
    with pytest.raises(InputError, match="unknown subset"):
        list_videos(lst)
    lst.write_text("data/a/missing.mp4\n")
    with pytest.raises(InputError, match="not found"):
        list_videos(lst)
    bad_id = tmp_path / "bad id!.mp4"
    bad_id.write_bytes(b"")
    with pytest.raises(InputError, match="unsafe video id"):
        extract([bad_id], tmp_path / "c", "r3d_18", "random", GRID)


def test_labels_csv_and_shard_parsing(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("video_id,label\nv1,Run\nv1,Jump\nv2,Run\nv1,Run\n")
    assert read_labels_csv(csv) == {"v1": ["Jump", "Run"], "v2": ["Run"]}
    csv.write_text("video,class\nv1,Run\n")
    with pytest.raises(InputError, match="video_id,label"):
        read_labels_csv(csv)
    assert parse_shard("1/3") == (1, 3) and parse_shard(None) is None
    for bad in ("3/3", "a/b", "1", "-1/2"):
        with pytest.raises(InputError):
            parse_shard(bad)


# ------------------------------------------------------------------------------- the CLI stage


def test_cli_extract_videos_then_baseline_reads_it(tmp_path, capsys):
    """``wtal extract --from videos`` writes a normal feature set; shards + merge give the same one."""
    import json

    from stages.baseline import baseline
    from wtalcli.app import main
    from wtalcli.core.store import Store
    from wtalcli.data.schema import FeatureSet
    from wtalcli.model.config import BaselineParams

    vids = tmp_path / "vids"
    vids.mkdir()
    for i, n in enumerate((40, 55, 70)):
        make_video(vids / f"clip{i}.mp4", n, 25)
    (tmp_path / "labels.csv").write_text("video_id,label\nclip0,Jump\nclip1,Run\nclip2,Jump\n")
    common = [
        "extract",
        "--from",
        "videos",
        str(vids),
        "--backbone",
        "r3d_18",
        "--weights",
        "random",
        "--size",
        "16",
        "--fps",
        "25",
        "--stride",
        "8",
        "--clip-len",
        "8",
        "--device",
        "cpu",
        "--labels",
        str(tmp_path / "labels.csv"),
    ]
    wd = tmp_path / "wd"
    assert main([*common, "--workdir", str(wd)]) == 0
    art = json.loads(capsys.readouterr().out)
    fs = FeatureSet(wd / art["artifact"])
    assert len(fs.videos) == 3 and fs.dim == 512
    assert fs.videos["n_snippets"].tolist() == [GRID.n_snippets(n) for n in (40, 55, 70)]
    assert [list(x) for x in fs.videos["labels"]] == [["Jump"], ["Run"], ["Jump"]]

    wd2 = tmp_path / "wd2"
    assert main([*common, "--workdir", str(wd2), "--shard", "0/2"]) == 0
    assert main([*common, "--workdir", str(wd2), "--shard", "1/2"]) == 0
    capsys.readouterr()
    assert main([*common, "--workdir", str(wd2)]) == 0  # merge: nothing left to compute
    merged = json.loads(capsys.readouterr().out)
    fs2 = FeatureSet(wd2 / merged["artifact"])
    np.testing.assert_array_equal(np.asarray(fs.features), np.asarray(fs2.features))

    # the extracted set trains (the subset defaults to test; mark them train via a list file)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{vids / f'clip{i}.mp4'}\ttrain\n" for i in range(3)))
    wd3 = tmp_path / "wd3"
    assert main([*common[:3], str(listing), *common[4:], "--workdir", str(wd3)]) == 0
    capsys.readouterr()
    model, tcas = baseline(
        Store(wd3), None, BaselineParams(device="cpu", iterations=3, preset="tiny"), log=lambda m: None
    )
    assert model.kind == "model" and tcas.kind == "tcas"


def test_backbone_names_in_the_help_are_the_backbones():
    from dataclasses import fields

    from wtalcli.core.params import spec
    from wtalcli.video.backbones import BACKBONES, FEATURE_DIMS
    from wtalcli.video.params import ExtractParams

    help_text = spec(next(f for f in fields(ExtractParams) if f.name == "backbone")).help
    assert all(name in help_text for name in BACKBONES) and set(FEATURE_DIMS) == set(BACKBONES)
