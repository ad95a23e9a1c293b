"""Linear probes, a diagnostic against the ground truth (never used for training): how well one
linear direction of a representation (the input features, a model's embedding) separates two
kinds of snippets on videos it was not fitted on.

A probe is an L2-regularised logistic regression on standardised features, with the two kinds
weighted equally, fitted by L-BFGS in float64 (numpy; seeded sampling, deterministic, one CPU
pass over at most ``limit`` snippets). Its L2 strength is chosen among :data:`L2_GRID` on a held-out
share of the videos it is fitted on, never on the videos it scores: :func:`heldout_probe_scores`
fits one probe per half of the videos and scores the other half with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wtalcli.evaluation.diagnostics import auc

L2_GRID = (100.0, 10.0, 1.0, 0.1, 0.01, 0.001, 0.0001)  # strongest first: ties keep the stronger penalty
CHUNK = 16384  # rows standardised and scored at a time


def _take(x, rows: np.ndarray | None, i: np.ndarray) -> np.ndarray:
    """Rows ``i`` of the snippets (``x[rows[i]]``, ``x[i]`` without ``rows``) as float64."""
    return np.asarray(x[i if rows is None else rows[i]], dtype=np.float64)


def _objective(theta: np.ndarray, x: np.ndarray, sign: np.ndarray, weight: np.ndarray, l2: float):
    """Weighted logistic loss plus ``l2 / 2 |w|^2`` and its gradient; ``theta`` = (w, bias)."""
    w, b = theta[:-1], theta[-1]
    margin = -sign * (x @ w + b)  # (n,)
    loss = float(weight @ np.logaddexp(0.0, margin) + 0.5 * l2 * (w @ w))
    dz = -weight * sign / (1.0 + np.exp(-margin))  # d loss / d (x w + b)
    return loss, np.concatenate([x.T @ dz + l2 * w, [dz.sum()]])


def _lbfgs(fg, theta: np.ndarray, max_iter: int = 300, memory: int = 10, tol: float = 1e-4) -> np.ndarray:
    """Minimise a smooth convex function (``fg(theta) -> (value, gradient)``) by L-BFGS with a
    backtracking (Armijo) line search; stops at a gradient below ``tol`` (max norm), a relative
    decrease below 1e-10, or ``max_iter`` iterations."""
    f, g = fg(theta)
    hist: list[tuple[np.ndarray, np.ndarray, float]] = []  # (s, y, 1 / y.s)
    for _ in range(max_iter):
        if np.abs(g).max() < tol:
            break
        q, alphas = g.copy(), []
        for s, y, rho in reversed(hist):
            a = rho * (s @ q)
            q -= a * y
            alphas.append(a)
        if hist:
            s, y, _rho = hist[-1]
            q *= (s @ y) / (y @ y)
        else:
            q /= max(float(np.linalg.norm(g)), 1.0)
        for (s, y, rho), a in zip(hist, reversed(alphas), strict=True):
            q += s * (a - rho * (y @ q))
        d = -q
        slope = float(g @ d)
        if slope >= 0:  # not a descent direction (numerical): restart from the gradient
            hist.clear()
            d, slope = -g, -float(g @ g)
        step = 1.0
        while True:
            new = theta + step * d
            f_new, g_new = fg(new)
            if f_new <= f + 1e-4 * step * slope:
                break
            step *= 0.5
            if step < 1e-12:
                return theta
        s, y = new - theta, g_new - g
        if s @ y > 1e-12:
            hist = [*hist[-(memory - 1) :], (s, y, 1.0 / float(s @ y))]
        decrease = f - f_new
        theta, f, g = new, f_new, g_new
        if decrease <= 1e-10 * max(1.0, abs(f)):
            break
    return theta


def _balanced(y: np.ndarray) -> np.ndarray:
    """Sample weights giving each kind half the total weight."""
    n_pos = max(int(y.sum()), 1)
    n_neg = max(int((~y).sum()), 1)
    return np.where(y, 0.5 / n_pos, 0.5 / n_neg)


@dataclass
class Probe:
    """A fitted probe: standardisation, weights, bias and the L2 strength chosen."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    w: np.ndarray  # (D,)
    b: float
    l2: float

    def score(self, x, rows: np.ndarray | None = None, which: np.ndarray | None = None) -> np.ndarray:
        """The probe's score (logit) of snippets ``which`` (default: all), ``CHUNK`` rows at a time."""
        n = len(rows) if rows is not None else len(x)
        which = np.arange(n) if which is None else np.asarray(which)
        out = np.empty(len(which))
        for k in range(0, len(which), CHUNK):
            part = which[k : k + CHUNK]
            out[k : k + CHUNK] = ((_take(x, rows, part) - self.mean) / self.scale) @ self.w + self.b
        return out


