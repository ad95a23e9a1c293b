"""``wtal ablate``: the paper's ablations on one feature set, several seeds, one command.

What runs (every training through the same stage functions and artifact cache as the single
commands, so a rerun skips what is built and an interrupted one resumes):

1. **Selection** (``select``): a BaS-Net baseline per selection seed with ``holdout`` of the
   training videos held out (subset ``val``), then DCC for every (tau, beta_end) of the grid; each
   is scored on the held-out videos only.  The best mean validation mAP picks tau and beta_end for
   everything below.  Test videos are never looked at for this choice.
2. **Tables** on the test videos, one training per seed and variant, all starting from the same
   baseline checkpoint of that seed:

   - ``main``: the baseline; the baseline trained on for DCC's iterations with the contrast weight
     at 0 (same batches, same length: the control that separates "more training" from "contrast");
     DCC without denoising (S = 1); full DCC.
   - ``scope``: contrast pairs from a single video, from the mini-batch, from the memory bank.
   - ``clusters``: full DCC with K clusters for denoising (and its refresh rounds).

Writes an ``ablation`` artifact: ``results.parquet`` (one row per run and seed: mAP per tIoU, the
average, artifact ids), ``selection.parquet``, ``table.md`` (mean +- sample std over seeds) and
``ablation.png``.  ``jobs > 1`` trains that many runs at a time in worker processes (each with
``cores / jobs`` torch threads; logs in ``<workdir>/.work/ablate-logs/``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from stages.evaluate import EvalParams
from wtalcli.core.console import log as _log
from wtalcli.core.console import warn
from wtalcli.core.errors import InputError
from wtalcli.core.params import key_dict, number_list, param, record_dict
from wtalcli.core.store import Artifact, Store, build_or_skip
from wtalcli.data.synthetic import PRESETS as SYNTHETIC
from wtalcli.dcc.params import DCCParams, DenoiseParams
from wtalcli.model.config import BaselineParams

TABLES = ("main", "scope", "clusters")
LOG_DIR = Path(".work") / "ablate-logs"


@dataclass
class AblationParams:
    preset: str = param("small", "Synthetic preset (when --features is not given).", choices=tuple(SYNTHETIC))
    features: str | None = param(None, "Use this feature set instead of the synthetic one.")
    data_seed: int = param(0, "Seed of the synthetic dataset.")
    seeds: tuple[int, ...] = param((0, 1, 2), "Training seeds, comma-separated.", parse=number_list(int))
    tables: tuple[str, ...] = param(TABLES, f"Which tables, comma-separated: {', '.join(TABLES)}.")
    clusters: tuple[int, ...] = param(
        (16, 64, 256), "The K sweep, comma-separated.", flag="--clusters", parse=number_list(int)
    )
    select: bool = param(True, "Choose tau and beta_end on held-out training videos.")
    holdout: float = param(0.2, "Share of training videos held out for the selection.")
    select_seeds: tuple[int, ...] = param((0,), "Seeds of the selection runs.", parse=number_list(int))
    grid_tau: tuple[float, ...] = param((0.1, 0.2), "Selection grid: tau values.", parse=number_list(float))
    grid_beta_end: tuple[float, ...] = param(
        (1.0, 100.0, 10000.0), "Selection grid: beta_end values.", parse=number_list(float)
    )
    iterations: int | None = param(None, "Training iterations of baseline and DCC (default: the preset's).")
    dcc: DCCParams = param(cli=False, factory=DCCParams)  # everything not varied (tau/beta_end if no select)
    jobs: int = param(1, "Trainings run at once (worker processes).", key=False)
    device: str = param("auto", "auto (a GPU if present), cpu, cuda or cuda:N.", key=False)

    def validate(self) -> AblationParams:
        bad = [t for t in self.tables if t not in TABLES]
        if bad:
            raise InputError(f"unknown table {bad[0]!r}", f"use some of {', '.join(TABLES)}")
        if not self.seeds:
            raise InputError("no seeds given", "e.g. --seeds 0,1,2")
        if self.select and not (self.grid_tau and self.grid_beta_end and self.select_seeds):
            raise InputError("an empty selection grid", "give --grid-tau and --grid-beta-end, or --no-select")
        if self.select and not 0 < self.holdout < 1:
            raise InputError(f"--holdout {self.holdout} must be in (0, 1)", "e.g. --holdout 0.2")
        if any(k < 1 for k in self.clusters):
            raise InputError("--clusters values must be >= 1", "e.g. --clusters 16,64,256")
        if self.jobs < 1:
            raise InputError(f"--jobs {self.jobs} must be >= 1", "e.g. --jobs 2")
        self.dcc.validate()
        return self


@dataclass(frozen=True)
class Variant:
    """One row of a table: DCC overrides (``None``: the baseline itself) and the K it denoises with."""

    name: str
    table: str
    overrides: dict | None
    clusters: int = 64


def variants(p: AblationParams) -> list[Variant]:
    k0 = DenoiseParams().clusters
    out: list[Variant] = []
    if "main" in p.tables:
        out += [
            Variant("BaS-Net baseline", "main", None, k0),
            # beta = 0: the contrast is computed but weighs nothing; no refresh (it could not matter)
            Variant(
                "baseline trained on, beta = 0",
                "main",
                {"beta_start": 0.0, "beta_end": 0.0, "beta_shape": "constant", "refresh_every": 0},
                k0,
            ),
            Variant("DCC without denoising", "main", {"denoise": False}, k0),
            Variant("DCC", "main", {}, k0),
        ]
    if "scope" in p.tables:
        out += [
            Variant("contrast within one video", "scope", {"scope": "video"}, k0),
            Variant("contrast within the mini-batch", "scope", {"scope": "batch"}, k0),
            Variant("contrast with the memory bank", "scope", {"scope": "bank"}, k0),
        ]
    if "clusters" in p.tables:
        out += [Variant(f"K = {k}", "clusters", {}, k) for k in p.clusters]
    return out


# ------------------------------------------------------------------------------ worker side


def _redirect_stderr(path: Path | None):
    """In a worker process: send this job's log lines to its own file (fd 2 included)."""
    if path is None:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def cm():
        path.parent.mkdir(parents=True, exist_ok=True)
        sys.stderr.flush()
        saved = os.dup(2)
        with open(path, "a", encoding="utf-8") as f:
            os.dup2(f.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)

    return cm()


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _baseline_job(root: str, features: str, params: BaselineParams, logfile: str | None) -> tuple[str, str]:
    from stages.baseline import baseline

    with _redirect_stderr(Path(logfile) if logfile else None):
        m, t = baseline(Store(Path(root)), features, params)
    return m.id, t.id


