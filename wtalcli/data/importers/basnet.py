"""The BaS-Net layout (``--from basnet``): ``features/{train,test}/{rgb,flow}/<video>.npy``,
``gt.json`` and, optionally, ``split_{train,test}.txt``."""

from __future__ import annotations

import functools

from wtalcli.core.errors import InputError
from wtalcli.core.files import file_record
from wtalcli.data import named_gt
from wtalcli.data.importers.assemble import Found, assemble
from wtalcli.data.importers.common import (
    STREAMS,
    Feat,
    ImportOptions,
    ImportPlan,
    add_feat,
    ambiguous_rows,
    feature_header,
    gt_entries,
    load_streams,
    read_split,
    stems,
    subset_map_for,
)
from wtalcli.data.schema import SUBSETS


def import_basnet(opts: ImportOptions) -> ImportPlan:
    """BaS-Net layout: ``root/features/{train,test}/{rgb,flow}/<vid>.npy`` (each ``T x 1024``,
    joined rgb ++ flow), ``root/gt.json`` and optionally ``root/split_{train,test}.txt``.

    ``opts.gt`` replaces ``root/gt.json``: an ActivityNet-style JSON, a THUMOS14 txt folder or a
    packaged name (``thumos14``).  The feature folder decides ``train``/``test`` (as in BaS-Net's
    loader); the ground truth's subset must agree.  Split files, when present and
    ``opts.use_splits``, select the videos.  An RGB and flow file of different lengths are cut to
    the shorter, with a warning naming the video.
    """
    root = opts.root
    if opts.streams not in STREAMS:
        raise InputError(f"unknown stream choice {opts.streams!r}", f"use one of {STREAMS}")
    if opts.gt is None and not (root / "gt.json").exists():
        raise InputError(
            "missing BaS-Net ground truth",
            "pass the BaS-Net dataset folder (with gt.json and features/) or give the ground truth "
            "(a file, or a packaged name such as thumos14)",
            path=root / "gt.json",
        )
    aset = named_gt.read(opts.gt if opts.gt is not None else root / "gt.json")
    gt = gt_entries(aset)
    smap = subset_map_for({g.source_subset for g in gt.values()})
    names = ("rgb", "flow") if opts.streams == "both" else (opts.streams,)
    warnings: list[str] = []
    feats: dict[str, Feat] = {}
    for subset in SUBSETS:
        base = root / "features" / subset
        found = {name: stems(base / name) for name in names}
        for vid in sorted(set().union(*found.values())):
            paths = []
            for name in names:
                if vid not in found[name]:
                    raise InputError(
                        f"video {vid!r} has no {name} features",
                        "restore the file, or import one stream only (streams='rgb' or 'flow')",
                        path=base / name / f"{vid}.npy",
                    )
                paths.append(found[name][vid])
            shapes = [feature_header(p) for p in paths]
            n = min(s[0] for s in shapes)
            if len({s[0] for s in shapes}) > 1:
                lens = ", ".join(f"{name} {s[0]}" for name, s in zip(names, shapes, strict=True))
                warnings.append(f"{vid}: stream lengths differ ({lens}); truncated to {n} snippets")
            dim = sum(s[1] for s in shapes)
            load = functools.partial(load_streams, tuple(paths), n)
            add_feat(feats, Feat(vid, subset, subset, n, dim, load, paths[0]))
    if not feats:
        raise InputError(
            "no feature files found",
            f"expected features/{{train,test}}/{{{','.join(names)}}}/<video>.npy under the folder",
            path=root / "features",
        )

    selection: dict[str, list[str]] | None = None
    split_files = {s: root / f"split_{s}.txt" for s in SUBSETS}
    present = {s: p for s, p in split_files.items() if p.exists()}
    if opts.use_splits and present:
        selection = {s: read_split(p) for s, p in present.items()}
        # a subset without a split file keeps all of its feature files
        for s in SUBSETS:
            if s not in selection:
                selection[s] = sorted(v for v, f in feats.items() if f.folder_subset == s)
    files = {"gt": named_gt.identity(aset)}
    files.update({f"split_{s}": file_record(p) for s, p in present.items()})
    source_info = {
        "files": files,
        "options": {
            "streams": opts.streams,
            "use_splits": opts.use_splits,
            "allow_missing": opts.allow_missing,
            "keep_unlabeled": opts.keep_unlabeled,
            "classes": "given" if opts.classes is not None else "sorted union of ground-truth labels",
        },
        "feature_files": sum(len(stems(root / "features" / s / n)) for s in SUBSETS for n in names),
    }
    plan = assemble(
        Found("basnet", feats, gt, aset.source, smap, opts.classes, selection, warnings, source_info), opts
    )
    plan.ambiguous = ambiguous_rows(aset, set(plan.videos["video_id"]))
    return plan
