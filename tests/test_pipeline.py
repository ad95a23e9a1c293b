"""The stages chained on the tiny synthetic preset: baseline -> pseudolabel -> denoise -> train-dcc
-> localize -> evaluate, plus caching, lineage checks and resume equality."""

import json

import numpy as np
import pytest
import torch

from stages.baseline import baseline
from stages.denoise import denoise
from stages.evaluate import evaluate
from stages.localize import localize
from stages.pseudolabel import pseudolabel
from stages.train_dcc import train_dcc
from wtalcli.core.errors import InputError, MismatchError
from wtalcli.core.store import Store
from wtalcli.data.feature_artifact import extract_synthetic
from wtalcli.data.schema import TCAS, write_tcas
from wtalcli.dcc.params import DenoiseParams
from wtalcli.dcc.train_params import DCCParams
from wtalcli.evaluation.params import EvalParams
from wtalcli.model.config import BaselineParams
from wtalcli.model.trainer import read_checkpoint

QUIET = {"log": lambda m: None}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("wd"))
    fs = extract_synthetic(store, "tiny", seed=0, **QUIET)
    model, tcas = baseline(store, fs.id, BaselineParams(device="cpu"), **QUIET)
    return store, fs, model, tcas


def chance_map(store: Store, tcas_art, seed: int = 0) -> float:
    """mAP of the same pipeline on a random T-CAS with the same shapes (the floor to beat)."""
    t = TCAS(tcas_art.path)
    rng = np.random.default_rng(seed)
    cas = rng.normal(0.0, 1.0, t.cas.shape).astype(np.float32)  # raw activations
    scores = rng.dirichlet(np.ones(t.cas.shape[1]), size=len(t.videos)).astype(np.float32)
    plan = store.plan("tcas", "test-random", {"seed": seed}, {}, lineage=dict(tcas_art.lineage))
    with store.build(plan) as tmp:
        write_tcas(tmp, t.videos, cas, scores, t.classes)
    prop = localize(store, plan.id, **QUIET)
    return evaluate(store, prop.id, **QUIET)[0]["average_map"]


def test_localize_refuses_a_tcas_of_probabilities(trained):
    """A T-CAS written when it held softmax probabilities would be thresholded on the wrong scale."""
    store, fs, model, tcas = trained
    t = TCAS(tcas.path)
    z = np.exp(t.cas - t.cas.max(axis=1, keepdims=True))
    plan = store.plan("tcas", "test-probabilities", {}, {}, lineage=dict(tcas.lineage))
    with store.build(plan) as tmp:
        write_tcas(tmp, t.videos, z / z.sum(axis=1, keepdims=True), t.scores, t.classes)
    with pytest.raises(InputError, match="probabilities"):
        localize(store, plan.id, **QUIET)


def test_baseline_beats_chance_and_localizes_actions(trained):
    store, fs, model, tcas = trained
    prop = localize(store, tcas.id, **QUIET)
    result, _ = evaluate(store, prop.id, params=EvalParams(), **QUIET)
    floor = chance_map(store, tcas)
    # measured on this preset: 27.7 avg mAP (0.1:0.7) against 0.8-2.1 for random T-CAS (seeds 0, 1)
    assert result["average_map"] > floor + 0.04, (result["average_map"], floor)
    sanity = tcas.manifest["summary"]["sanity_test"]
    assert sanity["fraction_inside_higher"] > 0.5
    log = store.get(model.id).path / "train_log.parquet"
    import pandas as pd

    terms = pd.read_parquet(log)
    assert len(terms) == 300 and {"base", "supp", "norm", "total"} <= set(terms.columns)
    assert terms["total"].iloc[-50:].mean() < terms["total"].iloc[:50].mean()


def test_rerun_skips_and_outputs_are_consistent(trained):
    store, fs, model, tcas = trained
    m2, t2 = baseline(store, fs.id, BaselineParams(device="cpu"), **QUIET)
    assert (m2.id, t2.id) == (model.id, tcas.id)
    t = TCAS(tcas.path)
    assert t.cas.shape[0] == int(t.videos["n_snippets"].sum())
    # raw activations (the last convolution's output), not probabilities
    assert t.cas.min() < 0 and not np.allclose(t.cas.sum(1), 1.0, atol=1e-3)
    ck = read_checkpoint(model.path / "checkpoint.pt")
    assert ck["step"] == 300


