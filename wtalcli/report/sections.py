"""The six sections of ``wtal report``, each a :class:`~wtalcli.report.page.SectionSpec` and its
builder, over a :class:`Context` (the chosen artifacts, :mod:`wtalcli.report.inputs`, opened once).
The metrics shown are the diagnostics' own (:mod:`wtalcli.evaluation.diagnostics`), and the PR
curves rescore an evaluation artifact's own inputs (:func:`evaluation_curves`)."""

from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd

from wtalcli.core.errors import InputError, WtalError
from wtalcli.core.store import Artifact, Store
from wtalcli.data.schema import TCAS, FeatureSet, SnippetTable, load_npy, read_classes, read_parquet
from wtalcli.evaluation.inputs import artifact_by_id, input_id
from wtalcli.report.inputs import ROLES, ReportInputs, choose
from wtalcli.report.page import ReportFigure, Section, SectionSpec, code, html_table

N_ROUND_VIDEOS = 3  # training videos in the refresh-round heatmaps
MAX_EMBED_POINTS = 3000  # snippets per embedding plot (half action, half background when possible)
PR_TIOU = 0.5
LOSS_ORDER = ("total", "base", "supp", "norm", "dcc", "dcc_uniform", "beta", "anchors")


class Context:
    """What every section reads: the selection, the feature set (None if missing or damaged, with
    a note), and the T-CAS artifacts, opened once."""

    def __init__(self, store: Store, sel: ReportInputs, n_videos: int, seed: int):
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


def evaluation_curves(store: Store, ev: Artifact):
    """Rerun an evaluation artifact's scoring for its PR curves: the same inputs
    (:func:`wtalcli.evaluation.inputs.evaluation_inputs`) through
    :func:`wtalcli.evaluation.detection.precision_recall`.  Returns ``(EvalResult, index of the
    threshold nearest PR_TIOU, {class: ClassPR})``; the AP and mAP equal ``result.json``'s exactly."""
    from wtalcli.evaluation.detection import precision_recall
    from wtalcli.evaluation.inputs import evaluation_inputs

    ins = evaluation_inputs(store, ev)
    return precision_recall(ins.truth, ins.predictions, ins.thresholds, PR_TIOU, **ins.params.options())


def _build_tcas(ctx: Context, sec: Section, roles: list[str]) -> None:
    from wtalcli.evaluation.localization import LocalizeParams, localize_video, minmax_norm
    from wtalcli.report.plots import Segment, TcasPanel, tcas_figure

    if "dcc" not in roles:
        sec.notes.append("No DCC T-CAS (stage train-dcc): only the baseline is shown. Run `wtal train-dcc`.")
    for role in list(roles):  # a damaged T-CAS drops its model from the figures, not the section
        try:
            ctx.tcas(role)
        except WtalError as exc:
            sec.notes.append(f"{ROLES[role]} T-CAS not shown: {exc.one_line()}")
            roles.remove(role)
    if not roles:
        return
    if ctx.n_videos == 0:
        sec.notes.append("--videos 0: no videos plotted.")
        return
    ref = ctx.tcas(roles[0])
    test_ids = [str(v) for v in ref.videos["video_id"].to_numpy()[ref.rows_of("test")]]
    if not test_ids:
        sec.notes.append(f"The T-CAS {ctx.sel.tcas[roles[0]].id} has no test videos.")
        return
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
                det = localize_video(cas, t.scores[r], grid, LocalizeParams())
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


def _build_rounds(ctx: Context, sec: Section, roles: list[str]) -> None:
    from wtalcli.evaluation.diagnostics import snippet_truth
    from wtalcli.report.plots import rounds_figure

    rounds = ctx.sel.rounds
    if not rounds:
        sec.notes.append(
            "No pseudo-label artifacts of the models shown: run `wtal pseudolabel` and `wtal denoise` "
            "(refresh rounds come from `wtal train-dcc`)."
        )
        return
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


def _build_embeddings(ctx: Context, sec: Section, roles: list[str]) -> None:
    from wtalcli.evaluation.diagnostics import centroid_separation, snippet_truth
    from wtalcli.report.plots import EmbeddingPanel, embedding_figure

    if ctx.fs is None or len(ctx.fs.annotations) == 0:
        sec.notes.append(
            "The feature set has no ground truth, so snippets cannot be split into action and background."
        )
        return
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
        sep = centroid_separation(x, label[idx] >= 0)
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


