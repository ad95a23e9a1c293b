"""``wtal report`` on a workdir built by the real stages (tiny preset, few iterations): every figure
is embedded and decodes as a PNG, the page names the artifacts it used, partial and damaged
workdirs still render (with notes), the PR curves agree with the evaluation, and a headless
Chromium loads every image."""

import base64
import io
import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.baseline import baseline
from stages.denoise import denoise
from stages.evaluate import evaluate
from stages.localize import localize
from stages.pseudolabel import pseudolabel
from stages.report import report
from stages.train_dcc import train_dcc
from wtalcli.core.errors import InputError
from wtalcli.core.store import Store
from wtalcli.data.feature_artifact import extract_synthetic
from wtalcli.data.schema import FeatureSet
from wtalcli.dcc.params import DenoiseParams
from wtalcli.dcc.train_params import DCCParams
from wtalcli.model.config import BaselineParams
from wtalcli.report.inputs import ReportParams, choose, select_artifacts
from wtalcli.report.sections import evaluation_curves

QUIET = {"log": lambda m: None}
IMG = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]*)\"")
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Store:
    """features -> baseline -> pseudolabel -> denoise -> train-dcc (one refresh round) -> localize
    and evaluate both T-CAS."""
    store = Store(tmp_path_factory.mktemp("wd"))
    fs = extract_synthetic(store, "tiny", seed=0, **QUIET)
    model, tcas = baseline(store, fs.id, BaselineParams(device="cpu", iterations=30), **QUIET)
    pl = pseudolabel(store, tcas.id, **QUIET)
    conf = denoise(store, pl.id, params=DenoiseParams(clusters=4, device="cpu"), **QUIET)
    params = DCCParams(iterations=10, refresh_every=5, proj_dim=16, device="cpu", grad_every=2)
    _, oracle_tcas = train_dcc(store, model.id, None, None, replace(params, targets="oracle"), **QUIET)
    _, dcc_tcas = train_dcc(store, model.id, pl.id, conf.id, params, **QUIET)
    for t in (tcas, oracle_tcas, dcc_tcas):
        evaluate(store, localize(store, t.id, **QUIET).id, **QUIET)
    return store


@pytest.fixture(scope="module")
def page(workdir, tmp_path_factory) -> tuple[Path, str]:
    out = report(workdir, tmp_path_factory.mktemp("out") / "sub" / "report.html", ReportParams(4, 0), **QUIET)
    return out, out.read_text()


def pngs(text: str) -> list[bytes]:
    srcs = IMG.findall(text)
    assert all(s.startswith("data:image/png;base64,") for s in srcs), "every figure is embedded"
    return [base64.b64decode(s.split(",", 1)[1], validate=True) for s in srcs]


def notes(text: str) -> list[str]:
    return re.findall(r'<p class="note">(.*?)</p>', text)


def test_full_report_embeds_every_figure_and_names_its_artifacts(workdir, page):
    out, text = page
    assert out.exists() and not list(out.parent.glob(".*.part"))  # atomic write left nothing behind
    images = pngs(text)
    # 4 test videos + 3 training videos x rounds + embeddings + PR + mAP-vs-tIoU + losses + gradient share
    assert len(images) == 4 + 3 + 1 + 2 + 1 + 1
    for png in images:
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        im = Image.open(io.BytesIO(png))
        im.load()
        assert im.format == "PNG" and im.width >= 500 and im.height >= 200
    assert text.count("<figcaption>") == len(images)
    assert notes(text) == []  # nothing is missing in a complete workdir
    sel = select_artifacts(workdir)
    for _, art in sel.used():
        assert art.id in text
    assert sel.tcas["baseline"].stage == "baseline" and sel.tcas["dcc"].stage == "train-dcc"
    assert [r.number for r in sel.rounds] == [0, 1]  # the untagged inputs, then the refresh round
    assert sel.rounds[1].pseudolabels.tag == "round 1" and sel.rounds[1].confidence is not None
    round_tcas = [a.id for a in workdir.artifacts("tcas") if a.tag]
    assert round_tcas and not any(i in text for i in round_tcas)  # refresh-round T-CAS are not compared
    fs = FeatureSet(sel.features.path)
    shown = re.findall(r'alt="T-CAS of ([^"]+)"', text)
    test_ids = set(fs.videos["video_id"][fs.videos["subset"] == "test"])
    assert len(shown) == 4 and set(shown) <= test_ids and set(shown) <= set(fs.annotations["video_id"])


