"""Bad inputs, concurrent runs and determinism, through the real command line.

Every case of ``tests/bad_inputs.py`` runs ``wtalcli.app.main`` in-process on a copy of a shared
workdir of good artifacts and must fail cleanly: the documented exit code (1 error, 2 usage), one
``error:`` line with a ``(fix: ...)`` (other stderr lines are ``wtal:`` logs), no traceback, no new
or half-written artifact, no ``.tmp-*`` left, and every earlier file byte-identical.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from bad_inputs import CASES, Case, World, build_world, is_code_pickle, leftovers, marker_path, snapshot

from wtalcli.app import main

WTAL = Path(sys.executable).with_name("wtal")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one CPU thread is as fast on an idle machine and far faster on a busy one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_thread) -> World:
    return build_world(tmp_path_factory.mktemp("world"))


def run_cli(capsys, args: list[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_corpus_is_broad():
    by_stage: dict[str, int] = {}
    for c in CASES:
        by_stage[c.stage] = by_stage.get(c.stage, 0) + 1
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)
    assert set(by_stage) >= {
        "extract",
        "baseline",
        "pseudolabel",
        "denoise",
        "train-dcc",
        "localize",
        "evaluate",
    }


@pytest.mark.parametrize("case", CASES, ids=[f"{c.stage}-{c.name}" for c in CASES])
def test_bad_input_fails_cleanly(case: Case, world: World, tmp_path, capsys):
    w = world.clone(tmp_path / "w")
    args = case.make(w) + ["--workdir", str(w.wd)]
    if case.marker:  # the planted pickle really would run code if it were unpickled
        planted = [p for p in w.root.rglob("*") if p.is_file() and p.suffix in (".npy", ".pt")]
        assert any(is_code_pickle(p.read_bytes()) for p in planted)
    before = snapshot(w.wd)
    dirs_before = sorted(p.name for p in w.wd.iterdir()) if w.wd.exists() else []
    code, out, err = run_cli(capsys, args)

    assert code == case.code, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    if case.code == 1:
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1, err
        assert all(line.startswith(("error:", "wtal:", "warning:")) for line in lines), err
        assert re.search(case.says, errors[0], re.IGNORECASE), errors[0]
        assert "(fix: " in errors[0] and "internal error" not in errors[0], errors[0]
        assert out == "", out  # no machine output for a failed run
    else:  # a usage error: click's message names the option
        assert re.search(case.says, err), err
    assert not leftovers(w.wd)
    if case.marker:
        assert not marker_path(w).exists()
    after = snapshot(w.wd)
    if case.new_artifacts:
        after = {k: v for k, v in after.items() if k.split("/")[0] in dirs_before}
    else:
        assert sorted(p.name for p in w.wd.iterdir()) == dirs_before or not w.wd.exists()
    assert after == before


def test_debug_shows_the_traceback(world, tmp_path, capsys):
    w = world.clone(tmp_path / "w")
    from wtalcli.core.errors import WtalError

    with pytest.raises(WtalError, match="no artifact"):
        main(["baseline", "--features", "features-000000", "--workdir", str(w.wd), "--debug"])
    proc = subprocess.run(
        [str(WTAL), "--debug", "show", "features-000000", "--workdir", str(w.wd)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "MissingArtifactError" in proc.stderr


def test_empty_stdin_for_evaluate(world, tmp_path):
    w = world.clone(tmp_path / "w")
    before = snapshot(w.wd)
    proc = subprocess.run(
        [str(WTAL), "evaluate", "-", "--workdir", str(w.wd)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and proc.stdout == "" and "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert "no predictions on stdin" in line and "(fix: pipe `wtal localize` into `wtal evaluate -`)" in line
    assert snapshot(w.wd) == before and not leftovers(w.wd)


# ---------------------------------------------------------------------------------- edge inputs that must work


def test_one_snippet_videos_and_videos_shorter_than_the_regions(tmp_path, capsys):
    """Videos of 1-3 snippets, sampled to 4 < M = 5 regions, run through every stage."""
    import numpy as np

    root = tmp_path / "short"
    rng = np.random.default_rng(0)
    db = {}
    for k, (subset, n, label) in enumerate(
        [
            ("train", 1, "Jump"),
            ("train", 2, "Run"),
            ("train", 3, "Jump"),
            ("train", 1, "Run"),
            ("test", 1, "Jump"),
            ("test", 2, "Run"),
        ]
    ):
        (root / subset).mkdir(parents=True, exist_ok=True)
        np.save(root / subset / f"v{k}.npy", rng.normal(size=(n, 8)).astype(np.float32))
        db[f"v{k}"] = {"subset": subset, "annotations": [{"segment": [0.0, 0.6 * n], "label": label}]}
    (root / "gt.json").write_text(json.dumps({"database": db}))
    wd = ["--workdir", str(tmp_path / "wd")]
    small = ["--preset", "tiny", "--hidden", "16", "--num-segments", "4", "--iterations", "3"]
    steps = [
        ["extract", "--from", "folder", str(root)],
        ["baseline", "--device", "cpu", "--batch-size", "2", *small],
        ["pseudolabel"],
        ["denoise", "--clusters", "2", "--iterations", "3", "--device", "cpu"],
        [
            "train-dcc",
            "--device",
            "cpu",
            "--regions",
            "5",
            "--iterations",
            "3",
            "--refresh-every",
            "0",
            "--proj-dim",
            "8",
        ],
        ["localize", "--out", str(tmp_path / "p.json")],
        ["evaluate", str(tmp_path / "p.json")],
    ]
    for args in steps:
        code, out, err = run_cli(capsys, args + wd)
        assert code == 0, (args, err)
    assert "results" in json.loads((tmp_path / "p.json").read_text())


def test_reversed_predictions_are_scored_like_the_reference(world, tmp_path, capsys):
    """Not an error on purpose: the official evaluator accepts start > end (tIoU 0 against most
    instances); ``wtalcli/evaluation/detection.py`` documents the arithmetic."""
    w = world.clone(tmp_path / "w")
    data = json.loads((w.inputs / "proposals.json").read_text())
    code, out, err = run_cli(
        capsys, ["evaluate", str(w.inputs / "proposals.json"), "--json", "--workdir", str(w.wd)]
    )
    assert code == 0, err
    good = json.loads(out)["average_map"]
    for items in data["results"].values():
        for p in items:
            p["segment"] = p["segment"][::-1]
    (w.inputs / "reversed.json").write_text(json.dumps(data))
    code, out, err = run_cli(
        capsys, ["evaluate", str(w.inputs / "reversed.json"), "--json", "--workdir", str(w.wd)]
    )
    assert code == 0, err
    assert json.loads(out)["average_map"] < good


# ---------------------------------------------------------------------------------- concurrency


def _drop_model(w: World) -> None:
    import shutil

    for name in ("model", "tcas"):
        shutil.rmtree(w.art(name))


def test_a_held_run_lock_refuses_a_second_run(world, tmp_path, capsys):
    from wtalcli.core.store import Store

    w = world.clone(tmp_path / "w")
    _drop_model(w)
    before = snapshot(w.wd)
    with Store(w.wd).lock(f"run-{w.ids['model']}"):
        code, out, err = run_cli(
            capsys,
            [
                "baseline",
                "--features",
                w.ids["features"],
                "--device",
                "cpu",
                "--iterations",
                "2",
                "--workdir",
                str(w.wd),
            ],
        )
    assert code == 1 and out == ""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"another wtal process (pid {os.getpid()}) is building" in errors[0]
    assert "(fix: wait for it to finish" in errors[0]
    assert snapshot(w.wd) == before and not leftovers(w.wd)


def test_a_run_that_waited_skips_what_the_winner_built(world, tmp_path, capsys, monkeypatch):
    """The loser checked before the winner published, then got the lock after it: it must skip
    (not retrain and republish over the winner's artifacts)."""
    from wtalcli.core.store import Store

    w = world.clone(tmp_path / "w")
    before = snapshot(w.wd)
    real = Store.existing
    calls = {"n": 0}

    def stale_first(self, plan):
        calls["n"] += 1
        return None if calls["n"] == 1 else real(self, plan)

    monkeypatch.setattr(Store, "existing", stale_first)
    code, out, err = run_cli(
        capsys,
        [
            "baseline",
            "--features",
            w.ids["features"],
            "--device",
            "cpu",
            "--iterations",
            "2",
            "--workdir",
            str(w.wd),
        ],
    )
    assert code == 0, err
    assert "just built by another process" in err and json.loads(out)["model"] == w.ids["model"]
    assert snapshot(w.wd) == before and not (w.wd / ".work" / w.ids["model"]).exists()


def _valid(wd: Path) -> list[str]:
    """Problems with the artifacts of a workdir: files that differ from their manifest, leftovers."""
    import hashlib

    problems = list(leftovers(wd))
    for d in sorted(p for p in wd.iterdir() if not p.name.startswith(".")):
        manifest = json.loads((d / "manifest.json").read_text())
        files = {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()} - {"manifest.json"}
        if files != set(manifest["files"]):
            problems.append(f"{d.name}: files {sorted(files ^ set(manifest['files']))}")
        for rel, entry in manifest["files"].items():
            if hashlib.sha256((d / rel).read_bytes()).hexdigest() != entry["sha256"]:
                problems.append(f"{d.name}/{rel}: sha256 differs from the manifest")
    return problems


@pytest.mark.slow
def test_two_processes_on_one_workdir(tmp_path):
    """Two real ``wtal baseline`` processes at once: one trains, the other is refused with the
    lock message (or, if it came late, skips); the workdir stays valid."""
    wd = tmp_path / "wd"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [str(WTAL), "extract", "--from", "synthetic", "--preset", "tiny", "--workdir", str(wd)],
        check=True,
        capture_output=True,
        env=env,
        timeout=300,
    )
    cmd = [str(WTAL), "baseline", "--device", "cpu", "--iterations", "40", "--workdir", str(wd)]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes in ([0, 0], [0, 1]), results
    for code, out, err in results:
        assert "Traceback" not in err and "internal error" not in err, err
        if code == 1:
            (line,) = [x for x in err.splitlines() if x.startswith("error:")]
            assert (
                "another wtal process" in line and "is building run-model-" in line and "(fix: wait" in line
            )
        else:
            assert json.loads(out)["model"].startswith("model-")
    ids = {json.loads(out)["model"] for code, out, _ in results if code == 0}
    assert len(ids) == 1
    assert not _valid(wd)
    assert not (wd / ".work" / ids.pop()).exists()
    status = subprocess.run(
        [str(WTAL), "status", "--json", "--workdir", str(wd)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert [r["state"] for r in json.loads(status.stdout)] == ["ok"] * 3


# ---------------------------------------------------------------------------------- determinism


def _chain(wd: Path, tmp: Path) -> list[list[str]]:
    return [
        ["extract", "--from", "synthetic", "--preset", "tiny", "--seed", "3"],
        ["baseline", "--device", "cpu", "--iterations", "6", "--seed", "3"],
        ["pseudolabel"],
        ["denoise", "--clusters", "4", "--iterations", "4", "--device", "cpu", "--seed", "3"],
        [
            "train-dcc",
            "--device",
            "cpu",
            "--iterations",
            "6",
            "--refresh-every",
            "3",
            "--proj-dim",
            "16",
            "--seed",
            "3",
        ],
        ["localize", "--threshold", "0:0.5:0.1", "--class-threshold", "0.1", "--out", str(tmp / "p.json")],
        ["evaluate", "--tiou", "0.1:0.5:0.2"],
    ]


@pytest.mark.slow
def test_every_stage_is_byte_identical_across_two_workdirs(tmp_path, capsys):
    manifests = []
    for run in ("a", "b"):
        wd = tmp_path / run / "wd"
        for args in _chain(wd, tmp_path / run):
            code, out, err = run_cli(capsys, args + ["--workdir", str(wd)])
            assert code == 0, (args, err)
        manifests.append(
            {
                d.name: json.loads((d / "manifest.json").read_text())
                for d in wd.iterdir()
                if not d.name.startswith(".")
            }
        )
    a, b = manifests
    assert set(a) == set(b)
    kinds = {m["kind"] for m in a.values()}
    assert kinds == {
        "features",
        "model",
        "tcas",
        "embeddings",
        "pseudolabels",
        "confidence",
        "proposals",
        "evaluation",
    }
    differ = {
        f"{art}/{rel}"
        for art in a
        for rel in set(a[art]["files"]) | set(b[art]["files"])
        if a[art]["files"].get(rel, {}).get("sha256") != b[art]["files"].get(rel, {}).get("sha256")
    }
    assert not differ
    assert all(a[k]["fingerprint"] == b[k]["fingerprint"] for k in a)
