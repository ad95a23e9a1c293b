"""``wtal ablate``: the DCC study on one feature set, several seeds, one command.

Every arm trains on the same training videos minus a held-out share (``holdout``, the same split
for every arm, subset ``val``), and every arm's training length is chosen on those held-out videos
(``select_every``: the run is scored every N iterations and its best iteration is kept). Test videos
are only ever used for the final tables.

1. **Baselines**, one per seed.
2. **Selection** (``select``): coordinate ascent over ``grid``, a list of options with their values,
   in order (by default the contrast weight beta_end and tau first, since they decide how much the
   contrast weighs at all, then DCC's readings: pooling, head, branch, background regions,
   confidence scope, start). For each option, DCC is trained with every value while the others keep
   their best values so far (over all ``seeds``), and the value with the best mean held-out mAP
   wins. Identical runs are trained once (the artifact cache).
3. **Tables** on the test videos, with the selected configuration (their rows:
   :func:`wtalcli.dcc.ablation.table_rows`), each row with the run's diagnostics as its artifacts
   recorded them (:func:`wtalcli.evaluation.diagnostics.run_diagnostics`) and, for synthetic
   data, its pseudo-labels' recall on the instances' cores and non-core parts
   (:class:`wtalcli.evaluation.core_split.CoreSplit`).

Writes an ``ablation`` artifact: ``results.parquet`` (one row per run and seed), ``selection.parquet``
(every selection run), ``table.md`` (mean ± sample std over seeds, and every seed) and
``ablation.png``. ``jobs > 1`` trains that many runs at a time in worker processes
(:class:`wtalcli.core.pool.JobPool`; logs in ``<workdir>/.work/ablate-logs/``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from stages.baseline import baseline
from stages.denoise import denoise
from stages.evaluate import evaluate
from stages.localize import localize
from stages.pseudolabel import pseudolabel
from stages.train_dcc import train_dcc
from wtalcli.core.console import log as _log
from wtalcli.core.console import silent, warn
from wtalcli.core.params import key_dict, record_dict
from wtalcli.core.pool import JobPool
from wtalcli.core.store import Artifact, Store, build_or_skip
from wtalcli.data.feature_artifact import extract_synthetic
from wtalcli.dcc.ablation import GRID_KEYS, TABLES, AblationParams, Config, grid_candidates, table_rows
from wtalcli.dcc.params import DenoiseParams
from wtalcli.dcc.train_params import DCCParams
from wtalcli.evaluation.core_split import CoreSplit
from wtalcli.evaluation.diagnostics import run_diagnostics
from wtalcli.evaluation.localization import LocalizeParams
from wtalcli.evaluation.params import EvalParams
from wtalcli.model.config import PRESETS, BaselineParams, resolve_preset
from wtalcli.report.ablation import ablation_markdown

LOG_DIR = Path(".work") / "ablate-logs"


def _baseline_job(root: str, features: str, params: BaselineParams) -> tuple[str, str]:
    m, t = baseline(Store(Path(root)), features, params)
    return m.id, t.id


def _dcc_job(root: str, model: str, pl: str, conf: str | None, params: DCCParams) -> tuple[str, str]:
    m, t = train_dcc(Store(Path(root)), model, pl, conf, params)
    return m.id, t.id


def _score(store: Store, tcas: str, subset: str, log) -> dict:
    prop = localize(store, tcas, LocalizeParams(subset=subset), log=log)
    res, ev = evaluate(store, prop.id, params=EvalParams(subset=subset), log=log)
    per_tiou = {
        f"{t:.2f}": float(m) for t, m in zip(res["tiou_thresholds"], res["map_per_tiou"], strict=True)
    }
    return {"average_map": res["average_map"], "map_per_tiou": per_tiou, "evaluation": ev.id}


def heldout_score(store: Store, model: str, tcas: str) -> tuple[float, int | None]:
    """A run's held-out mAP: the best of its selection curve (``select_every``), else its last
    iteration's T-CAS scored on the held-out videos; and the iteration it comes from."""
    art = store.get(store.root / model)
    sel = art.manifest.get("summary", {}).get("selection")
    if sel:
        return float(sel["heldout_map"]), int(sel["selected_iteration"])
    return float(_score(store, tcas, "val", silent)["average_map"]), art.manifest["summary"].get("iterations")


