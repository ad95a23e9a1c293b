"""Report figures (matplotlib, Agg): each function takes plain arrays and returns PNG bytes.

Figures are built with :class:`matplotlib.figure.Figure` directly (no ``pyplot``, so no global
figure state and no GUI backend); seconds are always computed by the caller with
:class:`wtalcli.data.timegrid.TimeGrid`.  PNGs carry no timestamp, so the same inputs give the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")  # before anything draws: never a GUI backend

import numpy as np  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

BACKGROUND_COLOR = "#555555"
DPI = 100
WIDTH_IN = 11.0
RUN_STYLES = ("-", "--", ":", "-.")


def class_colors(n_classes: int) -> list:
    """One distinct colour per class index (tab10, tab20, then a sampled colour map)."""
    if n_classes <= 10:
        return [colormaps["tab10"](i) for i in range(n_classes)]
    if n_classes <= 20:
        return [colormaps["tab20"](i) for i in range(n_classes)]
    cmap = colormaps["turbo"]
    return [cmap(x) for x in np.linspace(0.05, 0.95, n_classes)]


def png_bytes(fig: Figure) -> bytes:
    """Render a figure to PNG bytes (deterministic: no software/date metadata)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8)


# ---------------------------------------------------------------------------------- T-CAS


@dataclass
class Segment:
    """A labelled interval in seconds (``score`` None for ground truth)."""

    label: int
    start: float
    end: float
    score: float | None = None


@dataclass
class TcasPanel:
    """One model's T-CAS of one video: ``cas`` ``(T, k)`` for ``channels`` (class indices, the
    background as ``-1``), cell edges in seconds ``(T+1,)``, video scores and proposals."""

    title: str
    edges: np.ndarray
    cas: np.ndarray
    channels: list[int]
    channel_scores: list[float]
    proposals: list[Segment] = field(default_factory=list)
    n_proposals_total: int = 0


def tcas_figure(
    video_id: str,
    panels: Sequence[TcasPanel],
    ground_truth: Sequence[Segment],
    class_names: Sequence[str],
    max_proposals: int = 8,
) -> bytes:
    """Per model: the T-CAS lines over time with ground truth shaded, then a lane of ground-truth
    segments and one lane per top-scoring proposal."""
    colors = class_colors(len(class_names))
    lanes = [1 + min(max_proposals, len(p.proposals)) for p in panels]
    ratios: list[float] = []
    for n in lanes:
        ratios += [3.0, 0.35 * n + 0.3]
    fig = Figure(figsize=(WIDTH_IN, sum(ratios) * 0.62 + 0.6), layout="constrained")
    gs = fig.add_gridspec(len(ratios), 1, height_ratios=ratios)
    first = None
    shown_classes: set[int] = set()
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(gs[2 * i], sharex=first)
        first = first or ax
        for seg in ground_truth:
            ax.axvspan(seg.start, seg.end, color=colors[seg.label], alpha=0.13, lw=0)
        for k, (ch, sc) in enumerate(zip(panel.channels, panel.channel_scores, strict=True)):
            if ch < 0:
                color, name, ls = BACKGROUND_COLOR, "background", "--"
            else:
                color, name, ls = colors[ch], class_names[ch], "-"
                shown_classes.add(ch)
            ax.stairs(panel.cas[:, k], panel.edges, color=color, ls=ls, lw=1.4, label=f"{name} ({sc:.2f})")
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("T-CAS", fontsize=9)
        ax.set_title(panel.title, fontsize=10, loc="left")
        ax.legend(  # above the axes, right of the title: never hides the curves
            fontsize=7.5,
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            ncols=min(4, len(panel.channels)),
            frameon=False,
            borderaxespad=0.1,
        )
        ax.tick_params(labelbottom=False)
        _style(ax)

        lane = fig.add_subplot(gs[2 * i + 1], sharex=first)
        props = sorted(panel.proposals, key=lambda s: -(s.score or 0.0))[:max_proposals]
        labels = ["ground truth"]
        for seg in ground_truth:
            lane.barh(0, seg.end - seg.start, left=seg.start, height=0.7, color=colors[seg.label])
        for j, seg in enumerate(props, start=1):
            lane.barh(j, seg.end - seg.start, left=seg.start, height=0.6, color=colors[seg.label], alpha=0.85)
            labels.append(f"#{j} {seg.score:.2f}")
            shown_classes.add(seg.label)
        lane.set_yticks(range(len(labels)), labels, fontsize=7)
        lane.set_ylim(len(labels) - 0.4, -0.6)
        more = panel.n_proposals_total - len(props)
        note = (
            "no proposals"
            if panel.n_proposals_total == 0
            else f"top {len(props)} of {panel.n_proposals_total} proposals"
            if more > 0
            else f"{len(props)} proposal{'s' if len(props) > 1 else ''}"
        )
        lane.text(1.0, 1.0, note, transform=lane.transAxes, ha="right", va="bottom", fontsize=7, color="0.3")
        lane.grid(axis="x", color="0.9", lw=0.6)
        _style(lane)
        if i < len(panels) - 1:
            lane.tick_params(labelbottom=False)
    for seg in ground_truth:
        shown_classes.add(seg.label)
    if first is not None:
        lane.set_xlabel("time (s)", fontsize=9)
        edges = np.concatenate([p.edges for p in panels])
        first.set_xlim(float(edges.min()), float(edges.max()))
    fig.suptitle(f"video {video_id}", fontsize=11, x=0.01, ha="left", fontweight="bold")
    handles = [Patch(color=colors[c], label=class_names[c]) for c in sorted(shown_classes)]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(6, len(handles)), fontsize=8)
    return png_bytes(fig)