def _dcc_job(
    root: str, model: str, pl: str, conf: str | None, params: DCCParams, logfile: str | None
) -> tuple[str, str]:
    from stages.train_dcc import train_dcc

    with _redirect_stderr(Path(logfile) if logfile else None):
        m, t = train_dcc(Store(Path(root)), model, pl, conf, params)
    return m.id, t.id


class Runner:
    """Runs named jobs in-process (``jobs == 1``) or in a pool of worker processes."""

    def __init__(self, store: Store, jobs: int, log):
        self.store, self.jobs, self.log = store, jobs, log
        self.pool = None
        if jobs > 1:
            import multiprocessing as mp

            threads = max(1, (os.cpu_count() or 1) // jobs)
            self.pool = ProcessPoolExecutor(
                jobs, mp_context=mp.get_context("spawn"), initializer=_init_worker, initargs=(threads,)
            )

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def map(self, jobs: Sequence[tuple[str, Callable, tuple]]) -> dict[str, tuple[str, str]]:
        """``jobs``: (name, function, args without root and logfile) -> {name: result}."""
        root = str(self.store.root)
        results: dict[str, tuple[str, str]] = {}
        t0 = time.perf_counter()
        if self.pool is None:
            for i, (name, fn, args) in enumerate(jobs, 1):
                self.log(f"[{i}/{len(jobs)}] {name}")
                results[name] = fn(root, *args, None)
            return results
        logdir = self.store.root / LOG_DIR
        futures = {}
        for name, fn, args in jobs:
            logfile = logdir / (name.replace(" ", "_").replace("/", "-") + ".log")
            futures[self.pool.submit(fn, root, *args, str(logfile))] = (name, logfile)
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                name, logfile = futures[fut]
                try:
                    results[name] = fut.result()
                except Exception as exc:  # a worker's error: say which run and where its log is
                    for other in pending:
                        other.cancel()
                    raise InputError(
                        f"ablation run {name!r} failed: {exc}", f"see its log {logfile}"
                    ) from exc
                self.log(
                    f"[{len(results)}/{len(jobs)}] {name}: {results[name][0]} "
                    f"({time.perf_counter() - t0:.0f} s)"
                )
        return results


# ------------------------------------------------------------------------------ main side


def _quiet(message: str) -> None:
    """Scoring logs nothing: every artifact it makes is listed in results.parquet."""


def _score(store: Store, tcas: str, subset: str, log) -> dict:
    from stages.evaluate import evaluate
    from stages.localize import localize

    prop = localize(store, tcas, subset=subset, log=log)
    res, ev = evaluate(store, prop.id, params=EvalParams(subset=subset), log=log)
    per_tiou = {
        f"{t:.2f}": float(m) for t, m in zip(res["tiou_thresholds"], res["map_per_tiou"], strict=True)
    }
    return {"average_map": res["average_map"], "map_per_tiou": per_tiou, "evaluation": ev.id}


def _targets(store: Store, model: str, tcas: str, k: int, seed: int, device: str, log) -> tuple[str, str]:
    from stages.denoise import denoise
    from stages.pseudolabel import pseudolabel

    pl = pseudolabel(store, tcas, log=log)
    conf = denoise(store, pl.id, model, DenoiseParams(clusters=k, seed=seed, device=device), log=log)
    return pl.id, conf.id


def _dcc_params(p: AblationParams, seed: int, tau: float, beta_end: float, overrides: dict) -> DCCParams:
    base = replace(p.dcc, tau=tau, beta_end=beta_end, iterations=p.iterations, seed=seed, device=p.device)
    return replace(base, **overrides).validate()


def ablate(store: Store, p: AblationParams | None = None, force: bool = False, log=_log) -> Artifact:
    """Run the ablation (or skip it when built); returns the ``ablation`` artifact."""
    from stages.extract import extract_synthetic

    p = (p or AblationParams()).validate()
    if p.features is None:
        fs_art = extract_synthetic(store, p.preset, seed=p.data_seed, log=log)
    else:
        fs_art = store.resolve("features", p.features, log)
    key = key_dict(p)
    for k in ("features", "preset", "data_seed"):
        key.pop(k)  # what the features input already says
    key["dcc"].pop("seed")  # set per run from --seeds
    plan = store.plan(
        "ablation", "ablate", record_dict(p), {"features": fs_art}, seed=p.seeds[0], key_params=key
    )
    if not force and (art := store.existing(plan)) is not None:
        log(f"{art.id} is up to date (same inputs, parameters and code): skipped; --force redoes it")
        return art
    vs = variants(p)
    runner = Runner(store, p.jobs, log)
    try:
        return _ablate(store, p, fs_art, plan, vs, runner, force, log)
    finally:
        runner.close()


def _ablate(store, p: AblationParams, fs_art, plan, vs: list[Variant], runner: Runner, force, log):
    started = time.perf_counter()

    def bparams(seed: int, holdout: float) -> BaselineParams:
        return BaselineParams(iterations=p.iterations, seed=seed, device=p.device, holdout=holdout)

    # 1. baselines: the test ones and the held-out ones together
    jobs = [(f"baseline seed {s}", _baseline_job, (fs_art.id, bparams(s, 0.0))) for s in p.seeds]
    if p.select:
        jobs += [
            (f"baseline holdout seed {s}", _baseline_job, (fs_art.id, bparams(s, p.holdout)))
            for s in p.select_seeds
        ]
    bases = runner.map(jobs)

    # 2. selection on the held-out training videos
    selection_rows = []
    tau, beta_end = p.dcc.tau, p.dcc.beta_end
    if p.select:
        grid = [(t, b) for t in p.grid_tau for b in p.grid_beta_end]
        jobs, cell = [], {}  # job name -> its (tau, beta_end, seed)
        for s in p.select_seeds:
            m, tc = bases[f"baseline holdout seed {s}"]
            pl, conf = _targets(store, m, tc, DenoiseParams().clusters, s, p.device, log)
            selection_rows.append(
                {"tau": np.nan, "beta_end": np.nan, "seed": s, "run": "baseline", "model": m, "tcas": tc}
            )
            for t, b in grid:
                name = f"select tau {t} beta {b:g} seed {s}"
                cell[name] = (t, b, s)
                jobs.append((name, _dcc_job, (m, pl, conf, _dcc_params(p, s, t, b, {}))))
        done = runner.map(jobs)
        for name, (m, tc) in done.items():
            t, b, s = cell[name]
            selection_rows.append(
                {"tau": float(t), "beta_end": float(b), "seed": s, "run": "DCC", "model": m, "tcas": tc}
            )
        for row in selection_rows:
            row.update(_score(store, row["tcas"], "val", _quiet))
        sel = pd.DataFrame(selection_rows)
        grid_scores = sel[sel["run"] == "DCC"].groupby(["tau", "beta_end"], sort=False)["average_map"].mean()
        tau, beta_end = grid_scores.idxmax()
        log(
            f"selected on {len(p.select_seeds)} seed(s) of held-out training videos: tau {tau:g}, "
            f"beta_end {beta_end:g} (validation mAP {100 * grid_scores.max():.2f}; baseline "
            f"{100 * sel.loc[sel['run'] == 'baseline', 'average_map'].mean():.2f})"
        )
    else:
        sel = pd.DataFrame(columns=["tau", "beta_end", "seed", "run", "model", "tcas", "average_map"])

    # 3. the tables' DCC runs (identical runs shared between tables are trained once)
    targets: dict[tuple[int, int], tuple[str, str]] = {}
    jobs, run_of = [], {}
    for s in p.seeds:
        m, tc = bases[f"baseline seed {s}"]
        for v in vs:
            if v.overrides is None:
                continue
            key = (s, v.clusters)
            if key not in targets:
                targets[key] = _targets(store, m, tc, v.clusters, s, p.device, log)
            pl, conf = targets[key]
            dp = _dcc_params(p, s, tau, beta_end, v.overrides)
            ident = json.dumps([asdict(dp), pl, conf if dp.denoise else None], sort_keys=True)
            name = run_of.setdefault(ident, f"dcc {v.table}: {v.name} seed {s}")
            if name == f"dcc {v.table}: {v.name} seed {s}":
                jobs.append((name, _dcc_job, (m, pl, conf if dp.denoise else None, dp)))
            run_of[(v.name, v.table, s)] = name
    trained = runner.map(jobs)

    # 4. score every run on the test videos
    rows = []
    for s in p.seeds:
        for v in vs:
            if v.overrides is None:
                m, tc = bases[f"baseline seed {s}"]
            else:
                m, tc = trained[run_of[(v.name, v.table, s)]]
            sc = _score(store, tc, "test", _quiet)
            row = {"table": v.table, "variant": v.name, "seed": s, "average_map": sc["average_map"]}
            row |= {f"map@{t}": x for t, x in sc["map_per_tiou"].items()}
            rows.append(row | {"model": m, "tcas": tc, "evaluation": sc["evaluation"]})
    res = pd.DataFrame(rows)
    markdown = ablation_markdown(res, sel, p, tau, beta_end)

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
            "selected": {"tau": float(tau), "beta_end": float(beta_end)},
            "runs": int(len(res)),
            "seconds": round(time.perf_counter() - started, 1),
            "mean_average_map": {
                f"{t}/{v}": float(g["average_map"].mean())
                for (t, v), g in res.groupby(["table", "variant"], sort=False)
            },
        }

    return build_or_skip(store, plan, True, log, work)