def test_diagnostics_section_shows_rounds_embeddings_and_the_oracle(workdir, page):
    _, text = page
    diag = text[text.index('id="diagnostics"') :]
    sel = select_artifacts(workdir)
    # one row per round, with the pseudo-label quality its artifact recorded
    q1 = sel.rounds[1].pseudolabels.manifest["summary"]["quality"]
    assert f"<td>1</td><td>{q1['precision']:.3f}</td><td>{q1['recall']:.3f}</td>" in diag
    # then its recall on the cores and on the rest of the instances (the tiny preset knows its
    # cores); the overall recall lies between the two
    row = re.search(r"<tr><td>1</td>((?:<td>[^<]*</td>)+)</tr>", diag).group(1)
    cells = re.findall(r"<td>([^<]*)</td>", row)
    rec, rec_core, rec_noncore = (float(c) for c in cells[1:4])
    assert (
        "recall, non-core" in diag
        and min(rec_core, rec_noncore) - 1e-3 <= rec <= max(rec_core, rec_noncore) + 1e-3
    )
    auc0 = sel.rounds[0].confidence.manifest["summary"]["quality"]["s_auc"]
    assert f"<td>{auc0:.3f}</td>" in diag and 0.0 <= auc0 <= 1.0
    sep = sel.tcas["dcc"].manifest["summary"]["separation_test"]
    assert sep["core_known"]  # a synthetic feature set: the non-core snippets are scored
    cells = [
        f"{sep[k]['noncore']['mean']:.3f} / {sep[k]['noncore']['median']:.3f}" for k in ("tcas", "embedding")
    ]
    assert f"<td>DCC</td><td>{cells[0]}</td><td>{cells[1]}</td>" in diag
    geo = sel.tcas["dcc"].manifest["summary"]["embedding_test"]
    assert f"<td>{geo['action_background_auc']:.3f}</td><td>{geo['intra_inter_ratio']:.3f}</td></tr>" in diag
    assert "L_dcc start" in diag  # the contrast against its uniform value
    oracle = [m for m in workdir.artifacts("model") if m.params.get("dcc", {}).get("targets") == "oracle"]
    assert len(oracle) == 1 and f"oracle {oracle[0].id}" in diag
    assert 'alt="gradient share of the contrast"' in diag


def test_video_choice_is_seeded_and_prefers_annotated():
    ids = [f"v{i}" for i in range(20)]
    preferred = {"v3", "v7", "v11"}
    a = choose(ids, preferred, 5, seed=0)
    assert a == choose(ids, preferred, 5, seed=0) and len(set(a)) == 5
    assert preferred <= set(a) and a == sorted(a, key=ids.index)
    assert set(choose(ids, preferred, 2, seed=0)) <= preferred
    assert set(choose(ids, preferred, 2, seed=1)) <= preferred
    assert len({tuple(choose(ids, set(), 4, s)) for s in range(5)}) > 1  # the seed matters
    assert choose(ids, preferred, 50, seed=0) == ids


def test_report_map_equals_the_evaluation_exactly(workdir, page):
    """The PR curves come from the evaluator of `wtal evaluate`, on the same run: each class's AP
    and the mAP the page prints are result.json's, bit for bit."""
    _, text = page
    positive = 0
    shown = select_artifacts(workdir).evaluations.values()  # (the oracle run's is not drawn there)
    assert len(shown) == 2
    for ev in shown:
        saved = json.loads((ev.path / "result.json").read_text())
        result, k, curves = evaluation_curves(workdir, ev)
        assert (
            abs(result.tiou_thresholds[k] - 0.5) < 1e-12
            and saved["tiou_thresholds"][k] == result.tiou_thresholds[k]
        )
        assert float(result.map_per_tiou[k]) == saved["map_per_tiou"][k]  # exact, not approx
        assert result.average_map == saved["average_map"]
        assert list(curves) == saved["classes"]
        for c, pr in curves.items():
            assert pr.ap == saved["ap"][c][k]
            assert len(pr.tp) == saved["n_pred"][c] and np.all(np.diff(pr.scores) <= 0)
            if len(pr.tp):
                assert pr.recall[-1] == pr.tp.sum() / saved["n_gt"][c]
            positive += pr.ap > 0
        assert f"mAP@0.5 = {100 * saved['map_per_tiou'][k]:.1f}" in text
    assert positive > 0  # some class was actually found, so the comparison means something