# ---------------------------------------------------------------------------------- refresh rounds


def rounds_figure(
    video_id: str,
    class_name: str,
    edges: np.ndarray,
    truth: np.ndarray,
    round_names: Sequence[str],
    labels: np.ndarray,
    confidence: np.ndarray,
) -> bytes:
    """Ground truth strip ``(T,)``, pseudo-labels ``(R, T)`` and confidence ``(R, T)`` of one class
    over time, one row per refresh round (NaN = missing, drawn blank)."""
    r = len(round_names)
    fig = Figure(figsize=(WIDTH_IN, 1.3 + 0.5 * 2 * r + 0.4), layout="constrained")
    gs = fig.add_gridspec(3, 2, height_ratios=[0.45, r, r], width_ratios=[60, 1])
    rows = np.arange(r + 1) - 0.5
    ax_gt = fig.add_subplot(gs[0, 0])
    gt_row = np.ma.masked_invalid(np.asarray(truth, dtype=float)[None, :])
    ax_gt.pcolormesh(edges, [-0.5, 0.5], gt_row, cmap="Greys", vmin=0, vmax=1.4)
    if gt_row.mask.all():
        ax_gt.text(
            0.5, 0.5, "no ground truth", transform=ax_gt.transAxes, ha="center", va="center", fontsize=8
        )
    ax_gt.set_yticks([0], ["ground truth"], fontsize=8)
    ax_gt.set_title(f"video {video_id} - class {class_name}", fontsize=10, loc="left")
    ax_pl = fig.add_subplot(gs[1, 0], sharex=ax_gt)
    ax_pl.pcolormesh(edges, rows, np.ma.masked_invalid(labels.astype(float)), cmap="Blues", vmin=0, vmax=1.25)
    ax_pl.set_yticks(range(r), [f"A: {n}" for n in round_names], fontsize=8)
    ax_cf = fig.add_subplot(gs[2, 0], sharex=ax_gt)
    masked = np.ma.masked_invalid(confidence.astype(float))
    mesh = ax_cf.pcolormesh(edges, rows, masked, cmap="viridis", vmin=0, vmax=1)
    ax_cf.set_facecolor("#f2d7d5")  # missing confidence rows show as pale red
    ax_cf.set_yticks(range(r), [f"S: {n}" for n in round_names], fontsize=8)
    ax_cf.set_xlabel("time (s)", fontsize=9)
    for ax in (ax_gt, ax_pl, ax_cf):
        ax.tick_params(labelsize=8)
    for ax in (ax_pl, ax_cf):
        ax.invert_yaxis()  # round 0 on top
    for ax in (ax_gt, ax_pl):
        ax.tick_params(labelbottom=False)
    cax = fig.add_subplot(gs[2, 1])
    fig.colorbar(mesh, cax=cax).ax.tick_params(labelsize=7)
    leg = fig.add_subplot(gs[1, 1])
    leg.axis("off")
    leg.text(0, 0.5, "dark =\naction", fontsize=7, va="center")
    return png_bytes(fig)


