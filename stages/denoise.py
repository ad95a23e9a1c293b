"""``wtal denoise``: k-means over the embeddings of all training snippets of all videos, then the
confidence map S (the share of a snippet's cluster agreeing with its pseudo-label; docs/method.md §5)."""

from __future__ import annotations

from wtalcli.core.console import log as _log
from wtalcli.core.errors import InputError, MismatchError
from wtalcli.core.params import check_choices
from wtalcli.core.store import Artifact, Store
from wtalcli.dcc.confidence_artifact import build_confidence
from wtalcli.dcc.params import DenoiseParams


def denoise(
    store: Store,
    pseudolabels: str | None = None,
    model: str | None = None,
    params: DenoiseParams | None = None,
    force: bool = False,
    log=_log,
) -> Artifact:
    """Cluster the embeddings of the model that made the pseudo-labels (default: the newest
    pseudo-labels and, unless named, the model in their lineage) and write the confidence map."""
    p = params or DenoiseParams()
    check_choices(p)
    if p.clusters < 1:
        raise InputError(f"--clusters {p.clusters} must be >= 1", "e.g. --clusters 64")
    pl_art = store.resolve("pseudolabels", pseudolabels, log)
    if model is None:
        model_id = pl_art.lineage.get("model")
        if model_id is None:
            raise InputError(f"{pl_art.id} does not record its model", "pass --model")
        model_art = store.get(store.root / model_id) if (store.root / model_id).exists() else None
        if model_art is None:
            raise MismatchError(f"the model {model_id} of {pl_art.id} is gone", "rerun wtal baseline")
    else:
        model_art = store.get(model)
        if model_art.kind not in ("model", "embeddings"):
            raise InputError(
                f"{model_art.id} is a {model_art.kind} artifact", "pass a model (or embeddings) artifact"
            )
    return build_confidence(store, pl_art, model_art, p, force, log)
