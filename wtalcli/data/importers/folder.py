"""The per-video layout of ACM-Net and ASM-Loc (``--from folder``): ``{train,test}/<video>.npy``
(or sub-folders named after the source's subsets, or flat) plus an ActivityNet-style JSON."""

from __future__ import annotations

import functools
from pathlib import Path

from wtalcli.core.errors import InputError
from wtalcli.data import named_gt
from wtalcli.data.importers.assemble import Found, assemble
from wtalcli.data.importers.common import (
    Feat,
    ImportOptions,
    ImportPlan,
    add_feat,
    ambiguous_rows,
    feature_header,
    gt_entries,
    load_streams,
    stems,
    subset_map_for,
)
from wtalcli.data.schema import SUBSETS


def _find_gt_json(root: Path) -> Path:
    if (root / "gt.json").exists():
        return root / "gt.json"
    hits = sorted(root.glob("*.json"))
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise InputError(
            "no ground-truth JSON found", "pass the ActivityNet-style ground-truth file", path=root
        )
    names = ", ".join(p.name for p in hits)
    raise InputError(
        f"several JSON files ({names}); which is the ground truth?", "pass it explicitly", path=root
    )


def import_folder(opts: ImportOptions) -> ImportPlan:
    """ACM-Net / ASM-Loc layout: ``root/{train,test}/<vid>.npy`` (``T x D``; sub-folders named
    after the source's subsets, e.g. ``validation/``, and flat ``root/<vid>.npy`` also work) plus
    the ground truth: ``opts.gt`` (an ActivityNet-style JSON, a THUMOS14 txt folder or a packaged
    name such as ``anet13``), else ``root/gt.json``, else the only ``*.json`` in ``root``.

    The ground truth decides each video's subset; a feature folder naming a different one is an
    error.  ``duration``/``fps`` of the JSON are recorded (``fps`` as ``source_fps``).
    """
    root = opts.root
    if not root.is_dir():
        raise InputError("not a folder", "pass the folder holding the per-video .npy files", path=root)
    aset = named_gt.read(opts.gt if opts.gt is not None else _find_gt_json(root))
    gt = gt_entries(aset)
    smap = subset_map_for({g.source_subset for g in gt.values()}, opts.subset_map)
    warnings: list[str] = []
    feats: dict[str, Feat] = {}
    folders: list[tuple[Path, str | None]] = [(root, None)]
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if sub.name in SUBSETS:
            folders.append((sub, sub.name))
        elif sub.name in smap:
            target = smap[sub.name]
            if target is None:
                n = len(list(sub.glob("*.npy")))
                if n:
                    warnings.append(
                        f"{n} files in {sub.name}/ belong to an unlabeled subset and were left out"
                    )
                continue
            folders.append((sub, target))
        elif any(sub.glob("*.npy")):
            warnings.append(f"folder {sub.name}/ names no subset; its .npy files were ignored")
    for folder, subset in folders:
        for vid, path in stems(folder).items():
            n, d = feature_header(path)
            load = functools.partial(load_streams, (path,), n)
            name = folder.name if subset is not None else None
            add_feat(feats, Feat(vid, subset, name, n, d, load, path))
    if not feats:
        raise InputError(
            "no feature files found", "expected train/<video>.npy and test/<video>.npy", path=root
        )
    source_info = {
        "files": {"gt": named_gt.identity(aset)},
        "options": {
            "allow_missing": opts.allow_missing,
            "keep_unlabeled": opts.keep_unlabeled,
            "subset_map": "given" if opts.subset_map else "detected",
            "classes": "given" if opts.classes is not None else "sorted union of ground-truth labels",
        },
        "feature_files": len(feats),
    }
    plan = assemble(
        Found("folder", feats, gt, aset.source, smap, opts.classes, None, warnings, source_info), opts
    )
    plan.ambiguous = ambiguous_rows(aset, set(plan.videos["video_id"]))
    return plan