def _mean_std(x: pd.Series) -> str:
    x = 100 * x.to_numpy(float)
    sd = x.std(ddof=1) if len(x) > 1 else float("nan")
    return f"{x.mean():.1f} ± {sd:.1f}" if len(x) > 1 else f"{x.mean():.1f}"


TITLES = {
    "main": "Denoising (memory-bank contrast)",
    "scope": "Where the contrast pairs come from (with denoising)",
    "clusters": "Number of clusters K for denoising",
}


def ablation_markdown(res: pd.DataFrame, sel: pd.DataFrame, p: AblationParams, tau, beta_end) -> str:
    """Mean ± sample std over seeds of mAP (%) per tIoU and of the average, one table per ablation."""
    tcols = [c for c in res.columns if c.startswith("map@")]
    seeds = ", ".join(map(str, sorted(res["seed"].unique())))
    lines = [
        f"mAP (%) on the test videos, mean ± sample std over seeds {seeds}; every DCC run starts from "
        f"the baseline of its seed and trains as many iterations as the baseline; tau = {tau:g}, "
        f"beta {p.dcc.beta_start:g} -> {beta_end:g} ({p.dcc.beta_shape}), M = {p.dcc.regions}.",
        "",
    ]
    for table in [t for t in TABLES if t in set(res["table"])]:
        sub = res[res["table"] == table]
        lines += [f"### {TITLES[table]}", ""]
        head = ["run", *[c.split("@")[1] for c in tcols], "avg"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, g in sub.groupby("variant", sort=False):
            cells = [name, *[f"{100 * g[c].mean():.1f}" for c in tcols], f"**{_mean_std(g['average_map'])}**"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if len(sel):
        lines += [
            f"### Selection on held-out training videos ({100 * p.holdout:g}% of them; seeds "
            f"{', '.join(map(str, p.select_seeds))}): validation mAP (%)",
            "",
            "| run | tau | beta_end | avg |",
            "|---|---|---|---|",
        ]
        for (run, t, b), g in sel.groupby(["run", "tau", "beta_end"], sort=False, dropna=False):
            tt = "" if pd.isna(t) else f"{t:g}"
            bb = "" if pd.isna(b) else f"{b:g}"
            lines.append(f"| {run} | {tt} | {bb} | {_mean_std(g['average_map'])} |")
        lines.append("")
    return "\n".join(lines)
