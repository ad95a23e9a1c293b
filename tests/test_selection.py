"""The training length is chosen on held-out training videos by default: ``baseline`` holds out a
share of the training videos and keeps its best held-out iteration; ``train-dcc`` does the same on
its baseline's held-out videos, with its starting weights as a candidate, so it never publishes a
model that scores below the one it started from."""

import numpy as np
import pytest
import torch

from stages.baseline import baseline
from stages.denoise import denoise
from stages.pseudolabel import pseudolabel
from stages.train_dcc import train_dcc
from wtalcli.core.store import Store
from wtalcli.data.feature_artifact import extract_synthetic
from wtalcli.data.schema import TCAS, FeatureSet
from wtalcli.dcc.params import DenoiseParams
from wtalcli.dcc.train_params import DCCParams
from wtalcli.model import runner
from wtalcli.model.config import HOLDOUT, BaselineParams
from wtalcli.model.trainer import read_checkpoint

QUIET = {"log": lambda m: None}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A default baseline (held-out selection on), its pseudo-labels and confidence."""
    store = Store(tmp_path_factory.mktemp("wd"))
    fs = extract_synthetic(store, "tiny", seed=0, **QUIET)
    model, tcas = baseline(store, fs.id, BaselineParams(device="cpu", iterations=100), **QUIET)
    pl = pseudolabel(store, tcas.id, **QUIET)
    conf = denoise(store, pl.id, params=DenoiseParams(clusters=8, device="cpu"), **QUIET)
    return store, fs, model, tcas, pl, conf


def test_baseline_holds_out_videos_and_keeps_its_best_iteration_by_default(chain):
    store, fs, model, tcas, _, _ = chain
    n_train = len(FeatureSet(fs.path).rows_of("train"))
    assert model.params["holdout"] == HOLDOUT == 0.2
    assert model.params["select_every"] == runner.SELECT_EVERY == 50
    sel = model.manifest["summary"]["selection"]
    assert [s for s, _ in sel["curve"]] == [50, 100] and sel["heldout_videos"] == round(0.2 * n_train)
    assert sel["heldout_map"] == max(m for _, m in sel["curve"])
    assert "kept_start" not in sel  # a baseline starts from random weights: no start candidate
    t = TCAS(tcas.path)
    assert (t.videos["subset"] == "val").sum() == round(0.2 * n_train)
    # the default's resolved period is the key: naming it gives the same artifacts
    again, _ = baseline(store, fs.id, BaselineParams(device="cpu", iterations=100, select_every=50), **QUIET)
    assert again.id == model.id


def test_holdout_zero_is_the_former_behaviour(chain, tmp_path):
    store, fs, *_ = chain
    model, tcas = baseline(store, fs.id, BaselineParams(device="cpu", iterations=20, holdout=0.0), **QUIET)
    assert model.params["select_every"] == 0 and "selection" not in model.manifest["summary"]
    assert (TCAS(tcas.path).videos["subset"] != "val").all()


def test_train_dcc_scores_its_start_and_never_ends_below_it(chain):
    store, _, model, _, pl, conf = chain
    dcc, dcc_tcas = train_dcc(
        store, model.id, pl.id, conf.id, DCCParams(iterations=100, device="cpu", proj_dim=32), **QUIET
    )
    sel = dcc.manifest["summary"]["selection"]
    steps = [s for s, _ in sel["curve"]]
    assert steps == [0, 50, 100]
    # the start is the baseline's selected weights, scored on the same held-out videos
    assert sel["start_heldout_map"] == pytest.approx(model.manifest["summary"]["selection"]["heldout_map"])
    # the published weights are the selected iteration's: rescoring them gives the recorded score
    from wtalcli.model.config import TrainConfig
    from wtalcli.model.trainer import model_from_checkpoint

    ckpt = read_checkpoint(dcc.path / "checkpoint.pt")
    fs = FeatureSet(store.get(store.root / dcc.manifest["inputs"]["features"]["id"]).path)
    val = np.flatnonzero(TCAS(dcc_tcas.path).videos["subset"].to_numpy() == "val")
    cfg = TrainConfig.from_dict(ckpt["config"])
    score = runner.heldout_map(model_from_checkpoint(ckpt), fs, val, cfg, "cpu", "thumos14")
    assert score == pytest.approx(sel["heldout_map"], abs=1e-12)


def test_a_worse_dcc_run_publishes_its_starting_weights_and_says_so(chain, monkeypatch):
    """Held-out scores that only fall after the start (injected): the start's weights are the
    result, the log warns and the manifest records it."""
    store, _, model, tcas, pl, conf = chain
    real = runner.heldout_map
    calls = []

    def falling(model_, fs, rows, cfg, device, tiou):
        value = real(model_, fs, rows, cfg, device, tiou)
        calls.append(value)
        return value if len(calls) == 1 else value - 0.5  # every later iteration is worse

    monkeypatch.setattr(runner, "heldout_map", falling)
    lines = []
    p = DCCParams(iterations=60, device="cpu", proj_dim=32, seed=7)
    dcc, dcc_tcas = train_dcc(store, model.id, pl.id, conf.id, p, log=lines.append)
    sel = dcc.manifest["summary"]["selection"]
    assert sel["kept_start"] is True and sel["selected_iteration"] == 0
    assert any(line.startswith("warning: no iteration scored above the start") for line in lines)
    published = read_checkpoint(dcc.path / "checkpoint.pt")["model"]
    start = read_checkpoint(model.path / "checkpoint.pt")["model"]
    assert published.keys() == start.keys()
    assert all(torch.equal(published[k], start[k]) for k in start)
    assert read_checkpoint(dcc.path / "checkpoint.pt")["step"] == 60  # it did train, then kept the start
    a, b = TCAS(dcc_tcas.path), TCAS(tcas.path)
    np.testing.assert_array_equal(a.cas, b.cas)  # the same weights: the same T-CAS


def test_video_labels_only_train_on_every_video_unless_told_otherwise(chain):
    """A feature set whose training videos carry video labels only (raw videos with a labels file):
    nothing to score a held-out share with, so the default trains on all of them and says so; an
    explicit --holdout there is refused."""
    from wtalcli.core.errors import InputError
    from wtalcli.data.schema import write_feature_set

    store, fs_art, *_ = chain
    fs = FeatureSet(fs_art.path)
    test_ids = set(fs.videos.loc[fs.videos["subset"] == "test", "video_id"])
    plan = store.plan("features", "test-labels-only", {"source": "test"}, {})
    with store.build(plan) as tmp:
        rows = range(len(fs.videos))
        write_feature_set(
            tmp,
            fs.videos.drop(columns=["offset"]),
            (np.asarray(fs.features[fs.span(r)]) for r in rows),
            fs.classes,
            fs.annotations[fs.annotations["video_id"].isin(test_ids)],
        )
    lines = []
    model, tcas = baseline(store, plan.id, BaselineParams(device="cpu", iterations=20), log=lines.append)
    assert model.params["holdout"] == 0.0 and "selection" not in model.manifest["summary"]
    assert any("no temporal annotations" in line for line in lines)
    assert (TCAS(tcas.path).videos["subset"] != "val").all()
    lines.clear()
    with pytest.raises(InputError, match="no training video has temporal annotations"):
        baseline(store, plan.id, BaselineParams(device="cpu", iterations=20, holdout=0.2), log=lines.append)
    assert not any(line.startswith("training") for line in lines)  # refused before any training
