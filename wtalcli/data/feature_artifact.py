"""The ``features`` artifact from the built-in synthetic dataset (``docs/synthetic.md``) or from
features in a layout the field ships (:mod:`wtalcli.data.importers`); ``wtal extract`` and the
studies (``run``, ``ablate``) build feature sets through these. Video extraction, the third source,
is :mod:`wtalcli.video.feature_artifact`."""

from __future__ import annotations

import hashlib
from pathlib import Path

from wtalcli.core.console import log as _log
from wtalcli.core.console import warn as _warn
from wtalcli.core.errors import InputError
from wtalcli.core.store import Artifact, Store, build_or_skip
from wtalcli.data import importers, named_gt
from wtalcli.data.importers import ImportOptions
from wtalcli.data.schema import write_feature_set


def extract_synthetic(
    store: Store,
    preset: str = "small",
    seed: int = 0,
    dtype: str = "float32",
    force: bool = False,
    log=_log,
) -> Artifact:
    """Generate the embedded THUMOS-like dataset (``docs/synthetic.md``) as a feature set."""
    from wtalcli.data import synthetic

    config = synthetic.resolve_config(preset)
    params = {
        "source": "synthetic",
        "preset": preset,
        "dtype": dtype,
        "config": synthetic.config_dict(config),
    }
    plan = store.plan("features", "extract", params, seed=seed, lineage={"features": "self"})

    def work(tmp: Path) -> dict:
        data = synthetic.stream(config, seed)  # one video at a time: memory stays bounded
        write_feature_set(
            tmp, data.videos, data.iter_features(), data.classes, data.annotations, dtype, "synthetic"
        )
        return feature_summary(data.videos, config.feature_dim, len(data.annotations), data.classes)

    return build_or_skip(store, plan, force, log, work)


def feature_summary(videos, dim: int, n_annotations: int, classes: list[str]) -> dict:
    counts = videos["subset"].value_counts().to_dict()
    return {
        "videos": {k: int(v) for k, v in sorted(counts.items())},
        "snippets": int(videos["n_snippets"].sum()),
        "dim": int(dim),
        "classes": len(classes),
        "annotations": int(n_annotations),
    }


def source_signature(root: Path) -> str:
    """A cheap fingerprint of an import source: every file's relative path, size and mtime.

    Content hashes of the annotation files are added by the importer's ``source_info``; hashing
    gigabytes of features on every run would defeat the cache."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def extract_import(
    store: Store,
    source: str,
    opts: ImportOptions,
    dtype: str = "float32",
    annotations: str | Path | None = None,
    force: bool = False,
    log=_log,
    warn=_warn,
) -> Artifact:
    """Import features in a known layout (:mod:`wtalcli.data.importers` documents each) as a feature
    set: ``opts`` gives the folder, the time grid and the importer's options; ``annotations``
    replaces the source's ground truth after the import (an ActivityNet-style JSON, a folder of
    THUMOS14 txt files or a packaged name: ``thumos14``, ``anet13``, ``anet12``)."""
    if source not in importers.IMPORTERS:
        raise InputError(
            f"unknown source {source!r}", f"use one of {tuple(importers.IMPORTERS)} or synthetic"
        )
    root, grid = opts.root, opts.grid
    if not root.is_dir():
        raise InputError("input folder not found", "pass the folder that holds the features", path=root)
    plan_in = importers.IMPORTERS[source](opts)
    if annotations is not None:
        plan_in = importers.override_annotations(plan_in, named_gt.read(annotations))
    for w in plan_in.warnings:
        warn(w)
    params = {
        "source": source,
        "root": str(root.resolve()),
        "grid": grid.as_dict(),
        "dtype": dtype,
        "annotations": str(annotations) if annotations else None,
        "source_info": plan_in.source_info,
        "signature": source_signature(root),
    }
    plan = store.plan("features", "extract", params, lineage={"features": "self"})

    def work(tmp: Path) -> dict:
        plan_in.write(tmp, dtype)
        summary = feature_summary(plan_in.videos, plan_in.dim, len(plan_in.annotations), plan_in.classes)
        summary["unmatched"] = {k: len(v) for k, v in plan_in.unmatched.items()}
        summary["warnings"] = plan_in.warnings[:50]
        return summary

    return build_or_skip(store, plan, force, log, work)
