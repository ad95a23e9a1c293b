"""``wtal report``: one self-contained HTML page (PNG figures as data URIs) of every stage.

Artifacts used: the feature set of the newest (non-refresh-round) T-CAS, then the newest T-CAS of
each stage on that feature set (``baseline`` and ``train-dcc``), the models in their lineage, the
newest proposals and evaluation of each T-CAS, and the pseudo-label / confidence rounds of the DCC
run (round 0 = the artifacts it was trained from, round N = the ones tagged ``round N``).  A
section whose artifacts are missing shows a note instead of figures; the page always renders.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from wtalcli.core import rounds as refresh_rounds
from wtalcli.core.console import log as _log
from wtalcli.core.errors import InputError, WtalError
from wtalcli.core.files import atomic_write_bytes
from wtalcli.core.store import Artifact, Store, code_version
from wtalcli.data.schema import TCAS, FeatureSet, SnippetTable, load_npy, read_classes, read_parquet

ROLES = {"baseline": "baseline", "dcc": "DCC"}  # role -> display name
STAGE_OF = {"baseline": "baseline", "dcc": "train-dcc"}
N_ROUND_VIDEOS = 3  # training videos in the refresh-round heatmaps
MAX_EMBED_POINTS = 3000  # snippets per embedding plot (half action, half background when possible)
PR_TIOU = 0.5
LOSS_ORDER = ("total", "base", "supp", "norm", "dcc", "beta", "anchors")


# ---------------------------------------------------------------------------------- selection


@dataclass
class Round:
    number: int
    pseudolabels: Artifact
    confidence: Artifact | None


@dataclass
class Selection:
    """The artifacts the report draws from (``None`` / absent keys where the workdir lacks them)."""

    features: Artifact | None = None
    tcas: dict[str, Artifact] = field(default_factory=dict)
    models: dict[str, Artifact] = field(default_factory=dict)
    proposals: dict[str, Artifact] = field(default_factory=dict)
    evaluations: dict[str, Artifact] = field(default_factory=dict)
    rounds: list[Round] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def used(self) -> list[tuple[str, Artifact]]:
        rows: list[tuple[str, Artifact]] = []
        if self.features is not None:
            rows.append(("feature set", self.features))
        for role, name in ROLES.items():
            for what, table in (
                ("model", self.models),
                ("T-CAS", self.tcas),
                ("proposals", self.proposals),
                ("evaluation", self.evaluations),
            ):
                if role in table:
                    rows.append((f"{name} {what}", table[role]))
        for r in self.rounds:
            rows.append((f"pseudo-labels round {r.number}", r.pseudolabels))
            if r.confidence is not None:
                rows.append((f"confidence round {r.number}", r.confidence))
        return rows


def _by_id(store: Store, art_id: str | None) -> Artifact | None:
    if not art_id or not (store.root / art_id).is_dir():
        return None
    try:
        return store.get(store.root / art_id)
    except WtalError:
        return None


def _input_id(art: Artifact, role: str) -> str | None:
    return art.manifest.get("inputs", {}).get(role, {}).get("id")


def _newest(arts: list[Artifact], pred: Callable[[Artifact], bool]) -> Artifact | None:
    found = [a for a in arts if pred(a)]
    return found[-1] if found else None


def select_artifacts(store: Store) -> Selection:
    """Pick the artifacts of the report (see the module docstring for the rules)."""
    sel = Selection()
    stages = set(STAGE_OF.values())
    tcas = [a for a in store.artifacts("tcas") if a.stage in stages and not a.tag]
    if tcas:  # the feature set of the newest T-CAS, even if it is gone (then without ground truth)
        fs_id = tcas[-1].lineage.get("features")
        sel.features = _by_id(store, fs_id)
        if sel.features is None:
            sel.notes.append(f"the feature set {fs_id} of {tcas[-1].id} is gone")
    else:
        sel.features = _newest(store.artifacts("features"), lambda a: True)
        fs_id = sel.features.id if sel.features is not None else None

    def same_fs(a: Artifact) -> bool:
        return fs_id is None or a.lineage.get("features") == fs_id

    proposals, evaluations = store.artifacts("proposals"), store.artifacts("evaluation")
    for role, stage in STAGE_OF.items():
        t = _newest(tcas, lambda a, s=stage: a.stage == s and same_fs(a))
        if t is None:
            continue
        sel.tcas[role] = t
        model = _by_id(store, t.lineage.get("model"))
        if model is not None:
            sel.models[role] = model
        mine = [p for p in proposals if _input_id(p, "tcas") == t.id]
        prop = _newest(mine, lambda a: a.params.get("subset") in ("test", "all"))
        if prop is not None:
            sel.proposals[role] = prop
        ids = {p.id for p in mine}
        ev = _newest(evaluations, lambda a, ids=ids: _input_id(a, "proposals") in ids)
        if ev is not None:
            sel.evaluations[role] = ev
    for role, stage in STAGE_OF.items():  # a model whose T-CAS is gone still has embeddings and a log
        if role not in sel.tcas:
            m = _newest(store.artifacts("model"), lambda a, s=stage: a.stage == s and same_fs(a))
            if m is not None:
                sel.models[role] = m
    sel.rounds = _rounds(store, sel)
    base, dcc = sel.models.get("baseline"), sel.models.get("dcc")
    if base is not None and dcc is not None and _input_id(dcc, "base_model") not in (None, base.id):
        sel.notes.append(
            f"the DCC model {dcc.id} started from {_input_id(dcc, 'base_model')}, not from the newest "
            f"baseline {base.id} shown here"
        )
    return sel


def _rounds(store: Store, sel: Selection) -> list[Round]:
    """Round 0 (the pseudo-labels and confidence DCC trained from, or the newest untagged ones of
    the baseline model), then each refresh round of the DCC run, in order."""
    pls, confs = store.artifacts("pseudolabels"), store.artifacts("confidence")

    def conf_of(pl: Artifact) -> Artifact | None:
        return _newest(confs, lambda a: _input_id(a, "pseudolabels") == pl.id)

    rounds: list[Round] = []
    dcc = sel.models.get("dcc")
    if dcc is not None:
        pl0 = _by_id(store, _input_id(dcc, "pseudolabels"))
        if pl0 is not None:
            rounds.append(Round(0, pl0, _by_id(store, _input_id(dcc, "confidence"))))
        rounds += [
            Round(n, pl, conf_of(pl)) for n, pl in refresh_rounds.of_run(store, "pseudolabels", dcc.id)
        ]
    elif "baseline" in sel.models:
        base = sel.models["baseline"]
        pl0 = _newest(pls, lambda a: not a.tag and a.lineage.get("model") == base.id)
        if pl0 is not None:
            rounds.append(Round(0, pl0, conf_of(pl0)))
    return rounds


def choose(candidates: list[str], preferred: set[str], n: int, seed: int) -> list[str]:
    """``n`` of ``candidates`` chosen by a seeded draw, those in ``preferred`` first; returned in
    candidate order."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x2E9]))
    first = [c for c in candidates if c in preferred]
    rest = [c for c in candidates if c not in preferred]
    picked: list[str] = []
    for pool in (first, rest):
        k = min(n - len(picked), len(pool))
        if k > 0:
            picked += [pool[i] for i in rng.choice(len(pool), k, replace=False)]
    order = {c: i for i, c in enumerate(candidates)}
    return sorted(picked, key=order.__getitem__)


