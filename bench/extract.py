"""Benchmark raw-video extraction (reference figures in BENCHMARKS.md): decoding, forward, end to end, memory.

All videos are generated here (mpeg4, a moving square on a changing background); weights are
random (``--weights random``), which costs the same as trained ones. Sections:

1. decode: decoded source frames/s and output clips/s of the streamed decoder (30 fps 320x240
   source resampled to 25 fps, resized in the decoder to each backbone's input, centre-cropped),
   for the PyAV backend and, when usable, torchcodec.
2. forward: snippets/s of each backbone's forward pass (head removed, inference mode), at a tiny
   input (32 px, 8 frames) and at its real input (16 frames, its own crop), on CPU, and on the GPU
   (fp32 and bf16, batch 32) when one is present, with the ratio to the H100 reference figures in BENCHMARKS.md.
3. end to end: ``extract()`` snippets/s with 1 and 2 decoder threads (the overlap of decoding and
   inference shows as the ratio).
4. memory: peak RSS of a child process that streams clips out of a 1-minute and a 10-minute video
   (and extracts tiny r3d_18 features from them): it must stay flat (ratio close to 1).

Usage: ``.venv-video/bin/python bench/extract.py [--quick] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

from wtalcli.data.timegrid import TimeGrid  # noqa: E402
from wtalcli.video.backbones import BACKBONES, backbone_spec, build_backbone  # noqa: E402
from wtalcli.video.decode import VideoStream, torchcodec_available  # noqa: E402
from wtalcli.video.extract import extract  # noqa: E402

# reference: one H100 (measured for the project's planning, BENCHMARKS.md), batch 32, 16-frame clips, random weights (clips/s)
H100_FP32 = {"r2plus1d_18": 729, "r3d_18": 1479, "s3d": 863, "mvit_v2_s": 149, "swin3d_t": 212}
H100_BF16 = {"r2plus1d_18": 1210, "r3d_18": 1816, "s3d": 990, "mvit_v2_s": 212, "swin3d_t": 306}


def make_video(path: Path, seconds: float, fps: int, width: int, height: int) -> Path:
    n = int(round(seconds * fps))
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.codec_context.time_base = Fraction(1, fps)
        base = np.zeros((height, width, 3), np.uint8)
        for i in range(n):
            a = base.copy()
            a[...] = (16 + (3 * i) % 200, 60, 90)
            x = (4 * i) % max(1, width - height // 4)
            a[height // 3 : height // 3 + height // 4, x : x + height // 4] = (250, 40, 40)
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def bench_decode(path: Path, backends: list[str]) -> list[dict]:
    rows = []
    grid = TimeGrid(25.0, 16, 16)
    inputs = {
        "128x171 (r3d_18, r2plus1d_18)": ((128, 171), (112, 112)),
        "short 256 (mvit, swin3d)": ((256,), (224, 224)),
    }
    for backend in backends:
        for label, (resize, crop) in inputs.items():
            stream = VideoStream(path, grid.fps, resize, backend)
            t = time.perf_counter()
            n = sum(1 for _ in stream.clips(grid, crop))
            dt = time.perf_counter() - t
            rows.append(
                {
                    "backend": backend,
                    "input": label,
                    "decoded_fps": stream.stats.decoded_frames / dt,
                    "output_fps": stream.stats.output_frames / dt,
                    "clips_per_s": n / dt,
                }
            )
    return rows


def bench_forward(device: torch.device, real: bool, precision: str, batch: int, repeats: int) -> list[dict]:
    rows = []
    for name in BACKBONES:
        spec = backbone_spec(name)
        if real:
            grid, size = TimeGrid(25.0, 16, 16), None
        else:
            if name in ("s3d", "mvit_v2_s"):
                continue  # these networks only take 224 px input
            grid, size = TimeGrid(25.0, 8, 8), 32
        net = build_backbone(name, "random", grid, device, size=size, precision=precision)
        h, w = net.preprocess.crop
        clips = torch.randint(0, 256, (batch, grid.clip_len, h, w, 3), dtype=torch.uint8)
        with torch.inference_mode():
            net(clips)  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(repeats):
                net(clips)
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = (time.perf_counter() - t) / repeats
        row = {
            "backbone": name,
            "device": device.type,
            "precision": precision,
            "input": f"{grid.clip_len}x{h}x{w}",
            "batch": batch,
            "snippets_per_s": batch / dt,
            "dim": spec.dim,
        }
        if device.type == "cuda" and real:
            ref = (H100_BF16 if precision == "bf16" else H100_FP32)[name]
            row["vs_h100_doc"] = row["snippets_per_s"] / ref
        rows.append(row)
        del net
    return rows


def bench_end_to_end(paths: list[Path], device: str, tmp: Path) -> list[dict]:
    rows = []
    cases = [("r3d_18", 32, TimeGrid(25.0, 8, 8)), ("r3d_18", None, TimeGrid(25.0, 16, 16))]
    for name, size, grid in cases:
        for workers in (1, 2):
            cache = tmp / f"cache-{name}-{size}-{workers}"
            rep = extract(
                paths, cache, name, "random", grid, batch_size=16, device=device, size=size, workers=workers
            )
            rows.append(
                {
                    "backbone": name,
                    "input": f"{grid.clip_len}x{size or 112}",
                    "workers": workers,
                    "snippets": rep.snippets,
                    "snippets_per_s": rep.snippets / (rep.seconds - rep.setup_seconds),
                    "decoded_fps": rep.decoded_frames / (rep.seconds - rep.setup_seconds),
                    "seconds": rep.seconds,
                    "setup_s": rep.setup_seconds,
                }
            )
    return rows


CHILD = r"""
import sys, json
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from wtalcli.data.timegrid import TimeGrid
from wtalcli.video.decode import VideoStream
mode, path = sys.argv[2], Path(sys.argv[3])
grid = TimeGrid(25.0, 16, 16)
if mode == "decode":
    s = VideoStream(path, grid.fps, (128, 171))
    n = sum(1 for _ in s.clips(grid, (112, 112)))
    out = {"clips": n, "max_window": s.stats.max_window, "frames": s.info.n_frames}
