"""The DCC study's tables (``table.md`` of an ``ablation`` artifact): test mAP, mean ± sample std
over seeds and every seed, the diagnostics of the main table, and the selection path."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from wtalcli.dcc.ablation import TABLES, Config


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
    ("pl_recall_core", "PL rec, cores"),
    ("pl_recall_noncore", "PL rec, non-core"),
    ("pl_background_labelled", "PL on bg"),
    ("s_auc", "S AUC"),
    ("grad_ratio", "grad ratio"),
    ("dcc_start_ratio", "L_dcc / uniform, start"),
    ("dcc_end_ratio", "L_dcc / uniform, end"),
)
# the per-class separation columns (run_diagnostics), ``{kind}`` the headline kind of positives
SEPARATION = (
    ("tcas_{kind}_auc", "T-CAS"),
    ("emb_class_{kind}_auc", "embedding (class centroid)"),
    ("probe_h_{kind}_auc", "probe on h"),
    ("probe_input_{kind}_auc", "probe on input"),
    ("tcas_core_auc", "T-CAS, cores"),
    ("emb_action_auc", "pooled centroid AUC (legacy)"),
    ("emb_intra_inter", "emb intra/inter"),
)


def _diagnostics_table(sub: pd.DataFrame, columns) -> list[str]:
    head = ["run", *[d[1] for d in columns]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, g in sub.groupby("variant", sort=False):
        cells = [name] + [f"{g[k].mean():.3f}" if k in g and g[k].notna().any() else "-" for k, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def describe_numerics(num: dict) -> str:
    """One line for a model's ``summary.numerics`` (what fixed its numbers besides the seed)."""
    if num.get("device") == "cuda":
        return f"torch {num.get('torch')}, GPU {num.get('gpu')}"
    caps = ", ".join(f"{k}={v}" for k, v in num.get("isa_caps", {}).items())
    threads = num.get("threads")
    return (
        f"torch {num.get('torch')}, CPU kernels {num.get('cpu_capability')}"
        + (f" (capped by {caps})" if caps else "")
        + f", {threads} thread{'s' if threads != 1 else ''}"
    )


def ablation_markdown(
    res: pd.DataFrame,
    sel: pd.DataFrame,
    holdout: float,
    select_every: int,
    best: Config,
    machines: Sequence[dict] = (),
) -> str:
    """Mean ± sample std over seeds of test mAP (%) per tIoU and of the average; every seed; the
    diagnostics; the selection path. ``machines``: the distinct ``summary.numerics`` of the runs'
    models (several when the runs come from different machines or thread counts)."""
    tcols = [c for c in res.columns if c.startswith("map@")]
    seeds = sorted(res["seed"].unique())
    keeps = (
        f"keeps its best iteration on the other {100 * holdout:g}% (scored every {select_every} iterations)"
        if select_every
        else f"keeps its last iteration (the other {100 * holdout:g}% score the selection)"
    )
    lines = [
        f"Test mAP (%), mean ± sample std over seeds {', '.join(map(str, seeds))}. Every arm trains on the "
        f"same {100 * (1 - holdout):g}% of the training videos and {keeps}. Selected: {best.describe()}.",
        "",
    ]
    if len(machines) == 1:
        lines += [f"Trained with {describe_numerics(machines[0])}.", ""]
    elif machines:
        lines += [
            "Trained with several setups, whose numbers differ for one seed: "
            + "; ".join(describe_numerics(m) for m in machines)
            + ".",
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
            lines += [
                "Diagnostics (mean over seeds; from the runs' artifacts). L_dcc / uniform: the contrast "
                "loss over the first / last 50 steps where it was computed, over its value with every "
                "logit equal (1: no better than chance):",
                "",
                *_diagnostics_table(sub, DIAG),
            ]
            noncore = "tcas_noncore_auc" in sub and sub["tcas_noncore_auc"].notna().any()
            kind = "noncore" if noncore else "action"
            what = (
                "non-core action snippets (outside the instance's discriminative core)"
                if noncore
                else "action"
            )
            lines += [
                f"Per-class separation on the test videos: AUC of the class's {what} against the same "
                "video's background, mean over (video, labelled class) pairs, then over seeds; the probes "
                "are fitted on one half of the videos and scored on the other. The last two columns are "
                "the former embedding figures (one centroid pooled over all classes; no conclusion rests "
                "on it):",
                "",
                *_diagnostics_table(sub, [(k.format(kind=kind), label) for k, label in SEPARATION]),
            ]
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
