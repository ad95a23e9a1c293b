"""The reproduction scripts (scripts/reproduce_*.sh) end to end on small generated feature folders
in the public layouts, so that a changed command breaks them here rather than on a user's GPU.

The videos are real THUMOS14 / ActivityNet 1.3 videos with their real labels and segments (from
the packaged ground truths); the features are tiny random arrays, the settings tiny through the
scripts' environment variables."""

from __future__ import annotations

import json
import lzma
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wtalcli.core.store import Store
from wtalcli.data import named_gt
from wtalcli.data.schema import FeatureSet

REPO = Path(__file__).resolve().parents[1]
BASNET_GT = named_gt.BASNET_THUMOS14 / "gt.json.xz"

# 6 validation + 6 test videos of BaS-Net's split; the test videos' classes all occur in training
THUMOS_TRAIN = [
    "video_validation_0000190",  # CricketBowling, CricketShot
    "video_validation_0000686",  # BaseballPitch
    "video_validation_0000689",  # BaseballPitch
    "video_validation_0000854",  # SoccerPenalty
    "video_validation_0000949",  # ThrowDiscus
    "video_validation_0000982",  # VolleyballSpiking
]
THUMOS_TEST = [
    "video_test_0000450",  # VolleyballSpiking
    "video_test_0000541",  # SoccerPenalty
    "video_test_0000767",  # BaseballPitch
    "video_test_0000873",  # BaseballPitch
    "video_test_0001080",  # ThrowDiscus
    "video_test_0001460",  # CricketBowling, CricketShot
]
# a feature file BaS-Net's split does not list (video_test_0000270 is one of the two test videos
# BaS-Net leaves out): the split files must keep it out
THUMOS_UNLISTED = "video_test_0000270"
# ActivityNet 1.3: two training and two validation videos of 3 classes, each 20 to 40 s long
ANET_TRAIN = ["wBhtt9x74TA", "WRv7Kpf1KT0", "SOkS5d8GjZ4", "uYLYJABDubw", "Bi3vlu17qp8", "ZluOmpTPdWw"]
ANET_TEST = ["3SLaaTD8t3Q", "oAJlaJ8xcwY", "4GrPMa_BE6M", "bcXc6mKSEEM", "EW3zRMVjkoU", "q92zSoMudWU"]

FPS, STRIDE = 25.0, 16
TINY = {
    "WTAL_DEVICE": "cpu",
    "WTAL_ITERATIONS": "3",
    "WTAL_DCC_ITERATIONS": "3",
    "WTAL_CLUSTERS": "3",
    "WTAL_EXTRA_BASELINE": "--hidden 16 --attn-hidden 8 --num-segments 16 --batch-size 4",
    "WTAL_EXTRA_DENOISE": "--iterations 3",
    "WTAL_EXTRA_DCC": "--proj-dim 8 --regions 2 --max-rounds 1",
    "WTAL_EXTRA_LOCALIZE": "--upsample 4 --class-threshold 0",  # some proposals from 3 iterations
}


def _database(path: Path) -> dict:
    with lzma.open(path, "rt") as f:
        return json.load(f)["database"]


def _n_snippets(seconds: float) -> int:
    """Snippets covering ``seconds`` on the default grid (25 fps, a snippet every 16 frames)."""
    return max(2, math.ceil(seconds * FPS / STRIDE))


def _wtal_wrapper(tmp_path: Path) -> Path:
    """An executable that runs this checkout's CLI with this interpreter."""
    exe = tmp_path / "wtal"
    code = "import sys; sys.argv[0] = 'wtal'; from wtalcli.app import run; run()"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "{code}" "$@"\n')
    exe.chmod(0o755)
    return exe