# ---------------------------------------------------------------------------------- PR curves


def evaluation_curves(store: Store, ev: Artifact):
    """Rerun an evaluation artifact's scoring for its PR curves: the same inputs
    (:func:`wtalcli.evaluation.inputs.evaluation_inputs`) through
    :func:`wtalcli.evaluation.detection.precision_recall`.  Returns ``(EvalResult, index of the
    threshold nearest PR_TIOU, {class: ClassPR})``; the AP and mAP equal ``result.json``'s exactly."""
    from wtalcli.evaluation.detection import precision_recall
    from wtalcli.evaluation.inputs import evaluation_inputs

    ins = evaluation_inputs(store, ev)
    return precision_recall(ins.truth, ins.predictions, ins.thresholds, PR_TIOU, **ins.params.options())


# ---------------------------------------------------------------------------------- sections


@dataclass
class ReportFigure:
    png: bytes
    caption: str
    alt: str


@dataclass
class Section:
    anchor: str
    title: str
    intro: str = ""
    figures: list[ReportFigure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # HTML tables, escaped when built
    seconds: float = 0.0


class Context:
    """What every section reads: the selection, the feature set (None if missing or damaged, with
    a note), and the T-CAS artifacts, opened once."""

    def __init__(self, store: Store, sel: Selection, n_videos: int, seed: int):
        self.store, self.sel, self.n_videos, self.seed = store, sel, n_videos, seed
        self.fs: FeatureSet | None = None
        if sel.features is None:
            sel.notes.append("No feature set: ground truth is not shown (run `wtal extract`).")
        else:
            try:
                self.fs = FeatureSet(sel.features.path)
            except WtalError as exc:
                sel.notes.append(
                    f"The feature set cannot be read, ground truth is not shown: {exc.one_line()}"
                )
        self._tcas: dict[str, TCAS] = {}

    def tcas(self, role: str) -> TCAS:
        if role not in self._tcas:
            self._tcas[role] = TCAS(self.sel.tcas[role].path)
        return self._tcas[role]

    def annotated(self) -> set[str]:
        return set(self.fs.annotations["video_id"].astype(str)) if self.fs is not None else set()

    def gt_segments(self, video: str, classes: list[str]):
        from wtalcli.report.plots import Segment

        if self.fs is None:
            return []
        index = {c: i for i, c in enumerate(classes)}
        ann = self.fs.annotations[self.fs.annotations["video_id"] == video]
        return [
            Segment(index[lab], float(s), float(e))
            for lab, s, e in zip(ann["label"], ann["start_s"], ann["end_s"], strict=True)
            if lab in index
        ]


def _code(art: Artifact) -> str:
    return f"<code>{html.escape(art.id)}</code>"


def section_tcas(ctx: Context) -> Section:
    from wtalcli.evaluation.localization import LocalizeParams, localize_all, minmax_norm
    from wtalcli.report.plots import Segment, TcasPanel, tcas_figure

    sec = Section(
        *SECTION_TITLES["section_tcas"],
        "The suppression-branch class activation sequence (T-CAS) of each model on a few test videos, "
        "each channel min-max normalised over the video as localization sees it (BaS-Net's min-max with "
        "relu'd minimum and maximum; negative activations drawn at 0, below every activation threshold), "
        "on a seconds axis where each snippet's value is drawn over its own time cell. Solid lines: the "
        "video's labelled classes (legend: their video-level scores); dashed: the background; shaded "
        "spans: ground-truth segments. Under each T-CAS: a ground-truth lane, then one lane per "
        "proposal, best score first.",
    )
    roles = [r for r in ROLES if r in ctx.sel.tcas]
    if not roles:
        sec.notes.append("No T-CAS artifact in the workdir: run `wtal baseline` (and `wtal train-dcc`).")
        return sec
    if "dcc" not in roles:
        sec.notes.append("No DCC T-CAS (stage train-dcc): only the baseline is shown. Run `wtal train-dcc`.")
    for role in list(roles):  # a damaged T-CAS drops its model from the figures, not the section
        try:
            ctx.tcas(role)
        except WtalError as exc:
            sec.notes.append(f"{ROLES[role]} T-CAS not shown: {exc.one_line()}")
            roles.remove(role)
    if not roles:
        return sec
    if ctx.n_videos == 0:
        sec.notes.append("--videos 0: no videos plotted.")
        return sec
    ref = ctx.tcas(roles[0])
    test_ids = [str(v) for v in ref.videos["video_id"].to_numpy()[ref.rows_of("test")]]
    if not test_ids:
        sec.notes.append(f"The T-CAS {ctx.sel.tcas[roles[0]].id} has no test videos.")
        return sec
    videos = choose(test_ids, ctx.annotated(), ctx.n_videos, ctx.seed)
    if not set(videos) & ctx.annotated():
        sec.notes.append("None of the plotted test videos has ground-truth segments in the feature set.")
    proposals: dict[str, pd.DataFrame | None] = {}
    for role in roles:
        art = ctx.sel.proposals.get(role)
        proposals[role] = None
        why = f"no proposals artifact of {ctx.sel.tcas[role].id}"
        if art is not None:
            try:
                proposals[role] = read_parquet(art.path / "proposals.parquet", "proposals table")
            except WtalError as exc:
                why = exc.one_line()
        if proposals[role] is None:
            sec.notes.append(
                f"{ROLES[role]} proposals computed here with the default localization parameters ({why})."
            )
    classes = ref.classes
    index = {c: i for i, c in enumerate(classes)}
    for vid in videos:
        panels = []
        for role in roles:
            t = ctx.tcas(role)
            if vid not in set(t.videos["video_id"]):
                continue
            r = t.row(vid)
            cas = np.asarray(t.cas_of(vid), dtype=np.float64)
            grid = t.grid(vid)
            edges = grid.index_to_seconds(np.arange(cas.shape[0] + 1))
            labelled = sorted(index[c] for c in t.videos.at[r, "labels"] if c in index)
            chans = labelled + [len(classes)]
            if proposals[role] is not None:
                df = proposals[role]
                df = df[df["video_id"] == vid]
                segs = [
                    Segment(index[lab], float(s), float(e), float(sc))
                    for lab, s, e, sc in zip(
                        df["label"], df["start_s"], df["end_s"], df["score"], strict=True
                    )
                    if lab in index
                ]
            else:
                det = localize_all([cas], [t.scores[r]], [grid], LocalizeParams())
                segs = [
                    Segment(int(c), float(s), float(e), float(sc))
                    for c, s, e, sc in zip(det.label, det.t_start, det.t_end, det.score, strict=True)
                ]
            panels.append(
                TcasPanel(
                    title=f"{ROLES[role]} ({ctx.sel.tcas[role].id})",
                    edges=edges,
                    cas=np.clip(minmax_norm(cas[:, chans]), 0.0, 1.0),
                    channels=labelled + [-1],
                    channel_scores=[float(t.scores[r, c]) for c in chans],
                    proposals=segs,
                    n_proposals_total=len(segs),
                )
            )
        if not panels:
            continue
        labels = ", ".join(ref.videos.at[ref.row(vid), "labels"]) or "none"
        sec.figures.append(
            ReportFigure(
                tcas_figure(vid, panels, ctx.gt_segments(vid, classes), classes),
                f"Test video <code>{html.escape(vid)}</code> (labels: {html.escape(labels)}): T-CAS of "
                "each model (top), ground truth and its top proposals (lanes below, score on the left). "
                "Good: the class lines rise and the dashed background falls inside the shaded spans, "
                "and the best proposals line up with the ground-truth lane.",
                f"T-CAS of {vid}",
            )
        )
    return sec


def section_rounds(ctx: Context) -> Section:
    from wtalcli.evaluation.diagnostics import snippet_truth
    from wtalcli.report.plots import rounds_figure

    sec = Section(
        *SECTION_TITLES["section_rounds"],
        "What DCC trains on, for a few training videos and one labelled class each: a ground-truth strip "
        "(dark = inside an instance; never used in training), the pseudo-labels A (the thresholded "
        "T-CAS; dark = action), and the confidence S: the share of the snippet's k-means cluster that "
        "agrees with its pseudo-label, for action and non-action labels alike (yellow = the cluster "
        "agrees; dark = the label is likely noise and is down-weighted in the DCC loss). One row per "
        "refresh round: round 0 is what DCC started from, round N was recomputed from the model "
        "during training.",
    )
    rounds = ctx.sel.rounds
    if not rounds:
        sec.notes.append(
            "No pseudo-label artifacts of the models shown: run `wtal pseudolabel` and `wtal denoise` "
            "(refresh rounds come from `wtal train-dcc`)."
        )
        return sec
    if len(rounds) == 1:
        sec.notes.append("Only round 0 exists (no refresh round of a DCC run in the workdir).")
    missing = [r.number for r in rounds if r.confidence is None]
    if missing:
        sec.notes.append(f"No confidence map for round(s) {missing}: those rows are left blank (pale red).")
    tables, labels, confs = [], [], []
    for r in rounds:
        videos = read_parquet(r.pseudolabels.path / "videos.parquet", "pseudo-label videos table")
        videos["labels"] = [list(x) for x in videos["labels"]]
        tables.append(SnippetTable(videos))
        labels.append(load_npy(r.pseudolabels.path / "labels.npy", "pseudo-labels"))
        confs.append(
            load_npy(r.confidence.path / "confidence.npy", "confidence map")
            if r.confidence is not None
            else None
        )
    classes = read_classes(rounds[0].pseudolabels.path / "classes.json")
    base = tables[0]
    ids = [str(v) for v in base.videos["video_id"]]
    chosen = choose(ids, ctx.annotated(), N_ROUND_VIDEOS, ctx.seed + 1)
    truth = (
        snippet_truth(base, ctx.fs.annotations, classes).astype(np.float64)
        if ctx.fs is not None
        else np.full((len(labels[0]), len(classes)), np.nan)  # no ground truth: a blank strip
    )
    for vid in chosen:
        r0 = base.row(vid)
        vlabels = sorted(base.videos.at[r0, "labels"])
        if not vlabels:
            continue
        c = classes.index(vlabels[0])
        span = base.span(vid)
        n = span.stop - span.start
        a_rows, s_rows = np.full((len(rounds), n), np.nan), np.full((len(rounds), n), np.nan)
        for k, (tab, lab, conf) in enumerate(zip(tables, labels, confs, strict=True)):
            if vid not in set(tab.videos["video_id"]) or tab.span(vid).stop - tab.span(vid).start != n:
                continue
            sp = tab.span(vid)
            a_rows[k] = np.asarray(lab[sp, c], dtype=np.float64)
            if conf is not None:
                s_rows[k] = np.asarray(conf[sp, c], dtype=np.float64)
        edges = base.grid(vid).index_to_seconds(np.arange(n + 1))
        sec.figures.append(
            ReportFigure(
                rounds_figure(
                    vid,
                    classes[c],
                    edges,
                    truth[span, c],
                    [f"round {r.number}" for r in rounds],
                    a_rows,
                    s_rows,
                ),
                f"Training video <code>{html.escape(vid)}</code>, class {html.escape(classes[c])}: "
                "ground truth (top), pseudo-labels A (middle) and confidence S (bottom), one row per "
                "round. Good: A covers the ground truth, S is high where A is right and low where it is "
                "wrong, and the rows change as the model improves.",
                f"pseudo-labels and confidence of {vid}",
            )
        )
    return sec


def _balanced_sample(label: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Up to ``limit`` indices, half action and half background when both have enough (seeded)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE3B]))
    act, bg = np.flatnonzero(label >= 0), np.flatnonzero(label < 0)
    n_act = min(len(act), max(limit // 2, limit - len(bg)))
    n_bg = min(len(bg), limit - n_act)
    pick = np.concatenate([rng.choice(act, n_act, replace=False), rng.choice(bg, n_bg, replace=False)])
    return np.sort(pick)


def _pca2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projection on the first two principal components and their explained-variance shares
    (eigenvectors of the D x D covariance: far cheaper than an SVD of the N x D points)."""
    xc = x - x.mean(0, keepdims=True)
    val, vec = np.linalg.eigh(xc.T @ xc)  # ascending
    val, vec = val[::-1][:2].clip(min=0), vec[:, ::-1][:, :2]
    lead = vec[np.abs(vec).argmax(0), np.arange(vec.shape[1])]
    vec = vec * np.where(lead < 0, -1.0, 1.0)  # fixed signs: each axis' largest loading positive
    xy = xc @ vec
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    return xy, val / max(float(np.trace(xc.T @ xc)), 1e-12)


def separation(x: np.ndarray, is_action: np.ndarray) -> float:
    """Distance between the action and background centroids over the RMS distance of points to
    their own group's centroid (higher = better separated)."""
    a, b = x[is_action], x[~is_action]
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    ma, mb = a.mean(0), b.mean(0)
    within = np.concatenate([((a - ma) ** 2).sum(1), ((b - mb) ** 2).sum(1)])
    return float(np.linalg.norm(ma - mb) / max(np.sqrt(within.mean()), 1e-12))


def section_embeddings(ctx: Context) -> Section:
    from wtalcli.evaluation.diagnostics import snippet_truth
    from wtalcli.report.plots import EmbeddingPanel, embedding_figure

    sec = Section(
        *SECTION_TITLES["section_embeddings"],
        "The base-branch embeddings h of the training snippets, which DCC contrasts and k-means clusters.",
    )
    roles = [r for r in ROLES if r in ctx.sel.models]
    if not roles:
        sec.notes.append("No model artifact: run `wtal baseline`.")
        return sec
    if ctx.fs is None or len(ctx.fs.annotations) == 0:
        sec.notes.append(
            "The feature set has no ground truth, so snippets cannot be split into action and background."
        )
        return sec
    if "dcc" not in roles:
        sec.notes.append("No DCC model: only the baseline is shown.")
    panels = []
    shared: dict[tuple, np.ndarray] = {}
    for role in roles:
        art = ctx.sel.models[role]
        emb = load_npy(art.path / "embeddings.npy", "embeddings")
        videos = read_parquet(art.path / "videos.parquet", "embedding videos table")
        table = SnippetTable(videos)
        truth = snippet_truth(table, ctx.fs.annotations, ctx.fs.classes)
        label = np.where(truth.any(1), truth.argmax(1), -1)
        if emb.shape[0] != len(label):
            raise InputError(
                f"{art.id}: embeddings.npy has {emb.shape[0]} rows for {len(label)} snippets",
                "rebuild the model artifact",
                path=art.path,
            )
        key = (tuple(videos["video_id"]), len(label))  # same snippets -> same sample for both models
        if key not in shared:
            shared[key] = _balanced_sample(label, MAX_EMBED_POINTS, ctx.seed)
        idx = shared[key]
        x = np.asarray(emb[idx], dtype=np.float64)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        xy, share = _pca2(x)
        sep = separation(x, label[idx] >= 0)
        panels.append(
            EmbeddingPanel(
                f"{ROLES[role]} ({art.id})",
                xy,
                label[idx],
                f"{len(idx)} snippets, PC1+PC2 = {100 * share.sum():.0f}% of variance; separation {sep:.2f}",
            )
        )
    sec.figures.append(
        ReportFigure(
            embedding_figure(panels, ctx.fs.classes),
            "PCA (eigenvectors of the covariance) of the L2-normalised embeddings of up to "
            f"{MAX_EMBED_POINTS} training snippets per model, the same seeded sample for both models "
            "(half inside ground-truth instances, half outside, where there are enough). Grey: "
            "background; colours: the class of the instance a snippet lies in. Each model has its own "
            "PCA axes. 'separation' is the distance between the action and background centroids "
            "divided by the RMS distance of points to their own centroid, in the full embedding "
            "space: DCC aims to raise it.",
            "embedding PCA",
        )
    )
    return sec


def section_evaluation(ctx: Context) -> Section:
    from wtalcli.report.plots import PRCurve, map_tiou_figure, pr_figure

    sec = Section(
        *SECTION_TITLES["section_evaluation"],
        "The ActivityNet detection protocol on the test videos, from the evaluation artifacts.",
    )
    roles = [r for r in ROLES if r in ctx.sel.evaluations]
    if not roles:
        sec.notes.append("No evaluation of the T-CAS shown here: run `wtal localize` and `wtal evaluate`.")
        return sec
    missing = [ROLES[r] for r in ROLES if r in ctx.sel.tcas and r not in roles]
    if missing:
        sec.notes.append(f"No evaluation for: {', '.join(missing)}.")
    results = {r: json.loads((ctx.sel.evaluations[r].path / "result.json").read_text()) for r in roles}
    curves: dict[str, list[PRCurve]] = {}
    n_gt: dict[str, int] = {}
    ap_notes: list[str] = []
    at = None
    for role in roles:
        ev = ctx.sel.evaluations[role]
        try:
            result, k, per_class = evaluation_curves(ctx.store, ev)
        except WtalError as exc:
            sec.notes.append(f"No PR curve for {ROLES[role]}: {exc.one_line()}")
            continue
        at = float(result.tiou_thresholds[k])
        for c, pr in per_class.items():
            n_gt[c] = int(result.n_gt[result.classes.index(c)])
            curves.setdefault(c, []).append(PRCurve(ROLES[role], pr.recall, pr.precision, pr.ap, len(pr.tp)))
        ap_notes.append(f"{ROLES[role]} mAP@{at:g} = {100 * result.map_per_tiou[k]:.1f}")
    if curves:
        order = [c for c in ctx.fs.classes if c in curves] if ctx.fs is not None else sorted(curves)
        order += [c for c in curves if c not in order]
        sec.figures.append(
            ReportFigure(
                pr_figure({c: curves[c] for c in order}, n_gt, at, [ROLES[r] for r in roles]),
                f"Per-class precision (y) against recall (x) at tIoU {at:g}, from the ranking and matching "
                "<code>wtal evaluate</code> scored (the same predictions, ground truth, protocol and options as "
                "each evaluation artifact), so each legend's AP is the one in <code>result.json</code>. "
                "A curve that stays high while moving right is good; a curve that ends early never finds "
                f"the remaining instances. ({'; '.join(ap_notes)})",
                "precision-recall curves",
            )
        )
    lines = [(ROLES[r], results[r]["tiou_thresholds"], results[r]["map_per_tiou"]) for r in roles]
    ids = ", ".join(_code(ctx.sel.evaluations[r]) for r in roles)
    sec.figures.append(
        ReportFigure(
            map_tiou_figure(lines),
            f"mAP (%) at each tIoU threshold, from <code>result.json</code> of {ids}; the legend gives the "
            "average over thresholds. Higher is better; a steep fall with tIoU means segments that are "
            "found but badly bounded.",
            "mAP against tIoU",
        )
    )
    return sec


def section_losses(ctx: Context) -> Section:
    from wtalcli.report.plots import loss_figure

    sec = Section(
        *SECTION_TITLES["section_losses"],
        "Every loss term logged per iteration in <code>train_log.parquet</code> of the model artifacts.",
    )
    roles = [r for r in ROLES if r in ctx.sel.models]
    if not roles:
        sec.notes.append("No model artifact: run `wtal baseline`.")
        return sec
    runs = []
    terms: list[str] = []
    marks: list[float] = []  # where a continued run starts
    end_of_base = 0
    for role in roles:
        art = ctx.sel.models[role]
        df = read_parquet(art.path / "train_log.parquet", "training log")
        if "step" not in df.columns or len(df) == 0:
            sec.notes.append(f"{art.id}: empty training log.")
            continue
        steps = df["step"].to_numpy(np.float64)
        offset = 0
        base = ctx.sel.models.get("baseline")
        if (
            role == "dcc"
            and base is not None
            and _input_id(art, "base_model") == base.id
            and art.params.get("dcc", {}).get("init") == "baseline"
        ):
            offset = end_of_base
            marks.append(offset)
        if role == "baseline":
            end_of_base = int(steps.max())
        numeric = [c for c in df.columns if c != "step" and pd.api.types.is_numeric_dtype(df[c])]
        terms += [c for c in numeric if c not in terms]
        runs.append(
            (
                ROLES[role] + (f" (from iteration {offset})" if offset else ""),
                {c: df[c].to_numpy() for c in numeric},
                steps + offset,
            )
        )
    if not runs:
        return sec
    terms = [t for t in LOSS_ORDER if t in terms] + [t for t in terms if t not in LOSS_ORDER]
    sec.figures.append(
        ReportFigure(
            loss_figure(runs, terms, marks),
            "One panel per logged term against the iteration: <code>total</code> is what was "
            "optimised, <code>base</code>/<code>supp</code> the base- and suppression-branch "
            "classification losses, <code>norm</code> the L1 norm of the foreground attention (logged "
            "unweighted), <code>dcc</code> the contrastive loss with its weight <code>beta</code> and the "
            "number of action-region <code>anchors</code> per batch. A DCC run initialised from the "
            "baseline shown is drawn after the baseline's last iteration (dotted line). Long logs are "
            "drawn raw (faint) with a moving average. Losses should fall and flatten; under DCC "
            "<code>total</code> includes beta &times; dcc, so it can rise while beta grows.",
            "training losses",
        )
    )
    return sec


def html_table(header: list[str], rows: list[list]) -> str:
    """A small HTML table; numbers shown with 3 decimals, NaN and None as a dash."""
    esc = html.escape

    def cell(v) -> str:
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            return "-"
        return f"{v:.3f}" if isinstance(v, float) else esc(str(v))

    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows]
    return "".join(out) + "</table>"


def _oracle_runs(ctx: Context) -> list[Artifact]:
    """Train-dcc models on oracle targets started from the report's baseline."""
    base = ctx.sel.models.get("baseline")
    if base is None:
        return []
    return [
        m
        for m in ctx.store.artifacts("model")
        if m.stage == "train-dcc"
        and not m.tag
        and m.params.get("dcc", {}).get("targets") == "oracle"
        and _input_id(m, "base_model") == base.id
    ]


def _avg_map_of(ctx: Context, model: Artifact) -> float | None:
    """The newest test evaluation of a model's T-CAS (average mAP), if any was run."""
    tcas = [t for t in ctx.store.artifacts("tcas") if t.lineage.get("model") == model.id and not t.tag]
    if not tcas:
        return None
    for ev in reversed(ctx.store.artifacts("evaluation")):
        prop = _by_id(ctx.store, _input_id(ev, "proposals"))
        if prop is not None and _input_id(prop, "tcas") == tcas[-1].id and ev.params.get("subset") == "test":
            return float(ev.manifest.get("summary", {}).get("average_map", float("nan")))
    return None


def section_diagnostics(ctx: Context) -> Section:
    from wtalcli.report.plots import loss_figure

    sec = Section(
        *SECTION_TITLES["section_diagnostics"],
        "Where DCC's chain can break, measured (all against the ground truth, never used in training): "
        "how good the pseudo-labels are and whether the confidence S ranks the correct ones above the "
        "wrong ones (the paper's claim about denoising); how much of the gradient on the shared CAS "
        "layers the contrast contributes and in which direction; whether the embedding separates "
        "action from background and classes from each other on test videos; and what the contrast "
        "does with perfect targets (oracle runs: <code>wtal train-dcc --targets oracle</code>).",
    )
    if ctx.sel.rounds:
        rows = []
        for r in ctx.sel.rounds:
            q = r.pseudolabels.manifest.get("summary", {}).get("quality") or {}
            cq = (r.confidence.manifest.get("summary", {}).get("quality") or {}) if r.confidence else {}
            rows.append(
                [
                    r.number,
                    q.get("precision"),
                    q.get("recall"),
                    q.get("iou"),
                    cq.get("s_auc"),
                    cq.get("mean_s_correct"),
                    cq.get("mean_s_wrong"),
                ]
            )
        sec.tables.append(
            "<p>Pseudo-labels of the labelled classes against the ground-truth snippets, per refresh "
            "round (0: what DCC started from); S AUC 0.5 means S says nothing about correctness.</p>"
            + html_table(
                ["round", "precision", "recall", "IoU", "S AUC", "mean S correct", "mean S wrong"], rows
            )
        )
    else:
        sec.notes.append(
            "No pseudo-label rounds of a DCC run: run `wtal pseudolabel`, `wtal denoise`, `wtal train-dcc`."
        )
    geo_rows = []
    for role in ROLES:
        art = ctx.sel.tcas.get(role)
        geo = (art.manifest.get("summary", {}).get("embedding_test") or {}) if art is not None else {}
        if geo:
            geo_rows.append([ROLES[role], geo.get("action_background_auc"), geo.get("intra_inter_ratio")])
    if geo_rows:
        sec.tables.append(
            "<p>The base-branch embedding on the test videos: action-vs-background AUC of a centroid "
            "direction fitted on half the videos (higher: a direction separates them) and the mean "
            "distance to the own class centroid over the mean distance between class centroids (lower: "
            "tighter, better separated classes).</p>"
            + html_table(["model", "action/background AUC", "intra/inter class ratio"], geo_rows)
        )
    dcc = ctx.sel.models.get("dcc")
    if dcc is not None:
        df = read_parquet(dcc.path / "train_log.parquet", "training log")
        if "grad_ratio" in df.columns and df["grad_ratio"].notna().any():
            d = df.dropna(subset=["grad_ratio"])
            steps = d["step"].to_numpy(np.float64)
            run = ("DCC", {k: d[k].to_numpy() for k in ("grad_ratio", "grad_cos")}, steps)
            sec.figures.append(
                ReportFigure(
                    loss_figure([run], ["grad_ratio", "grad_cos"], []),
                    "On the CAS layers both losses train: <code>grad_ratio</code> = beta &times; |grad "
                    "L_dcc| / |grad L_base| (how much the contrast pushes, relative to BaS-Net's loss) and "
                    "<code>grad_cos</code> their cosine (0: orthogonal, negative: the contrast works "
                    "against the classification loss).",
                    "gradient share of the contrast",
                )
            )
        else:
            sec.notes.append("The DCC run did not log gradient shares (train it with --grad-every N).")
    oracles = _oracle_runs(ctx)
    if oracles:
        rows = [[ROLES[r], _avg_map_of(ctx, ctx.sel.models[r])] for r in ROLES if r in ctx.sel.models]
        rows += [[f"oracle {m.id}", _avg_map_of(ctx, m)] for m in oracles]
        sec.tables.append(
            "<p>Test average mAP (tIoU as evaluated) of the baseline, DCC and DCC on oracle targets from "
            "the same baseline (a dash: not evaluated yet).</p>" + html_table(["model", "avg mAP"], rows)
        )
    return sec


SECTIONS: tuple[Callable[[Context], Section], ...] = (
    section_tcas,
    section_rounds,
    section_embeddings,
    section_evaluation,
    section_losses,
    section_diagnostics,
)
SECTION_TITLES = {
    "section_tcas": ("tcas", "1. T-CAS, ground truth and proposals on test videos"),
    "section_rounds": ("rounds", "2. Pseudo-labels and confidence across refresh rounds"),
    "section_embeddings": ("embeddings", "3. Embeddings: action vs background snippets"),
    "section_evaluation": ("evaluation", "4. Precision-recall and mAP against tIoU"),
    "section_losses": ("losses", "5. Training losses"),
    "section_diagnostics": ("diagnostics", "6. DCC diagnostics"),
}


def _run(fn: Callable[[Context], Section], ctx: Context) -> Section:
    """A section, or a note saying why it could not be drawn (damaged or inconsistent inputs)."""
    t0 = time.perf_counter()
    try:
        sec = fn(ctx)
    except (WtalError, OSError, ValueError, KeyError) as exc:
        msg = exc.one_line() if isinstance(exc, WtalError) else f"{type(exc).__name__}: {exc}"
        sec = Section(*SECTION_TITLES[fn.__name__], notes=[f"This section could not be drawn: {msg}"])
    sec.seconds = time.perf_counter() - t0
    return sec


# ---------------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1140px;margin:0 auto;
padding:1.2em 1.5em 3em;color:#1d1d1f;line-height:1.45;background:#fff}
h1{font-size:1.6em;margin:.2em 0 .1em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd;
padding-bottom:.2em}
.meta{color:#555;font-size:.9em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f5f5f7}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.92em;background:#f5f5f7;
padding:0 .2em;border-radius:3px}
figure{margin:1.2em 0 1.8em}figure img{max-width:100%;height:auto;display:block;border:1px solid #eee}
figcaption{font-size:.88em;color:#333;margin-top:.4em;max-width:1000px}
.note{background:#fff6d6;border-left:4px solid #e0b400;padding:.5em .8em;margin:.6em 0;font-size:.92em}
nav a{margin-right:1em}
"""


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(
    store: Store, sel: Selection, sections: list[Section], seconds: float, n_videos: int, seed: int
) -> str:
    """The page: header, artifacts used, then each section's notes and figures."""
    esc = html.escape
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>wtal report - {esc(str(store.root))}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>wtal report</h1>",
        f'<p class="meta">workdir <code>{esc(str(store.root.resolve()))}</code> &middot; '
        f"generated {esc(now)} "
        f"&middot; code {esc(code_version())} &middot; {n_videos} test videos, seed {seed} &middot; "
        f"built in {seconds:.1f} s</p>",
        "<nav>" + "".join(f'<a href="#{s.anchor}">{esc(s.title)}</a>' for s in sections) + "</nav>",
        '<h2 id="artifacts">Artifacts used</h2>',
    ]
    used = sel.used()
    if used:
        parts.append("<table><tr><th>role</th><th>artifact</th><th>stage</th><th>created (UTC)</th></tr>")
        for role, art in used:
            parts.append(
                f"<tr><td>{esc(role)}</td><td>{_code(art)}</td><td>{esc(art.stage)}</td>"
                f"<td>{esc(str(art.manifest.get('created', '')))}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append(
            '<p class="note">The workdir holds no artifacts: run <code>wtal extract</code> first.</p>'
        )
    for note in sel.notes:
        parts.append(f'<p class="note">{esc(note)}</p>')
    for sec in sections:
        parts.append(f'<h2 id="{sec.anchor}">{esc(sec.title)}</h2>')
        if sec.intro:
            parts.append(f"<p>{sec.intro}</p>")
        for note in sec.notes:
            parts.append(f'<p class="note">{esc(note)}</p>')
        parts.extend(sec.tables)
        for i, fig in enumerate(sec.figures):
            parts.append(
                f'<figure id="{sec.anchor}-{i + 1}"><img src="{_data_uri(fig.png)}" alt="{esc(fig.alt)}">'
                f"<figcaption>{fig.caption}</figcaption></figure>"
            )
    timing = ", ".join(f"{s.anchor} {s.seconds:.1f} s" for s in sections)
    parts.append(f'<p class="meta">Section build times: {esc(timing)}.</p></body></html>')
    return "\n".join(parts) + "\n"


def report(store: Store, out: Path, n_videos: int = 4, seed: int = 0, log=_log) -> Path:
    """Write the HTML report of the workdir to ``out`` (atomically); returns its path."""
    if n_videos < 0:
        raise InputError(f"--videos {n_videos} must be >= 0")
    try:
        import matplotlib  # noqa: F401  (the figures need it)
    except ImportError:
        raise InputError(
            "wtal report draws its figures with matplotlib, which is not installed",
            "pip install 'wtal[plot]' (or matplotlib)",
        ) from None
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{out} is a directory", "pass a file name such as report.html", path=out)
    t0 = time.perf_counter()
    sel = select_artifacts(store)
    for role, art in sel.used():
        log(f"using {role} {art.id}")
    ctx = Context(store, sel, n_videos, seed)
    sections = [_run(fn, ctx) for fn in SECTIONS]
    page = render_html(store, sel, sections, time.perf_counter() - t0, n_videos, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, page.encode("utf-8"))
    n_fig = sum(len(s.figures) for s in sections)
    log(f"wrote {out} ({n_fig} figures, {len(page) / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    return out
