"""``wtal ablate`` on the tiny preset with few iterations: the table's rows and seeds, shared runs
trained once, the selection scored on held-out training videos only, and evaluation of a held-out
split against the T-CAS's own ``val`` videos."""

import json

import numpy as np
import pandas as pd
import pytest

from stages.ablate import AblationParams, ablate, ablation_markdown, variants
from stages.baseline import baseline
from stages.evaluate import EvalParams, evaluate
from stages.extract import extract_synthetic
from stages.localize import localize
from wtalcli.core.errors import InputError
from wtalcli.core.store import Store
from wtalcli.data.schema import FeatureSet, read_parquet
from wtalcli.dcc.params import DCCParams
from wtalcli.model.config import BaselineParams

QUIET = {"log": lambda m: None}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("wd"))
    p = AblationParams(
        preset="tiny",
        seeds=(0, 1),
        tables=("main", "scope", "clusters"),
        clusters=(8, 64),
        select_seeds=(0,),
        grid_tau=(0.1,),
        grid_beta_end=(1.0, 100.0),
        iterations=12,
        dcc=DCCParams(checkpoint_every=0),
        device="cpu",
    )
    art = ablate(store, p, **QUIET)
    return store, p, art


def test_every_row_and_seed_is_scored(run):
    store, p, art = run
    res = pd.read_parquet(art.path / "results.parquet")
    names = [(v.table, v.name) for v in variants(p)]
    assert len(res) == len(names) * len(p.seeds)
    assert sorted(set(zip(res["table"], res["variant"], strict=True))) == sorted(names)
    for _, g in res.groupby(["table", "variant"]):
        assert sorted(g["seed"]) == [0, 1]
    assert res["average_map"].between(0, 1).all()
    map_cols = [c for c in res.columns if c.startswith("map@")]
    assert len(map_cols) == 7  # THUMOS tIoU 0.1:0.7
    np.testing.assert_allclose(res[map_cols].mean(axis=1), res["average_map"], atol=1e-12)
    table = (art.path / "table.md").read_text()
    for _, name in names:
        assert f"| {name} |" in table
    assert "±" in table and (art.path / "ablation.png").read_bytes()[:4] == b"\x89PNG"


def test_identical_runs_are_trained_once_and_seeds_differ(run):
    store, _, art = run
    res = pd.read_parquet(art.path / "results.parquet").set_index(["table", "variant", "seed"])
    for s in (0, 1):
        full = res.loc[("main", "DCC", s), "model"]
        assert res.loc[("scope", "contrast with the memory bank", s), "model"] == full
        assert res.loc[("clusters", "K = 64", s), "model"] == full
        assert res.loc[("main", "DCC without denoising", s), "model"] != full
    assert res.loc[("main", "DCC", 0), "model"] != res.loc[("main", "DCC", 1), "model"]
    # the beta = 0 control trains on from the same baseline, so it is a DCC-stage model of that seed
    ctrl = store.get(store.root / res.loc[("main", "baseline trained on, beta = 0", 0), "model"])
    assert ctrl.manifest["stage"] == "train-dcc"
    assert ctrl.params["dcc"]["beta_end"] == 0.0 and ctrl.params["dcc"]["refresh_every"] == 0


def test_selection_never_looks_at_test_videos(run):
    store, p, art = run
    sel = pd.read_parquet(art.path / "selection.parquet")
    assert len(sel) == 1 + len(p.grid_tau) * len(p.grid_beta_end)  # the baseline + the grid, one seed
    fs = FeatureSet(store.resolve("features", None, **QUIET).path)
    test_ids = set(fs.videos.loc[fs.videos["subset"] == "test", "video_id"])
    train_ids = set(fs.videos.loc[fs.videos["subset"] == "train", "video_id"])
    for ev_id in sel["evaluation"]:
        ev = store.get(store.root / ev_id)
        assert ev.params["subset"] == "val"
        prop = store.get(store.root / ev.manifest["inputs"]["proposals"]["id"])
        ids = set(json.loads((prop.path / "proposals.json").read_text())["results"])
        assert ids and ids <= train_ids and not ids & test_ids
    best = sel[sel["run"] == "DCC"].sort_values("average_map", ascending=False).iloc[0]
    chosen = art.manifest["summary"]["selected"]
    assert (chosen["tau"], chosen["beta_end"]) == (best["tau"], best["beta_end"])
    # the chosen values are the ones the test-set DCC runs trained with
    res = pd.read_parquet(art.path / "results.parquet")
    model = store.get(store.root / res.loc[res["variant"] == "DCC", "model"].iloc[0])
    assert (
        model.params["dcc"]["tau"] == chosen["tau"] and model.params["dcc"]["beta_end"] == chosen["beta_end"]
    )


def test_rerun_skips(run):
    store, p, art = run
    messages = []
    again = ablate(store, p, log=messages.append)
    assert again.id == art.id and any("up to date" in m for m in messages)


def test_markdown_mean_and_sample_std():
    res = pd.DataFrame(
        {
            "table": ["main"] * 3,
            "variant": ["DCC"] * 3,
            "seed": [0, 1, 2],
            "average_map": [0.10, 0.20, 0.30],
            "map@0.10": [0.1, 0.2, 0.3],
        }
    )
    md = ablation_markdown(res, pd.DataFrame(), AblationParams(), 0.1, 1.0)
    assert "| DCC | 20.0 | **20.0 ± 10.0** |" in md  # sample std (ddof 1) of 10, 20, 30


def test_bad_parameters_are_refused():
    with pytest.raises(InputError, match="unknown table"):
        AblationParams(tables=("main", "nope")).validate()
    with pytest.raises(InputError, match="holdout"):
        AblationParams(holdout=0.0).validate()
    with pytest.raises(InputError, match="jobs"):
        AblationParams(jobs=0).validate()


def test_evaluate_holdout_uses_the_tcas_val_videos(tmp_path):
    store = Store(tmp_path)
    fs = extract_synthetic(store, "tiny", seed=0, **QUIET)
    _, tcas = baseline(store, fs.id, BaselineParams(device="cpu", iterations=5, holdout=0.25), **QUIET)
    tv = read_parquet(tcas.path / "videos.parquet", "videos")
    val = set(tv.loc[tv["subset"] == "val", "video_id"])
    assert val and "val" not in set(FeatureSet(fs.path).videos["subset"])
    prop = localize(store, tcas.id, subset="val", **QUIET)
    res, _ = evaluate(store, prop.id, params=EvalParams(subset="val"), **QUIET)
    ann = FeatureSet(fs.path).annotations
    expected = int(ann["video_id"].isin(val).sum())
    assert expected > 0 and sum(res["n_gt"].values()) == expected
