"""Importers for feature sets in the layouts the field ships (docs/formats.md), one module per
layout: :mod:`.basnet`, :mod:`.wtalc` (W-TALC / CO2-Net), :mod:`.folder` (ACM-Net / ASM-Loc
per-video files); what they share is in :mod:`.common` (the options, the plan, features on disk)
and :mod:`.assemble` (matching features with ground truth); :mod:`.override` replaces a plan's
ground truth (``--annotations``).

Each ``import_*`` function takes an :class:`ImportOptions` (the folder, the time grid and the
options), inspects the folder (reading only ``.npy`` headers where it can) and returns an
:class:`ImportPlan`: the videos table, the annotations, the class list, warnings,
what could not be matched, provenance for the manifest, and a callable that streams each video's
``(n_snippets, D)`` feature array in row order, ready for :func:`wtalcli.data.schema.write_feature_set`.

Policies (the same for every layout):

- Subsets: the source's own name is kept in ``source_subset``; the mapping to ``train``/``test``
  is detected from the names present (:func:`subset_map_for`) or given explicitly.
  THUMOS14 ``validation`` -> ``train``, ``test`` -> ``test``; ActivityNet ``training`` -> ``train``,
  ``validation`` -> ``test``, ``testing`` -> not imported (no labels).
- Video-level labels: the set of the video's annotation labels (what BaS-Net trains with).
- Classes: an explicit class list if given (a label outside it is an error); else the source's own
  list where it has one (W-TALC ``classlist.npy``); else the sorted union of all labels in the
  ground-truth file (for THUMOS14 that is BaS-Net's and W-TALC's alphabetical order).
- Rows are ordered train first, then test, each by video id (independent of directory listing).
- ``fps``/``stride``/``clip_len`` of every row come from the time grid (the *feature* rate, from
  the options); a source's own video fps is kept in the extra column ``source_fps``.  ``duration_s``
  is the source's duration where it gives one, else the span of the snippets on the grid.
- Unmatched videos are listed in ``plan.unmatched`` and never dropped silently:

  ``features_without_gt``        features but no labelled ground-truth entry: left out with a
                                  warning (``keep_unlabeled=True`` imports them with no labels);
  ``gt_without_features``        ground truth but no features: an **error** (the evaluation would
                                  silently shrink); ``allow_missing=True`` makes it a warning;
  ``listed_without_features``    named in a split file, no features (same policy as above);
  ``features_not_in_split``      feature files a split file does not list: left out, warning;
  ``gt_not_in_split``            ground-truth videos a split file does not list: left out, warning.

- Ground truth (``gt.json``, ``--gt``, ``--annotations``) is read by :mod:`wtalcli.data.annotations`,
  the readers ``wtal evaluate`` uses too, under one strict rule set; a packaged name (``thumos14``,
  ``anet13``, ``anet12``: :mod:`wtalcli.data.named_gt`) stands wherever a ground-truth path does.
  W-TALC's numpy arrays are read here, with the same number and segment rules.
- Bad input (NaN/Inf rows, empty videos, duplicate or unsafe ids, pickled per-video arrays,
  unknown classes, reversed segments) raises :class:`~wtalcli.core.errors.InputError` naming the file.
"""

from __future__ import annotations

from wtalcli.data.annotations import AMBIGUOUS, read_class_list
from wtalcli.data.importers.basnet import import_basnet
from wtalcli.data.importers.common import STREAMS, ImportOptions, ImportPlan, subset_map_for
from wtalcli.data.importers.folder import import_folder
from wtalcli.data.importers.override import override_annotations
from wtalcli.data.importers.wtalc import import_wtalc

# --from name -> importer
IMPORTERS = {"basnet": import_basnet, "wtalc": import_wtalc, "folder": import_folder}

__all__ = [  # read_class_list and AMBIGUOUS are re-exported from wtalcli.data.annotations
    "AMBIGUOUS",
    "IMPORTERS",
    "STREAMS",
    "ImportOptions",
    "ImportPlan",
    "import_basnet",
    "import_folder",
    "import_wtalc",
    "override_annotations",
    "read_class_list",
    "subset_map_for",
]