else:
    from wtalcli.video.extract import extract
    rep = extract([path], Path(sys.argv[4]), "r3d_18", "random", grid, batch_size=16, device="cpu", size=32)
    out = {"clips": rep.snippets}
# VmHWM, not ru_maxrss: after fork + exec, ru_maxrss still counts the parent's pages
out["peak_rss_mb"] = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")) / 1024
print(json.dumps(out))
"""


def bench_memory(short: Path, long: Path, tmp: Path, modes: list[str]) -> list[dict]:
    rows = []
    root = str(Path(__file__).resolve().parents[1])
    for mode in modes:
        res = {}
        for label, path in (("1 min", short), ("10 min", long)):
            cache = tmp / f"mem-{mode}-{path.stem}"
            t = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", CHILD, root, mode, str(path), str(cache)],
                check=True,
                capture_output=True,
                text=True,
            )
            res[label] = {
                **json.loads(out.stdout.strip().splitlines()[-1]),
                "seconds": time.perf_counter() - t,
            }
        rows.append(
            {
                "mode": mode,
                "rss_1min_mb": res["1 min"]["peak_rss_mb"],
                "rss_10min_mb": res["10 min"]["peak_rss_mb"],
                "ratio": res["10 min"]["peak_rss_mb"] / res["1 min"]["peak_rss_mb"],
                "clips_10min": res["10 min"]["clips"],
                "max_window": res["10 min"].get("max_window"),
                "seconds_10min": res["10 min"]["seconds"],
            }
        )
    return rows


def table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) if cells else len(c) for i, c in enumerate(cols)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter videos and fewer repeats")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    print(
        f"# extract benchmark: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), torchvision {torchvision.__version__}, "
        f"av {av.__version__}, GPU: {torch.cuda.get_device_name(0) if cuda else 'none'}, "
        f"load avg {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}"
    )
    results: dict = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t = time.perf_counter()
        secs = 8 if args.quick else 20
        clip = make_video(tmp / "src320.mp4", secs, 30, 320, 240)
        print(f"generated a {secs} s 320x240 30 fps video in {time.perf_counter() - t:.1f} s")

        backends = ["pyav"] + (["torchcodec"] if torchcodec_available() else [])
        results["decode"] = bench_decode(clip, backends)
        print("\n## 1. streamed decoding (30 fps 320x240 -> 25 fps, resized in the decoder, 16-frame clips)")
        print(table(results["decode"], ["backend", "input", "decoded_fps", "output_fps", "clips_per_s"]))

        cpu = torch.device("cpu")
        results["forward"] = bench_forward(cpu, False, "fp32", 8, 1 if args.quick else 3)
        results["forward"] += bench_forward(cpu, True, "fp32", 2, 1)
        if cuda:
            gpu = torch.device("cuda")
            for prec in ("fp32", "bf16"):
                results["forward"] += bench_forward(gpu, True, prec, 32, 10)
        print("\n## 2. backbone forward (random weights, head removed, inference mode)")
        cols = ["backbone", "device", "precision", "input", "batch", "snippets_per_s", "dim"]
        print(table(results["forward"], cols + (["vs_h100_doc"] if cuda else [])))
        if cuda:
            print("(vs_h100_doc: ratio to the H100 reference figures in BENCHMARKS.md)")

        copies = []
        for k in range(3):  # three videos, so that a second decoder thread has work
            copies.append(tmp / f"copy{k}.mp4")
            os.link(clip, copies[-1])
        results["end_to_end"] = bench_end_to_end(copies, "auto", tmp)
        print(
            f"\n## 3. extract() end to end, 3 videos of {secs} s (device auto, batch 16; rates exclude setup_s)"
        )
        rows = results["end_to_end"]
        for r in rows:
            base = next(x for x in rows if x["input"] == r["input"] and x["workers"] == 1)
            r["vs_1_worker"] = r["snippets_per_s"] / base["snippets_per_s"]
        print(
            table(
                rows,
                [
                    "backbone",
                    "input",
                    "workers",
                    "snippets",
                    "setup_s",
                    "snippets_per_s",
                    "decoded_fps",
                    "vs_1_worker",
                ],
            )
        )

        if not args.skip_memory:
            t = time.perf_counter()
            minutes = 10
            long = make_video(tmp / "long.mp4", 60 * minutes, 25, 160, 120)
            short = make_video(tmp / "short.mp4", 60, 25, 160, 120)
            print(
                f"\ngenerated 1- and {minutes}-minute 160x120 25 fps videos in {time.perf_counter() - t:.1f} s"
            )
            results["memory"] = bench_memory(
                short, long, tmp, ["decode"] if args.quick else ["decode", "extract"]
            )
            print(
                "\n## 4. peak RSS of a child process (decode: clips at 128x171 -> 112; extract: r3d_18 at 32 px)"
            )
            cols = [
                "mode",
                "rss_1min_mb",
                "rss_10min_mb",
                "ratio",
                "clips_10min",
                "max_window",
                "seconds_10min",
            ]
            print(table(results["memory"], cols))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
