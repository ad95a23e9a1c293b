"""Per-stage code fingerprints: what invalidates a cached artifact, and what does not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from wtalcli.core.fingerprint import ROOT, closure, code_fingerprint, module_file, stage_module

TRAINING_STAGES = ("baseline", "pseudolabel", "denoise", "train-dcc", "localize", "evaluate", "extract")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A copy of the project's sources, to edit."""
    dst = tmp_path_factory.mktemp("src")
    for pkg in ("wtalcli", "stages"):
        shutil.copytree(ROOT / pkg, dst / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.gz", "*.xz"))
    return dst


def _edit(path: Path, text: str = "\n# an edit\n") -> str:
    old = path.read_text()
    path.write_text(old + text)
    code_fingerprint.cache_clear()
    return old


def _fingerprints(root: Path) -> dict[str, str]:
    code_fingerprint.cache_clear()
    return {s: code_fingerprint(stage_module(s), root) for s in TRAINING_STAGES}


@pytest.mark.parametrize(
    "edited",
    [
        "wtalcli/app.py",
        "wtalcli/report/plots.py",
        "wtalcli/report/describe.py",
        "wtalcli/report/inputs.py",
        "wtalcli/report/page.py",
        "wtalcli/report/sections.py",
        "stages/report.py",
        "wtalcli/core/console.py",
    ],
)
def test_editing_presentation_code_invalidates_nothing_trained(tree, edited):
    before = _fingerprints(tree)
    old = _edit(tree / edited)
    try:
        assert _fingerprints(tree) == before
    finally:
        (tree / edited).write_text(old)


def test_editing_the_model_invalidates_baseline_and_train_dcc_only(tree):
    before = _fingerprints(tree)
    old = _edit(tree / "wtalcli/model/basnet.py")
    try:
        after = _fingerprints(tree)
    finally:
        (tree / "wtalcli/model/basnet.py").write_text(old)
    changed = {s for s in TRAINING_STAGES if after[s] != before[s]}
    # baseline and train-dcc train the model; what follows them is invalidated through their
    # artifacts' fingerprints in its key, not through its own code
    assert {"baseline", "train-dcc"} <= changed
    assert not changed & {"pseudolabel", "localize", "evaluate", "extract"}


def test_editing_the_localizer_invalidates_what_localizes():
    # localize, and the training stages (their held-out selection localizes and scores); not extract
    for stage in ("stages.localize", "stages.baseline", "stages.train_dcc"):
        assert "wtalcli.evaluation.localization" in closure(stage)
    assert "wtalcli.evaluation.localization" not in closure("stages.extract")
    assert not any(m.startswith("wtalcli.report") for m in closure("stages.baseline"))


def test_closure_follows_imports_inside_functions_and_parent_packages():
    mods = closure("stages.denoise")
    assert "wtalcli.dcc.kmeans" in mods  # imported inside a function
    assert {"wtalcli", "wtalcli.dcc", "stages"} <= set(mods)  # package __init__ files run too
    assert "wtalcli.app" not in closure("stages.train_dcc")
    assert module_file("numpy") is None  # third-party modules are not the project's code


def test_cache_key_uses_the_stage_fingerprint(tmp_path, monkeypatch):
    from wtalcli.core import store as store_mod
    from wtalcli.core.store import Store

    s = Store(tmp_path)
    a = s.plan("model", "baseline", {"x": 1})
    monkeypatch.setattr(store_mod, "code_fingerprint", lambda module: "changed-" + module)
    b = s.plan("model", "baseline", {"x": 1})
    assert a.key != b.key
