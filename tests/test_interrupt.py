"""Interruptions: each long stage, run as a real ``wtal`` process on the tiny preset, is killed with
SIGKILL mid-run, then rerun.  The rerun must complete, leave no ``.tmp-*`` directory, and give
artifacts identical to an uninterrupted run (ids, every file's sha256 apart from manifest
timestamps, the arrays and the checkpoint weights).

All processes run on the CPU with one thread (``OMP_NUM_THREADS=1``), as the reference run does.
The kill waits for a sign that the process is mid-work (its scratch checkpoint or its temporary
artifact directory) and the test checks that the kill did land before the process finished.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow  # about 3 minutes on a quiet 2-core machine (real processes, 600 iterations)

WTAL = Path(sys.executable).with_name("wtal")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# checkpoint_every is 100 (not a CLI option) and the held-out videos are scored every 50: 150
# iterations give mid-run checkpoints
BASELINE = ["baseline", "--device", "cpu", "--iterations", "150"]
DENOISE = ["denoise", "--device", "cpu", "--clusters", "64", "--iterations", "2000"]
DCC = [
    "train-dcc",
    "--device",
    "cpu",
    "--iterations",
    "150",
    "--refresh-every",
    "60",
    "--proj-dim",
    "32",
]


def wtal(wd: Path, *args: str) -> dict:
    """Run ``wtal ARGS --workdir WD`` to the end; its stdout JSON."""
    proc = subprocess.run(
        [str(WTAL), *args, "--workdir", str(wd)], capture_output=True, text=True, env=ENV, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return {"out": json.loads(proc.stdout), "err": proc.stderr}


def kill_when(wd: Path, args: list[str], ready: Callable[[], bool], timeout: float = 600) -> None:
    """Start ``wtal ARGS``, SIGKILL it as soon as ``ready()`` holds, and check it was mid-run."""
    proc = subprocess.Popen(
        [str(WTAL), *args, "--workdir", str(wd)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, f"finished before the kill point: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "kill point never reached"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def tmp_dir(wd: Path, kind: str) -> Callable[[], bool]:
    return lambda: any(p.name.startswith(f".tmp-{kind}-") for p in wd.iterdir()) if wd.exists() else False


def work_checkpoint(wd: Path) -> Callable[[], bool]:
    return lambda: any((wd / ".work").glob("*/checkpoint.pt"))


def checkpoint_step(wd: Path) -> int:
    """The iteration of the (one) scratch checkpoint a killed run left: periodic (every 100), or a
    pause to score the held-out videos (every 50)."""
    (path,) = (wd / ".work").glob("*/checkpoint.pt")
    return int(torch.load(path, weights_only=True)["step"])


def manifests(wd: Path) -> dict[str, dict]:
    return {
        d.name: json.loads((d / "manifest.json").read_text())
        for d in sorted(wd.iterdir())
        if not d.name.startswith(".") and (d / "manifest.json").exists()
    }


def assert_same(ref: Path, got: Path, ids: list[str]) -> None:
    """The artifacts ``ids`` of two workdirs are identical (manifest timestamps aside)."""
    for art in ids:
        a = json.loads((ref / art / "manifest.json").read_text())
        b = json.loads((got / art / "manifest.json").read_text())
        assert a["files"] == b["files"], art
        assert (a["key"], a["fingerprint"], a["inputs"], a["lineage"]) == (
            b["key"],
            b["fingerprint"],
            b["inputs"],
            b["lineage"],
        ), art
        for rel in a["files"]:
            if rel.endswith(".npy"):
                np.testing.assert_array_equal(np.load(ref / art / rel), np.load(got / art / rel), err_msg=art)
            if rel == "checkpoint.pt":
                wa = torch.load(ref / art / rel, map_location="cpu", weights_only=True)
                wb = torch.load(got / art / rel, map_location="cpu", weights_only=True)
                assert wa["step"] == wb["step"]
                for k, v in wa["model"].items():
                    assert torch.equal(v, wb["model"][k]), (art, k)


def assert_clean(wd: Path) -> None:
    assert not [p.name for p in wd.iterdir() if p.name.startswith((".tmp-", ".trash-"))]
    work = wd / ".work"
    assert not work.exists() or not any(work.iterdir()), list(work.iterdir())


def copy_artifacts(src: Path, dest: Path, ids: list[str]) -> None:
    dest.mkdir(parents=True)
    for art in ids:
        shutil.copytree(src / art, dest / art)


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """An uninterrupted tiny chain: features, baseline, pseudo-labels, confidence, DCC."""
    wd = tmp_path_factory.mktemp("ref") / "wd"
    ids = {"features": wtal(wd, "extract", "--from", "synthetic", "--preset", "tiny")["out"]["artifact"]}
    out = wtal(wd, *BASELINE)["out"]
    ids.update(model=out["model"], tcas=out["tcas"])
    ids["pseudolabels"] = wtal(wd, "pseudolabel")["out"]["artifact"]
    ids["confidence"] = wtal(wd, *DENOISE)["out"]["artifact"]
    out = wtal(wd, *DCC)["out"]
    ids.update(dcc_model=out["model"], dcc_tcas=out["tcas"])
    assert_clean(wd)
    return wd, ids


def test_extract_killed_then_rerun(tmp_path):
    ref_wd, wd = tmp_path / "ref", tmp_path / "wd"
    args = ["extract", "--from", "synthetic", "--preset", "small"]
    art = wtal(ref_wd, *args)["out"]["artifact"]
    kill_when(wd, args, tmp_dir(wd, "features"))
    assert not manifests(wd)  # nothing published by the killed run
    assert [p.name for p in wd.iterdir() if p.name.startswith(".tmp-")]  # it died mid-write
    assert wtal(wd, *args)["out"]["artifact"] == art
    assert_same(ref_wd, wd, [art])
    assert_clean(wd)


@pytest.mark.parametrize("when", ["mid-training", "mid-export"])
def test_baseline_killed_then_resumed_to_the_same_model(ref, tmp_path, when):
    """Killed after the checkpoint of iteration 100 (of 150), or while the T-CAS is written (the
    model artifact already published): the rerun resumes and ends with the same artifacts."""
    ref_wd, ids = ref
    wd = tmp_path / "wd"
    copy_artifacts(ref_wd, wd, [ids["features"]])
    if when == "mid-training":
        kill_when(wd, BASELINE, work_checkpoint(wd))
        assert set(manifests(wd)) == {ids["features"]}
        step = checkpoint_step(wd)
        assert 0 < step < 150
    else:
        kill_when(wd, BASELINE, tmp_dir(wd, "tcas"))
        assert set(manifests(wd)) == {ids["features"], ids["model"]}
        step = 150
    run = wtal(wd, *BASELINE)
    assert f"resuming from iteration {step}" in run["err"]
    assert (run["out"]["model"], run["out"]["tcas"]) == (ids["model"], ids["tcas"])
    assert_same(ref_wd, wd, [ids["model"], ids["tcas"]])
    assert_clean(wd)


def test_denoise_killed_mid_write_then_rerun(ref, tmp_path):
    ref_wd, ids = ref
    wd = tmp_path / "wd"
    inputs = [ids[k] for k in ("features", "model", "tcas", "pseudolabels")]
    copy_artifacts(ref_wd, wd, inputs)
    kill_when(wd, DENOISE, tmp_dir(wd, "confidence"))
    assert set(manifests(wd)) == set(inputs)
    assert wtal(wd, *DENOISE)["out"]["artifact"] == ids["confidence"]
    assert_same(ref_wd, wd, [ids["confidence"]])
    assert_clean(wd)


def test_train_dcc_killed_after_a_checkpoint_resumes_to_the_same_model(ref, tmp_path):
    ref_wd, ids = ref
    wd = tmp_path / "wd"
    inputs = [ids[k] for k in ("features", "model", "tcas", "pseudolabels", "confidence")]
    copy_artifacts(ref_wd, wd, inputs)
    kill_when(wd, DCC, work_checkpoint(wd))
    assert not {ids["dcc_model"], ids["dcc_tcas"]} & set(manifests(wd))
    step = checkpoint_step(wd)
    assert 0 < step < 150
    run = wtal(wd, *DCC)
    assert f"resuming from iteration {step}" in run["err"]
    assert (run["out"]["model"], run["out"]["tcas"]) == (ids["dcc_model"], ids["dcc_tcas"])
    # the DCC model, its T-CAS and both refresh rounds (steps 60 and 120) match the uninterrupted run
    rounds = sorted(set(manifests(ref_wd)) - set(inputs) - {ids["dcc_model"], ids["dcc_tcas"]})
    assert len(rounds) == 8 and set(rounds) <= set(manifests(wd))
    assert_same(ref_wd, wd, [ids["dcc_model"], ids["dcc_tcas"], *rounds])
    assert_clean(wd)
