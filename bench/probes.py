"""Linear probes that say how hard a feature set is (synthetic or real), on CPU, seeded.

- :func:`video_probe`: softmax regression on each video's mean feature, trained on ``train``
  videos with their video-level labels, scored on ``test`` videos (top-1 accuracy, class mAP).
- :func:`snippet_probe`: a fully supervised snippet classifier (C classes + background) trained
  with ground-truth snippet labels on ``train`` videos: the linear localization ceiling.
- :func:`weak_cas_check`: the video probe applied to each snippet (a linear T-CAS learned from
  video labels only); does its score of a video's class rise on that class's actions or on the
  background?  The check that class context does not make a weak learner localize the scene.
- The failure modes weakly-supervised localization papers describe, one probe each:
  :func:`background_probe` (background carries class context: the video probe on background
  snippets alone), :func:`incompleteness_probe` (the weak T-CAS fires on part of each instance),
  the ``pair_*`` figures of :func:`snippet_probe` (near-duplicate classes are confused with each
  other more than with any other class) and :func:`style_probe` (per-video appearance shift: a
  video is nearer to itself than to other videos of its class).
- :func:`oracle_projections` (synthetic data only): feature energy along the hidden directions
  inside actions, in their cores and in the background.
- :func:`dataset_stats`: the layout statistics the packaged THUMOS14 ground truth gives.

All probes take any object with ``videos`` (with ``offset``), ``features``, ``annotations`` and
``classes`` -- a :class:`wtalcli.data.synthetic.SyntheticData` or a :class:`wtalcli.data.schema.FeatureSet`.
Regularisation is chosen on a held-out fifth of the training videos, never on test videos.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Protocol, TypeVar

import numpy as np
import pandas as pd
import torch

from wtalcli.data.timegrid import TimeGrid

LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0)
F = TypeVar("F", bound=Callable)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread, restoring the caller's setting after.

    The probe problems are small: one thread is as fast on a quiet machine, far faster on a busy
    one (two spinning threads on two shared cores), and makes the results independent of the
    machine's thread count.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _single_threaded(fn: F) -> F:
    @wraps(fn)
    def inner(*args, **kwargs):
        with _one_thread():
            return fn(*args, **kwargs)

    return inner  # type: ignore[return-value]


class FeatureData(Protocol):
    videos: pd.DataFrame
    features: np.ndarray
    annotations: pd.DataFrame
    classes: list[str]


# ------------------------------------------------------------------------------------ helpers


def _rows(data: FeatureData, subset: str) -> np.ndarray:
    return np.flatnonzero(data.videos["subset"].to_numpy() == subset)


def _span(data: FeatureData, row: int) -> slice:
    off = int(data.videos["offset"].iat[row])
    return slice(off, off + int(data.videos["n_snippets"].iat[row]))


def video_means(data: FeatureData, rows: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Mean feature of each video in ``rows``: ``(len(rows), D)`` float64.

    ``keep`` (one bool per snippet of the whole set) restricts each mean to the kept snippets;
    every video in ``rows`` must have one."""
    out = []
    for r in rows:
        sl = _span(data, int(r))
        x = np.asarray(data.features[sl], np.float64)
        out.append((x if keep is None else x[keep[sl]]).mean(axis=0))
    return np.stack(out)


def label_matrix(data: FeatureData, rows: np.ndarray) -> np.ndarray:
    index = {c: i for i, c in enumerate(data.classes)}
    y = np.zeros((len(rows), len(data.classes)))
    for k, r in enumerate(rows):
        for c in data.videos["labels"].iat[int(r)]:
            y[k, index[c]] = 1.0
    return y


