"""Replacing an import's ground truth (``--annotations``) after the import."""

from __future__ import annotations

from dataclasses import replace

from wtalcli.core.errors import InputError
from wtalcli.data import named_gt
from wtalcli.data.annotations import AnnotationSet
from wtalcli.data.importers.common import ImportPlan, ambiguous_rows, examples, subset_map_for
from wtalcli.data.schema import ANNOTATION_COLUMNS, validate_annotations


def override_annotations(plan: ImportPlan, aset: AnnotationSet) -> ImportPlan:
    """Replace a plan's ground truth with ``aset`` (:func:`~wtalcli.data.named_gt.read` of ``--annotations``).

    Video labels become the set of the new labels; ambiguous segments go to ``plan.ambiguous``.
    An imported video absent from ``aset`` keeps no labels (listed, warning); ``aset`` videos that
    were not imported are listed with a warning (a full THUMOS14 txt set covers videos BaS-Net
    leaves out).  A label outside the plan's classes, or a video whose subset in ``aset`` maps to a
    different subset than the plan's, is an error.
    """
    source = aset.source
    classes_ann = aset.instances()
    imported = plan.videos["video_id"].tolist()
    known = set(imported)
    validate_annotations(classes_ann[list(ANNOTATION_COLUMNS)], plan.classes, source)
    smap = subset_map_for(set(aset.subsets()))
    plan_subset = dict(zip(plan.videos["video_id"], plan.videos["subset"], strict=True))
    for vid, info in aset.videos.items():
        target = smap.get(info.subset)
        if vid in plan_subset and target is not None and target != plan_subset[vid]:
            raise InputError(
                f"video {vid!r} is in {info.subset!r} ({target}) here but {plan_subset[vid]} in the import",
                "use annotations of the same split",
                path=source,
            )
    mine = classes_ann[classes_ann["video_id"].isin(known)]
    labels = mine.groupby("video_id")["label"].agg(lambda x: sorted(set(x))).to_dict()
    videos = plan.videos.copy()
    videos["labels"] = [labels.get(v, []) for v in imported]
    without = [v for v in imported if v not in labels]
    extra = sorted(set(classes_ann["video_id"]) - known)
    warnings = list(plan.warnings)
    unmatched = dict(plan.unmatched)
    if without:
        unmatched["videos_without_override_gt"] = without
        warnings.append(f"{len(without)} imported videos have no entry in {aset.name}: {examples(without)}")
    if extra:
        unmatched["override_gt_without_features"] = extra
        warnings.append(f"{len(extra)} videos in {aset.name} were not imported: {examples(extra)}")
    info = dict(plan.source_info)
    info["annotation_override"] = {**named_gt.identity(aset), "instances": len(mine)}
    cols = list(ANNOTATION_COLUMNS)
    return replace(
        plan,
        videos=videos,
        annotations=mine[cols]
        .sort_values(["video_id", "start_s", "label"], kind="stable")
        .reset_index(drop=True),
        ambiguous=ambiguous_rows(aset, known),
        warnings=warnings,
        unmatched=unmatched,
        source_info=info,
    )
