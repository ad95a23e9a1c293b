"""The DCC study's configurations (``wtal ablate``, ``docs/ablation.md``): the options its
selection grid may move (``--grid``), one configuration (DCC and denoise parameters), and the rows of
its tables. The stage (:mod:`stages.ablate`) trains and scores them.

The tables, on the test videos, with the configuration selected on held-out training videos:

- ``main``: the baseline; the same-length control (``train-dcc`` from the same baseline with
  beta = 0: the same batches, the same length budget, no contrast); DCC without denoising (S = 1);
  DCC; DCC on oracle targets (the training videos' ground-truth snippets, S = 1: a diagnostic bound
  on what the contrast itself can do, never a method).
- ``scope``: contrast pairs from a single video, from the mini-batch, from the memory bank.
- ``clusters``: DCC with K clusters for denoising (and its refresh rounds).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from wtalcli.core.errors import InputError
from wtalcli.core.params import check_choices, device_param, like, number_list, param, preset_default
from wtalcli.data.synthetic import PRESETS as SYNTHETIC
from wtalcli.dcc.params import DenoiseParams
from wtalcli.dcc.train_params import DCCParams, control_of
from wtalcli.model.config import HOLDOUT, BaselineParams, TrainConfig

TABLES = ("main", "scope", "clusters")
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
    """``"pooling=mean,weighted;tau=0.1,0.2"`` (or a sequence of such entries) -> entries; an entry
    ``"pooling=mean,weighted x beta-end=1,10,100"`` is one step over every combination."""
    items = value if isinstance(value, tuple | list) else str(value).split(";")
    out = tuple(i.strip() for i in items if str(i).strip())
    for entry in out:
        grid_candidates(entry)
    return out


def grid_candidates(entry: str) -> tuple[str, list[tuple[str, dict]]]:
    """One step of the selection: its name and its candidates ``(label, {option: value})``; options
    joined by `` x `` are varied together (every combination, in order)."""
    parts = [grid_option(part) for part in entry.split(" x ")]
    names = [name for name, _ in parts]
    if len(set(names)) < len(names):
        raise InputError(f"bad grid entry {entry!r}: an option appears twice", "name each option once")
    cands = []
    for combo in itertools.product(*(values for _, values in parts)):
        setting = dict(zip(names, combo, strict=True))
        cands.append((", ".join(f"{o}={v}" for o, v in setting.items()), setting))
    return " x ".join(names), cands


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

    def with_(self, setting: dict) -> Config:
        """This configuration with every ``{option: value}`` of ``setting`` set."""
        cfg = self
        for option, value in setting.items():
            cfg = cfg.set(option, value)
        return cfg

    def get(self, option: str):
        which, field = GRID_KEYS[option]
        return getattr(self.dcc if which == "dcc" else self.denoise, field)

    def describe(self) -> str:
        return ", ".join(f"{o}={self.get(o)}" for o in GRID_KEYS)


def table_rows(
    tables: tuple[str, ...], clusters: tuple[int, ...], best: Config
) -> list[tuple[str, str, Config]]:
    """(table, row name, configuration) of the final tables; the baseline row has no configuration."""
    rows: list[tuple[str, str, Config]] = []
    if "main" in tables:
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
    if "scope" in tables:
        rows += [
            ("scope", "contrast within one video", Config(replace(best.dcc, scope="video"), best.denoise)),
            (
                "scope",
                "contrast within the mini-batch",
                Config(replace(best.dcc, scope="batch"), best.denoise),
            ),
            ("scope", "contrast with the memory bank", Config(replace(best.dcc, scope="bank"), best.denoise)),
        ]
    if "clusters" in tables:
        rows += [
            ("clusters", f"K = {k}", Config(best.dcc, replace(best.denoise, clusters=k))) for k in clusters
        ]
    return rows


@dataclass
class AblationParams:
    preset: str = param("small", "Synthetic preset (when --features is not given).", choices=tuple(SYNTHETIC))
    features: str | None = param(None, "Use this feature set instead of the synthetic one.")
    data_seed: int = param(0, "Seed of the synthetic dataset (kept apart so seeds compare on the same data).")
    seeds: tuple[int, ...] = param((0, 1, 2), "Training seeds, comma-separated.", parse=number_list(int))
    holdout: float = like(
        BaselineParams,
        "holdout",
        HOLDOUT,
        help="Share of training videos held out as subset 'val', the same for every arm, on which every "
        "arm's training length and DCC's options are chosen (in (0, 1)).",
    )
    select_every: int = like(BaselineParams, "select_every", 50)
    select: bool = param(True, "Choose DCC's options on the held-out videos (--grid).")
    grid: tuple[str, ...] = param(
        DEFAULT_GRID,
        "Coordinate ascent, in order: option=values entries separated by ';', options joined by ' x ' "
        "varied together (e.g. 'pooling=mean,weighted x beta-end=1,10,100;branch=base,suppression,both'; "
        "options: " + ", ".join(GRID_KEYS) + ").",
        parse=parse_grid,
        show=lambda v: ";".join(v),
    )
    tables: tuple[str, ...] = param(TABLES, f"Which tables, comma-separated: {', '.join(TABLES)}.")
    clusters: tuple[int, ...] = param(
        (16, 64, 256), "The K sweep, comma-separated.", flag="--clusters", parse=number_list(int)
    )
    iterations: int | None = preset_default(TrainConfig, "iterations")  # of baseline and DCC
    dcc: DCCParams = param(cli=False, factory=DCCParams)  # the starting point of the selection
    denoise: DenoiseParams = param(cli=False, factory=DenoiseParams)
    jobs: int = param(1, "Trainings run at once (worker processes).", key=False)
    device: str = device_param()

    def validate(self) -> AblationParams:
        bad = [t for t in self.tables if t not in TABLES]
        if bad:
            raise InputError(f"unknown table {bad[0]!r}", f"use some of {', '.join(TABLES)}")
        if not self.seeds:
            raise InputError("no seeds given", "e.g. --seeds 0,1,2")
        if not 0 < self.holdout < 1:
            raise InputError(f"--holdout {self.holdout} must be in (0, 1)", "e.g. --holdout 0.2")
        if self.select_every < 0:
            raise InputError(f"--select-every {self.select_every} must be >= 0", "e.g. --select-every 50")
        if any(k < 1 for k in self.clusters):
            raise InputError("--clusters values must be >= 1", "e.g. --clusters 16,64,256")
        if self.jobs < 1:
            raise InputError(f"--jobs {self.jobs} must be >= 1", "e.g. --jobs 2")
        start = Config(self.dcc, self.denoise)
        for entry in self.grid:  # every candidate checked now, not when its step is reached
            for _label, setting in grid_candidates(entry)[1]:
                cfg = start.with_(setting)
                cfg.dcc.validate()
                check_choices(cfg.denoise)
        self.dcc.validate()
        return self