def trained_with(store: Store, models) -> list[dict]:
    """The distinct ``summary.numerics`` (torch, device, CPU kernel instruction set, threads) of
    ``models``, in first-seen order; models built before it was recorded are left out."""
    seen: dict[str, dict] = {}
    for m in models:
        num = store.get(store.root / m).manifest.get("summary", {}).get("numerics")
        if num:
            seen.setdefault(json.dumps(num, sort_keys=True), num)
    return list(seen.values())


def ablate(store: Store, p: AblationParams | None = None, force: bool = False, log=_log) -> Artifact:
    """Run the study (or skip it when built); returns the ``ablation`` artifact."""
    p = (p or AblationParams()).validate()
    if p.features is None:
        fs_art = extract_synthetic(store, p.preset, seed=p.data_seed, log=log)
    else:
        fs_art = store.resolve("features", p.features, log)
    key = key_dict(p)
    for k in ("features", "preset", "data_seed"):
        key.pop(k)  # what the features input already says
    key["dcc"].pop("seed")  # set per run from --seeds
    key["denoise"].pop("seed")
    plan = store.plan(
        "ablation", "ablate", record_dict(p), {"features": fs_art}, seed=p.seeds[0], key_params=key
    )
    if not force and (art := store.existing(plan)) is not None:
        log(f"{art.id} is up to date (same inputs, parameters and code): skipped; --force redoes it")
        return art
    pool = JobPool(p.jobs, log, store.root / LOG_DIR, label=lambda ids: ids[0])
    try:
        return Study(store, p, fs_art, pool, log).run(plan)
    finally:
        pool.close()


