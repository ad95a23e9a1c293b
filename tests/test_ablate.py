"""``wtal ablate`` on the tiny preset with few iterations: the table's rows and seeds, shared runs
trained once, the selection scored on held-out training videos only, and evaluation of a held-out
split against the T-CAS's own ``val`` videos."""

import numpy as np
import pandas as pd
import pytest
import torch

from stages.ablate import ablate
from stages.baseline import baseline
from stages.evaluate import evaluate
from stages.localize import localize
from wtalcli.core.errors import InputError
from wtalcli.core.store import Store
from wtalcli.data.feature_artifact import extract_synthetic
from wtalcli.data.schema import FeatureSet, read_parquet
from wtalcli.dcc.ablation import AblationParams, Config, grid_candidates, grid_option, table_rows
from wtalcli.dcc.params import DenoiseParams
from wtalcli.dcc.train_params import DCCParams
from wtalcli.evaluation.localization import LocalizeParams
from wtalcli.evaluation.params import EvalParams
from wtalcli.model.config import BaselineParams
from wtalcli.report.ablation import ablation_markdown

QUIET = {"log": lambda m: None}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("wd"))
    p = AblationParams(
        preset="tiny",
        seeds=(0, 1),
        tables=("main", "scope", "clusters"),
        clusters=(8, 64),
        holdout=0.25,
        select_every=4,
        grid=("pooling=mean,weighted x beta-end=1,100",),
        iterations=8,
        dcc=DCCParams(checkpoint_every=0, refresh_every=4),
        device="cpu",
    )
    art = ablate(store, p, **QUIET)
    return store, p, art