def _build_evaluation(ctx: Context, sec: Section, roles: list[str]) -> None:
    from wtalcli.report.plots import PRCurve, map_tiou_figure, pr_figure

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
    ids = ", ".join(code(ctx.sel.evaluations[r]) for r in roles)
    sec.figures.append(
        ReportFigure(
            map_tiou_figure(lines),
            f"mAP (%) at each tIoU threshold, from <code>result.json</code> of {ids}; the legend gives the "
            "average over thresholds. Higher is better; a steep fall with tIoU means segments that are "
            "found but badly bounded.",
            "mAP against tIoU",
        )
    )


def _build_losses(ctx: Context, sec: Section, roles: list[str]) -> None:
    from wtalcli.report.plots import loss_figure

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
            and input_id(art, "base_model") == base.id
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
        return
    terms = [t for t in LOSS_ORDER if t in terms] + [t for t in terms if t not in LOSS_ORDER]
    sec.figures.append(
        ReportFigure(
            loss_figure(runs, terms, marks),
            "One panel per logged term against the iteration: <code>total</code> is what was "
            "optimised, <code>base</code>/<code>supp</code> the base- and suppression-branch "
            "classification losses, <code>norm</code> the L1 norm of the foreground attention (logged "
            "unweighted), <code>dcc</code> the contrastive loss, <code>dcc_uniform</code> its value "
            "with every logit equal (chance), its weight <code>beta</code> and the "
            "number of action-region <code>anchors</code> per batch. A DCC run initialised from the "
            "baseline shown is drawn after the baseline's last iteration (dotted line). Long logs are "
            "drawn raw (faint) with a moving average. Losses should fall and flatten; under DCC "
            "<code>total</code> includes beta &times; dcc, so it can rise while beta grows.",
            "training losses",
        )
    )


def _build_diagnostics(ctx: Context, sec: Section, roles: list[str]) -> None:
    from wtalcli.report.plots import loss_figure

    if ctx.sel.rounds:
        from wtalcli.evaluation.core_split import CoreSplit

        splits = CoreSplit(ctx.store)
        rows = []
        for r in ctx.sel.rounds:
            q = r.pseudolabels.manifest.get("summary", {}).get("quality") or {}
            cq = (r.confidence.manifest.get("summary", {}).get("quality") or {}) if r.confidence else {}
            split = splits.of(r.pseudolabels)
            rows.append(
                [
                    r.number,
                    q.get("precision"),
                    q.get("recall"),
                    split["recall_core"],
                    split["recall_noncore"],
                    q.get("iou"),
                    cq.get("s_auc"),
                    cq.get("mean_s_correct"),
                    cq.get("mean_s_wrong"),
                ]
            )
        sec.tables.append(
            "<p>Pseudo-labels of the labelled classes against the ground-truth snippets, per refresh "
            "round (0: what DCC started from); recall on the instances' discriminative cores and on "
            "their other (non-core) snippets where the synthetic generator's cores are known, else "
            "empty; S AUC 0.5 means S says nothing about correctness.</p>"
            + html_table(
                [
                    "round",
                    "precision",
                    "recall",
                    "recall, cores",
                    "recall, non-core",
                    "IoU",
                    "S AUC",
                    "mean S correct",
                    "mean S wrong",
                ],
                rows,
            )
        )
    else:
        sec.notes.append(
            "No pseudo-label rounds of a DCC run: run `wtal pseudolabel`, `wtal denoise`, `wtal train-dcc`."
        )
    runs = [(ROLES[r], ctx.sel.models[r], ctx.sel.tcas.get(r)) for r in ROLES if r in ctx.sel.models]
    runs += [(f"oracle {m.id}", m, _tcas_of(ctx, m)) for m in _oracle_runs(ctx)]
    _separation_tables(sec, runs)
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
                    "<code>grad_cos</code> their cosine, a raw figure: over the ~10<sup>5</sup> "
                    "parameters of these layers the gradients of two objectives that both help can be nearly "
                    "orthogonal, so without a control a value near 0 is no evidence either way about "
                    "how the contrast acts on localization.",
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


