"""``wtal extract``: make a feature set, from the built-in synthetic dataset or by importing
features in the layouts the field ships (BaS-Net, W-TALC, per-video folders)."""

from __future__ import annotations

from pathlib import Path

from wtalcli.core.console import log as _log
from wtalcli.core.errors import UsageError
from wtalcli.core.store import Artifact, Store
from wtalcli.data.feature_artifact import extract_import, extract_synthetic
from wtalcli.data.importers import ImportOptions, read_class_list
from wtalcli.video.params import ExtractParams


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
        from wtalcli.video.feature_artifact import extract_videos

        return extract_videos(store, path, p, force=force, log=log)
    opts = ImportOptions(
        path,
        p.grid(),
        gt=p.gt,
        classes=read_class_list(Path(p.classes)) if p.classes else None,
        allow_missing=p.allow_missing,
        keep_unlabeled=p.keep_unlabeled,
        streams=p.streams,
        features_file=Path(p.features_file) if p.features_file else None,
    )
    return extract_import(store, p.source, opts, p.dtype, p.annotations, force=force, log=log)