def test_every_row_and_seed_is_scored(run):
    store, p, art = run
    res = pd.read_parquet(art.path / "results.parquet")
    chosen = art.manifest["summary"]["selected"]
    names = [(t, n) for t, n, _ in table_rows(p.tables, p.clusters, Config(DCCParams(), DenoiseParams()))]
    assert len(res) == len(names) * len(p.seeds)
    assert sorted(set(zip(res["table"], res["variant"], strict=True))) == sorted(names)
    for _, g in res.groupby(["table", "variant"]):
        assert sorted(g["seed"]) == [0, 1]
    assert res["average_map"].between(0, 1).all() and res["heldout_map"].between(0, 1).all()
    # every run of the study trained here, on this CPU: one setup, recorded and printed
    (machine,) = art.manifest["summary"]["numerics"]
    assert machine["device"] == "cpu" and machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert f"CPU kernels {machine['cpu_capability']}" in (art.path / "table.md").read_text()
    map_cols = [c for c in res.columns if c.startswith("map@")]
    assert len(map_cols) == 7  # THUMOS tIoU 0.1:0.7
    np.testing.assert_allclose(res[map_cols].mean(axis=1), res["average_map"], atol=1e-12)
    table = (art.path / "table.md").read_text()
    for _, name in names:
        assert f"| {name} |" in table
    assert "±" in table and (art.path / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    assert chosen["pooling"] in ("mean", "weighted") and float(chosen["beta-end"]) in (1.0, 100.0)
    # the diagnostics are read from the DCC runs' artifacts
    dcc = res[res["variant"] == "DCC"]
    assert dcc["pl_precision"].between(0, 1).all() and dcc["s_auc"].between(0, 1).all()
    assert dcc["grad_ratio"].gt(0).all() and dcc["emb_action_auc"].between(0, 1).all()
    # the per-class separation recorded in each run's T-CAS (the tiny preset knows its cores) and
    # the contrast against its uniform value from each run's log
    for col in ("tcas_noncore_auc", "emb_class_noncore_auc", "probe_h_noncore_auc", "probe_input_core_auc"):
        assert res[col].between(0, 1).all(), col
    assert res["noncore_pairs"].gt(0).all()
    assert res.groupby("seed")["probe_input_noncore_auc"].nunique().eq(1).all()  # one input per seed
    assert dcc["dcc_end_ratio"].between(0, 1.5).all() and dcc["dcc_uniform_start"].gt(0).all()
    assert res[res["variant"] == "BaS-Net baseline"]["dcc_start"].isna().all()
    assert "probe on input" in table and "non-core action snippets" in table
    oracle = res[res["variant"].str.startswith("DCC on oracle")]
    assert oracle["s_auc"].isna().all()  # no pseudo-labels, no confidence
    # pseudo-label recall split on the hidden cores and the rest of each instance: the overall
    # recall of the same labels is their weighted mean, so it lies between the two
    split = ("pl_recall_core", "pl_recall_noncore", "pl_background_labelled")
    for col in split + ("pl_start_recall_core", "pl_start_recall_noncore"):
        assert dcc[col].between(0, 1).all(), col
    lo = dcc[["pl_recall_core", "pl_recall_noncore"]].min(axis=1) - 1e-12
    hi = dcc[["pl_recall_core", "pl_recall_noncore"]].max(axis=1) + 1e-12
    assert dcc["pl_recall"].between(lo, hi).all()
    for col in split:
        assert oracle[col].isna().all() and res[res["variant"] == "BaS-Net baseline"][col].isna().all()
    assert "PL rec, non-core" in table
    # a run without refresh rounds reports the confidence map it read, though the same
    # pseudo-labels also have maps for other K (the clusters table)
    for _, row in res[res["variant"].str.startswith("same-length control")].iterrows():
        read = store.get(store.root / row["model"]).manifest["inputs"]["confidence"]["id"]
        conf = store.get(store.root / read)
        assert row["s_auc"] == conf.manifest["summary"]["quality"]["s_auc"]


def test_every_arm_keeps_its_best_iteration_on_the_same_heldout_videos(run):
    store, p, art = run
    res = pd.read_parquet(art.path / "results.parquet")
    val_sets = set()
    for model_id in res["model"]:
        m = store.get(store.root / model_id)
        sel = m.manifest["summary"]["selection"]
        curve = {int(i): v for i, v in sel["curve"]}
        assert sel["every"] == p.select_every and max(curve.values()) == sel["heldout_map"]
        assert curve[sel["selected_iteration"]] == sel["heldout_map"]
        base = (
            m if m.stage == "baseline" else store.get(store.root / m.manifest["inputs"]["base_model"]["id"])
        )
        val_sets.add((base.params["holdout"], base.params["holdout_seed"]))
    assert val_sets == {(p.holdout, 0)}


def test_identical_runs_are_trained_once_and_seeds_differ(run):
    store, _, art = run
    res = pd.read_parquet(art.path / "results.parquet").set_index(["table", "variant", "seed"])
    for s in (0, 1):
        full = res.loc[("main", "DCC", s), "model"]
        assert res.loc[("scope", "contrast with the memory bank", s), "model"] == full
        assert res.loc[("clusters", "K = 64", s), "model"] == full
        assert res.loc[("clusters", "K = 8", s), "model"] != full
        assert res.loc[("main", "DCC without denoising (S = 1)", s), "model"] != full
    assert res.loc[("main", "DCC", 0), "model"] != res.loc[("main", "DCC", 1), "model"]
    # the beta = 0 control trains on from the same baseline, so it is a DCC-stage model of that seed
    ctrl = store.get(
        store.root / res.loc[("main", "same-length control (train-dcc with beta = 0)", 0), "model"]
    )
    assert ctrl.manifest["stage"] == "train-dcc"
    assert ctrl.params["dcc"]["beta_end"] == 0.0 and ctrl.params["dcc"]["refresh_every"] == 0
    oracle = store.get(store.root / res.loc[("main", "DCC on oracle targets (diagnostic bound)", 0), "model"])
    assert oracle.params["dcc"]["targets"] == "oracle" and "pseudolabels" not in oracle.manifest["inputs"]


def test_selection_never_looks_at_test_videos(run):
    store, p, art = run
    sel = pd.read_parquet(art.path / "selection.parquet")
    assert set(sel["option"]) == {"pooling x beta-end"} and len(sel) == 4 * len(p.seeds)
    fs = FeatureSet(store.resolve("features", None, **QUIET).path)
    test_ids = set(fs.videos.loc[fs.videos["subset"] == "test", "video_id"])
    for model_id in sel["model"]:  # scored on their held-out training videos, never a test video
        m = store.get(store.root / model_id)
        assert m.manifest["summary"]["selection"]["heldout_videos"] > 0
    evals = [a for a in store.artifacts("evaluation") if a.params.get("subset") != "test"]
    assert not evals  # with --select-every the held-out scores come from the runs themselves
    assert test_ids  # (and the tables' evaluations are the only ones, on the test subset)
    # the winner of each option is the best mean over seeds, and the tables' DCC trained with it
    chosen = art.manifest["summary"]["selected"]
    for option, g in sel.groupby("option"):  # an option, or options varied together ("a x b")
        means = g.groupby("value", sort=False)["heldout_map"].mean()
        won = ", ".join(str(chosen[o]) for o in option.split(" x "))
        assert str(means.idxmax()) == won or np.isclose(means.max(), means[won])
    res = pd.read_parquet(art.path / "results.parquet")
    model = store.get(store.root / res.loc[res["variant"] == "DCC", "model"].iloc[0])
    assert model.params["dcc"]["pooling"] == chosen["pooling"]
    assert model.params["dcc"]["beta_end"] == float(chosen["beta-end"])


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
    res["heldout_map"], res["iteration"] = 0.5, 100
    p = AblationParams()
    md = ablation_markdown(
        res, pd.DataFrame(), p.holdout, p.select_every, Config(DCCParams(), DenoiseParams())
    )
    assert "| DCC | 20.0 | **20.0 ± 10.0** | 10.0 | 20.0 | 30.0 |" in md  # sample std (ddof 1); every seed
    # diagnostics: means over seeds, a dash where a run has none; without known cores, the
    # separation of all action snippets
    res["tcas_action_auc"], res["tcas_noncore_auc"] = [0.6, 0.7, 0.8], float("nan")
    res["dcc_end_ratio"] = [0.5, float("nan"), 0.7]
    md = ablation_markdown(
        res, pd.DataFrame(), p.holdout, p.select_every, Config(DCCParams(), DenoiseParams())
    )
    # PL prec, PL rec, its cores / non-core split, PL on bg, S AUC, grad ratio, start, end
    assert "| DCC | - | - | - | - | - | - | - | - | 0.600 |" in md
    assert "| DCC | 0.700 | - | - | - | - | - | - |" in md and "class's action against" in md
    # what the runs were trained with: one line for one setup, every setup when they differ
    cpu = {"torch": "2.13.0+cpu", "device": "cpu", "cpu_capability": "AVX512", "threads": 1}
    capped = cpu | {"cpu_capability": "AVX2", "threads": 2, "isa_caps": {"ONEDNN_MAX_CPU_ISA": "AVX2"}}
    gpu = {"torch": "2.14.1", "device": "cuda", "gpu": "Some GPU"}
    cfg = Config(DCCParams(), DenoiseParams())
    md = ablation_markdown(res, pd.DataFrame(), p.holdout, p.select_every, cfg, [cpu])
    assert "Trained with torch 2.13.0+cpu, CPU kernels AVX512, 1 thread." in md
    md = ablation_markdown(res, pd.DataFrame(), p.holdout, p.select_every, cfg, [cpu, capped, gpu])
    assert (
        "Trained with several setups, whose numbers differ for one seed: torch 2.13.0+cpu, CPU kernels "
        "AVX512, 1 thread; torch 2.13.0+cpu, CPU kernels AVX2 (capped by ONEDNN_MAX_CPU_ISA=AVX2), "
        "2 threads; torch 2.14.1, GPU Some GPU." in md
    )
    assert "Trained with" not in ablation_markdown(res, pd.DataFrame(), p.holdout, p.select_every, cfg)


def test_bad_parameters_are_refused():
    with pytest.raises(InputError, match="unknown table"):
        AblationParams(tables=("main", "nope")).validate()
    with pytest.raises(InputError, match="holdout"):
        AblationParams(holdout=0.0).validate()
    with pytest.raises(InputError, match="jobs"):
        AblationParams(jobs=0).validate()
    with pytest.raises(InputError, match="bad grid entry"):
        AblationParams(grid=("pool=mean",)).validate()
    with pytest.raises(InputError, match="takes float"):
        AblationParams(grid=("tau=warm",)).validate()


def test_evaluate_holdout_uses_the_tcas_val_videos(tmp_path):
    store = Store(tmp_path)
    fs = extract_synthetic(store, "tiny", seed=0, **QUIET)
    _, tcas = baseline(store, fs.id, BaselineParams(device="cpu", iterations=5, holdout=0.25), **QUIET)
    tv = read_parquet(tcas.path / "videos.parquet", "videos")
    val = set(tv.loc[tv["subset"] == "val", "video_id"])
    assert val and "val" not in set(FeatureSet(fs.path).videos["subset"])
    prop = localize(store, tcas.id, LocalizeParams(subset="val"), **QUIET)
    res, _ = evaluate(store, prop.id, params=EvalParams(subset="val"), **QUIET)
    ann = FeatureSet(fs.path).annotations
    expected = int(ann["video_id"].isin(val).sum())
    assert expected > 0 and sum(res["n_gt"].values()) == expected


def test_grid_entries_set_the_cost_options():
    """The projection width and the refresh-round budget are grid options (typed as their fields),
    so a cheaper DCC is chosen on held-out videos like every other reading."""
    assert grid_option("head-dim=512,256") == ("head-dim", [512, 256])
    name, cands = grid_candidates("pooling=mean,weighted x beta-end=1,10,100")
    assert name == "pooling x beta-end" and len(cands) == 6
    assert cands[0] == ("pooling=mean, beta-end=1.0", {"pooling": "mean", "beta-end": 1.0})
    assert cands[-1][1] == {"pooling": "weighted", "beta-end": 100.0}
    with pytest.raises(InputError, match="appears twice"):
        grid_candidates("tau=0.1 x tau=0.2")
    assert grid_option("max-rounds=10,5") == ("max-rounds", [10, 5])
    cfg = Config(DCCParams(), DenoiseParams()).set("max-rounds", 3).set("head-dim", 128)
    assert (cfg.dcc.max_rounds, cfg.dcc.proj_dim) == (3, 128)
    assert (DCCParams().max_rounds, DCCParams().proj_dim) != (3, 128)  # the grid moved them
    assert "head-dim=128" in cfg.describe() and "max-rounds=3" in cfg.describe()
    with pytest.raises(InputError, match="takes int"):
        grid_option("max-rounds=few")


def test_every_grid_candidate_is_checked_before_any_training():
    for grid in ("beta-end=1,100;pooling=mean,wighted", "pooling=mean x head-dim=256,0"):
        with pytest.raises(InputError):
            AblationParams(grid=(grid,) if ";" not in grid else tuple(grid.split(";"))).validate()
    AblationParams(grid=("pooling=mean,weighted x beta-end=1,10,100", "branch=base,both")).validate()