def test_pseudolabel_denoise_dcc_chain(trained):
    store, fs, model, tcas = trained
    pl = pseudolabel(store, tcas.id, **QUIET)
    a = np.load(pl.path / "labels.npy")
    assert a.dtype == np.uint8 and a.shape[1] == len(TCAS(tcas.path).classes) + 1
    dn = DenoiseParams(clusters=8, iterations=7, init="random", scope="labelled", device="cpu")
    conf = denoise(store, pl.id, params=dn, **QUIET)
    s = np.load(conf.path / "confidence.npy")
    assert s.dtype == np.float16 and s.shape == a.shape and 0 <= s.min() and s.max() <= 1
    import pandas as pd

    view = pd.read_parquet(conf.path / "confidence.parquet")
    assert {"video_id", "t", "class", "label", "confidence"} <= set(view.columns)
    dcc_model, dcc_tcas = train_dcc(
        store,
        model.id,
        pl.id,
        conf.id,
        DCCParams(iterations=40, refresh_every=20, device="cpu", proj_dim=32),
        **QUIET,
    )
    log = pd.read_parquet(dcc_model.path / "train_log.parquet")
    assert {"dcc", "beta"} <= set(log.columns) and log["dcc"].gt(0).any()
    rounds = [a for a in store.artifacts("confidence") if a.tag.startswith("round")]
    assert [a.tag for a in rounds] == ["round 1"]  # refresh at step 20 (step 40 is the end)
    assert dcc_model.manifest["summary"]["rounds"] == 1
    # what fixes the floating-point results besides the seed is recorded with each model
    for m in (model, dcc_model):
        num = m.manifest["summary"]["numerics"]
        assert num["torch"] == torch.__version__ and num["device"] == "cpu"
        assert num["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and num["threads"] >= 1
    # the refresh round recomputed pseudo-labels and confidence with round 0's settings, not defaults
    round_pl = [a for a in store.artifacts("pseudolabels") if a.tag == "round 1"]
    assert len(round_pl) == 1 and round_pl[0].params == pl.params
    assert rounds[0].params == conf.params and rounds[0].params["scope"] == "labelled"
    assert rounds[0].manifest["inputs"]["pseudolabels"]["id"] == round_pl[0].id
    ck = read_checkpoint(dcc_model.path / "checkpoint.pt")
    assert ck["extra_state"]["banks"]["base"]["valid"].any() and "head.net.weight" in ck["extra_modules"]
    prop = localize(store, dcc_tcas.id, **QUIET)
    assert json.loads((prop.path / "proposals.json").read_text())["results"]


def test_mismatched_inputs_refused(trained, tmp_path):
    store, fs, model, tcas = trained
    pl = pseudolabel(store, tcas.id, **QUIET)
    other = baseline(store, fs.id, BaselineParams(device="cpu", iterations=5, seed=3), **QUIET)[0]
    with pytest.raises(MismatchError, match="do not belong together"):
        denoise(store, pl.id, other.id, DenoiseParams(clusters=4), **QUIET)


def test_baseline_resume_equals_uninterrupted(tmp_path, monkeypatch):
    params = BaselineParams(device="cpu", iterations=40, checkpoint_every=10)
    fresh_store = Store(tmp_path / "fresh")
    fresh, _ = baseline(
        fresh_store, extract_synthetic(fresh_store, "tiny", seed=1, **QUIET).id, params, **QUIET
    )

    store = Store(tmp_path / "crashed")
    fs = extract_synthetic(store, "tiny", seed=1, **QUIET)
    from wtalcli.model import trainer as training

    original = training.Trainer._train_step
    calls = {"n": 0}

    def crashing(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 25:
            raise KeyboardInterrupt("simulated crash")
        return original(self, model, batch)

    monkeypatch.setattr(training.Trainer, "_train_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        baseline(store, fs.id, params, **QUIET)
    assert not store.artifacts("model") and not store.artifacts("tcas")  # nothing half-written
    monkeypatch.setattr(training.Trainer, "_train_step", original)
    logs = []
    resumed, _ = baseline(store, fs.id, params, log=logs.append)
    assert any("resuming from iteration 20" in m for m in logs)
    assert resumed.id == fresh.id
    w_fresh = read_checkpoint(fresh.path / "checkpoint.pt")
    w_res = read_checkpoint(resumed.path / "checkpoint.pt")
    for k in w_fresh["model"]:
        assert torch.equal(w_fresh["model"][k], w_res["model"][k]), k
    import pandas as pd

    log_a = pd.read_parquet(fresh.path / "train_log.parquet")
    log_b = pd.read_parquet(resumed.path / "train_log.parquet")
    pd.testing.assert_frame_equal(log_a, log_b)
    assert not (store.root / ".work" / resumed.id).exists()  # scratch space cleaned up


def test_wtal_run_prints_the_three_rows(tmp_path, capsys):
    """`wtal run`: the baseline, the same-length control and DCC, as a table on stdout (and JSON)."""
    from wtalcli.app import main

    args = ["run", "--preset", "tiny", "--iterations", "6", "--device", "cpu", "--workdir", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    for row in ("BaS-Net baseline", "same-length control", "DCC"):
        assert row in out
    assert main([*args, "--json"]) == 0  # everything is cached now: nothing trains again
    res = json.loads(capsys.readouterr().out)
    assert set(res["results"]) == {"baseline", "control", "dcc"}
    control = Store(tmp_path).get(tmp_path / res["control_model"])
    assert control.params["dcc"]["beta_end"] == 0 and control.params["train"]["iterations"] == 6


def test_the_control_skips_its_weightless_contrast_without_changing_the_model(trained):
    """A contrast weighted 0 throughout is only computed on diagnostic steps: the model's weights
    are bitwise those of the same control that computes it (and its gradient share) every step."""
    import pandas as pd

    from wtalcli.dcc.train_params import control_of

    store, fs, model, tcas = trained
    pl = pseudolabel(store, tcas.id, **QUIET)
    conf = denoise(store, pl.id, params=DenoiseParams(device="cpu"), **QUIET)
    base = DCCParams(iterations=12, device="cpu", proj_dim=32)
    weights, logs = {}, {}
    for every in (0, 1):
        p = control_of(base)
        p.grad_every = every
        m, _ = train_dcc(store, model.id, pl.id, conf.id, p, **QUIET)
        weights[every] = read_checkpoint(m.path / "checkpoint.pt")["model"]
        logs[every] = pd.read_parquet(m.path / "train_log.parquet")
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k
    assert "dcc" not in logs[0] or logs[0]["dcc"].isna().all()  # skipped
    assert logs[1]["dcc"].notna().all() and logs[1]["grad_ratio"].eq(0).all()  # computed, weighted 0
