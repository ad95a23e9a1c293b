"""The ``confidence`` artifact (``wtal denoise`` and DCC's refresh rounds): k-means over the
embeddings of all training snippets of all videos, then the confidence map S, the share of a
snippet's cluster agreeing with its pseudo-label (docs/method.md §5), with the clusters, the
inertia per iteration and, where the feature set has ground truth, diagnostics against it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from wtalcli.core.errors import InputError, MismatchError
from wtalcli.core.params import key_dict, record_dict
from wtalcli.core.store import Artifact, Store, build_or_skip
from wtalcli.data.schema import SnippetTable, label_matrix, load_npy, read_classes, read_parquet, write_videos
from wtalcli.dcc.confidence import (
    confidence_summary,
    confidence_voters,
    denoise_confidence,
    video_class_mask,
)
from wtalcli.dcc.params import DenoiseParams
from wtalcli.dcc.pseudolabel_artifact import ground_truth_of, long_view
from wtalcli.evaluation.diagnostics import pseudolabel_quality


def load_embeddings(
    model_art: Artifact, normalize: bool, chunk: int = 65536
) -> tuple[np.ndarray, pd.DataFrame]:
    """The model's training-snippet embeddings as float32 (L2-normalised), and their videos table."""
    h = load_npy(model_art.path / "embeddings.npy", "embeddings")
    videos = read_parquet(model_art.path / "videos.parquet", "embedding videos table")
    x = np.empty(h.shape, np.float32)
    for s in range(0, h.shape[0], chunk):
        block = np.asarray(h[s : s + chunk], dtype=np.float32)
        if normalize:
            block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
        x[s : s + chunk] = block
    if not np.isfinite(x).all():
        raise InputError(
            "embeddings hold NaN or Inf", "retrain the model", path=model_art.path / "embeddings.npy"
        )
    return x, videos


def build_confidence(
    store: Store,
    pl_art: Artifact,
    model_art: Artifact,
    p: DenoiseParams,
    force: bool,
    log,
    tag: str | None = None,
) -> Artifact:
    """The confidence map of the pseudo-labels ``pl_art`` from the embeddings of ``model_art`` (a
    ``model`` or ``embeddings`` artifact), built or found in the cache; ``tag`` names a refresh
    round in the manifest."""
    plan = store.plan(
        "confidence",
        "denoise",
        record_dict(p),
        {"pseudolabels": pl_art, "model": model_art},
        seed=p.seed,
        key_params=key_dict(p),
        tag=tag,
    )

    def work(tmp: Path) -> dict:
        labels = load_npy(pl_art.path / "labels.npy", "pseudo-labels", mmap=False)
        videos = read_parquet(pl_art.path / "videos.parquet", "pseudo-label videos table")
        x, emb_videos = load_embeddings(model_art, p.normalize)
        if list(emb_videos["video_id"]) != list(videos["video_id"]) or len(x) != len(labels):
            raise MismatchError(
                f"{pl_art.id} and the embeddings of {model_art.id} cover different videos or snippets",
                "make the pseudo-labels from the T-CAS of the same model",
            )
        classes = read_classes(pl_art.path / "classes.json")
        y = label_matrix(videos["labels"], classes, bool, pl_art.path)
        voters = confidence_voters(
            videos["offset"].to_numpy(), videos["n_snippets"].to_numpy(), y, len(labels), p.scope
        )
        t0 = time.perf_counter()
        km, s = denoise_confidence(x, labels, voters, p)
        t_km = km.seconds
        t_all = time.perf_counter() - t0
        log(
            f"k-means K={p.clusters} on {len(x):,} x {x.shape[1]} ({km.backend_used} on {km.device_used}, "
            f"{km.precision}): {t_km:.2f} s; with the confidence map {t_all:.2f} s"
        )
        if "precision_note" in km.details:  # the torch backend: which precision ran, and why
            log(f"k-means precision: {km.details['precision_note']}")
        np.save(tmp / "assign.npy", km.assign.astype(np.int32))
        np.save(tmp / "centroids.npy", km.centroids.astype(np.float32))
        np.save(tmp / "confidence.npy", s.astype(np.float16))
        pd.DataFrame(
            {"iteration": np.arange(1, len(km.inertia_per_iter) + 1), "inertia": km.inertia_per_iter}
        ).to_parquet(tmp / "inertia.parquet")
        write_videos(tmp, videos)
        table = SnippetTable(videos)

        long_view(table, classes, {"label": labels, "confidence": s.astype(np.float32)}).to_parquet(
            tmp / "confidence.parquet"
        )
        gt = ground_truth_of(store, pl_art, table)  # a diagnostic only: never used in training
        # each class is compared on the videos that carry it (video label or ground truth)
        cmask = (
            video_class_mask(
                videos["offset"].to_numpy(),
                videos["n_snippets"].to_numpy(),
                y,
                len(labels),
                gt_labels=gt,
            )
            if gt is not None
            else None
        )
        summary_df = confidence_summary(s, labels, classes, gt_labels=gt, class_mask=cmask)
        summary_df.to_parquet(tmp / "summary.parquet")
        sizes = np.bincount(km.assign, minlength=p.clusters)
        out = {
            "snippets": int(len(x)),
            "dim": int(x.shape[1]),
            "backend": km.backend_used,
            "device": km.device_used,
            "kmeans_precision": km.precision,
            "kmeans_precision_note": km.details.get("precision_note", ""),
            "kmeans_seconds": round(t_km, 3),
            "denoise_seconds": round(t_all, 3),
            "final_inertia": float(km.inertia),
            "empty_clusters": int((sizes == 0).sum()),
            "mean_s_pos": float(np.nanmean(summary_df["mean_s_pos"].to_numpy()[:-1])),
            "mean_s_neg": float(np.nanmean(summary_df["mean_s_neg"].to_numpy()[:-1])),
        }
        rechecked = km.details.get("rechecked_per_iter")
        if rechecked:  # mixed precision: share of points recomputed in fp32, mean over iterations
            out["kmeans_rechecked_share"] = round(float(np.mean(rechecked)) / km.n_train, 4)
        if gt is not None:
            act = summary_df.iloc[:-1]
            out["agree"] = float(np.nanmean(act["agree"]))
            out["agree_weighted"] = float(np.nanmean(act["agree_weighted"]))
            carries = np.repeat(y, videos["n_snippets"].to_numpy(), axis=0)
            out["quality"] = pseudolabel_quality(labels, gt, carries, s)
        return out

    return build_or_skip(store, plan, force, log, work)
