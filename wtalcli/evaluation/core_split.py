"""Where pseudo-labels miss: their recall on the discriminative cores of the training instances
against the rest of each instance (the non-core snippets), a diagnostic against the synthetic
generator's hidden truth (:mod:`wtalcli.data.synthetic_truth`), never used for training.

DCC's claim is about the weak evidence outside an action's core: the contrast should pull it
towards its class. Its targets decide which snippets it pulls where. A pseudo-label IoU hides
whether the misses fall on the cores or on the non-core parts; this split shows it. Kept out of
the training stages' modules on purpose, so that editing it leaves every trained artifact valid
(``wtalcli.core.fingerprint``): only ``ablate`` and ``report`` read it.
"""

from __future__ import annotations

import numpy as np

from wtalcli.core import rounds as refresh_rounds
from wtalcli.core.store import Artifact, Store
from wtalcli.data.schema import FeatureSet, SnippetTable, label_matrix, load_npy, read_parquet
from wtalcli.data.synthetic_truth import hidden_core
from wtalcli.evaluation.diagnostics import snippet_truth

KEYS = ("recall_core", "recall_noncore", "background_labelled")


def split_counts(labels: np.ndarray, truth: np.ndarray, carries: np.ndarray, core: np.ndarray) -> dict:
    """``labels`` (N, C+1) 0/1 pseudo-labels (background last, not read); ``truth`` (N, C) bool
    ground-truth snippet classes; ``carries`` (N, C) bool, the snippet's video carries the class;
    ``core`` (N,) bool, the snippet lies in an instance's core. On the labelled classes' channels:
    ``recall_core``, the share of core snippets labelled with their class; ``recall_noncore``, the
    same for an instance's other snippets; ``background_labelled``, the share of background
    snippets (no class at all) labelled with a class the video carries. NaN where a group is
    empty."""
    c = truth.shape[1]
    a = np.asarray(labels)[:, :c].astype(bool)
    g = truth & carries
    groups = {
        "recall_core": g & core[:, None],
        "recall_noncore": g & ~core[:, None],
        "background_labelled": carries & ~truth.any(1, keepdims=True),
    }
    return {k: float(a[m].mean()) if m.any() else float("nan") for k, m in groups.items()}


class CoreSplit:
    """:func:`split_counts` for pseudo-label artifacts of one store; the feature sets' hidden
    cores are derived once each."""

    def __init__(self, store: Store):
        self.store = store
        self._cores: dict[str, tuple[FeatureSet, np.ndarray | None]] = {}

    def _features(self, fs_id: str) -> tuple[FeatureSet, np.ndarray | None]:
        if fs_id not in self._cores:
            fs = FeatureSet(self.store.get(self.store.root / fs_id).path)
            self._cores[fs_id] = (fs, hidden_core(fs.path, fs, fs.annotations))
        return self._cores[fs_id]

    def of(self, pl: Artifact) -> dict:
        """The split of pseudo-label artifact ``pl`` (all NaN where its feature set is gone or has
        no known cores: an imported one)."""
        out = dict.fromkeys(KEYS, float("nan"))
        fs_id = pl.lineage.get("features")
        if fs_id is None or not (self.store.root / fs_id).is_dir():
            return out
        fs, core_all = self._features(fs_id)
        if core_all is None:
            return out
        videos = read_parquet(pl.path / "videos.parquet", "pseudo-label videos table")
        labels = np.asarray(load_npy(pl.path / "labels.npy", "pseudo-labels"))
        if labels.shape[1] != len(fs.classes) + 1:
            return out  # another class list than the feature set's: not comparable
        sub = SnippetTable(videos)
        core = np.zeros(len(labels), bool)
        for r, vid in enumerate(videos["video_id"]):
            k = fs.find(vid)
            if k is None:
                return out
            core[sub.span(r)] = core_all[fs.span(k)]
        y = label_matrix(videos["labels"], fs.classes, bool, pl.path)
        carries = np.repeat(y, videos["n_snippets"].to_numpy(), axis=0)
        return split_counts(labels, snippet_truth(sub, fs.annotations, fs.classes), carries, core)

    def of_run(self, model: str) -> dict:
        """For a ``train-dcc`` run (artifact id ``model``): the split of the pseudo-labels it
        started from (``pl_start_<key>``) and of those in use at its end, its last refresh round's
        (``pl_<key>``); NaN for a run without pseudo-labels (the baseline, oracle targets)."""
        nan = float("nan")
        out = {f"pl_start_{k}": nan for k in KEYS} | {f"pl_{k}": nan for k in KEYS}
        m = self.store.get(self.store.root / model)
        start = m.manifest.get("inputs", {}).get("pseudolabels")
        if start is None:
            return out
        first = self.of(self.store.get(self.store.root / start["id"]))
        rounds = refresh_rounds.of_run(self.store, "pseudolabels", m.id)
        last = self.of(rounds[-1][1]) if rounds else first
        return out | {f"pl_start_{k}": v for k, v in first.items()} | {f"pl_{k}": v for k, v in last.items()}