class Study:
    """The state of one ablation: baselines, targets and the DCC runs trained so far."""

    def __init__(self, store: Store, p: AblationParams, fs_art: Artifact, pool: JobPool, log):
        self.store, self.p, self.fs_art, self.pool, self.log = store, p, fs_art, pool, log
        self.bases: dict[int, tuple[str, str]] = {}  # seed -> (model, tcas)
        self.targets: dict[tuple, tuple[str, str]] = {}  # (seed, denoise key) -> (pseudolabels, confidence)
        self.runs: dict[str, tuple[str, str]] = {}  # run identity -> (model, tcas)

    def _dcc(self, cfg: Config, seed: int) -> DCCParams:
        iters = self.p.iterations
        if cfg.dcc.init == "scratch":  # the same total budget as baseline + DCC from the baseline
            iters = 2 * (iters or PRESETS[resolve_preset(self.fs_art.params)]["iterations"])
        return replace(
            cfg.dcc,
            iterations=iters,
            seed=seed,
            device=self.p.device,
            select_every=self.p.select_every,
            grad_every=cfg.dcc.grad_every or self.p.select_every,
        ).validate()

    def baselines(self) -> None:
        p = self.p
        bp = {
            s: BaselineParams(
                iterations=p.iterations,
                seed=s,
                device=p.device,
                holdout=p.holdout,
                select_every=p.select_every,
            )
            for s in p.seeds
        }
        root = str(self.store.root)
        self.bases = self.pool.map(
            [(f"baseline seed {s}", _baseline_job, (root, self.fs_art.id, bp[s])) for s in p.seeds]
        )
        self.bases = {s: self.bases[f"baseline seed {s}"] for s in p.seeds}

    def _targets(self, seed: int, dn: DenoiseParams) -> tuple[str, str]:
        dn = replace(dn, seed=seed, device=self.p.device)
        k = (seed, tuple(sorted(key_dict(dn).items())))
        if k not in self.targets:
            m, tc = self.bases[seed]
            pl = pseudolabel(self.store, tc, log=silent)
            conf = denoise(self.store, pl.id, m, dn, log=silent)
            self.targets[k] = (pl.id, conf.id)
        return self.targets[k]

    def train(self, configs: Sequence[tuple[str, Config]]) -> dict[tuple[str, int], tuple[str, str]]:
        """Train (or find) every configuration for every seed; -> {(name, seed): (model, tcas)}."""
        jobs, names = [], {}
        for name, cfg in configs:
            for s in self.p.seeds:
                dp = self._dcc(cfg, s)
                pl, conf = self._targets(s, cfg.denoise)
                ident = repr((sorted(key_dict(dp).items()), pl, conf if dp.denoise else None))
                job = f"dcc {cfg.describe()} seed {s}" if name is None else f"{name} seed {s}"
                names[(name, s)] = ident
                if ident not in self.runs and ident not in {j[3] for j in jobs}:
                    m, _ = self.bases[s]
                    jobs.append(
                        (
                            job,
                            _dcc_job,
                            (str(self.store.root), m, pl, conf if dp.denoise else None, dp),
                            ident,
                        )
                    )
        done = self.pool.map([j[:3] for j in jobs])
        for job, _fn, _args, ident in jobs:
            self.runs[ident] = done[job]
        return {key: self.runs[ident] for key, ident in names.items()}

    def select(self) -> tuple[Config, pd.DataFrame]:
        """Coordinate ascent over the grid on the held-out videos (mean over seeds)."""
        best = Config(self.p.dcc, self.p.denoise)
        rows = []
        for entry in self.p.grid:
            option, settings = grid_candidates(entry)
            cands = [(label, best.with_(setting)) for label, setting in settings]
            value_of = {label: ", ".join(str(v) for v in setting.values()) for label, setting in settings}
            trained = self.train(cands)
            scores = {}
            for label, _cfg in cands:
                vals = []
                for s in self.p.seeds:
                    m, tc = trained[(label, s)]
                    val, it = heldout_score(self.store, m, tc)
                    vals.append(val)
                    rows.append(
                        {
                            "option": option,
                            "value": value_of[label],
                            "seed": s,
                            "heldout_map": val,
                            "iteration": it,
                            "model": m,
                            "tcas": tc,
                        }
                    )
                scores[label] = float(np.mean(vals))
            winner = max(cands, key=lambda c: scores[c[0]])  # first on ties (the order of the grid)
            self.log(
                f"selection {option}: "
                + ", ".join(f"{value_of[lab]} {100 * scores[lab]:.2f}" for lab, _ in cands)
                + f" -> {value_of[winner[0]]}"
            )
            best = winner[1]
        return best, pd.DataFrame(rows)

    def run(self, plan) -> Artifact:
        started = time.perf_counter()
        p = self.p
        self.baselines()
        base_val = {s: heldout_score(self.store, *self.bases[s])[0] for s in p.seeds}
        self.log(f"baselines: held-out mAP {100 * np.mean(list(base_val.values())):.2f} (mean over seeds)")
        if p.select:
            best, sel = self.select()
        else:
            best, sel = Config(p.dcc, p.denoise), pd.DataFrame()
        spec = table_rows(p.tables, p.clusters, best)
        trained = self.train([(name, cfg) for _t, name, cfg in spec if cfg is not None])
        rows = []
        splits = CoreSplit(self.store)
        for table, name, cfg in spec:
            for s in p.seeds:
                m, tc = self.bases[s] if cfg is None else trained[(name, s)]
                sc = _score(self.store, tc, "test", silent)
                val, it = heldout_score(self.store, m, tc)
                row = {"table": table, "variant": name, "seed": s, "average_map": sc["average_map"]}
                row |= {f"map@{t}": x for t, x in sc["map_per_tiou"].items()}
                row |= {
                    "heldout_map": val,
                    "iteration": it,
                    "model": m,
                    "tcas": tc,
                    "evaluation": sc["evaluation"],
                }
                row |= run_diagnostics(self.store, m, tc)
                row |= splits.of_run(m)
                rows.append(row)
        res = pd.DataFrame(rows)
        models = list(dict.fromkeys([*res["model"], *(sel["model"] if len(sel) else [])]))
        machines = trained_with(self.store, models)
        markdown = ablation_markdown(res, sel, p.holdout, p.select_every, best, machines)

        def work(tmp: Path) -> dict:
            res.to_parquet(tmp / "results.parquet")
            sel.to_parquet(tmp / "selection.parquet")
            (tmp / "table.md").write_text(markdown)
            try:
                from wtalcli.report.plots import ablation_figure
            except ImportError:  # matplotlib is optional (the `plot` extra)
                warn("matplotlib is not installed: no ablation.png (pip install 'wtal[plot]')")
            else:
                (tmp / "ablation.png").write_bytes(ablation_figure(res, [t for t in TABLES if t in p.tables]))
            return {
                "selected": {o: str(best.get(o)) for o in GRID_KEYS},
                "runs": int(len(res)),
                "numerics": machines,
                "seconds": round(time.perf_counter() - started, 1),
                "mean_average_map": {
                    f"{t}/{v}": float(g["average_map"].mean())
                    for (t, v), g in res.groupby(["table", "variant"], sort=False)
                },
            }

        return build_or_skip(self.store, plan, True, self.log, work)
