"""The ``features`` artifact from raw videos (``wtal extract --from videos``): the videos are
decoded and encoded with a torchvision backbone (:mod:`wtalcli.video.extract`) into a resumable
per-video cache, then assembled into a feature set."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from wtalcli.core import distributed
from wtalcli.core.console import log as _log
from wtalcli.core.console import progress as _progress
from wtalcli.core.console import silent
from wtalcli.core.errors import InputError
from wtalcli.core.store import Artifact, Store, build_or_skip
from wtalcli.data import named_gt
from wtalcli.data.feature_artifact import source_signature
from wtalcli.video.params import ExtractParams


def extract_videos(
    store: Store, source: Path, p: ExtractParams, force: bool = False, log=_log, show_progress: bool = True
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
    grid, device, labels_csv = p.grid(), p.device, Path(p.labels) if p.labels else None
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
        "backbone": p.backbone,
        "weights": str(p.weights),
        "grid": grid.as_dict(),
        "size": p.size,
        "decoder": p.decoder,
        "seed": p.seed,
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
    shard_t = vx.parse_shard(p.shard)
    ctx = distributed.setup("cpu")  # gloo: the ranks only exchange reports and the merged id
    if ctx.active:
        if shard_t is not None:
            raise InputError(
                f"--shard {p.shard} under torchrun: torchrun already splits the videos",
                "drop --shard (process RANK extracts shard RANK/WORLD)",
            )
        device = str(distributed.resolve_device(device))
        log = log if ctx.is_main else silent
        log(f"{ctx.world} processes, each extracting shard RANK/{ctx.world}")
    where = f" (shard {p.shard})" if p.shard else ""
    log(f"extracting {len(ids)} videos with {p.backbone} into {cache}{where}")
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
            p.backbone,
            p.weights,
            grid,
            p.batch_size,
            device,
            part,
            progress,
            size=p.size,
            backend=p.decoder,
            workers=p.workers,
            seed=p.seed,
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
        "annotations": str(p.annotations) if p.annotations else None,
        "dtype": p.dtype,
    }
    params["source_info"] = report.source
    plan = store.plan("features", "extract", params, seed=p.seed, lineage={"features": "self"})

    def work(tmp: Path) -> dict:
        ann = None
        if p.annotations is not None:  # class instances only: Ambiguous segments are no class
            from wtalcli.data.schema import ANNOTATION_COLUMNS

            ann = named_gt.read(p.annotations).instances()[list(ANNOTATION_COLUMNS)]
        rep = vx.assemble(
            cache,
            ids,
            {it.video_id: it.subset for it in items},
            labels,
            tmp,
            annotations=ann,
            source_subsets={it.video_id: it.source_subset for it in items},
            dtype=p.dtype,
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
