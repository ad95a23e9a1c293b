"""The built-in synthetic WTAL dataset behind ``wtal extract --from synthetic``.

A generative model of snippet features whose layout statistics follow THUMOS14 (20 classes,
200 training and 212 test videos, long-tailed durations and instance lengths, about 30% of a
video covered, about 15% multi-class videos) and whose feature geometry has the properties
weakly-supervised localization is about: incomplete class evidence inside an instance, class
context in the background (weaker than inside actions), several modes per class plus a
per-video style shift, temporally smooth noise, near-duplicate class pairs, and a class-agnostic
actionness direction. Optional knobs (off by default) make the evidence outside an instance's core
one that a single snippet does not carry linearly: a class pattern whose orientation is drawn per
instance (zero mean) and weaker actionness there. ``docs/synthetic.md`` gives the equations, every
knob and measured figures.

Determinism: every random draw comes from a ``numpy`` generator keyed by ``(seed, stream, video)``
and features are built with element-wise IEEE operations only (no BLAS, and transcendental
functions only through Python's scalar ``math``), so the same seed gives byte-identical arrays
whatever the thread count.  The layout (durations, labels, instances) uses
its own streams, so changing a feature knob leaves the layout unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from wtalcli.core.errors import InputError
from wtalcli.data.timegrid import TimeGrid

GENERATOR_VERSION = 1

# Invented sport-like class names (not the THUMOS14 names).  Each pair is two actions of the same
# sport, the near-duplicates (in the spirit of THUMOS14's CricketBowling / CricketShot).
PAIR_NAMES: tuple[tuple[str, str], ...] = (
    ("TableTennisServe", "TableTennisSmash"),
    ("KayakSlalomGate", "KayakSprintStart"),
    ("SkiJumpTakeoff", "SkiJumpLanding"),
    ("RugbyConversion", "RugbyDropGoal"),
)
SINGLE_NAMES: tuple[str, ...] = (
    "ArcheryRelease",
    "BobsledPush",
    "BoulderingDyno",
    "CurlingDelivery",
    "FencingLunge",
    "HurdleClear",
    "IceHockeySlapShot",
    "KettlebellSwing",
    "LacrosseShot",
    "RopeClimb",
    "RowingStart",
    "SnowboardHalfpipe",
    "SumoCharge",
    "TrampolineSomersault",
    "WaterPoloShot",
    "WeightliftingSnatch",
    "BadmintonJumpSmash",
    "HandballJumpShot",
    "SkateboardOllie",
    "SurfBottomTurn",
    "BmxTailwhip",
    "SpeedSkatingStart",
)

# Random streams (the second element of every SeedSequence spawn key).
_S_WORLD, _S_ASSIGN, _S_LAYOUT, _S_FEATURES, _S_CLASS, _S_PATTERN = 1, 2, 3, 4, 5, 6


@dataclass(frozen=True)
class SyntheticConfig:
    """Every knob of the generator (``docs/synthetic.md`` explains each with its equation).

    Amplitudes are in units of the per-dimension noise standard deviation; a unit direction
    scaled by ``a`` therefore has a signal-to-noise ratio of ``a / noise_std`` along itself.
    """

    # ---- layout: videos, time grid, durations
    n_classes: int = 20  #: number of action classes
    n_train_videos: int = 200  #: videos of subset ``train`` (THUMOS14 validation: 200)
    n_test_videos: int = 212  #: videos of subset ``test`` (THUMOS14 test: 212)
    feature_dim: int = 2048  #: D, the output feature dimension
    latent_dim: int = 128  #: L <= D, the dimension the structured signal and noise live in
    fps: float = 25.0  #: frames per second of the time grid
    stride: int = 16  #: frames between snippet starts
    clip_len: int = 16  #: frames per snippet
    duration_median_s: float = 150.0  #: median video duration (log-normal)
    duration_sigma: float = 0.81  #: log-normal sigma of video durations (long tail)
    duration_min_s: float = 9.0  #: shortest video (clipped)
    duration_max_s: float = 1700.0  #: longest video (clipped)
    # ---- layout: action instances
    instance_median_s: float = 3.2  #: median instance length before the per-class scale
    instance_sigma: float = 0.75  #: log-normal sigma of instance lengths (long tail)
    instance_max_s: float = 120.0  #: longest instance (clipped)
    class_length_spread: float = 0.35  #: log-normal sigma of the per-class length scale
    coverage_mean: float = 0.30  #: mean share of a video inside action instances
    coverage_concentration: float = 4.0  #: Beta concentration of the per-video coverage
    multi_class_share: float = 0.15  #: share of videos with a second class
    partner_cooccurrence: float = 0.5  #: chance that the second class is the near-duplicate partner
    # ---- class geometry
    near_duplicate_pairs: int = 2  #: number of near-duplicate class pairs
    pair_similarity: float = 0.8  #: cosine between the action directions of a pair
    pair_shares_context: bool = True  #: a pair is one sport: both classes share one scene direction
    modes_per_class: int = 3  #: appearance modes per class; a video shows one mode per class
    mode_mix: float = 0.5  #: share of a mode direction's energy that is mode-specific
    # ---- feature amplitudes
    evidence_core: float = 4.0  #: class evidence in the discriminative core of an instance
    evidence_rest: float = 0.3  #: class evidence in the rest of an instance, as a share of the core's
    core_fraction_min: float = 0.25  #: smallest share of an instance that is its core
    core_fraction_max: float = 0.5  #: largest share of an instance that is its core
    instance_gain_sigma: float = 0.25  #: log-normal sigma of per-instance evidence gain
    actionness: float = 2.5  #: class-agnostic foreground direction, inside every instance
    context_bg: float = 1.5  #: class scene (context) in the background of a video of that class
    context_fg: float = 2.5  #: class scene inside that class's action instances
    style_shift: float = 3.0  #: norm of the per-video style offset (low rank)
    style_rank: int = 8  #: rank of the shared subspace the style offsets live in
    noise_std: float = 1.0  #: per-dimension standard deviation of the noise
    noise_ar: float = 0.8  #: AR(1) coefficient of the noise along time (0 = white)
    floor_std: float = 0.3  #: white noise added to every output dimension after the expansion
    edge_blur: float = 0.5  #: Gaussian blur (snippets) of the signal profiles along time (0 = sharp)
    # ---- evidence that one snippet does not carry linearly (off by default; the entangled preset)
    actionness_rest: float = 1.0  #: actionness in the rest of an instance, as a share of the core's
    pattern_rest: float = 0.0  #: class pattern in the rest of an instance, its orientation drawn per instance
    pattern_rank: int = 1  #: dimension of each class's pattern subspace (1: the pattern's sign varies)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def grid(self) -> TimeGrid:
        return TimeGrid(fps=self.fps, stride=self.stride, clip_len=self.clip_len)


def _bad(name: str, value: object, need: str) -> InputError:
    return InputError(f"synthetic config: {name}={value!r} is invalid", f"{name} must be {need}")


def _validate(c: SyntheticConfig) -> None:
    max_classes = 2 * len(PAIR_NAMES) + len(SINGLE_NAMES)
    ints = {
        "n_classes": (1, max_classes),
        "n_train_videos": (1, 10**6),
        "n_test_videos": (0, 10**6),
        "feature_dim": (4, 1 << 16),
        "latent_dim": (4, 1 << 16),
        "stride": (1, 10**4),
        "clip_len": (1, 10**4),
        "modes_per_class": (1, 64),
        "style_rank": (1, 1 << 16),
        "pattern_rank": (1, 64),
        "near_duplicate_pairs": (0, len(PAIR_NAMES)),
    }
    for name, (lo, hi) in ints.items():
        v = getattr(c, name)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise _bad(name, v, f"an integer in [{lo}, {hi}]")
    if 2 * c.near_duplicate_pairs > c.n_classes:
        raise _bad("near_duplicate_pairs", c.near_duplicate_pairs, "at most n_classes // 2")
    if c.n_classes - 2 * c.near_duplicate_pairs > len(SINGLE_NAMES):
        raise _bad("n_classes", c.n_classes, f"at most {len(SINGLE_NAMES)} + 2 * near_duplicate_pairs")
    positive = ("fps", "duration_median_s", "duration_min_s", "instance_median_s", "instance_max_s")
    nonneg = (
        "duration_sigma",
        "instance_sigma",
        "class_length_spread",
        "evidence_core",
        "evidence_rest",
        "instance_gain_sigma",
        "actionness",
        "context_bg",
        "context_fg",
        "style_shift",
        "noise_std",
        "floor_std",
        "edge_blur",
        "pattern_rest",
    )
    unit = ("multi_class_share", "partner_cooccurrence", "mode_mix", "pair_similarity", "actionness_rest")
    for name in positive:
        v = getattr(c, name)
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise _bad(name, v, "a finite number > 0")
    for name in nonneg:
        v = getattr(c, name)
        if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
            raise _bad(name, v, "a finite number >= 0")
    for name in unit:
        v = getattr(c, name)
        if not (isinstance(v, int | float) and 0 <= v <= 1):
            raise _bad(name, v, "a number in [0, 1]")
    if not 0 < c.coverage_mean < 1:
        raise _bad("coverage_mean", c.coverage_mean, "in (0, 1)")
    if not c.coverage_concentration > 0:
        raise _bad("coverage_concentration", c.coverage_concentration, "> 0")
    if not 0 <= c.noise_ar < 1:
        raise _bad("noise_ar", c.noise_ar, "in [0, 1)")
    if not 0 < c.core_fraction_min <= c.core_fraction_max <= 1:
        raise _bad("core_fraction_min/max", (c.core_fraction_min, c.core_fraction_max), "0 < min <= max <= 1")
    if c.latent_dim > c.feature_dim:
        raise _bad("latent_dim", c.latent_dim, f"<= feature_dim ({c.feature_dim})")
    if c.duration_max_s < c.duration_min_s:
        raise _bad("duration_max_s", c.duration_max_s, ">= duration_min_s")
    min_snippets = TimeGrid(c.fps, c.stride, c.clip_len).n_snippets(int(math.floor(c.duration_min_s * c.fps)))
    if min_snippets < 3:  # two labels and the background snippet between them must fit
        raise _bad(
            "duration_min_s",
            c.duration_min_s,
            "long enough for 3 snippets ((2 * stride + clip_len) / fps seconds)",
        )


# The default main job on a 2-core CPU: THUMOS14 counts and instance statistics, durations halved, D = 256.
_SMALL = SyntheticConfig(feature_dim=256, duration_median_s=75.0, duration_min_s=8.0, duration_max_s=850.0)
# small's layout and cost, with the class evidence concentrated in the instance cores and a
# third near-duplicate pair: the BaS-Net baseline lands near its published THUMOS14 mAP
# (docs/synthetic.md, "The realistic preset", gives every value's reason and the figures).
_REALISTIC = dataclasses.replace(_SMALL, near_duplicate_pairs=3, evidence_core=14.0, evidence_rest=0.085)

PRESETS: dict[str, SyntheticConfig] = {
    # Unit tests: a few classes, a few dozen short videos, D = 32.
    "tiny": SyntheticConfig(
        n_classes=5,
        n_train_videos=40,
        n_test_videos=24,
        feature_dim=32,
        latent_dim=32,
        duration_median_s=30.0,
        duration_min_s=8.0,
        duration_max_s=90.0,
        near_duplicate_pairs=1,
        style_rank=4,
    ),
    "small": _SMALL,
    # THUMOS14 scale for a GPU: D = 2048, full durations.
    "thumos": SyntheticConfig(),
    "realistic": _REALISTIC,
    # realistic with the evidence outside each instance's core made nonlinear, a positive control
    # for methods that learn a better embedding: there a class pattern whose sign is drawn per
    # instance (zero mean), half the core's actionness, no linear class evidence, and a scene as
    # strong in the background as inside actions; larger cores bring the baseline back near its
    # published mAP (docs/synthetic.md, "The entangled preset", gives every value's reason).
    "entangled": dataclasses.replace(
        _REALISTIC,
        evidence_rest=0.0,
        core_fraction_min=0.35,
        core_fraction_max=0.6,
        context_fg=1.5,
        actionness_rest=0.5,
        pattern_rest=5.0,
    ),
}


def get_preset(name: str) -> SyntheticConfig:
    """The preset ``name``; an unknown name is an InputError listing the presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown synthetic preset {name!r}", f"use one of {sorted(PRESETS)}") from None