def _separation_tables(sec: Section, runs: list[tuple[str, Artifact, Artifact | None]]) -> None:
    """The per-class separation of action from background on the test videos (each run's T-CAS
    summary, ``separation_test``) and the contrast loss against its uniform value (its log)."""
    from wtalcli.evaluation.diagnostics import contrast_against_uniform

    def pair(d: dict, kind: str) -> str | None:
        f = (d or {}).get(kind) or {}
        if not f.get("pairs"):
            return None
        return f"{f['mean']:.3f} / {f['median']:.3f}"

    rows, core_known, pairs = [], None, None
    for name, _model, tcas in runs:
        summary = (tcas.manifest.get("summary", {}) if tcas is not None else {}) or {}
        sep, geo = summary.get("separation_test"), summary.get("embedding_test") or {}
        if not sep:
            rows.append([name, *[None] * 6, geo.get("action_background_auc"), geo.get("intra_inter_ratio")])
            continue
        core_known = bool(sep.get("core_known")) if core_known is None else core_known
        kind = "noncore" if core_known else "action"
        pairs = (sep.get("tcas") or {}).get(kind, {}).get("pairs", pairs)
        rows.append(
            [
                name,
                pair(sep.get("tcas"), kind),
                pair(sep.get("embedding"), kind),
                pair(sep.get("probe_h"), kind),
                pair(sep.get("probe_input"), kind),
                pair(sep.get("tcas"), "core") if core_known else None,
                pair(sep.get("embedding"), "core") if core_known else None,
                geo.get("action_background_auc"),
                geo.get("intra_inter_ratio"),
            ]
        )
    if core_known is None:
        sec.notes.append(
            "No per-class separation recorded for the T-CAS shown (artifacts from before it existed, or "
            "no test videos with ground truth): rebuild them to see it."
        )
    if rows:
        what = "non-core action snippets" if core_known else "action snippets"
        sec.tables.append(
            f"<p>Per (test video, labelled class) pair: the AUC separating the class's {what} "
            + (
                "(an instance's snippets outside its discriminative core, which the synthetic generator "
                "knows) "
                if core_known
                else "(no discriminative cores are known for this feature set) "
            )
            + "from the same video's background snippets, mean / median over the "
            f"{pairs if pairs is not None else 'recorded'} pairs (0.5: chance). <b>T-CAS</b>: the "
            "class's raw T-CAS channel; <b>embedding</b>: "
            "cos(h, class centroid) &minus; cos(h, background centroid), centroids of the L2-normalised base "
            "embedding fitted on the other half of the videos; <b>probe on h</b> / <b>on input</b>: a linear "
            "probe (logistic regression, L2 strength chosen on a held-out share of the fitting videos) of "
            "those snippets against background, fitted on one half of the videos and scored on the other, "
            "on the embedding and on the input features (the same for every model: what a linear read-out "
            "of the input already gets). The last two columns are the former figures: the pooled "
            "action-vs-background AUC with one centroid over all classes (it can fall while every class "
            "separates better; no conclusion rests on it) and the intra/inter class distance ratio "
            "(lower: tighter classes).</p>"
            + html_table(
                [
                    "model",
                    "T-CAS",
                    "embedding (class centroid)",
                    "probe on h",
                    "probe on input",
                    "T-CAS, cores",
                    "embedding, cores",
                    "pooled centroid AUC (legacy)",
                    "intra/inter class",
                ],
                rows,
            )
        )
    loss_rows = []
    for name, model, _tcas in runs:
        log = read_parquet(model.path / "train_log.parquet", "training log")
        c = contrast_against_uniform(log)
        if np.isfinite(c["dcc_start"]):
            loss_rows.append(
                [
                    name,
                    c["dcc_start"],
                    c["dcc_uniform_start"],
                    c["dcc_end"],
                    c["dcc_uniform_end"],
                    c["dcc_end_ratio"],
                ]
            )
    if loss_rows:
        sec.tables.append(
            "<p>The contrast loss L_dcc over the first and the last 50 steps where it was computed (fewer "
            "when it was computed on fewer than 100, as in a same-length control), against "
            "its uniform value (the loss with every logit equal, logged as <code>dcc_uniform</code>; a "
            "dash: a log from before it was logged). A ratio near 1: the region features say no more "
            "about which regions are positives than features that say nothing.</p>"
            + html_table(
                ["model", "L_dcc start", "uniform", "L_dcc end", "uniform", "end / uniform"], loss_rows
            )
        )