# ---------------------------------------------------------------------------------- embeddings


@dataclass
class EmbeddingPanel:
    """2-D projection of snippets; ``label`` per point: class index, or -1 for background."""

    title: str
    xy: np.ndarray
    label: np.ndarray
    subtitle: str = ""


def embedding_figure(panels: Sequence[EmbeddingPanel], class_names: Sequence[str]) -> bytes:
    """Side-by-side scatter plots, background grey underneath, actions coloured by class."""
    colors = class_colors(len(class_names))
    fig = Figure(figsize=(WIDTH_IN, 5.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    present: set[int] = set()
    for ax, p in zip(axes, panels, strict=True):
        bg = p.label < 0
        ax.scatter(p.xy[bg, 0], p.xy[bg, 1], s=4, c=BACKGROUND_COLOR, alpha=0.25, lw=0, rasterized=True)
        for c in np.unique(p.label[~bg]):
            sel = p.label == c
            ax.scatter(p.xy[sel, 0], p.xy[sel, 1], s=6, color=colors[int(c)], alpha=0.7, lw=0)
            present.add(int(c))
        ax.set_title(p.title + (f"\n{p.subtitle}" if p.subtitle else ""), fontsize=9.5, loc="left")
        ax.set_xlabel("PC 1", fontsize=8)
        ax.set_ylabel("PC 2", fontsize=8)
        _style(ax)
    handles = [Line2D([], [], marker="o", ls="", color=BACKGROUND_COLOR, label="background")]
    handles += [
        Line2D([], [], marker="o", ls="", color=colors[c], label=class_names[c]) for c in sorted(present)
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(7, len(handles)), fontsize=8)
    return png_bytes(fig)


# ---------------------------------------------------------------------------------- evaluation


@dataclass
class PRCurve:
    run: str
    recall: np.ndarray
    precision: np.ndarray
    ap: float
    n_pred: int


def pr_figure(
    curves: dict[str, list[PRCurve]], n_gt: dict[str, int], tiou: float, runs: Sequence[str]
) -> bytes:
    """One small panel per class: precision against recall of every run at one tIoU."""
    names = list(curves)
    ncols = min(4, max(1, len(names)))
    nrows = -(-len(names) // ncols)
    fig = Figure(figsize=(WIDTH_IN, 2.6 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    run_color = {r: colormaps["tab10"](i) for i, r in enumerate(runs)}
    run_ls = {r: RUN_STYLES[i % len(RUN_STYLES)] for i, r in enumerate(runs)}
    for ax, name in zip(axes.flat, names, strict=False):
        for cv in curves[name]:
            if len(cv.recall):
                r = np.concatenate([[0.0], cv.recall])
                p = np.concatenate([[cv.precision[0]], cv.precision])
                ax.step(
                    r,
                    p,
                    where="pre",
                    color=run_color[cv.run],
                    ls=run_ls[cv.run],
                    lw=1.4,
                    label=f"{cv.run}: AP {100 * cv.ap:.1f}",
                )
            else:
                ax.plot([], [], color=run_color[cv.run], ls=run_ls[cv.run], label=f"{cv.run}: no predictions")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{name} ({n_gt.get(name, 0)} instances)", fontsize=9, loc="left")
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(color="0.92", lw=0.6)
        _style(ax)
    for ax in axes[-1]:
        ax.set_xlabel("recall", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("precision", fontsize=8)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(f"precision-recall at tIoU {tiou:g}", fontsize=10, x=0.01, ha="left")
    return png_bytes(fig)


def map_tiou_figure(runs: Sequence[tuple[str, Sequence[float], Sequence[float]]]) -> bytes:
    """mAP (%) against the tIoU threshold, one line per run (name, thresholds, mAPs)."""
    fig = Figure(figsize=(WIDTH_IN * 0.6, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for i, (name, thr, maps) in enumerate(runs):
        m = 100 * np.asarray(maps, dtype=float)
        ax.plot(
            thr,
            m,
            marker="o",
            ms=4,
            color=colormaps["tab10"](i),
            ls=RUN_STYLES[i % len(RUN_STYLES)],
            label=f"{name} (avg {m.mean():.1f})",
        )
    ax.set_xlabel("tIoU threshold", fontsize=9)
    ax.set_ylabel("mAP (%)", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.grid(color="0.92", lw=0.6)
    ax.legend(fontsize=8)
    _style(ax)
    return png_bytes(fig)


# ---------------------------------------------------------------------------------- training


def loss_figure(
    runs: Sequence[tuple[str, dict[str, np.ndarray], np.ndarray]],
    terms: Sequence[str],
    marks: Sequence[float] = (),
) -> bytes:
    """One panel per loss term; each run is ``(name, {term: values}, steps)``.  Long logs are
    drawn raw (faint) plus a moving average; ``marks`` are iterations drawn as dotted lines."""
    ncols = min(4, max(1, len(terms)))
    nrows = -(-len(terms) // ncols)
    fig = Figure(figsize=(WIDTH_IN, 2.4 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, term in zip(axes.flat, terms, strict=False):
        for i, (name, values, steps) in enumerate(runs):
            if term not in values:
                continue
            y = np.asarray(values[term], dtype=float)
            color = colormaps["tab10"](i)
            win = max(1, len(y) // 25)
            if win > 1:
                ax.plot(steps, y, color=color, alpha=0.25, lw=0.8)
                kernel = np.ones(win) / win
                smooth = np.convolve(y, kernel, mode="valid")
                ax.plot(steps[win - 1 :], smooth, color=color, lw=1.5, label=name)
            else:
                ax.plot(steps, y, color=color, lw=1.4, label=name)
        for x in marks:
            ax.axvline(x, color="0.5", ls=":", lw=1)
        ax.set_title(term, fontsize=9, loc="left")
        ax.grid(color="0.92", lw=0.6)
        _style(ax)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("iteration", fontsize=8)
    for ax in list(axes.flat)[len(terms) :]:
        ax.axis("off")
    return png_bytes(fig)


# ---------------------------------------------------------------------------------- ablation


def ablation_figure(results, tables: Sequence[str]) -> bytes:
    """One panel per ablation table: average mAP (%) per run, mean ± sample std as a bar with an
    error bar, each seed as a dot.  ``results``: a frame with table, variant, seed, average_map."""
    fig = Figure(figsize=(WIDTH_IN, 3.4), layout="constrained")
    axes = fig.subplots(1, len(tables), squeeze=False)[0]
    for ax, table in zip(axes, tables, strict=True):
        sub = results[results["table"] == table]
        names = list(dict.fromkeys(sub["variant"]))
        for i, name in enumerate(names):
            y = 100 * sub.loc[sub["variant"] == name, "average_map"].to_numpy(float)
            sd = y.std(ddof=1) if len(y) > 1 else 0.0
            ax.bar(i, y.mean(), yerr=sd, color=colormaps["tab10"](i), alpha=0.55, capsize=3, width=0.7)
            ax.plot(np.full(len(y), i) + np.linspace(-0.15, 0.15, len(y)), y, "o", ms=3, color="0.15")
        ax.set_xticks(range(len(names)), [n.replace(" ", "\n", 2) for n in names], fontsize=7)
        lo = 100 * sub["average_map"].min()
        ax.set_ylim(bottom=max(0.0, lo - 3))
        ax.set_title(table, fontsize=9, loc="left")
        ax.set_ylabel("avg mAP (%)", fontsize=8)
        ax.grid(axis="y", color="0.92", lw=0.6)
        _style(ax)
    return png_bytes(fig)