def _run_script(script: str, data: Path, tmp_path: Path, **env_extra: str):
    env = {
        **os.environ,
        **TINY,
        "WTAL": str(_wtal_wrapper(tmp_path)),
        "WTAL_WORKDIR": str(tmp_path / "work"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "200",
        **env_extra,
    }
    return subprocess.run(
        ["bash", str(REPO / "scripts" / script), str(data)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _imported_videos(workdir: Path) -> dict[str, str]:
    (art,) = Store(workdir).artifacts("features")
    videos = FeatureSet(art.path).videos
    return dict(zip(videos["video_id"], videos["subset"], strict=True))


def _evaluations(workdir: Path) -> dict[tuple[str, str], dict]:
    """Each evaluation artifact's result, by (model id, tIoU option)."""
    found = {}
    for art in Store(workdir).artifacts("evaluation"):
        key = (art.lineage["model"], art.manifest["params"]["tiou"])
        assert key not in found
        found[key] = json.loads((art.path / "result.json").read_text())
    return found


def _check_evaluations(workdir: Path, tious: dict[str, list[float]], gt_summary: str, protocol: str) -> None:
    """Baseline, same-length control and DCC evaluated at each tIoU set, on the whole ground truth,
    with predictions."""
    models = [a.id for a in Store(workdir).artifacts("model")]
    assert len(models) == 3  # the baseline, the control and DCC
    found = _evaluations(workdir)
    assert set(found) == {(m, t) for m in models for t in tious}
    for (_, tiou), res in found.items():
        assert res["tiou_thresholds"] == pytest.approx(tious[tiou])
        assert len(res["map_per_tiou"]) == len(tious[tiou])
        assert all(0.0 <= m <= 1.0 for m in res["map_per_tiou"])
        assert gt_summary in res["ground_truth"], res["ground_truth"]
        assert res["protocol"] == protocol
        assert sum(res["n_pred"].values()) > 0


def _make_thumos(root: Path, seed: int = 0) -> None:
    """BaS-Net's THUMOS14 layout for THUMOS_TRAIN + THUMOS_TEST (+ one unlisted test video).

    BaS-Net's gt.json gives no durations (the importer takes the snippets' span): the snippets
    reach 5 s past each video's last instance."""
    db = _database(BASNET_GT)
    rng = np.random.default_rng(seed)
    gt = {}
    for vid in [*THUMOS_TRAIN, *THUMOS_TEST, THUMOS_UNLISTED]:
        subset = "train" if vid.startswith("video_validation") else "test"
        end = max(float(a["segment"][1]) for a in db[vid]["annotations"]) if vid in db else 20.0
        n = _n_snippets(end + 5.0)
        for stream in ("rgb", "flow"):
            folder = root / "features" / subset / stream
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"{vid}.npy", rng.standard_normal((n, 8)).astype(np.float32))
        if vid != THUMOS_UNLISTED:
            gt[vid] = db[vid]
    (root / "gt.json").write_text(json.dumps({"database": gt}))
    (root / "split_train.txt").write_text("\n".join(THUMOS_TRAIN) + "\n")
    (root / "split_test.txt").write_text("\n".join(THUMOS_TEST) + "\n")


def _make_anet(root: Path, with_json: bool, seed: int = 0) -> None:
    """The per-video layout {train,test}/<vid>.npy, snippets spanning each video's duration."""
    db = _database(named_gt.get("anet13").path)
    rng = np.random.default_rng(seed)
    for subset, ids in (("train", ANET_TRAIN), ("test", ANET_TEST)):
        (root / subset).mkdir(parents=True)
        for vid in ids:
            n = _n_snippets(db[vid]["duration"])
            np.save(root / subset / f"{vid}.npy", rng.standard_normal((n, 16)).astype(np.float32))
    if with_json:
        gt = {vid: db[vid] for vid in ANET_TRAIN + ANET_TEST}
        (root / "gt.json").write_text(json.dumps({"version": "ActivityNet 1.3", "database": gt}))


@pytest.mark.slow
def test_thumos14_script(tmp_path):
    data = tmp_path / "THUMOS14"
    _make_thumos(data)

    proc = _run_script("reproduce_thumos14.sh", data, tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out, err = proc.stdout, proc.stderr.replace(str(tmp_path / "wtal"), "wtal")
    assert "protocol: THUMOS14 test, BaS-Net's 210 videos" in out
    assert out.count("┃ avg ┃") == 6  # 6 mAP tables: baseline, control and DCC at 2 tIoU sets
    for command in ("extract --from basnet", "baseline", "pseudolabel", "denoise", "train-dcc", "localize"):
        assert f"+ wtal {command} " in err
    assert "--preset thumos --device cpu" in err
    for tiou in ("thumos14", "thumos14-basnet"):
        assert err.count(f"--gt thumos14 --protocol basnet --tiou {tiou} ") == 3
    # the control: train-dcc from the same baseline with the contrast weighted 0, no refresh rounds
    assert err.count("+ wtal train-dcc ") == 2
    assert "--beta-start 0 --beta-end 0 --beta-shape constant --refresh-every 0" in err
    # the split files chose the videos: the unlisted feature file was left out
    assert f"not in the split files and were left out: {THUMOS_UNLISTED}" in err
    videos = _imported_videos(tmp_path / "work")
    assert videos == {**dict.fromkeys(THUMOS_TRAIN, "train"), **dict.fromkeys(THUMOS_TEST, "test")}
    # BaS-Net's gt.json entries carry the labels of the original THUMOS14 annotations
    (art,) = Store(tmp_path / "work").artifacts("features")
    imported = FeatureSet(art.path).videos.set_index("video_id")["labels"].map(list).to_dict()
    original = (
        named_gt.read("thumos14")
        .instances()
        .groupby("video_id")["label"]
        .agg(lambda x: sorted(set(x)))
        .to_dict()
    )
    assert imported == {vid: original[vid] for vid in videos}

    tious = {
        "thumos14": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
        "thumos14-basnet": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
    }
    _check_evaluations(tmp_path / "work", tious, "thumos14 [test]: 210 videos", "basnet")
    results = tmp_path / "work" / "results"
    for model in ("baseline", "control", "dcc"):
        preds = json.loads((results / f"{model}.proposals.json").read_text())["results"]
        assert set(preds) == set(THUMOS_TEST)
        for tiou in tious:
            title = " ".join((results / f"{model}.{tiou}.txt").read_text().split())
            assert "thumos14 [test]: 210 videos" in title and "protocol basnet" in title


@pytest.mark.slow
def test_anet13_script(tmp_path):
    """A folder without a JSON: imported with the packaged anet13 (its other videos missing)."""
    data = tmp_path / "anet13"
    _make_anet(data, with_json=False)
    proc = _run_script("reproduce_anet13.sh", data, tmp_path, WTAL_ALLOW_MISSING="1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    out, err = proc.stdout, proc.stderr.replace(str(tmp_path / "wtal"), "wtal")
    assert "protocol: ActivityNet 1.3 validation (--gt anet13)" in out
    assert f"+ wtal extract --from folder {data} --gt anet13 --allow-missing " in err
    assert "--preset anet --device cpu" in err
    assert err.count("--gt anet13 --tiou anet ") == 3
    videos = _imported_videos(tmp_path / "work")
    assert videos == {**dict.fromkeys(ANET_TRAIN, "train"), **dict.fromkeys(ANET_TEST, "test")}
    assert "check the grid options" not in err  # the snippets span the videos' durations

    anet = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    _check_evaluations(tmp_path / "work", {"anet": anet}, "[validation]: 4728 videos", "all")
    preds = json.loads((tmp_path / "work" / "results" / "dcc.proposals.json").read_text())["results"]
    assert set(preds) == set(ANET_TEST)


def test_anet13_missing_features(tmp_path):
    """Without WTAL_ALLOW_MISSING the import stops on anet13's videos that have no features, and
    the script says which variable lets it through."""
    data = tmp_path / "anet13"
    _make_anet(data, with_json=False)
    proc = _run_script("reproduce_anet13.sh", data, tmp_path)
    assert proc.returncode == 1
    assert "have ground truth or a split entry but no features" in proc.stderr
    assert "WTAL_ALLOW_MISSING=1" in proc.stderr
    assert not Store(tmp_path / "work").artifacts()


def _fake_wtal(tmp_path: Path) -> Path:
    """A wtal that records its arguments and fails: the script must stop at its first command."""
    exe = tmp_path / "fake-wtal"
    exe.write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path / "calls.txt"}"\nexit 3\n')
    exe.chmod(0o755)
    return exe


def test_anet13_own_json(tmp_path):
    """A folder with its own JSON: the importer finds it (no --gt); several JSONs need WTAL_GT."""
    data = tmp_path / "anet13"
    _make_anet(data, with_json=True)
    proc = _run_script("reproduce_anet13.sh", data, tmp_path, WTAL=str(_fake_wtal(tmp_path)))
    assert proc.returncode == 1
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert calls == [
        f"extract --from folder {data} --fps 25 --stride 16 --clip-len 16 --seed 0 --workdir {tmp_path / 'work'}"
    ]
    assert f"ground truth {data / 'gt.json'}" in proc.stdout

    (data / "other.json").write_text("{}")
    (data / "gt.json").rename(data / "activity_net.json")
    proc = _run_script("reproduce_anet13.sh", data, tmp_path, WTAL=str(_fake_wtal(tmp_path)))
    assert proc.returncode == 1 and "set WTAL_GT" in proc.stderr
    assert len((tmp_path / "calls.txt").read_text().splitlines()) == 1  # nothing ran
    proc = _run_script(
        "reproduce_anet13.sh",
        data,
        tmp_path,
        WTAL=str(_fake_wtal(tmp_path)),
        WTAL_GT=str(data / "activity_net.json"),
    )
    assert f"--gt {data / 'activity_net.json'} " in (tmp_path / "calls.txt").read_text().splitlines()[-1]


@pytest.mark.parametrize("script", ["reproduce_thumos14.sh", "reproduce_anet13.sh"])
def test_usage(tmp_path, script):
    path = str(REPO / "scripts" / script)
    proc = subprocess.run(["bash", path], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith(f"usage: {path} ")
    proc = subprocess.run(["bash", path, "-h"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: {path} ")
    proc = _run_script(script, tmp_path / "nowhere", tmp_path, WTAL=str(_fake_wtal(tmp_path)))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: {tmp_path / 'nowhere'}: no such folder")
    assert not (tmp_path / "calls.txt").exists()
