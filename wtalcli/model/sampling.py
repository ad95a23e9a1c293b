"""Temporal sampling of a video's ``L`` snippets to the model's fixed length ``T``, and back.

Both samplers see the video as the continuous axis ``[0, L)`` (snippet ``j`` owns the cell
``[j, j+1)``) cut into ``T`` equal bins ``[i L/T, (i+1) L/T)``; sample ``i`` comes from bin ``i``.

- Training (:func:`train_indices`): stratified jitter. A point is drawn uniformly inside each bin and
  the snippet whose cell holds it is taken, so snippet ``j`` is picked with probability equal to the
  share of the bin its cell covers. When ``L < T`` bins are narrower than a snippet and indices
  repeat; when ``L == T`` this is the identity.
  Divergence from the official BaS-Net code (``random_perturb``): it draws an integer uniformly from
  ``[floor(i L/T), floor((i+1) L/T)]`` *inclusive*, so consecutive bins share their boundary snippet,
  and for ``L < T`` it never jitters. Here every bin is half-open and jittered in proportion to cover.
- Test (:func:`eval_indices`): ``idx_i = floor(i L / T)`` (the snippet holding each bin's left edge),
  computed in integer arithmetic so no floating-point rounding can shift an index. (Named ``eval_*``
  rather than ``test_*`` so that pytest never collects it when a test module imports it.)

Mapping ``T`` sampled values back to the ``L`` snippets (:func:`back_map`, :func:`map_back`) is the
inverse of test sampling:

- ``L <= T``: every snippet is sampled at least once; it gets the mean of the samples that point at it.
- ``L > T``: sample-and-hold. Snippet ``j`` takes the value of the last sample at or before it, i.e.
  sample ``ceil((j+1) T/L) - 1``. A sampled snippet therefore gets exactly its own sample's value,
  and the snippets between two samples hold the earlier one. We choose hold over linear
  interpolation because it is exact at the sampled snippets, never invents values the model did not
  produce (min-max normalisation and thresholds downstream see the same values), and matches the
  official time mapping (sample ``i`` stands for the stretch ``[i L/T, (i+1) L/T)``) to within one
  snippet. The official code instead upsamples the length-``T`` CAS by x24 and rescales time.

All randomness comes from a ``numpy.random.Generator`` passed in; nothing touches a global RNG.
"""

from __future__ import annotations

import numpy as np


def _check(length: int | np.ndarray, num_segments: int) -> None:
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    if np.any(np.asarray(length) < 1):
        raise ValueError("every video needs at least one snippet")


def _bin_bounds(lengths: np.ndarray, num_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer snippet range ``[lo, hi)`` whose cells overlap each bin: shapes ``(B, T)``."""
    i = np.arange(num_segments, dtype=np.int64)[None, :]
    lens = lengths.astype(np.int64)[:, None]
    lo = (i * lens) // num_segments
    hi = -((-(i + 1) * lens) // num_segments)  # ceil((i+1) L / T)
    return lo, hi


def eval_indices(length: int, num_segments: int) -> np.ndarray:
    """``(T,)`` int64: ``floor(i * L / T)`` for ``i = 0..T-1``."""
    _check(length, num_segments)
    return (np.arange(num_segments, dtype=np.int64) * int(length)) // num_segments


def batch_eval_indices(lengths: np.ndarray, num_segments: int) -> np.ndarray:
    """``(B, T)`` int64 evaluation (test-time) indices for videos of the given lengths."""
    lengths = np.asarray(lengths, dtype=np.int64)
    _check(lengths, num_segments)
    return (np.arange(num_segments, dtype=np.int64)[None, :] * lengths[:, None]) // num_segments


def batch_train_indices(lengths: np.ndarray, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """``(B, T)`` int64 stratified-jitter indices; one uniform draw per (video, bin) from ``rng``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    _check(lengths, num_segments)
    u = rng.random((len(lengths), num_segments))
    i = np.arange(num_segments, dtype=np.float64)[None, :]
    pos = (i + u) * (lengths[:, None].astype(np.float64) / num_segments)
    lo, hi = _bin_bounds(lengths, num_segments)
    # clip guards the bin edges against floating-point rounding of (i + u) * L / T
    return np.clip(np.floor(pos).astype(np.int64), lo, hi - 1)


def train_indices(length: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """``(T,)`` int64 stratified-jitter indices for one video of ``length`` snippets."""
    return batch_train_indices(np.array([length]), num_segments, rng)[0]


def back_map(length: int, num_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """The map from ``T`` test samples back to ``L`` snippets as a small gather table.

    Returns ``index (L, m)`` int64 and ``weight (L, m)`` float64 with rows summing to 1, such that
    ``mapped[j] = sum_k weight[j, k] * values[index[j, k]]``; ``m = ceil(T / L)`` when ``L < T`` (the
    most samples sharing one snippet), else 1. Padding entries have weight 0. A gather + weighted
    sum, unlike a scatter-add, is deterministic on every device.
    """
    return batch_back_map(np.array([length]), num_segments)


def batch_back_map(lengths: np.ndarray, num_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`back_map` of a batch of videos at once: ``index (sum L, m)`` into the batch's ``(B*T)``
    flattened samples (video ``b``'s samples at rows ``b*T ..``) and ``weight (sum L, m)``, snippets
    in video order; ``m`` is the largest of the videos' own widths (narrower rows padded with weight 0,
    repeating their last index)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    _check(lengths, num_segments)
    T = int(num_segments)
    L = np.repeat(lengths, lengths)  # (N,) each snippet's video length
    first_row = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    j = np.arange(len(L), dtype=np.int64) - np.repeat(first_row, lengths)  # snippet index in its video
    start = -((-j * T) // L)  # first sample i with floor(i L/T) >= j
    end = -((-(j + 1) * T) // L)  # first sample with floor(i L/T) >= j + 1
    count = np.maximum(end - start, 1)  # 0 only when L > T: hold the last sample before j
    first = end - count + np.repeat(np.arange(len(lengths), dtype=np.int64) * T, lengths)
    m = int(count.max()) if len(count) else 1
    k = np.arange(m, dtype=np.int64)[None, :]
    index = first[:, None] + np.minimum(k, count[:, None] - 1)
    weight = (k < count[:, None]) / count[:, None].astype(np.float64)
    return index, weight


def map_back(values: np.ndarray, length: int) -> np.ndarray:
    """Map ``values`` of shape ``(T, ...)`` at the test samples back to ``(L, ...)`` (see :func:`back_map`)."""
    values = np.asarray(values)
    index, weight = back_map(length, values.shape[0])
    if index.shape[1] == 1:
        return values[index[:, 0]]
    w = weight.reshape(weight.shape + (1,) * (values.ndim - 1))
    return (values[index] * w).sum(axis=1).astype(np.result_type(values.dtype, np.float32), copy=False)