def _tcas_of(ctx: Context, model: Artifact) -> Artifact | None:
    """The newest untagged T-CAS of a model (not a refresh round's)."""
    tcas = [t for t in ctx.store.artifacts("tcas") if t.lineage.get("model") == model.id and not t.tag]
    return tcas[-1] if tcas else None


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
        and input_id(m, "base_model") == base.id
    ]


def _avg_map_of(ctx: Context, model: Artifact) -> float | None:
    """The newest test evaluation of a model's T-CAS (average mAP), if any was run."""
    tcas = _tcas_of(ctx, model)
    if tcas is None:
        return None
    for ev in reversed(ctx.store.artifacts("evaluation")):
        prop = artifact_by_id(ctx.store, input_id(ev, "proposals"))
        if prop is not None and input_id(prop, "tcas") == tcas.id and ev.params.get("subset") == "test":
            return float(ev.manifest.get("summary", {}).get("average_map", float("nan")))
    return None


SECTIONS = (
    SectionSpec(
        "tcas",
        "1. T-CAS, ground truth and proposals on test videos",
        "The suppression-branch class activation sequence (T-CAS) of each model on a few test videos, "
        "each channel min-max normalised over the video as localization sees it (BaS-Net's min-max with "
        "relu'd minimum and maximum; negative activations drawn at 0, below every activation threshold), "
        "on a seconds axis where each snippet's value is drawn over its own time cell. Solid lines: the "
        "video's labelled classes (legend: their video-level scores); dashed: the background; shaded "
        "spans: ground-truth segments. Under each T-CAS: a ground-truth lane, then one lane per "
        "proposal, best score first.",
        _build_tcas,
        needs="tcas",
        missing="No T-CAS artifact in the workdir: run `wtal baseline` (and `wtal train-dcc`).",
    ),
    SectionSpec(
        "rounds",
        "2. Pseudo-labels and confidence across refresh rounds",
        "What DCC trains on, for a few training videos and one labelled class each: a ground-truth strip "
        "(dark = inside an instance; never used in training), the pseudo-labels A (the thresholded "
        "T-CAS; dark = action), and the confidence S: the share of the snippet's k-means cluster that "
        "agrees with its pseudo-label, for action and non-action labels alike (yellow = the cluster "
        "agrees; dark = the label is likely noise and is down-weighted in the DCC loss). One row per "
        "refresh round: round 0 is what DCC started from, round N was recomputed from the model "
        "during training.",
        _build_rounds,
    ),
    SectionSpec(
        "embeddings",
        "3. Embeddings: action vs background snippets",
        "The base-branch embeddings h of the training snippets, which DCC contrasts and k-means clusters.",
        _build_embeddings,
        needs="models",
        missing="No model artifact: run `wtal baseline`.",
    ),
    SectionSpec(
        "evaluation",
        "4. Precision-recall and mAP against tIoU",
        "The ActivityNet detection protocol on the test videos, from the evaluation artifacts.",
        _build_evaluation,
        needs="evaluations",
        missing="No evaluation of the T-CAS shown here: run `wtal localize` and `wtal evaluate`.",
    ),
    SectionSpec(
        "losses",
        "5. Training losses",
        "Every loss term logged per iteration in <code>train_log.parquet</code> of the model artifacts.",
        _build_losses,
        needs="models",
        missing="No model artifact: run `wtal baseline`.",
    ),
    SectionSpec(
        "diagnostics",
        "6. DCC diagnostics",
        "Where DCC's chain can break, measured (all against the ground truth, never used in training): "
        "how good the pseudo-labels are and whether the confidence S ranks the correct ones above the "
        "wrong ones (the paper's claim about denoising); per class, how well the T-CAS, the embedding "
        "and a linear probe on each separate action (the weak non-core snippets, where known) from the "
        "same video's background on test videos; how far the contrast loss falls below its uniform "
        "value; how much of the gradient on the shared CAS layers the contrast contributes; and what "
        "the contrast does with perfect targets (oracle runs: <code>wtal train-dcc --targets "
        "oracle</code>).",
        _build_diagnostics,
    ),
)
