"""Inference: run a trained BaS-Net on whole videos and map its outputs back to every snippet.

The T-CAS is the suppression branch's *raw* class activation (the last convolution's output, no
softmax): BaS-Net's inference min-max normalises that with relu'd minimum and maximum, so negative
stretches stay below every activation threshold (``wtalcli.evaluation.localization``).  Softmax
probabilities over the classes are a derived view (:func:`cas_probabilities`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from wtalcli.data.schema import FeatureSet
from wtalcli.model.basnet import BaSNet
from wtalcli.model.sampling import batch_back_map, batch_eval_indices
from wtalcli.model.trainer import autocast, numerics


class InferenceResult(NamedTuple):
    cas: np.ndarray  # (N, C+1) float32: raw suppression-branch CAS at every snippet
    scores: np.ndarray  # (V, C+1) float32: video scores p' (suppression branch)
    offsets: np.ndarray  # (V,) int64: first row of each video in cas / h (rows in the given order)
    h: np.ndarray | None  # (N, hidden): base-branch embedding per snippet, when asked for
    samples: np.ndarray | None = None  # (V, T, C+1) float32: raw CAS at the T test samples, when asked for


def cas_probabilities(cas: np.ndarray) -> np.ndarray:
    """Softmax over the classes and the background (last axis) of a raw CAS, in float64."""
    x = np.asarray(cas, dtype=np.float64)
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


@torch.no_grad()
def infer(
    model: BaSNet,
    fs: FeatureSet,
    rows: np.ndarray,
    num_segments: int,
    device: torch.device | str,
    batch: int = 16,
    *,
    amp: str = "none",
    tf32: bool = False,
    with_h: bool = False,
    h_out: np.ndarray | None = None,
    h_dtype: np.dtype | type = np.float16,
    cas_out: np.ndarray | None = None,
    with_samples: bool = False,
) -> InferenceResult:
    """Run the model on ``rows`` (test sampling to ``num_segments``) and map everything back to
    each video's own snippets (:func:`wtalcli.model.sampling.back_map`), ``batch`` videos at a time.

    Memory stays bounded by one batch: outputs are written into ``cas_out`` / ``h_out`` when given
    (e.g. ``np.lib.format.open_memmap`` arrays of shape ``(N, C+1)`` / ``(N, hidden)``), where ``N``
    = total snippets of ``rows``, in the order of ``rows``. The model's train/eval mode is restored.
    ``with_samples``: also return the raw CAS at the ``num_segments`` test samples (what the
    official code localizes), ``(len(rows), num_segments, C+1)``.
    """
    device = torch.device(device)
    rows = np.asarray(rows, dtype=np.int64)
    lengths = fs.videos["n_snippets"].to_numpy(np.int64)[rows]
    src = fs.videos["offset"].to_numpy(np.int64)[rows]
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(rows) else lengths.copy()
    n_total, n_out = int(lengths.sum()), model.n_classes + 1
    if cas_out is not None and cas_out.shape != (n_total, n_out):
        raise ValueError(f"cas_out has shape {cas_out.shape}, expected {(n_total, n_out)}")
    cas = cas_out if cas_out is not None else np.empty((n_total, n_out), np.float32)
    h = None
    if with_h or h_out is not None:
        if h_out is not None and h_out.shape != (n_total, model.hidden):
            raise ValueError(f"h_out has shape {h_out.shape}, expected {(n_total, model.hidden)}")
        h = h_out if h_out is not None else np.empty((n_total, model.hidden), h_dtype)
    scores = np.empty((len(rows), n_out), np.float32)
    t = int(num_segments)
    samples = np.empty((len(rows), t, n_out), np.float32) if with_samples else None
    buf = np.empty((batch * t, fs.dim), fs.features.dtype)
    was_training = model.training
    model.eval()
    try:
        with numerics(device, tf32, deterministic=False):
            for start in range(0, len(rows), batch):
                sl = slice(start, min(len(rows), start + batch))
                nb = sl.stop - sl.start
                idx = batch_eval_indices(lengths[sl], t)  # (nb, T)
                flat = (src[sl][:, None] + idx).reshape(-1)
                np.take(fs.features, flat, axis=0, out=buf[: nb * t], mode="clip")
                x = torch.from_numpy(buf[: nb * t]).to(device).view(nb, t, -1).float()
                with autocast(device, amp):
                    out = model(x)
                scores[sl] = out.p_supp.float().cpu().numpy()
                # one gather table for the whole chunk: rows of the (nb*T, ...) flattened outputs
                gidx, gw = batch_back_map(lengths[sl], t)
                m = gidx.shape[1]
                gw = gw.astype(np.float32)
                gidx_t = torch.from_numpy(gidx).to(device)
                gw_t = torch.from_numpy(gw).to(device)[..., None]
                lo, hi = int(offsets[sl.start]), int(offsets[sl.stop - 1] + lengths[sl.stop - 1])
                raw = out.cas_supp.float()  # (nb, T, C+1)
                if samples is not None:
                    samples[sl] = raw.cpu().numpy()
                flat_cas = raw.reshape(nb * t, -1)
                cas[lo:hi] = (flat_cas[gidx_t] * gw_t).sum(dim=1).cpu().numpy()
                if h is not None:
                    emb = out.h_base.float().reshape(nb * t, -1)
                    mapped = emb[gidx_t[:, 0]] if m == 1 else (emb[gidx_t] * gw_t).sum(dim=1)
                    h[lo:hi] = mapped.to(_torch_dtype(h.dtype)).cpu().numpy()
    finally:
        model.train(was_training)
    return InferenceResult(cas, scores, offsets, h, samples)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32}[np.dtype(dtype)]