def snippet_labels(data: FeatureData) -> np.ndarray:
    """Ground-truth class index of every snippet (-1 = background) from the annotations.

    A snippet belongs to a segment when its cell centre ``t + 0.5`` lies in ``[start, end)`` on
    the video's time grid; with overlapping segments the later row wins.
    """
    labels = np.full(int(data.videos["n_snippets"].sum()), -1, np.int64)
    index = {c: i for i, c in enumerate(data.classes)}
    rows = {v: i for i, v in enumerate(data.videos["video_id"])}
    ann = data.annotations
    if len(ann) == 0:
        return labels
    for vid, group in ann.groupby("video_id", sort=False):
        if vid not in rows:
            continue
        r = data.videos.iloc[rows[vid]]
        grid = TimeGrid(fps=float(r["fps"]), stride=int(r["stride"]), clip_len=int(r["clip_len"]))
        n, off = int(r["n_snippets"]), int(r["offset"])
        centre = np.arange(n) + 0.5
        for lab, s, e in zip(group["label"], group["start_s"], group["end_s"], strict=True):
            lo, hi = grid.seconds_to_index(s), grid.seconds_to_index(e)
            labels[off : off + n][(centre >= lo) & (centre < hi)] = index[lab]
    return labels


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Non-interpolated AP: mean precision at the rank of each positive (stable order on ties)."""
    order = np.argsort(-scores, kind="stable")
    hits = positive[order].astype(np.float64)
    if hits.sum() == 0:
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mu = train.mean(axis=0)
    sd = train.std(axis=0) + 1e-6
    return [(x - mu) / sd for x in (train, *others)]


def _fit_softmax(
    x: np.ndarray, y: np.ndarray, lam: float, max_iter: int = 100, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax regression with soft targets ``y`` (rows sum to 1) and L2 ``lam`` on the weights."""
    X = torch.as_tensor(x, dtype=dtype)  # (N, D)
    Y = torch.as_tensor(y, dtype=dtype)  # (N, K)
    W = torch.zeros(X.shape[1], Y.shape[1], dtype=dtype, requires_grad=True)  # (D, K)
    b = torch.zeros(Y.shape[1], dtype=dtype, requires_grad=True)  # (K,)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logp = torch.log_softmax(X @ W + b, dim=1)
        loss = -(Y * logp).sum(dim=1).mean() + 0.5 * lam * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach()