def fit_probe(
    x: np.ndarray, y: np.ndarray, video: np.ndarray, rng: np.random.Generator, l2_grid=L2_GRID
) -> Probe:
    """A probe of ``y`` (bool) on ``x`` (n, D, the fitting snippets), its L2 strength the one of
    ``l2_grid`` with the best AUC on a third of the videos (``video``, (n,)) after fitting on the
    rest, then refitted on all of them. With fewer than three videos, the first strength."""
    mean = x.mean(0)
    scale = np.maximum(x.std(0), 1e-6)
    z = (x - mean) / scale
    sign = np.where(y, 1.0, -1.0)
    theta = np.zeros(z.shape[1] + 1)
    best_l2 = l2_grid[0]
    uv = np.unique(video)
    inner = np.isin(video, rng.permutation(uv)[: len(uv) // 3]) if len(uv) >= 3 else np.zeros(len(y), bool)
    fit, val = ~inner, inner
    if len(l2_grid) > 1 and len(np.unique(y[fit])) == 2 and len(np.unique(y[val])) == 2:
        best, start = -np.inf, theta
        z_fit, sign_fit, w_fit = z[fit], sign[fit], _balanced(y[fit])
        for l2 in l2_grid:  # strongest first, each fit warm-started from the previous one
            theta = _lbfgs(lambda t, lam=l2: _objective(t, z_fit, sign_fit, w_fit, lam), theta)
            a = auc(z[val] @ theta[:-1] + theta[-1], y[val])
            if a > best + 1e-9:
                best, best_l2, start = a, l2, theta.copy()
        theta = start
    weight = _balanced(y)
    theta = _lbfgs(lambda t: _objective(t, z, sign, weight, best_l2), theta)
    return Probe(mean, scale, theta[:-1], float(theta[-1]), float(best_l2))


def heldout_probe_scores(
    x,
    positive: np.ndarray,
    negative: np.ndarray,
    video: np.ndarray,
    fold: np.ndarray,
    rows: np.ndarray | None = None,
    seed: int = 0,
    limit: int = 20000,
) -> tuple[np.ndarray, list[float]]:
    """Two-fold held-out probe scores of N snippets: a probe of ``positive`` against ``negative``
    ((N,) bool, disjoint) fitted on the videos of one fold scores every snippet of the other.

    ``x``: the snippets' representation, row ``rows[i]`` for snippet i (``rows`` None: row i; an
    array or a memory map, read ``CHUNK`` rows at a time); ``video`` (N,) the snippet's video index;
    ``fold`` (V,) bool, the fold of each video. Each probe fits at most ``limit // 2`` of its fold's
    positive and negative snippets (seeded sample). Returns the (N,) scores (NaN in a fold whose
    other half cannot fit a probe) and the L2 strength chosen for each fold."""
    scores = np.full(len(video), np.nan)
    chosen: list[float] = []
    in_a = np.asarray(fold)[video]
    for k, scored in enumerate((in_a, ~in_a)):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9B0E, k]))  # one stream per half
        candidates = np.flatnonzero(~scored & (positive | negative))
        if not (positive[candidates].any() and negative[candidates].any()):
            chosen.append(float("nan"))
            continue
        if len(candidates) > limit // 2:  # a sample with both classes in their own proportion
            pos, neg = candidates[positive[candidates]], candidates[~positive[candidates]]
            n_pos = min(len(pos), max(1, round(limit // 2 * len(pos) / len(candidates))))
            n_neg = min(len(neg), limit // 2 - n_pos)
            candidates = np.sort(
                np.concatenate([rng.choice(pos, n_pos, replace=False), rng.choice(neg, n_neg, replace=False)])
            )
        probe = fit_probe(_take(x, rows, candidates), positive[candidates], video[candidates], rng)
        which = np.flatnonzero(scored)
        scores[which] = probe.score(x, rows, which)
        chosen.append(probe.l2)
    return scores, chosen