def resolve_config(preset: str, overrides: dict[str, object] | None = None) -> SyntheticConfig:
    """A preset with some knobs replaced (unknown knob names are an InputError)."""
    base = get_preset(preset)
    overrides = dict(overrides or {})
    known = {f.name for f in dataclasses.fields(SyntheticConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError(f"unknown synthetic knob {unknown[0]!r}", f"knobs are: {', '.join(sorted(known))}")
    return dataclasses.replace(base, **overrides)


def config_dict(config: SyntheticConfig) -> dict[str, object]:
    """A JSON-ready record of the config (for the artifact manifest)."""
    d: dict[str, object] = {"generator_version": GENERATOR_VERSION}
    d.update(dataclasses.asdict(config))
    return d


def class_names(config: SyntheticConfig) -> tuple[list[str], dict[str, str]]:
    """The sorted class list and the near-duplicate partner of each paired class."""
    pairs = PAIR_NAMES[: config.near_duplicate_pairs]
    singles = SINGLE_NAMES[: config.n_classes - 2 * len(pairs)]
    partner: dict[str, str] = {}
    for a, b in pairs:
        partner[a], partner[b] = b, a
    names = sorted([n for p in pairs for n in p] + list(singles))
    return names, partner


# ------------------------------------------------------------------------------------ world


@dataclass(frozen=True)
class SyntheticWorld:
    """The hidden geometry shared by all videos (unit vectors, float64)."""

    action_dirs: np.ndarray  # (C, L) class-shared action direction a_c
    mode_dirs: np.ndarray  # (C, M, L) mode directions u_{c,m}
    context_dirs: np.ndarray  # (C, L) scene direction b_c (a pair shares one when pair_shares_context)
    actionness_dir: np.ndarray  # (L,) class-agnostic foreground direction g
    style_basis: np.ndarray  # (R, L) orthonormal basis of the style subspace (R > L: unit rows only)
    partner: np.ndarray  # (C,) index of the near-duplicate partner, -1 if none
    context_group: np.ndarray  # (C,) index of the class whose scene direction class c uses
    expand_index: np.ndarray  # (D,) latent coordinate copied into each output dimension
    expand_sign: np.ndarray  # (D,) float32 +-1 sign of that copy
    pattern_dirs: np.ndarray  # (C, P, L) basis of each class's rest-of-instance pattern subspace q_{c,k}

    def expand(self, v: np.ndarray) -> np.ndarray:
        """Map latent vectors ``(..., L)`` to output space ``(..., D)`` (without the floor noise)."""
        return v[..., self.expand_index] * self.expand_sign

    def latent_projection(self, x: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """Project output features ``(N, D)`` on a latent unit ``direction`` (L,), in latent units."""
        e = self.expand(direction)
        return np.asarray(x, np.float64) @ (e / float(np.sum(e * e)))


def _rng(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(stream, index)))


def _inner(a: np.ndarray, b: np.ndarray) -> float:
    # element-wise product + numpy's pairwise sum: no BLAS, so thread-count independent
    return float(np.sum(a * b))


def _orthonormalise(vectors: np.ndarray) -> np.ndarray:
    """Modified Gram-Schmidt over the first min(n, D) rows; later rows are only normalised."""
    out = vectors.astype(np.float64, copy=True)
    n, d = out.shape
    for i in range(n):
        if i < d:
            for j in range(i):
                out[i] -= _inner(out[i], out[j]) * out[j]
        out[i] /= math.sqrt(_inner(out[i], out[i]))
    return out


def _orthonormalise_after(done: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Continue modified Gram-Schmidt after the rows of ``done``: each row of ``vectors`` loses its
    components along ``done``'s rows and the rows before it while the total count is within D;
    later rows are only normalised (``done`` itself is not touched)."""
    out = vectors.astype(np.float64, copy=True)
    n0, d = done.shape
    for i in range(len(out)):
        if n0 + i < d:
            for j in range(n0):
                out[i] -= _inner(out[i], done[j]) * done[j]
            for j in range(i):
                out[i] -= _inner(out[i], out[j]) * out[j]
        out[i] /= math.sqrt(_inner(out[i], out[i]))
    return out


def _make_world(
    config: SyntheticConfig, seed: int, classes: list[str], partner: dict[str, str]
) -> SyntheticWorld:
    C, M, D, R = config.n_classes, config.modes_per_class, config.latent_dim, config.style_rank
    # each group of vectors from its own stream, so e.g. changing modes_per_class leaves the
    # class, context, actionness and style draws as they were
    raw_action = _rng(seed, _S_WORLD, 0).standard_normal((C, D))
    raw_pair = _rng(seed, _S_WORLD, 1).standard_normal((C, D))
    raw_modes = _rng(seed, _S_WORLD, 2).standard_normal((C, M, D))
    raw_context = _rng(seed, _S_WORLD, 3).standard_normal((C, D))
    raw_actionness = _rng(seed, _S_WORLD, 4).standard_normal((1, D))
    raw_style = _rng(seed, _S_WORLD, 5).standard_normal((R, D))
    rng = _rng(seed, _S_WORLD, 6)
    # orthonormal where D allows: actionness, class, context and style first, then the modes
    base = _orthonormalise(
        np.concatenate([raw_actionness, raw_action, raw_context, raw_style, raw_modes.reshape(C * M, D)])
    )
    g = base[0]
    a = base[1 : 1 + C].copy()
    b = base[1 + C : 1 + 2 * C].copy()
    style = base[1 + 2 * C : 1 + 2 * C + R]
    e = base[1 + 2 * C + R :].reshape(C, M, D)
    # the rest-of-instance pattern subspaces: their own stream, orthogonalised after every vector
    # above (as far as D allows), so those vectors are the same whatever the pattern knobs
    P = config.pattern_rank
    raw_pattern = _rng(seed, _S_WORLD, 7).standard_normal((C * P, D))
    q = _orthonormalise_after(base, raw_pattern).reshape(C, P, D)
    index = {c: i for i, c in enumerate(classes)}
    partner_idx = np.full(C, -1, np.int64)
    for name, other in partner.items():
        partner_idx[index[name]] = index[other]
    s = config.pair_similarity
    for i in range(C):
        j = int(partner_idx[i])
        if j > i:  # the later class of a pair is built from the earlier one: cos(a_i, a_j) = s exactly
            n = raw_pair[j] - _inner(raw_pair[j], a[i]) * a[i]
            n /= math.sqrt(_inner(n, n))
            a[j] = s * a[i] + math.sqrt(max(0.0, 1.0 - s * s)) * n
            if config.pair_shares_context:
                b[j] = b[i]
    # mode m of class c: sqrt(1 - mix) a_c + sqrt(mix) e_{c,m} (e orthogonal to a_c up to D's room)
    mix = config.mode_mix
    u = math.sqrt(1.0 - mix) * a[:, None, :] + math.sqrt(mix) * e
    u /= np.sqrt(np.sum(u * u, axis=-1, keepdims=True))
    # expansion L -> D: each latent coordinate copied to D/L (balanced) output dimensions with a random sign
    if config.feature_dim == D:
        index, sign = np.arange(D), np.ones(D, np.float32)
    else:
        index = rng.permutation(np.resize(np.arange(D), config.feature_dim))
        sign = np.where(rng.random(config.feature_dim) < 0.5, -1.0, 1.0).astype(np.float32)
    group = np.arange(C)
    if config.pair_shares_context:
        group = np.where((partner_idx >= 0) & (partner_idx < group), partner_idx, group)
    return SyntheticWorld(
        action_dirs=a,
        mode_dirs=u,
        context_dirs=b,
        actionness_dir=g,
        style_basis=style,
        partner=partner_idx,
        context_group=group,
        expand_index=index,
        expand_sign=sign,
        pattern_dirs=q,
    )


# ------------------------------------------------------------------------------------ layout


@dataclass(frozen=True)
class VideoPlan:
    """The layout of one video: its classes, modes, style and instances (snippet indices)."""

    video_id: str
    subset: str
    n_snippets: int
    duration_s: float
    labels: tuple[int, ...]  # class indices
    modes: tuple[int, ...]  # the mode shown for each label, same order
    style: np.ndarray  # (R,) style coordinates z_v (the offset is style_shift * z_v @ basis)
    instances: np.ndarray  # (K, 5) int64: start, end (exclusive), class, core start, core end (exclusive)
    gains: np.ndarray  # (K,) float64 per-instance evidence gain
    feature_index: int  # key of the video's feature stream
    patterns: np.ndarray  # (K, P) float64 unit orientation of each instance's rest pattern (0 when off)


def _assign_labels(
    config: SyntheticConfig, seed: int, n: int, subset_key: int, partner: np.ndarray
) -> list[list[int]]:
    """Balanced primary classes (round robin over a permutation) + an exact share of multi-class videos."""
    rng = _rng(seed, _S_ASSIGN, subset_key)
    C = config.n_classes
    primary = np.resize(rng.permutation(C), n)
    primary = primary[rng.permutation(n)]
    labels = [[int(p)] for p in primary]
    n_multi = int(round(config.multi_class_share * n)) if C > 1 else 0
    for v in rng.permutation(n)[:n_multi]:
        first = labels[v][0]
        draw_partner, pick = rng.random(), rng.integers(C - 1)
        if partner[first] >= 0 and draw_partner < config.partner_cooccurrence:
            second = int(partner[first])
        else:
            second = int(pick if pick < first else pick + 1)
        labels[v].append(second)
    return labels


def _layout_video(
    config: SyntheticConfig,
    rng: np.random.Generator,
    labels: list[int],
    class_scale: np.ndarray,
) -> tuple[int, float, np.ndarray, np.ndarray, tuple[int, ...], np.ndarray]:
    grid = config.grid
    sps = grid.seconds_per_snippet
    dur = math.exp(float(rng.normal(math.log(config.duration_median_s), config.duration_sigma)))
    dur = min(max(dur, config.duration_min_s), config.duration_max_s)
    n_frames = int(math.floor(dur * config.fps))
    n = grid.n_snippets(n_frames)
    duration_s = n_frames / config.fps
    modes = tuple(int(rng.integers(config.modes_per_class)) for _ in labels)
    style = rng.standard_normal(config.style_rank) / math.sqrt(config.style_rank)
    a = config.coverage_mean * config.coverage_concentration
    b = (1.0 - config.coverage_mean) * config.coverage_concentration
    target = float(rng.beta(a, b)) * n
    # number of instances: Poisson around target / mean length (at least one per label); the
    # lengths are drawn independently of that count, so their distribution is not size-biased
    spread = math.exp(config.instance_sigma**2 / 2.0)
    mean_len = float(np.mean([config.instance_median_s * class_scale[c] for c in labels])) * spread / sps
    K = max(len(labels), int(rng.poisson(target / mean_len)))
    classes = list(labels) + [labels[int(rng.integers(len(labels)))] for _ in range(K - len(labels))]
    lengths = []
    for c in classes:
        sec = math.exp(
            float(rng.normal(math.log(config.instance_median_s * class_scale[c]), config.instance_sigma))
        )
        lengths.append(max(1, int(round(min(sec, config.instance_max_s) / sps))))
    # fit into the video with at least one background snippet between instances: drop random
    # instances (never a label's last one), then shrink what is left if it still does not fit
    while sum(lengths) + len(lengths) - 1 > n and len(lengths) > len(labels):
        counts = {c: classes.count(c) for c in labels}
        droppable = [i for i, c in enumerate(classes) if counts[c] > 1]
        i = droppable[int(rng.integers(len(droppable)))]
        del lengths[i], classes[i]
    budget = n - (len(lengths) - 1)
    if sum(lengths) > budget:
        lengths = [max(1, (x * budget) // sum(lengths)) for x in lengths]
        while sum(lengths) > budget and max(lengths) > 1:
            lengths[int(np.argmax(lengths))] -= 1
    total = sum(lengths)
    order = rng.permutation(len(lengths))
    lengths = [lengths[i] for i in order]
    classes = [classes[i] for i in order]
    K = len(lengths)
    free = n - total - (K - 1)
    gaps = rng.multinomial(free, rng.dirichlet(np.ones(K + 1))) if free > 0 else np.zeros(K + 1, np.int64)
    gaps[1:K] += 1
    inst = np.zeros((K, 5), np.int64)
    gains = np.zeros(K, np.float64)
    pos = 0
    for i in range(K):
        pos += int(gaps[i])
        L = lengths[i]
        frac = rng.uniform(config.core_fraction_min, config.core_fraction_max)
        core = max(1, int(round(frac * L)))
        core_start = pos + int(rng.integers(L - core + 1))
        gains[i] = math.exp(config.instance_gain_sigma * rng.standard_normal())
        inst[i] = (pos, pos + L, classes[i], core_start, core_start + core)
        pos += L
    return n, duration_s, inst, gains, modes, style


def _instance_patterns(config: SyntheticConfig, seed: int, index: int, k: int) -> np.ndarray:
    """Per instance, a uniform unit vector in R^P (P = 1: a random sign), from the video's own
    pattern stream; zeros when ``pattern_rest`` is 0 (then nothing is drawn)."""
    P = config.pattern_rank
    if config.pattern_rest <= 0:
        return np.zeros((k, P))
    w = _rng(seed, _S_PATTERN, index).standard_normal((k, P))
    for i in range(k):
        w[i] /= math.sqrt(_inner(w[i], w[i]))
    return w


class SyntheticStream:
    """A planned synthetic dataset whose features are generated one video at a time.

    ``videos``, ``annotations`` and ``classes`` are ready at once; :meth:`iter_features` yields
    each video's ``(n_snippets, D)`` float32 array in row order (bounded memory: one video).
    """

    def __init__(self, config: SyntheticConfig, seed: int):
        if not isinstance(seed, int | np.integer) or seed < 0:
            raise InputError(f"synthetic seed {seed!r} is invalid", "use an integer >= 0")
        self.config = config
        self.seed = int(seed)
        self.grid = config.grid
        self.classes, partner = class_names(config)
        self.world = _make_world(config, self.seed, self.classes, partner)
        scale_rng = _rng(self.seed, _S_CLASS)
        log_scale = config.class_length_spread * scale_rng.standard_normal(config.n_classes)
        # centred so the dataset-wide instance length follows instance_median_s whatever the seed
        self.class_length_scale = np.array([math.exp(v) for v in log_scale - log_scale.mean()])
        plans: list[VideoPlan] = []
        for key, (subset, source, count) in enumerate(
            (("train", "validation", config.n_train_videos), ("test", "test", config.n_test_videos))
        ):
            labels = _assign_labels(config, self.seed, count, key, self.world.partner)
            for i in range(count):
                index = key * 10**6 + i
                rng = _rng(self.seed, _S_LAYOUT, index)
                n, dur, inst, gains, modes, style = _layout_video(
                    config, rng, labels[i], self.class_length_scale
                )
                patterns = _instance_patterns(config, self.seed, index, len(inst))
                plans.append(
                    VideoPlan(
                        video_id=f"video_{source}_{i:07d}",
                        subset=subset,
                        n_snippets=n,
                        duration_s=dur,
                        labels=tuple(labels[i]),
                        modes=modes,
                        style=style,
                        instances=inst,
                        gains=gains,
                        feature_index=index,
                        patterns=patterns,
                    )
                )
        self.plans = plans
        self.videos = self._videos_frame()
        self.annotations = self._annotations_frame()

    # -- tables
    def _videos_frame(self) -> pd.DataFrame:
        n = np.array([p.n_snippets for p in self.plans], np.int64)
        offset = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
        return pd.DataFrame(
            {
                "video_id": [p.video_id for p in self.plans],
                "subset": [p.subset for p in self.plans],
                "source_subset": ["validation" if p.subset == "train" else "test" for p in self.plans],
                "n_snippets": n,
                "duration_s": np.array([p.duration_s for p in self.plans], np.float64),
                "fps": np.full(len(n), float(self.config.fps)),
                "stride": np.full(len(n), self.config.stride, np.int64),
                "clip_len": np.full(len(n), self.config.clip_len, np.int64),
                "offset": offset,
                "labels": [sorted(self.classes[c] for c in p.labels) for p in self.plans],
            }
        )

    def _annotations_frame(self) -> pd.DataFrame:
        rows: dict[str, list] = {"video_id": [], "label": [], "start_s": [], "end_s": []}
        for p in self.plans:
            inst = p.instances
            if len(inst) == 0:
                continue
            rows["video_id"].extend([p.video_id] * len(inst))
            rows["label"].extend(self.classes[int(c)] for c in inst[:, 2])
            rows["start_s"].extend(self.grid.index_to_seconds(inst[:, 0]).tolist())
            rows["end_s"].extend(self.grid.index_to_seconds(inst[:, 1]).tolist())
        return pd.DataFrame(rows).astype({"start_s": np.float64, "end_s": np.float64})

    @property
    def n_snippets(self) -> int:
        return int(self.videos["n_snippets"].sum())

    # -- features
    def video_features(self, row: int) -> np.ndarray:
        """The ``(n_snippets, D)`` float32 features of video ``row``."""
        return _video_features(self.config, self.world, self.plans[row], self.seed)

    def iter_features(self) -> Iterator[np.ndarray]:
        for row in range(len(self.plans)):
            yield self.video_features(row)

    def snippet_truth(self) -> tuple[np.ndarray, np.ndarray]:
        """Per snippet (all videos, row order): class index (-1 = background) and core mask."""
        cls = np.full(self.n_snippets, -1, np.int64)
        core = np.zeros(self.n_snippets, bool)
        offsets = self.videos["offset"].to_numpy()
        for off, p in zip(offsets, self.plans, strict=True):
            for s, e, c, cs, ce in p.instances:
                cls[off + s : off + e] = c
                core[off + cs : off + ce] = True
        return cls, core


def _blur(profile: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur along time with edge replication (np.convolve: deterministic, no BLAS)."""
    if sigma <= 0 or profile.shape[0] < 2:
        return profile
    r = max(1, int(math.ceil(3 * sigma)))
    k = np.array([math.exp(-0.5 * (i / sigma) ** 2) for i in range(-r, r + 1)])
    k /= k.sum()
    padded = np.concatenate([np.full(r, profile[0]), profile, np.full(r, profile[-1])])
    return np.convolve(padded, k, mode="valid")


def _video_features(config: SyntheticConfig, world: SyntheticWorld, plan: VideoPlan, seed: int) -> np.ndarray:
    T, D = plan.n_snippets, config.latent_dim
    rng = _rng(seed, _S_FEATURES, plan.feature_index)
    # temporally smooth noise: stationary AR(1) with per-dimension std noise_std
    x = rng.standard_normal((T, D), dtype=np.float32)
    x *= np.float32(config.noise_std)
    phi = np.float32(config.noise_ar)
    if phi > 0:
        innov = np.float32(math.sqrt(1.0 - config.noise_ar**2))
        x[1:] *= innov
        for t in range(1, T):
            x[t] += phi * x[t - 1]
    # signal profiles (T,) per direction
    terms: list[tuple[np.ndarray, np.ndarray]] = []
    inside_any = np.zeros(T)
    inside_ctx: dict[int, np.ndarray] = {}
    class_profile: dict[int, np.ndarray] = {c: np.zeros(T) for c in plan.labels}
    for (s, e, c, cs, ce), g in zip(plan.instances, plan.gains, strict=True):
        gain = config.evidence_core * g
        inside_any[s:e] = config.actionness_rest
        inside_any[cs:ce] = 1.0
        prof = class_profile[int(c)]
        prof[s:e] = gain * config.evidence_rest
        prof[cs:ce] = gain
    # context: one scene per distinct context direction among the labels
    ctx_of = {c: int(world.context_group[c]) for c in plan.labels}
    for c in plan.labels:
        inside_ctx.setdefault(ctx_of[c], np.zeros(T))
    for s, e, c, _, _ in plan.instances:
        inside_ctx[ctx_of[int(c)]][s:e] = 1.0
    for k, inside in sorted(inside_ctx.items()):
        prof = config.context_bg + (config.context_fg - config.context_bg) * inside
        terms.append((prof, world.context_dirs[k]))
    terms.append((config.actionness * inside_any, world.actionness_dir))
    for c, m in zip(plan.labels, plan.modes, strict=True):
        terms.append((class_profile[c], world.mode_dirs[c, m]))
    if config.pattern_rest > 0:
        # the rest of each instance (inside it, outside its core) shows its class's pattern along
        # the instance's own orientation w_i: sum_k w_ik q_{c,k}, one blurred profile per (c, k)
        coef = {c: np.zeros((T, config.pattern_rank)) for c in plan.labels}
        for (s, e, c, cs, ce), g, w in zip(plan.instances, plan.gains, plan.patterns, strict=True):
            amp = config.pattern_rest * g
            coef[int(c)][s:e] = amp * w
            coef[int(c)][cs:ce] = 0.0
        for c in plan.labels:
            for k in range(config.pattern_rank):
                terms.append((coef[c][:, k], world.pattern_dirs[c, k]))
    for prof, direction in terms:
        p = _blur(prof, config.edge_blur).astype(np.float32)
        x += np.multiply.outer(p, direction.astype(np.float32))
    # per-video style offset in the shared low-rank subspace
    if config.style_shift > 0:
        offset = np.sum(plan.style[:, None] * world.style_basis, axis=0) * config.style_shift
        x += offset.astype(np.float32)[None, :]
    if config.feature_dim != D:
        x = world.expand(x)
    if config.floor_std > 0:
        x += np.float32(config.floor_std) * rng.standard_normal(x.shape, dtype=np.float32)
    return x


# ------------------------------------------------------------------------------------ dataset


@dataclass
class SyntheticData:
    """A generated dataset held in memory (``features`` rows follow ``videos`` rows)."""

    videos: pd.DataFrame
    features: np.ndarray  # (sum n_snippets, D) float32, C-contiguous
    annotations: pd.DataFrame
    classes: list[str]
    config: SyntheticConfig
    seed: int
    world: SyntheticWorld
    snippet_class: np.ndarray  # (N,) int64, class index or -1 for background
    snippet_core: np.ndarray  # (N,) bool, inside an instance's discriminative core
    plans: list[VideoPlan]  # per-video hidden layout (modes, style, instances), row order

    @property
    def grid(self) -> TimeGrid:
        return self.config.grid

    def features_of(self, row: int) -> np.ndarray:
        r = self.videos.iloc[row]
        return self.features[int(r["offset"]) : int(r["offset"]) + int(r["n_snippets"])]


def stream(config: SyntheticConfig, seed: int) -> SyntheticStream:
    """Plan a dataset; its features are generated lazily, one video at a time."""
    return SyntheticStream(config, seed)


def generate(config: SyntheticConfig, seed: int) -> SyntheticData:
    """Generate the whole dataset in memory (peak = the feature array + one video)."""
    st = SyntheticStream(config, seed)
    feats = np.empty((st.n_snippets, config.feature_dim), np.float32)
    offsets = st.videos["offset"].to_numpy()
    for row, off in enumerate(offsets):
        x = st.video_features(row)
        feats[off : off + x.shape[0]] = x
    cls, core = st.snippet_truth()
    return SyntheticData(
        videos=st.videos,
        features=feats,
        annotations=st.annotations,
        classes=list(st.classes),
        config=config,
        seed=st.seed,
        world=st.world,
        snippet_class=cls,
        snippet_core=core,
        plans=st.plans,
    )