def _logits(x: np.ndarray, W: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return (torch.as_tensor(x, dtype=W.dtype) @ W + b).double().numpy()


def _log_loss(logits: np.ndarray, y: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-(y * logp).sum(axis=1).mean())


def _holdout(n_videos: int, seed: int, frac: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n_videos)
    k = max(1, int(round(frac * n_videos)))
    return np.sort(perm[k:]), np.sort(perm[:k])


# ------------------------------------------------------------------------------------ probes


def _video_probe_fit(
    data: FeatureData, seed: int, lambdas: tuple[float, ...], background_only: bool = False
) -> dict:
    torch.manual_seed(seed)
    tr, te = _rows(data, "train"), _rows(data, "test")
    keep = None
    if background_only:  # each video's mean over its background snippets (videos without any dropped)
        keep = snippet_labels(data) < 0
        has = np.array([keep[_span(data, int(r))].any() for r in range(len(data.videos))], bool)
        tr, te = tr[has[tr]], te[has[te]]
    xtr, xte = video_means(data, tr, keep), video_means(data, te, keep)
    xtr, xte = _standardise(xtr, xte)
    ytr = label_matrix(data, tr)
    ptr = ytr / ytr.sum(axis=1, keepdims=True).clip(min=1)
    fit, val = _holdout(len(tr), seed)
    losses = {
        lam: _log_loss(_logits(xtr[val], *_fit_softmax(xtr[fit], ptr[fit], lam)), ptr[val]) for lam in lambdas
    }
    lam = min(losses, key=lambda k: (losses[k], k))
    W, b = _fit_softmax(xtr, ptr, lam)
    return {"rows": (tr, te), "x": (xtr, xte), "W": W, "b": b, "lam": lam, "losses": losses}


@_single_threaded
def video_probe(data: FeatureData, seed: int = 0, lambdas: tuple[float, ...] = LAMBDAS) -> dict[str, float]:
    """Linear probe on video-mean features: test top-1 accuracy and class mAP (with chance levels)."""
    return _video_probe_scores(data, _video_probe_fit(data, seed, lambdas))


@_single_threaded
def background_probe(
    data: FeatureData, seed: int = 0, lambdas: tuple[float, ...] = LAMBDAS
) -> dict[str, float]:
    """The video probe on each video's background snippets alone (no action snippet is seen in
    training or test): how much of a video's class its background gives away.

    Top-1 far above chance means background carries class context, the condition under which a
    video-label learner is rewarded for firing on the background (context confusion)."""
    return _video_probe_scores(data, _video_probe_fit(data, seed, lambdas, background_only=True))


def _video_probe_scores(data: FeatureData, fitted: dict) -> dict[str, float]:
    _, te = fitted["rows"]
    logits = _logits(fitted["x"][1], fitted["W"], fitted["b"])
    yte = label_matrix(data, te)
    top1 = float(yte[np.arange(len(te)), logits.argmax(axis=1)].mean())
    present = np.flatnonzero(yte.sum(axis=0) > 0)
    aps = [average_precision(logits[:, c], yte[:, c] > 0) for c in present]
    return {
        "top1": top1,
        "map": float(np.mean(aps)),
        "top1_chance": float((yte.sum(axis=1) / len(data.classes)).mean()),
        "map_chance": float(yte[:, present].mean(axis=0).mean()),
        "lambda": float(fitted["lam"]),
        "n_train": int(len(fitted["rows"][0])),
        "n_test": int(len(te)),
    }


@_single_threaded
def snippet_probe(
    data: FeatureData,
    seed: int = 0,
    max_train_snippets: int = 20000,
    lambdas: tuple[float, ...] = LAMBDAS,
    partner: np.ndarray | None = None,
) -> dict[str, float]:
    """Fully supervised snippet probe (C classes + background), scored on test snippets.

    ``fg_auc``: AUC of ``1 - p(background)`` for action vs background snippets; ``fg_acc`` /
    ``fg_bacc``: accuracy / balanced accuracy of the decision ``p(background) < 0.5``; ``class_acc``: on action snippets, the argmax over the C action
    classes is the true class; ``class_acc_core`` / ``class_acc_rest`` split it by the hidden
    core mask when the data has one (synthetic data).

    Near-duplicate classes: ``partner[c]`` is the class suspected to be c's near-duplicate (-1
    for none; by default the hidden pairs of synthetic data).  On the action snippets of paired
    classes, ``pair_confusion`` is the share whose argmax is the partner and ``other_confusion``
    the share that goes to one given other class (the rest of the errors spread over C - 2
    classes); ``pair_confusion_lift`` is their ratio (1 = the partner is no more confusable than
    any class).  ``pair_acc`` is the class accuracy on those snippets.
    """
    torch.manual_seed(seed)
    C = len(data.classes)
    truth = snippet_labels(data)
    tr, te = _rows(data, "train"), _rows(data, "test")
    fit_v, val_v = _holdout(len(tr), seed)
    rng = np.random.default_rng(seed)

    def gather(rows: np.ndarray, cap: int | None) -> tuple[np.ndarray, np.ndarray]:
        idx = np.concatenate([np.arange(_span(data, int(r)).start, _span(data, int(r)).stop) for r in rows])
        if cap is not None and len(idx) > cap:
            idx = np.sort(rng.choice(idx, cap, replace=False))
        return idx, np.asarray(data.features[idx], np.float32)

    i_fit, x_fit = gather(tr[fit_v], int(max_train_snippets * 0.8))
    i_val, x_val = gather(tr[val_v], int(max_train_snippets * 0.2))
    i_all, x_all = gather(tr, max_train_snippets)
    i_te, x_te = gather(te, None)

    def onehot(idx: np.ndarray) -> np.ndarray:
        y = np.zeros((len(idx), C + 1))
        t = truth[idx]
        y[np.arange(len(idx)), np.where(t < 0, C, t)] = 1.0
        return y

    x_fit_s, x_val_s = _standardise(x_fit, x_val)
    f32 = torch.float32
    losses = {
        lam: _log_loss(_logits(x_val_s, *_fit_softmax(x_fit_s, onehot(i_fit), lam, 50, f32)), onehot(i_val))
        for lam in lambdas
    }
    lam = min(losses, key=lambda k: (losses[k], k))
    x_all_s, x_te_s = _standardise(x_all, x_te)
    W, b = _fit_softmax(x_all_s, onehot(i_all), lam, 100, f32)
    logits = _logits(x_te_s, W, b)
    t = truth[i_te]
    z = logits - logits.max(axis=1, keepdims=True)
    p_bg = np.exp(z[:, C]) / np.exp(z).sum(axis=1)
    is_fg, pred_fg = t >= 0, p_bg < 0.5
    cls_ok = logits[:, :C].argmax(axis=1) == t
    out = {
        "fg_auc": _auc(-p_bg[is_fg], -p_bg[~is_fg]),
        "fg_acc": float((is_fg == pred_fg).mean()),
        "fg_bacc": float(0.5 * (pred_fg[is_fg].mean() + (~pred_fg[~is_fg]).mean())),
        "class_acc": float(cls_ok[is_fg].mean()),
        "fg_share": float(is_fg.mean()),
        "lambda": float(lam),
        "n_train_snippets": int(len(i_all)),
        "n_test_snippets": int(len(i_te)),
    }
    core = getattr(data, "snippet_core", None)
    if core is not None:
        c = np.asarray(core)[i_te]
        out["class_acc_core"] = float(cls_ok[is_fg & c].mean())
        out["class_acc_rest"] = float(cls_ok[is_fg & ~c].mean()) if (is_fg & ~c).any() else float("nan")
    if partner is None and getattr(data, "world", None) is not None:
        partner = data.world.partner
    if partner is not None and C > 2:
        partner = np.asarray(partner, np.int64)
        paired = is_fg & (partner[np.where(is_fg, t, 0)] >= 0)
        if paired.any():
            pred = logits[paired, :C].argmax(axis=1)
            tp, pp = t[paired], partner[t[paired]]
            to_partner = float((pred == pp).mean())
            to_other = float(((pred != tp) & (pred != pp)).mean()) / (C - 2)
            out["pair_acc"] = float((pred == tp).mean())
            out["pair_confusion"] = to_partner
            out["other_confusion"] = to_other
            out["pair_confusion_lift"] = to_partner / to_other if to_other > 0 else float("inf")
    return out


def _fit_mlp(
    x: np.ndarray, y: np.ndarray, decay: float, hidden: int, seed: int, max_iter: int = 200
) -> torch.nn.Module:
    """One hidden layer (``hidden`` LeakyReLU units) + softmax over ``y``'s columns, full-batch
    L-BFGS, L2 ``decay`` on both weight matrices, initial weights from ``seed``."""
    torch.manual_seed(seed)
    X = torch.as_tensor(x, dtype=torch.float32)
    Y = torch.as_tensor(y, dtype=torch.float32)
    net = torch.nn.Sequential(
        torch.nn.Linear(X.shape[1], hidden), torch.nn.LeakyReLU(0.01), torch.nn.Linear(hidden, Y.shape[1])
    )
    weights = [net[0].weight, net[2].weight]
    opt = torch.optim.LBFGS(
        net.parameters(), lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = -(Y * torch.log_softmax(net(X), dim=1)).sum(dim=1).mean()
        loss = loss + 0.5 * decay * sum((w * w).sum() for w in weights)
        loss.backward()
        return loss

    opt.step(closure)
    return net.eval()


def _mlp_logits(x: np.ndarray, net: torch.nn.Module) -> np.ndarray:
    with torch.no_grad():
        return net(torch.as_tensor(x, dtype=torch.float32)).double().numpy()


MLP_DECAYS = (1e-3, 1e-2, 1e-1)


def _fit_probe(
    model: str, x: np.ndarray, y: np.ndarray, reg: float, hidden: int, seed: int, mlp_iter: int = 200
):
    """A linear (softmax regression) or ``mlp`` probe, in float32 (the snippet probes' precision)."""
    if model == "linear":
        return _fit_softmax(x, y, reg, 100, torch.float32)
    return _fit_mlp(x, y, reg, hidden, seed, mlp_iter)


def _probe_logits(x: np.ndarray, fitted) -> np.ndarray:
    return _mlp_logits(x, fitted) if isinstance(fitted, torch.nn.Module) else _logits(x, *fitted)


@_single_threaded
def part_probe(
    data: FeatureData,
    seed: int = 0,
    max_train_snippets: int = 20000,
    lambdas: tuple[float, ...] = LAMBDAS,
    hidden: int = 256,
    decays: tuple[float, ...] = MLP_DECAYS,
    parts: tuple[str, ...] = ("rest", "core"),
    readings: tuple[str, ...] = ("agnostic", "class"),
    mlp_iter: int = 200,
) -> dict[str, float]:
    """Can one snippet's features tell a part of an action from the background, linearly or not?

    Parts, from the hidden core mask (synthetic data): ``rest`` = the snippets inside an action
    instance but outside its discriminative core; ``core`` = the core snippets. Background = the
    snippets outside every instance. Each part against the background, in two readings:

    - ``agnostic``: one binary probe for all classes (part vs background);
    - ``class``: a (C+1)-way probe (the part's snippets labelled with their class, background
      the extra class), read as a T-CAS is: a test snippet of a video labelled c scores
      ``logit_c - logit_bg``, and for every (test video, label c) the part's class-c snippets are
      positives and the video's background snippets negatives.

    Each reading has a linear probe (softmax regression on the standardised features, L2 weight
    from ``lambdas``) and, with ``hidden`` > 0, a nonlinear one (one hidden layer of ``hidden``
    LeakyReLU units, L2 from ``decays``, at most ``mlp_iter`` L-BFGS iterations). The regularisation is chosen by log loss on a held-out
    fifth of the training videos (a one-value grid skips that fit), then the probe is refitted on
    all training videos (at most ``max_train_snippets`` snippets of the part and the background);
    ``{linear,mlp}_{part}_{reading}_auc`` is the ROC AUC over every such test snippet, pooled.
    ``parts`` and ``readings`` pick which of these to compute.

    A linear AUC near the nonlinear one: the evidence is linear in one snippet. A nonlinear AUC far
    above the linear one: it is there, but not linearly readable.
    """
    core = getattr(data, "snippet_core", None)
    if core is None:
        raise ValueError("part_probe needs the hidden core mask (synthetic data)")
    core = np.asarray(core, bool)
    C = len(data.classes)
    index = {c: i for i, c in enumerate(data.classes)}
    truth = snippet_labels(data)
    bg = truth < 0
    tr, te = _rows(data, "train"), _rows(data, "test")
    fit_v, val_v = _holdout(len(tr), seed)

    def snippets(rows: np.ndarray, keep: np.ndarray) -> np.ndarray:
        idx = np.concatenate([np.arange(_span(data, int(r)).start, _span(data, int(r)).stop) for r in rows])
        return idx[keep[idx]]

    out: dict[str, float] = {}
    for part in parts:
        pos = (truth >= 0) & (core if part == "core" else ~core)
        keep = pos | bg
        rng = np.random.default_rng(seed)
        sets = {}
        for name, rows, cap in (
            ("fit", tr[fit_v], int(max_train_snippets * 0.8)),
            ("val", tr[val_v], int(max_train_snippets * 0.2)),
            ("all", tr, max_train_snippets),
        ):
            idx = snippets(rows, keep)
            if len(idx) > cap:
                idx = np.sort(rng.choice(idx, cap, replace=False))
            sets[name] = (idx, np.asarray(data.features[idx], np.float32))
        x_fit, x_val = _standardise(sets["fit"][1], sets["val"][1])
        x_all = sets["all"][1]
        mu, sd = x_all.mean(axis=0), x_all.std(axis=0) + 1e-6
        x_all = (x_all - mu) / sd
        # test: per (video, label c), the part's class-c snippets and the video's background
        te_idx, te_cls, te_pos = [], [], []
        for r in te:
            sl = _span(data, int(r))
            t = truth[sl]
            for lab in data.videos["labels"].iat[int(r)]:
                c = index[lab]
                p_i = np.flatnonzero(pos[sl] & (t == c)) + sl.start
                n_i = np.flatnonzero(bg[sl]) + sl.start
                te_idx += [p_i, n_i]
                te_cls += [np.full(len(p_i) + len(n_i), c)]
                te_pos += [np.ones(len(p_i), bool), np.zeros(len(n_i), bool)]
        te_idx, te_cls, te_pos = np.concatenate(te_idx), np.concatenate(te_cls), np.concatenate(te_pos)
        x_te = (np.asarray(data.features[te_idx], np.float32) - mu) / sd
        # the agnostic reading scores each test snippet once (a background snippet of a two-label
        # video appears twice in the class reading, once per label)
        first = np.zeros(len(te_idx), bool)
        first[np.unique(te_idx, return_index=True)[1]] = True

        for reading in readings:

            def targets(idx: np.ndarray, reading=reading) -> np.ndarray:
                k = 2 if reading == "agnostic" else C + 1
                col = np.where(bg[idx], 0, 1) if reading == "agnostic" else np.where(bg[idx], C, truth[idx])
                y = np.zeros((len(idx), k))
                y[np.arange(len(idx)), col] = 1.0
                return y

            y_fit, y_val, y_all = (targets(sets[n][0]) for n in ("fit", "val", "all"))
            if reading == "agnostic":
                sel = first
                cols = (np.ones(sel.sum(), np.int64), np.zeros(sel.sum(), np.int64))
            else:
                sel = np.ones(len(te_idx), bool)
                cols = (te_cls, np.full(len(te_idx), C))
            rows_te = np.arange(sel.sum())
            is_pos = te_pos[sel]
            models = {"linear": lambdas}
            if hidden > 0:
                models["mlp"] = decays
            for model, grid in models.items():
                losses = {  # one value: nothing to choose, no held-out fit
                    r: _log_loss(
                        _probe_logits(x_val, _fit_probe(model, x_fit, y_fit, r, hidden, seed, mlp_iter)),
                        y_val,
                    )
                    for r in (grid if len(grid) > 1 else ())
                }
                reg = min(losses, key=lambda k: (losses[k], k)) if losses else grid[0]
                z = _probe_logits(x_te[sel], _fit_probe(model, x_all, y_all, reg, hidden, seed, mlp_iter))
                score = z[rows_te, cols[0]] - z[rows_te, cols[1]]
                out[f"{model}_{part}_{reading}_auc"] = _auc(score[is_pos], score[~is_pos])
                out[f"{model}_{part}_{reading}_reg"] = float(reg)
        out[f"n_train_{part}"] = int(len(sets["all"][0]))
        out[f"n_test_{part}"] = int(te_pos.sum())
    return out


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a positive outscores a negative (ties count half)."""
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="stable")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    # average ranks over ties
    i = 0
    while i < len(allv):
        j = i
        while j + 1 < len(allv) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1
        i = j + 1
    r = ranks[: len(pos)].sum()
    return float((r - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


@_single_threaded
def weak_cas_check(
    data: FeatureData, seed: int = 0, lambdas: tuple[float, ...] = LAMBDAS
) -> dict[str, float]:
    """Apply the video probe (trained on video labels only) to each test snippet.

    For every test video and each of its classes: the AUC with which that class's score ranks
    the class's action snippets above the video's background snippets.  Above 0.5 means a weak
    (video-label) learner points at the actions; below 0.5 means it points at the background.
    """
    aucs = []
    for _, _, scores, t, labels in _weak_cas(data, seed, lambdas):
        for c in labels:
            pos, neg = scores[t == c, c], scores[t < 0, c]
            if len(pos) and len(neg):
                aucs.append(_auc(pos, neg))
    a = np.array(aucs)
    return {
        "auc_mean": float(a.mean()),
        "auc_median": float(np.median(a)),
        "share_above_half": float((a > 0.5).mean()),
        "n_pairs": int(len(a)),
    }


def _weak_cas(
    data: FeatureData, seed: int, lambdas: tuple[float, ...]
) -> Iterator[tuple[int, slice, np.ndarray, np.ndarray, list[int]]]:
    """The video probe applied to every snippet of each test video: ``(row, span, scores (T, C),
    snippet truth (T,), class indices of the video's labels)``."""
    fitted = _video_probe_fit(data, seed, lambdas)
    tr, te = fitted["rows"]
    mean_tr = video_means(data, tr)
    mu, sd = mean_tr.mean(axis=0), mean_tr.std(axis=0) + 1e-6
    truth = snippet_labels(data)
    index = {c: i for i, c in enumerate(data.classes)}
    for r in te:
        sl = _span(data, int(r))
        x = (np.asarray(data.features[sl], np.float64) - mu) / sd
        labels = [index[lab] for lab in data.videos["labels"].iat[int(r)]]
        yield int(r), sl, _logits(x, fitted["W"], fitted["b"]), truth[sl], labels


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of each maximal run of True in a 1-d bool array."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


@_single_threaded
def incompleteness_probe(
    data: FeatureData, seed: int = 0, lambdas: tuple[float, ...] = LAMBDAS, min_length: int = 4
) -> dict[str, float]:
    """Does a video-label learner fire on only part of each action instance?

    The weak T-CAS of :func:`weak_cas_check` (the video probe applied to each snippet), on every
    test instance (a maximal run of one class's snippets) of at least ``min_length`` snippets:
    ``half_peak_coverage`` is the mean share of the instance whose class score is at least half
    way from the video's median background score to the instance's peak (about 1 when the
    evidence is uniform over the instance; about the core share when only a core carries it);
    ``fires`` is the share of instances whose peak exceeds the video's background median.

    With the hidden core mask of synthetic data also: ``core_share`` (the mean share of the same
    instances that is core, the reference for the coverage), ``auc_core_vs_rest`` (the class
    score ranks core snippets above the rest of their instance: the classifier fires on the core)
    and ``auc_rest_vs_bg`` (the rest of the instance against the video's background: near 0.5
    means the instance's extent is ambiguous to the learner), both averaged over instances.
    """
    core = getattr(data, "snippet_core", None)
    cov, fires, share, a_core, a_rest = [], [], [], [], []
    for _, sl, scores, t, labels in _weak_cas(data, seed, lambdas):
        bg = t < 0
        if not bg.any():
            continue
        k = None if core is None else np.asarray(core)[sl]
        for c in labels:
            base = float(np.median(scores[bg, c]))
            for s, e in _runs(t == c):
                if e - s < min_length:
                    continue
                seg = scores[s:e, c]
                peak = float(seg.max())
                fires.append(peak > base)
                cov.append(float((seg >= base + 0.5 * (peak - base)).mean()) if peak > base else 0.0)
                if k is not None:
                    kc = k[s:e]
                    share.append(float(kc.mean()))
                    if kc.any() and (~kc).any():
                        a_core.append(_auc(seg[kc], seg[~kc]))
                        a_rest.append(_auc(seg[~kc], scores[bg, c]))
    out = {
        "half_peak_coverage": float(np.mean(cov)) if cov else float("nan"),
        "fires": float(np.mean(fires)) if fires else float("nan"),
        "n_instances": int(len(cov)),
    }
    if core is not None:
        out["core_share"] = float(np.mean(share)) if share else float("nan")
        out["auc_core_vs_rest"] = float(np.mean(a_core)) if a_core else float("nan")
        out["auc_rest_vs_bg"] = float(np.mean(a_rest)) if a_rest else float("nan")
    return out


def style_probe(data: FeatureData, min_part: int = 4, margin: int = 2) -> dict[str, float]:
    """Per-video appearance shift: is a video more like itself than like other videos of its class?

    Background snippets here are those at least ``margin`` snippets away from every action
    snippet (so nothing of an action blurs into them).  Each single-label test video with at
    least ``3 * min_part`` of them is cut into thirds of those snippets (features standardised
    with the training snippets' statistics); A_v and B_v are the means of the first and the last
    third (the middle third keeps temporally smooth noise from correlating them).

    ``same_video_top1``: among the B parts of the videos of v's class, the nearest to A_v is v's
    own (chance: ``top1_chance``, one over the class's video count).  Squared distances between
    part means: ``d_self`` (A_v to B_v: noise only), ``d_class`` (A_v to B_w, w another video of
    the same class: noise + the two videos' appearance) and ``d_other`` (w of another class: +
    class context).  ``style_share`` = (d_class - d_self) / d_class: the share of the distance
    between two videos of one class that is their appearance (about 0 without a per-video shift).
    """
    truth = snippet_labels(data)
    tr = _rows(data, "train")
    x_tr = np.concatenate([np.asarray(data.features[_span(data, int(r))], np.float64) for r in tr])
    mu, sd = x_tr.mean(axis=0), x_tr.std(axis=0) + 1e-6
    a_part, b_part, cls = [], [], []
    for r in _rows(data, "test"):
        labels = data.videos["labels"].iat[int(r)]
        sl = _span(data, int(r))
        action = truth[sl] >= 0
        near = action.copy()
        for k in range(1, margin + 1):
            near[k:] |= action[:-k]
            near[:-k] |= action[k:]
        bg = np.flatnonzero(~near)
        if len(labels) != 1 or len(bg) < 3 * min_part:
            continue
        x = (np.asarray(data.features[sl], np.float64)[bg] - mu) / sd
        third = len(bg) // 3
        a_part.append(x[:third].mean(axis=0))
        b_part.append(x[-third:].mean(axis=0))
        cls.append(labels[0])
    A, B, cls = np.array(a_part), np.array(b_part), np.array(cls)
    d = ((A[:, None, :] - B[None, :, :]) ** 2).sum(axis=2)  # (V, V): A_v to B_w
    same = cls[:, None] == cls[None, :]
    eye = np.eye(len(cls), dtype=bool)
    hits, chance = [], []
    for v in range(len(cls)):
        peers = np.flatnonzero(same[v])
        if len(peers) < 2:
            continue
        hits.append(peers[np.argmin(d[v, peers])] == v)
        chance.append(1.0 / len(peers))
    d_self = float(d[eye].mean())
    d_class = float(d[same & ~eye].mean())
    d_other = float(d[~same].mean())
    return {
        "same_video_top1": float(np.mean(hits)),
        "top1_chance": float(np.mean(chance)),
        "d_self": d_self,
        "d_class": d_class,
        "d_other": d_other,
        "style_share": (d_class - d_self) / d_class,
        "n_videos": int(len(hits)),
    }


def oracle_projections(data) -> dict[str, float]:
    """Mean projection of snippets on the hidden directions (a :class:`SyntheticData` only).

    For each video and each of its classes c: scene direction b_c in the background vs inside
    class-c instances; class direction u_{c,m(v)} in the core, the rest of the instances and
    the background; the actionness direction g inside vs outside actions.  Averages over videos.
    """
    w = data.world
    cls, core = data.snippet_class, data.snippet_core
    out: dict[str, list[float]] = {
        k: [] for k in ("ctx_bg", "ctx_fg", "ctx_other", "cls_core", "cls_rest", "cls_bg", "act_fg", "act_bg")
    }
    g = w.actionness_dir
    for r in range(len(data.videos)):
        sl = _span(data, r)
        x = np.asarray(data.features[sl], np.float64)
        t, k = cls[sl], core[sl]
        bg = t < 0
        if bg.any() and (~bg).any():
            pg = w.latent_projection(x, g)
            out["act_fg"].append(float(pg[~bg].mean()))
            out["act_bg"].append(float(pg[bg].mean()))
        plan = data.plans[r]
        groups = {int(w.context_group[c]) for c in plan.labels}
        absent = [c for c in range(len(data.classes)) if int(w.context_group[c]) not in groups]
        if absent:  # a scene the video does not show: the zero line
            out["ctx_other"].append(float(w.latent_projection(x, w.context_dirs[absent[0]]).mean()))
        for c, mode in zip(plan.labels, plan.modes, strict=True):
            pb = w.latent_projection(x, w.context_dirs[c])
            pc = w.latent_projection(x, w.mode_dirs[c, mode])
            fg = t == c
            if bg.any():
                out["ctx_bg"].append(float(pb[bg].mean()))
                out["cls_bg"].append(float(pc[bg].mean()))
            if fg.any():
                out["ctx_fg"].append(float(pb[fg].mean()))
                out["cls_core"].append(float(pc[fg & k].mean()))
                if (fg & ~k).any():
                    out["cls_rest"].append(float(pc[fg & ~k].mean()))
    return {k: float(np.mean(v)) if v else float("nan") for k, v in out.items()}


# ------------------------------------------------------------------------------------ stats


def dataset_stats(videos: pd.DataFrame, annotations: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per subset: the layout statistics that the packaged THUMOS14 ground truth gives.

    Coverage is the union of a video's segments over its duration, averaged over videos.
    """
    out: dict[str, dict[str, float]] = {}
    for subset in sorted(set(videos["subset"])):
        v = videos[videos["subset"] == subset]
        a = annotations[annotations["video_id"].isin(set(v["video_id"]))]
        lengths = (a["end_s"] - a["start_s"]).to_numpy(float)
        covered = []
        for vid, dur in zip(v["video_id"], v["duration_s"], strict=True):
            seg = (
                a.loc[a["video_id"] == vid, ["start_s", "end_s"]].to_numpy(float)
                if len(a)
                else np.zeros((0, 2))
            )
            covered.append(_union_length(seg) / dur if dur > 0 else 0.0)
        per_video = a.groupby("video_id").size().reindex(v["video_id"]).fillna(0).to_numpy()
        out[subset] = {
            "videos": float(len(v)),
            "duration_mean_s": float(v["duration_s"].mean()),
            "duration_median_s": float(v["duration_s"].median()),
            "duration_max_s": float(v["duration_s"].max()),
            "snippets": float(v["n_snippets"].sum()),
            "instances_per_video": float(per_video.mean()),
            "instances_per_video_max": float(per_video.max()),
            "instance_mean_s": float(lengths.mean()) if len(lengths) else float("nan"),
            "instance_median_s": float(np.median(lengths)) if len(lengths) else float("nan"),
            "coverage_mean": float(np.mean(covered)),
            "multi_class_share": float((v["labels"].map(len) > 1).mean()),
            "classes_present": float(a["label"].nunique()),
        }
    return out


def _union_length(seg: np.ndarray) -> float:
    if len(seg) == 0:
        return 0.0
    seg = seg[np.argsort(seg[:, 0], kind="stable")]
    total, cur_s, cur_e = 0.0, seg[0, 0], seg[0, 1]
    for s, e in seg[1:]:
        if s > cur_e:
            total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return float(total + cur_e - cur_s)
