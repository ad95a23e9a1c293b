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
3. **Tables** on the test videos, with the selected configuration:

   - ``main``: the baseline; the same-length control (``train-dcc`` from the same baseline with
     beta = 0: the same batches, the same length budget, no contrast); DCC without denoising
     (S = 1); DCC; DCC on oracle targets (the training videos' ground-truth snippets, S = 1: a
     diagnostic bound on what the contrast itself can do, never a method).
   - ``scope``: contrast pairs from a single video, from the mini-batch, from the memory bank.
   - ``clusters``: DCC with K clusters for denoising (and its refresh rounds).

Each row also carries DCC's diagnostics read from the run's artifacts: pseudo-label precision,
recall and IoU against the ground-truth snippets in the last refresh round, the AUC of S for correct
vs wrong pseudo-labels, the gradient share ``beta |grad L_dcc| / |grad L_base|`` and cosine on the
shared layers, and the test embedding's action-vs-background AUC and intra/inter class ratio.

Writes an ``ablation`` artifact: ``results.parquet`` (one row per run and seed), ``selection.parquet``
(every selection run), ``table.md`` (mean ± sample std over seeds, and every seed) and
``ablation.png``. ``jobs > 1`` trains that many runs at a time in worker processes (each with
``cores / jobs`` torch threads; logs in ``<workdir>/.work/ablate-logs/``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from wtalcli.core import rounds as refresh_rounds
from wtalcli.core.console import log as _log
from wtalcli.core.console import silent, warn
from wtalcli.core.errors import InputError
from wtalcli.core.params import key_dict, number_list, param, record_dict
from wtalcli.core.store import Artifact, Store, build_or_skip
from wtalcli.data.synthetic import PRESETS as SYNTHETIC
from wtalcli.dcc.params import DCCParams, DenoiseParams, control_of
from wtalcli.evaluation.params import EvalParams
from wtalcli.model.config import BaselineParams

TABLES = ("main", "scope", "clusters")
LOG_DIR = Path(".work") / "ablate-logs"
# grid option -> (which parameter class, field)
GRID_KEYS = {
    "pooling": ("dcc", "pooling"),
    "head": ("dcc", "head"),
    "branch": ("dcc", "branch"),
    "background": ("dcc", "background"),
    "confidence-scope": ("denoise", "scope"),
    "init": ("dcc", "init"),
    "tau": ("dcc", "tau"),
    "beta-end": ("dcc", "beta_end"),
    "regions": ("dcc", "regions"),
    "head-dim": ("dcc", "proj_dim"),
    "max-rounds": ("dcc", "max_rounds"),
}
DEFAULT_GRID = (
    "beta-end=1,100,10000",
    "tau=0.1,0.2",
    "pooling=mean,weighted",
    "head=linear,mlp,none",
    "branch=base,suppression,both",
    "background=class,video",
    "confidence-scope=all,labelled",
    "init=baseline,scratch",
)


def parse_grid(value) -> tuple[str, ...]:
    """``"pooling=mean,weighted;tau=0.1,0.2"`` (or a sequence of such entries) -> entries."""
    items = value if isinstance(value, tuple | list) else str(value).split(";")
    out = tuple(i.strip() for i in items if str(i).strip())
    for entry in out:
        grid_option(entry)
    return out


def grid_option(entry: str) -> tuple[str, list]:
    """``"tau=0.1,0.2"`` -> ("tau", [0.1, 0.2]), values typed as the parameter's field."""
    name, _, values = entry.partition("=")
    name = name.strip()
    if name not in GRID_KEYS or not values.strip():
        raise InputError(
            f"bad grid entry {entry!r}", f"write option=v1,v2 with option one of {', '.join(GRID_KEYS)}"
        )
    which, field = GRID_KEYS[name]
    cls = DCCParams if which == "dcc" else DenoiseParams
    kind = type(getattr(cls(), field))
    try:
        return name, [kind(v.strip()) for v in values.split(",") if v.strip()]
    except ValueError:
        raise InputError(
            f"bad value in grid entry {entry!r}", f"{name} takes {kind.__name__} values"
        ) from None


@dataclass
class AblationParams:
    preset: str = param("small", "Synthetic preset (when --features is not given).", choices=tuple(SYNTHETIC))
    features: str | None = param(None, "Use this feature set instead of the synthetic one.")
    data_seed: int = param(0, "Seed of the synthetic dataset.")
    seeds: tuple[int, ...] = param((0, 1, 2), "Training seeds, comma-separated.", parse=number_list(int))
    holdout: float = param(0.3, "Share of training videos held out (the same for every arm).")
    select_every: int = param(
        50, "Score the held-out videos every N iterations and keep each run's best iteration (0: the last)."
    )
    select: bool = param(True, "Choose DCC's options on the held-out videos (--grid).")
    grid: tuple[str, ...] = param(
        DEFAULT_GRID,
        "Coordinate ascent, in order: option=values entries separated by ';' (options: "
        + ", ".join(GRID_KEYS)
        + ").",
        parse=parse_grid,
        show=lambda v: ";".join(v),
    )
    tables: tuple[str, ...] = param(TABLES, f"Which tables, comma-separated: {', '.join(TABLES)}.")
    clusters: tuple[int, ...] = param(
        (16, 64, 256), "The K sweep, comma-separated.", flag="--clusters", parse=number_list(int)
    )
    iterations: int | None = param(None, "Training iterations of baseline and DCC (default: the preset's).")
    dcc: DCCParams = param(cli=False, factory=DCCParams)  # the starting point of the selection
    denoise: DenoiseParams = param(cli=False, factory=DenoiseParams)
    jobs: int = param(1, "Trainings run at once (worker processes).", key=False)
    device: str = param("auto", "auto (a GPU if present), cpu, cuda or cuda:N.", key=False)

    def validate(self) -> AblationParams:
        bad = [t for t in self.tables if t not in TABLES]
        if bad:
            raise InputError(f"unknown table {bad[0]!r}", f"use some of {', '.join(TABLES)}")
        if not self.seeds:
            raise InputError("no seeds given", "e.g. --seeds 0,1,2")
        if not 0 < self.holdout < 1:
            raise InputError(f"--holdout {self.holdout} must be in (0, 1)", "e.g. --holdout 0.3")
        if self.select_every < 0:
            raise InputError(f"--select-every {self.select_every} must be >= 0", "e.g. --select-every 50")
        if any(k < 1 for k in self.clusters):
            raise InputError("--clusters values must be >= 1", "e.g. --clusters 16,64,256")
        if self.jobs < 1:
            raise InputError(f"--jobs {self.jobs} must be >= 1", "e.g. --jobs 2")
        for entry in self.grid:
            grid_option(entry)
        self.dcc.validate()
        return self


@dataclass(frozen=True)
class Config:
    """One DCC configuration: its DCC and denoise parameters (seeds and devices set per run)."""

    dcc: DCCParams
    denoise: DenoiseParams

    def set(self, option: str, value) -> Config:
        which, field = GRID_KEYS[option]
        if which == "dcc":
            return Config(replace(self.dcc, **{field: value}), self.denoise)
        return Config(self.dcc, replace(self.denoise, **{field: value}))

    def get(self, option: str):
        which, field = GRID_KEYS[option]
        return getattr(self.dcc if which == "dcc" else self.denoise, field)

    def describe(self) -> str:
        return ", ".join(f"{o}={self.get(o)}" for o in GRID_KEYS)


def table_rows(p: AblationParams, best: Config) -> list[tuple[str, str, Config]]:
    """(table, row name, configuration) of the final tables; the baseline row has no configuration."""
    rows: list[tuple[str, str, Config]] = []
    if "main" in p.tables:
        rows += [
            ("main", "BaS-Net baseline", None),
            (
                "main",
                "same-length control (train-dcc with beta = 0)",
                Config(control_of(best.dcc), best.denoise),
            ),
            ("main", "DCC without denoising (S = 1)", Config(replace(best.dcc, denoise=False), best.denoise)),
            ("main", "DCC", best),
            (
                "main",
                "DCC on oracle targets (diagnostic bound)",
                Config(replace(best.dcc, targets="oracle"), best.denoise),
            ),
        ]
    if "scope" in p.tables:
        rows += [
            ("scope", "contrast within one video", Config(replace(best.dcc, scope="video"), best.denoise)),
            (
                "scope",
                "contrast within the mini-batch",
                Config(replace(best.dcc, scope="batch"), best.denoise),
            ),
            ("scope", "contrast with the memory bank", Config(replace(best.dcc, scope="bank"), best.denoise)),
        ]
    if "clusters" in p.tables:
        rows += [
            ("clusters", f"K = {k}", Config(best.dcc, replace(best.denoise, clusters=k))) for k in p.clusters
        ]
    return rows


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


def _score(store: Store, tcas: str, subset: str, log) -> dict:
    from stages.evaluate import evaluate
    from stages.localize import localize

    prop = localize(store, tcas, subset=subset, log=log)
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


def _diagnostics(store: Store, model: str, tcas: str) -> dict:
    """DCC's diagnostics as recorded by its artifacts (NaN where a run has none)."""
    nan = float("nan")
    out = {
        "pl_precision": nan,
        "pl_recall": nan,
        "pl_iou": nan,
        "s_auc": nan,
        "grad_ratio": nan,
        "grad_cos": nan,
        "emb_action_auc": nan,
        "emb_intra_inter": nan,
    }
    m = store.get(store.root / model)
    t = store.get(store.root / tcas)
    geo = t.manifest.get("summary", {}).get("embedding_test") or {}
    out["emb_action_auc"] = geo.get("action_background_auc", nan)
    out["emb_intra_inter"] = geo.get("intra_inter_ratio", nan)
    log_path = m.path / "train_log.parquet"
    if log_path.exists():
        tl = pd.read_parquet(log_path)
        for k in ("grad_ratio", "grad_cos"):
            if k in tl:
                out[k] = float(tl[k].dropna().mean()) if tl[k].notna().any() else nan
    # the pseudo-labels and confidence in use at the end: the last round's, else the inputs'
    rounds = refresh_rounds.of_run(store, "pseudolabels", m.id)
    pl = rounds[-1][1] if rounds else None
    if pl is None and "pseudolabels" in m.manifest.get("inputs", {}):
        pl = store.get(store.root / m.manifest["inputs"]["pseudolabels"]["id"])
    if pl is not None:
        q = pl.manifest.get("summary", {}).get("quality") or {}
        out.update(
            pl_precision=q.get("precision", nan), pl_recall=q.get("recall", nan), pl_iou=q.get("iou", nan)
        )
        # a refresh round's confidence map is the only one made from its pseudo-labels; without
        # rounds, the map the run read (the same pseudo-labels may have maps for several K)
        used = m.manifest.get("inputs", {}).get("confidence", {}).get("id") if not rounds else None
        confs = [
            a
            for a in store.artifacts("confidence")
            if a.manifest["inputs"]["pseudolabels"]["id"] == pl.id and (used is None or a.id == used)
        ]
        if confs:
            out["s_auc"] = (confs[-1].manifest.get("summary", {}).get("quality") or {}).get("s_auc", nan)
    return out


def ablate(store: Store, p: AblationParams | None = None, force: bool = False, log=_log) -> Artifact:
    """Run the study (or skip it when built); returns the ``ablation`` artifact."""
    from wtalcli.data.feature_artifact import extract_synthetic

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
    runner = Runner(store, p.jobs, log)
    try:
        return Study(store, p, fs_art, runner, log).run(plan)
    finally:
        runner.close()


class Study:
    """The state of one ablation: baselines, targets and the DCC runs trained so far."""

    def __init__(self, store: Store, p: AblationParams, fs_art: Artifact, runner: Runner, log):
        self.store, self.p, self.fs_art, self.runner, self.log = store, p, fs_art, runner, log
        self.bases: dict[int, tuple[str, str]] = {}  # seed -> (model, tcas)
        self.targets: dict[tuple, tuple[str, str]] = {}  # (seed, denoise key) -> (pseudolabels, confidence)
        self.runs: dict[str, tuple[str, str]] = {}  # run identity -> (model, tcas)

    def _dcc(self, cfg: Config, seed: int) -> DCCParams:
        iters = self.p.iterations
        if cfg.dcc.init == "scratch":  # the same total budget as baseline + DCC from the baseline
            from wtalcli.model.config import PRESETS

            base = iters or PRESETS[self._preset()]["iterations"]
            iters = 2 * base
        return replace(
            cfg.dcc,
            iterations=iters,
            seed=seed,
            device=self.p.device,
            select_every=self.p.select_every,
            grad_every=cfg.dcc.grad_every or self.p.select_every,
        ).validate()

    def _preset(self) -> str:
        from wtalcli.model.config import PRESETS

        preset = self.fs_art.params.get("preset") if self.fs_art.params.get("source") == "synthetic" else None
        return preset if preset in PRESETS else "thumos"

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
        self.bases = self.runner.map(
            [(f"baseline seed {s}", _baseline_job, (self.fs_art.id, bp[s])) for s in p.seeds]
        )
        self.bases = {s: self.bases[f"baseline seed {s}"] for s in p.seeds}

    def _targets(self, seed: int, dn: DenoiseParams) -> tuple[str, str]:
        from stages.denoise import denoise
        from stages.pseudolabel import pseudolabel

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
                    jobs.append((job, _dcc_job, (m, pl, conf if dp.denoise else None, dp), ident))
        done = self.runner.map([j[:3] for j in jobs])
        for job, _fn, _args, ident in jobs:
            self.runs[ident] = done[job]
        return {key: self.runs[ident] for key, ident in names.items()}

    def select(self) -> tuple[Config, pd.DataFrame]:
        """Coordinate ascent over the grid on the held-out videos (mean over seeds)."""
        best = Config(self.p.dcc, self.p.denoise)
        rows = []
        for entry in self.p.grid:
            option, values = grid_option(entry)
            cands = [(f"{option}={v}", best.set(option, v)) for v in values]
            trained = self.train(cands)
            scores = {}
            for label, cfg in cands:
                vals = []
                for s in self.p.seeds:
                    m, tc = trained[(label, s)]
                    val, it = heldout_score(self.store, m, tc)
                    vals.append(val)
                    rows.append(
                        {
                            "option": option,
                            "value": str(cfg.get(option)),
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
                + ", ".join(f"{lab.split('=', 1)[1]} {100 * scores[lab]:.2f}" for lab, _ in cands)
                + f" -> {winner[1].get(option)}"
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
        spec = table_rows(p, best)
        trained = self.train([(name, cfg) for _t, name, cfg in spec if cfg is not None])
        rows = []
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
                row |= _diagnostics(self.store, m, tc)
                rows.append(row)
        res = pd.DataFrame(rows)
        markdown = ablation_markdown(res, sel, p, best)

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
                "seconds": round(time.perf_counter() - started, 1),
                "mean_average_map": {
                    f"{t}/{v}": float(g["average_map"].mean())
                    for (t, v), g in res.groupby(["table", "variant"], sort=False)
                },
            }

        return build_or_skip(self.store, plan, True, self.log, work)


def _mean_std(x) -> str:
    x = 100 * np.asarray(x, dtype=float)
    if len(x) < 2:
        return f"{x.mean():.1f}"
    return f"{x.mean():.1f} ± {x.std(ddof=1):.1f}"


TITLES = {
    "main": "DCC against the same-length control (selected configuration)",
    "scope": "Where the contrast pairs come from (with denoising)",
    "clusters": "Number of clusters K for denoising",
}
DIAG = (
    ("pl_precision", "PL prec"),
    ("pl_recall", "PL rec"),
    ("s_auc", "S AUC"),
    ("grad_ratio", "grad ratio"),
    ("grad_cos", "grad cos"),
    ("emb_action_auc", "emb act/bg AUC"),
    ("emb_intra_inter", "emb intra/inter"),
)


def ablation_markdown(res: pd.DataFrame, sel: pd.DataFrame, p: AblationParams, best: Config) -> str:
    """Mean ± sample std over seeds of test mAP (%) per tIoU and of the average; every seed; the
    diagnostics; the selection path."""
    tcols = [c for c in res.columns if c.startswith("map@")]
    seeds = sorted(res["seed"].unique())
    lines = [
        f"Test mAP (%), mean ± sample std over seeds {', '.join(map(str, seeds))}. Every arm trains on the "
        f"same {100 * (1 - p.holdout):g}% of the training videos and keeps its best iteration on the other "
        f"{100 * p.holdout:g}% (scored every {p.select_every} iterations). Selected: {best.describe()}.",
        "",
    ]
    for table in [t for t in TABLES if t in set(res["table"])]:
        sub = res[res["table"] == table]
        lines += [f"### {TITLES[table]}", ""]
        head = [
            "run",
            *[c.split("@")[1] for c in tcols],
            "avg",
            *[f"seed {s}" for s in seeds],
            "held-out",
            "iter",
        ]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, g in sub.groupby("variant", sort=False):
            g = g.sort_values("seed")
            cells = [name, *[f"{100 * g[c].mean():.1f}" for c in tcols], f"**{_mean_std(g['average_map'])}**"]
            cells += [f"{100 * v:.1f}" for v in g["average_map"]]
            cells += [_mean_std(g["heldout_map"]), f"{g['iteration'].mean():.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if table == "main":
            lines += ["Diagnostics (mean over seeds; from the runs' artifacts):", ""]
            head = ["run", *[d[1] for d in DIAG]]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for name, g in sub.groupby("variant", sort=False):
                cells = [name] + [
                    f"{g[k].mean():.3f}" if k in g and g[k].notna().any() else "-" for k, _ in DIAG
                ]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    if len(sel):
        lines += ["### Selection on the held-out training videos (coordinate ascent, in order)", ""]
        lines += ["| option | value | held-out mAP (%) | seeds |", "|---|---|---|---|"]
        for (opt, val), g in sel.groupby(["option", "value"], sort=False):
            lines.append(
                f"| {opt} | {val} | {_mean_std(g['heldout_map'])} | "
                + ", ".join(f"{100 * v:.1f}" for v in g.sort_values("seed")["heldout_map"])
                + " |"
            )
        lines.append("")
    return "\n".join(lines)
