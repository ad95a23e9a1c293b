"""``wtal denoise``: k-means over the embeddings of all training snippets of all videos, then the
confidence map S of method.md 3.2 (share of a snippet's cluster agreeing with its pseudo-label)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from wtalcli.core.console import log as _log
from wtalcli.core.errors import InputError, MismatchError
from wtalcli.core.store import Artifact, Store, build_or_skip
from wtalcli.data.schema import (
    FeatureSet,
    SnippetTable,
    label_matrix,
    load_npy,
    read_classes,
    read_parquet,
    write_videos,
)


@dataclass
class DenoiseParams:
    clusters: int = 64
    iterations: int = 20
    seed: int = 0
    init: str = "k-means++"
    backend: str = "auto"  # auto | torch | faiss
    spherical: bool = False
    normalize: bool = True  # L2-normalise the embeddings first (method.md section 6)
    sample: int | None = None  # iterate on a sample of this many snippets, then assign all
    device: str = "auto"
    # k-means GEMM precision (wtalcli/dcc/kmeans.py): auto = certified mixed bf16/fp32 (the fp32
    # assignments, faster) on a CPU with fast bf16 GEMMs and d >= 512, else fp32; fp32 | mixed | bf16
    precision: str = "auto"


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


def gt_snippet_labels(fs: FeatureSet, table: SnippetTable) -> np.ndarray | None:
    """Ground-truth snippet labels ``(N, C+1)`` of the table's videos (background = no action), or
    None without annotations.  A diagnostic only: never used in training."""
    from wtalcli.evaluation.diagnostics import snippet_truth

    if len(fs.annotations) == 0:
        return None
    truth = snippet_truth(table, fs.annotations, fs.classes)
    return np.concatenate([truth, ~truth.any(1, keepdims=True)], axis=1).astype(np.uint8)


def denoise(
    store: Store,
    pseudolabels: str | None = None,
    model: str | None = None,
    params: DenoiseParams | None = None,
    force: bool = False,
    log=_log,
    tag: str | None = None,
) -> Artifact:
    """Cluster the embeddings of the model that made the pseudo-labels (default: the newest
    pseudo-labels and, unless named, the model in their lineage) and write the confidence map."""
    from wtalcli.dcc.confidence import confidence_map, confidence_summary, video_class_mask
    from wtalcli.dcc.kmeans import kmeans

    p = params or DenoiseParams()
    if p.clusters < 1:
        raise InputError(f"--clusters {p.clusters} must be >= 1", "e.g. --clusters 64")
    pl_art = store.resolve("pseudolabels", pseudolabels, log)
    if model is None:
        model_id = pl_art.lineage.get("model")
        if model_id is None:
            raise InputError(f"{pl_art.id} does not record its model", "pass --model")
        model_art = store.get(store.root / model_id) if (store.root / model_id).exists() else None
        if model_art is None:
            raise MismatchError(f"the model {model_id} of {pl_art.id} is gone", "rerun wtal baseline")
    else:
        model_art = store.get(model)
        if model_art.kind not in ("model", "embeddings"):
            raise InputError(
                f"{model_art.id} is a {model_art.kind} artifact", "pass a model (or embeddings) artifact"
            )
    params = asdict(p)
    if tag:
        params["tag"] = tag
    plan = store.plan(
        "confidence", "denoise", params, {"pseudolabels": pl_art, "model": model_art}, seed=p.seed
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
        if p.clusters > len(x):
            raise InputError(
                f"--clusters {p.clusters} exceeds the {len(x)} training snippets", "use fewer clusters"
            )
        t0 = time.perf_counter()
        km = kmeans(
            x,
            p.clusters,
            p.iterations,
            seed=p.seed,
            init=p.init,
            spherical=p.spherical,
            backend=p.backend,
            device=p.device,
            sample=p.sample,
            precision=p.precision,
        )
        t_km = time.perf_counter() - t0
        s = confidence_map(km.assign, labels, p.clusters)
        t_all = time.perf_counter() - t0
        log(
            f"k-means K={p.clusters} on {len(x):,} x {x.shape[1]} ({km.backend_used} on {km.device_used}, "
            f"{km.precision}): {t_km:.2f} s; with the confidence map {t_all:.2f} s"
        )
        if km.details.get("precision_note") and p.precision == "mixed":
            log(f"k-means precision: fp32, not mixed: {km.details['precision_note']}")
        np.save(tmp / "assign.npy", km.assign.astype(np.int32))
        np.save(tmp / "centroids.npy", km.centroids.astype(np.float32))
        np.save(tmp / "confidence.npy", s.astype(np.float16))
        pd.DataFrame(
            {"iteration": np.arange(1, len(km.inertia_per_iter) + 1), "inertia": km.inertia_per_iter}
        ).to_parquet(tmp / "inertia.parquet")
        write_videos(tmp, videos)
        table = SnippetTable(videos)
        from stages.pseudolabel import long_view

        classes = read_classes(pl_art.path / "classes.json")
        long_view(table, classes, {"label": labels, "confidence": s.astype(np.float32)}).to_parquet(
            tmp / "confidence.parquet"
        )
        fs = (
            FeatureSet(store.get(store.root / pl_art.lineage["features"]).path)
            if "features" in pl_art.lineage
            else None
        )
        gt = gt_snippet_labels(fs, table) if fs is not None else None
        # each class is compared on the videos that carry it (video label or ground truth)
        cmask = (
            video_class_mask(
                videos["offset"].to_numpy(),
                videos["n_snippets"].to_numpy(),
                label_matrix(videos["labels"], classes, bool, pl_art.path),
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
        return out

    return build_or_skip(store, plan, force, log, work)
