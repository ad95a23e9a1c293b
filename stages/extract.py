"""``wtal extract``: make a feature set, from the built-in synthetic dataset or by importing
features in the layouts the field ships (BaS-Net, W-TALC, per-video folders)."""

from __future__ import annotations

from pathlib import Path

from wtalcli.console import log as _log
from wtalcli.schema import write_feature_set
from wtalcli.store import Artifact, Store, build_or_skip


def extract_synthetic(
    store: Store,
    preset: str = "small",
    seed: int = 0,
    dtype: str = "float32",
    force: bool = False,
    log=_log,
) -> Artifact:
    """Generate the embedded THUMOS-like dataset (``docs/synthetic.md``) as a feature set."""
    from wtalcli import synthetic

    config = synthetic.preset_config(preset)
    params = {
        "source": "synthetic",
        "preset": preset,
        "dtype": dtype,
        "config": synthetic.config_dict(config),
    }
    plan = store.plan("features", "extract", params, seed=seed, lineage={"features": "self"})

    def work(tmp: Path) -> dict:
        data = synthetic.generate(config, seed)
        write_feature_set(
            tmp, data.videos, iter_rows(data), data.classes, data.annotations, dtype, "synthetic"
        )
        return feature_summary(data.videos, data.features.shape[1], len(data.annotations), data.classes)

    return build_or_skip(store, plan, force, log, work)


def iter_rows(data):
    offsets = data.videos["n_snippets"].cumsum().to_numpy()
    start = 0
    for end in offsets:
        yield data.features[start:end]
        start = int(end)


def feature_summary(videos, dim: int, n_annotations: int, classes: list[str]) -> dict:
    counts = videos["subset"].value_counts().to_dict()
    return {
        "videos": {k: int(v) for k, v in sorted(counts.items())},
        "snippets": int(videos["n_snippets"].sum()),
        "dim": int(dim),
        "classes": len(classes),
        "annotations": int(n_annotations),
    }
