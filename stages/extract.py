"""``wtal extract``: make a feature set, from the built-in synthetic dataset or by importing
features in the layouts the field ships (BaS-Net, W-TALC, per-video folders)."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from wtalcli.core import distributed
from wtalcli.core.console import log as _log
from wtalcli.core.console import progress as _progress
from wtalcli.core.console import silent
from wtalcli.core.console import warn as _warn
from wtalcli.core.errors import InputError, UsageError
from wtalcli.core.store import Artifact, Store, build_or_skip
from wtalcli.data import named_gt
from wtalcli.data.schema import write_feature_set
from wtalcli.data.timegrid import TimeGrid
from wtalcli.video.params import IMPORT_SOURCES, ExtractParams


def extract(
    store: Store, p: ExtractParams, path: Path | None = None, force: bool = False, log=_log
) -> Artifact | None:
    """Build the feature set ``p`` asks for (``path``: the input folder, or the videos' folder or
    list file; none for synthetic). Returns None for a ``--shard`` video run (nothing merged yet)."""
    p.validate()
    if p.source == "synthetic":
        if path is not None:
            raise UsageError("--from synthetic takes no input path", "drop the path, or pick another --from")
        return extract_synthetic(store, preset=p.preset, seed=p.seed, dtype=p.dtype, force=force, log=log)
    if path is None:
        what = "a folder of videos or a list file" if p.source == "videos" else "the input folder"
        raise UsageError(f"--from {p.source} needs {what}", f"e.g. wtal extract --from {p.source} DIR")
    if p.source == "videos":
        return extract_videos(
            store,
            path,
            p.backbone,
            p.weights,
            p.grid(),
            p.batch_size,
            p.device,
            p.shard,
            labels_csv=Path(p.labels) if p.labels else None,
            annotations=p.annotations,
            size=p.size,
            decoder=p.decoder,
            workers=p.workers,
            dtype=p.dtype,
            seed=p.seed,
            force=force,
            log=log,
        )
    return extract_import(
        store,
        p.source,
        path,
        p.grid(),
        p.dtype,
        gt_json=p.gt,
        annotations=p.annotations,
        classes_file=Path(p.classes) if p.classes else None,
        features_file=Path(p.features_file) if p.features_file else None,
        streams=p.streams,
        allow_missing=p.allow_missing,
        keep_unlabeled=p.keep_unlabeled,
        force=force,
        log=log,
    )


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
    root: Path,
    grid: TimeGrid = TimeGrid(),
    dtype: str = "float32",
    gt_json: str | Path | None = None,
    annotations: str | Path | None = None,
    classes_file: Path | None = None,
    features_file: Path | None = None,
    streams: str = "both",
    allow_missing: bool = False,
    keep_unlabeled: bool = False,
    force: bool = False,
    log=_log,
    warn=_warn,
) -> Artifact:
    """Import features in a known layout (``wtalcli/data/importers.py`` documents each) as a feature set.

    ``gt_json`` gives the ground truth where the layout has none of its own (``basnet``: instead
    of ``gt.json``; ``folder``: instead of the folder's JSON); ``annotations`` replaces the
    source's ground truth after the import.  Both take an ActivityNet-style JSON, a folder of
    THUMOS14 txt files or a packaged name (``thumos14``, ``anet13``, ``anet12``);
    ``classes_file`` fixes the class order."""
    from wtalcli.data import importers

    if source not in IMPORT_SOURCES:
        raise InputError(f"unknown source {source!r}", f"use one of {IMPORT_SOURCES} or synthetic")
    root = Path(root)
    if not root.is_dir():
        raise InputError("input folder not found", "pass the folder that holds the features", path=root)
    classes = importers.read_class_list(classes_file) if classes_file else None
    if source == "basnet":
        plan_in = importers.import_basnet(
            root,
            grid,
            gt_json=gt_json,
            classes=classes,
            streams=streams,
            allow_missing=allow_missing,
            keep_unlabeled=keep_unlabeled,
        )
    elif source == "wtalc":
        plan_in = importers.import_wtalc(
            root, grid, features_file=features_file, classes=classes, keep_unlabeled=keep_unlabeled
        )
    else:
        plan_in = importers.import_folder(
            root, gt_json, grid, classes=classes, allow_missing=allow_missing, keep_unlabeled=keep_unlabeled
        )
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


def extract_videos(
    store: Store,
    source: Path,
    backbone: str = "r2plus1d_18",
    weights: str = "hub",
    grid: TimeGrid = TimeGrid(),
    batch_size: int = 32,
    device: str = "auto",
    shard: str | None = None,
    labels_csv: Path | None = None,
    annotations: str | Path | None = None,
    size: int | None = None,
    decoder: str = "pyav",
    workers: int = 1,
    dtype: str = "float32",
    seed: int = 0,
    force: bool = False,
    log=_log,
    show_progress: bool = True,
) -> Artifact | None:
    """Extract features from raw videos (a folder, or a list file ``PATH[<TAB>SUBSET]`` per line).

    Finished videos are cached per video under ``<workdir>/.work/videos-<key>/``, so an interrupted
    run resumes and ``--shard i/N`` runs (other processes or machines sharing the workdir) fill one
    cache; the feature set is assembled once every video is done.  With ``--shard`` only that
    shard is extracted (returns None); run again without ``--shard`` to merge.

    Under ``torchrun`` process RANK extracts shard RANK/WORLD (on ``cuda:LOCAL_RANK`` with a GPU);
    once every rank is done, rank 0 merges and every rank returns the feature set.

    A progress bar on stderr (when it is a terminal; rank 0's shard only under ``torchrun``) counts
    this run's videos, their snippets and the videos that failed."""
    try:
        from wtalcli.video import extract as vx
    except ImportError as exc:  # torchvision / PyAV live in the optional `video` extra
        raise InputError(
            f"video extraction needs torchvision and PyAV ({exc})",
            "install them: bash scripts/setup-video.sh, then use .venv-video/bin/wtal",
        ) from None
    source = Path(source)
    if not source.exists():
        raise InputError(
            "video folder or list not found", "pass a folder of videos or a list file", path=source
        )
    items = vx.list_videos(source)
    if not items:
        raise InputError(
            "no videos found", f"supported extensions: {', '.join(sorted(vx.VIDEO_EXTENSIONS))}", path=source
        )
    ids = [it.video_id for it in items]
    labels = vx.read_labels_csv(labels_csv) if labels_csv else {}
    key_params = {
        "backbone": backbone,
        "weights": str(weights),
        "grid": grid.as_dict(),
        "size": size,
        "decoder": decoder,
        "seed": seed,
        "videos": sorted(ids),
        "signature": source_signature(source)
        if source.is_dir()
        else hashlib.sha256(source.read_bytes()).hexdigest(),
    }
    cache = (
        store.root
        / ".work"
        / f"videos-{hashlib.sha256(repr(sorted(key_params.items())).encode()).hexdigest()[:12]}"
    )
    cache.mkdir(parents=True, exist_ok=True)
    shard_t = vx.parse_shard(shard)
    ctx = distributed.setup("cpu")  # gloo: the ranks only exchange reports and the merged id
    if ctx.active:
        if shard_t is not None:
            raise InputError(
                f"--shard {shard} under torchrun: torchrun already splits the videos",
                "drop --shard (process RANK extracts shard RANK/WORLD)",
            )
        device = str(distributed.resolve_device(device))
        log = log if ctx.is_main else silent
        log(f"{ctx.world} processes, each extracting shard RANK/{ctx.world}")
    where = f" (shard {shard})" if shard else ""
    log(f"extracting {len(ids)} videos with {backbone} into {cache}{where}")
    part = (ctx.rank, ctx.world) if ctx.active else shard_t
    label = "videos" if part is None else f"videos (shard {part[0]}/{part[1]})"
    n_part = len(ids) if part is None else len(range(part[0], len(ids), part[1]))  # vx.extract's split

    with _video_progress(label, n_part, show_progress and ctx.is_main) as on_event:

        def progress(ev) -> None:
            if ev.kind == "failed":
                log(f"{ev.video_id}: failed ({ev.message})")
            on_event(ev)

        report = vx.extract(
            [it.path for it in items],
            cache,
            backbone,
            weights,
            grid,
            batch_size,
            device,
            part,
            progress,
            size=size,
            backend=decoder,
            workers=workers,
            seed=seed,
        )
    # every rank's report (one process: its own); under torchrun this waits for every shard, so all
    # ranks stop on any failure, or go on to the merge together
    reports = distributed.all_gather_object(report)
    failed = [f for r in reports for f in r.failed]
    log(
        f"{sum(len(r.computed) for r in reports)} computed, {sum(len(r.cached) for r in reports)} already "
        f"cached, {len(failed)} failed ({sum(r.snippets for r in reports)} snippets in "
        f"{max(r.seconds for r in reports):.1f} s)"
    )
    if failed:
        listed = "; ".join(f"{f.video_id}: {f.message}" for f in failed[:5])
        raise InputError(
            f"{len(failed)} video(s) could not be decoded: {listed}",
            "fix or remove them and rerun (finished videos are kept)",
            path=source,
        )
    if shard_t is not None:
        return None
    params = {
        "source": "videos",
        **key_params,
        "labels": str(labels_csv) if labels_csv else None,
        "annotations": str(annotations) if annotations else None,
        "dtype": dtype,
    }
    params["source_info"] = report.source
    plan = store.plan("features", "extract", params, seed=seed, lineage={"features": "self"})

    def work(tmp: Path) -> dict:
        ann = None
        if annotations is not None:  # class instances only: Ambiguous segments are no class
            from wtalcli.data.schema import ANNOTATION_COLUMNS

            ann = named_gt.read(annotations).instances()[list(ANNOTATION_COLUMNS)]
        rep = vx.assemble(
            cache,
            ids,
            {it.video_id: it.subset for it in items},
            labels,
            tmp,
            annotations=ann,
            source_subsets={it.video_id: it.source_subset for it in items},
            dtype=dtype,
        )
        return {
            "videos": rep.videos,
            "snippets": rep.snippets,
            "dim": rep.dim,
            "skipped_short": rep.skipped_short,
        }

    return distributed.on_main(lambda: build_or_skip(store, plan, force, log, work))


@contextlib.contextmanager
def _video_progress(label: str, total: int, show: bool):
    """A Rich bar on stderr over the extraction's events; yields the event callback.

    The bar counts finished videos (computed or already cached) out of ``total``; its text gives
    the snippets of those videos and how many failed. ``show=False`` (or a stderr that is not a
    terminal) shows nothing."""
    if not show:
        yield lambda ev: None
        return
    counts = {"snippets": 0, "cached": 0, "failed": 0}

    def text() -> str:
        return f"{counts['snippets']} snippets, {counts['cached']} cached, {counts['failed']} failed"

    with _progress() as bar:
        task = bar.add_task(label, total=total, info=text())

        def on_event(ev) -> None:
            counts["snippets"] += ev.n_snippets
            if ev.kind in ("cached", "failed"):
                counts[ev.kind] += 1
            bar.update(task, total=ev.total, advance=1, info=text())

        yield on_event
