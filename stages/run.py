"""``wtal run``: every stage chained through the artifact cache, ending with a baseline-vs-DCC
table.  Each step is the same stage function the individual commands call, so a rerun skips
whatever is up to date and an interrupted training run resumes."""

from __future__ import annotations

from dataclasses import dataclass, replace

from wtalcli.core.console import log as _log
from wtalcli.core.errors import InputError
from wtalcli.core.params import device_param, like, param, seed_param
from wtalcli.core.store import Store
from wtalcli.dcc.ablation import AblationParams
from wtalcli.dcc.params import DenoiseParams, PseudolabelParams
from wtalcli.dcc.train_params import DCCParams, control_of
from wtalcli.evaluation.params import EvalParams
from wtalcli.model.config import BaselineParams

STAGES = ("extract", "baseline", "pseudolabel", "denoise", "train-dcc", "localize", "evaluate")


@dataclass
class RunParams:
    preset: str = like(AblationParams, "preset")
    features: str | None = like(AblationParams, "features")
    until: str = param("evaluate", "Stop after this stage.", choices=STAGES)
    force: tuple[str, ...] = param((), "Rebuild these stages (comma-separated).", show=lambda v: ",".join(v))
    seed: int = seed_param()
    data_seed: int = like(AblationParams, "data_seed")
    device: str = device_param()
    baseline: BaselineParams = param(cli=False, factory=BaselineParams)
    pseudolabel: PseudolabelParams = param(cli=False, factory=PseudolabelParams)
    denoise: DenoiseParams = param(cli=False, factory=DenoiseParams)
    dcc: DCCParams = param(cli=False, factory=DCCParams)
    evaluation: EvalParams = param(cli=False, factory=EvalParams)


def run(store: Store, p: RunParams | None = None, log=_log) -> dict:
    """Run the pipeline up to ``p.until``; returns what was built and, at the end, the results."""
    from stages.baseline import baseline  # the stages import torch: not needed by `wtal --help`
    from stages.denoise import denoise
    from stages.evaluate import evaluate
    from stages.localize import localize
    from stages.pseudolabel import pseudolabel
    from stages.train_dcc import train_dcc
    from wtalcli.data.feature_artifact import extract_synthetic

    p = p or RunParams()
    for s in (p.until, *p.force):
        if s not in STAGES:
            raise InputError(f"unknown stage {s!r}", f"use one of {', '.join(STAGES)}")
    bp = replace(p.baseline, seed=p.seed, device=p.device)
    dp = replace(p.denoise, seed=p.seed, device=p.device)
    dc = replace(p.dcc, seed=p.seed, device=p.device)
    last = STAGES.index(p.until)

    def on(stage: str) -> bool:
        return STAGES.index(stage) <= last

    def forced(stage: str) -> bool:
        return stage in p.force

    out: dict = {"workdir": str(store.root)}
    if p.features is None:
        fs = extract_synthetic(store, p.preset, seed=p.data_seed, force=forced("extract"), log=log)
    else:
        fs = store.resolve("features", p.features, log)
    out["features"] = fs.id
    if not on("baseline"):
        return out
    model, tcas = baseline(store, fs.id, bp, force=forced("baseline"), log=log)
    out.update(baseline_model=model.id, baseline_tcas=tcas.id)
    tcas_list = [("baseline", tcas.id)]
    if on("pseudolabel"):
        pl = pseudolabel(store, tcas.id, p.pseudolabel, force=forced("pseudolabel"), log=log)
        out["pseudolabels"] = pl.id
    if on("denoise"):
        conf = denoise(store, pl.id, model.id, dp, force=forced("denoise"), log=log)
        out["confidence"] = conf.id
    if on("train-dcc"):
        # the honest comparison: the same training from the baseline, as long, without the contrast
        cmodel, ctcas = train_dcc(
            store, model.id, pl.id, conf.id, control_of(dc), force=forced("train-dcc"), log=log
        )
        out.update(control_model=cmodel.id, control_tcas=ctcas.id)
        tcas_list.append(("control", ctcas.id))
        dmodel, dtcas = train_dcc(store, model.id, pl.id, conf.id, dc, force=forced("train-dcc"), log=log)
        out.update(dcc_model=dmodel.id, dcc_tcas=dtcas.id)
        tcas_list.append(("dcc", dtcas.id))
    if not on("localize"):
        return out
    results = {}
    for name, tid in tcas_list:
        prop = localize(store, tid, force=forced("localize"), log=log)
        out[f"{name}_proposals"] = prop.id
        if on("evaluate"):
            res, ev = evaluate(store, prop.id, params=p.evaluation, force=forced("evaluate"), log=log)
            out[f"{name}_evaluation"] = ev.id
            results[name] = res
    out["results"] = {
        name: {
            "tiou": r["tiou_thresholds"],
            "map_per_tiou": r["map_per_tiou"],
            "average_map": r["average_map"],
        }
        for name, r in results.items()
    }
    return out


ROW_NAMES = {
    "baseline": "BaS-Net baseline",
    "control": "same-length control (train-dcc, beta = 0)",
    "dcc": "DCC",
}


def comparison_table(results: dict):
    """Rich table: one row per method, mAP (%) per tIoU and the average."""
    from rich.table import Table

    first = next(iter(results.values()))
    table = Table(title="mAP (%) on the test videos")
    table.add_column("method")
    for t in first["tiou"]:
        table.add_column(f"{t:.2f}".rstrip("0").rstrip("."), justify="right")
    table.add_column("avg", justify="right", style="bold")
    for name, r in results.items():
        cells = [f"{100 * m:.1f}" for m in r["map_per_tiou"]]
        table.add_row(ROW_NAMES.get(name, name), *cells, f"{100 * r['average_map']:.1f}")
    return table