def test_features_only_and_empty_workdirs_render_with_notes(tmp_path):
    empty = report(Store(tmp_path / "nothing"), tmp_path / "empty.html", **QUIET).read_text()
    assert pngs(empty) == [] and any("run `wtal extract`" in n for n in notes(empty))
    store = Store(tmp_path / "wd")
    fs = extract_synthetic(store, "tiny", seed=0, **QUIET)
    text = report(store, tmp_path / "fs.html", **QUIET).read_text()
    assert pngs(text) == [] and fs.id in text
    found = notes(text)
    assert len(found) >= 5 and any("No T-CAS artifact" in n for n in found)
    assert any("No model artifact" in n for n in found) and any("No evaluation" in n for n in found)
    with pytest.raises(InputError, match="--videos"):
        report(store, tmp_path / "x.html", ReportParams(videos=-1), **QUIET)


def test_damaged_and_partial_workdir_still_renders(workdir, tmp_path):
    store = Store(tmp_path / "copy")
    shutil.copytree(workdir.root, store.root)
    sel = select_artifacts(store)
    np.save(sel.tcas["dcc"].path / "cas.npy", np.zeros((3, 2), np.float32))  # wrong shape
    shutil.rmtree(sel.evaluations["baseline"].path)
    shutil.rmtree(sel.rounds[1].confidence.path)
    (sel.proposals["baseline"].path / "proposals.parquet").write_bytes(b"not parquet")
    text = report(store, tmp_path / "r.html", ReportParams(videos=1), **QUIET).read_text()
    found = notes(text)
    assert any(n.startswith("DCC T-CAS not shown") and sel.tcas["dcc"].id in n for n in found)
    assert any("No confidence map for round(s) [1]" in n for n in found)
    assert any("No evaluation for: baseline" in n for n in found)
    assert any(n.startswith("baseline proposals computed here") and "proposals.parquet" in n for n in found)
    # the rest is drawn: the baseline T-CAS of 1 video, 3 round heatmaps, embeddings, PR + mAP of DCC,
    # losses, the gradient share
    assert len(pngs(text)) == 1 + 3 + 1 + 2 + 1 + 1
    assert len(re.findall(r'alt="T-CAS of ', text)) == 1
    shutil.rmtree(sel.features.path)  # without the feature set: no ground truth, no embedding split
    text = report(store, tmp_path / "r2.html", ReportParams(videos=1), **QUIET).read_text()
    found = notes(text)
    assert any(f"feature set {sel.features.id}" in n and "is gone" in n for n in found)
    assert any("cannot be split into action and background" in n for n in found)
    assert any(n.startswith("No PR curve for DCC") and "its feature set is gone" in n for n in found)
    assert len(pngs(text)) == 1 + 3 + 1 + 1 + 1  # T-CAS, round heatmaps, mAP against tIoU, losses, gradients


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_headless_chromium_loads_every_image(page, tmp_path):
    _, text = page
    probe = (
        "<script>window.addEventListener('load', () => {"
        "const ok = Array.from(document.images).map(i => i.complete && i.naturalWidth > 0);"
        "const p = document.createElement('pre'); p.id = 'imgcheck'; p.textContent = JSON.stringify(ok);"
        "document.body.appendChild(p);});</script>"
    )
    probed = tmp_path / "probe.html"
    probed.write_text(text.replace("</body>", probe + "</body>"))
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probed.as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="imgcheck">(.*?)</pre>', done.stdout)
    assert found, f"chromium printed no result (exit {done.returncode}): {done.stderr[-2000:]}"
    loaded = json.loads(found.group(1))
    assert len(loaded) == len(pngs(text)) and all(loaded)
