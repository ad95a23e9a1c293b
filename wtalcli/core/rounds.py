"""The names of DCC's refresh rounds, written by ``train-dcc`` and read by ``report`` and
``ablate`` through these functions only.

Round N (N >= 1) of a run recomputes the T-CAS, embeddings, pseudo-labels and confidence from the
model being trained; those artifacts carry the tag ``round N`` and name, in their lineage, the
model of the run as ``<model id>@<N>`` (that model is not published until the run ends). Round 0
is what the run started from: its input artifacts, untagged.
"""

from __future__ import annotations

from wtalcli.core.store import Artifact, Store

PREFIX = "round "


def tag(n: int) -> str:
    """The tag of round ``n``'s artifacts."""
    return f"{PREFIX}{n}"


def model_ref(model_id: str, n: int) -> str:
    """How round ``n``'s artifacts name, in their lineage, the model of run ``model_id``."""
    return f"{model_id}@{n}"


def number(art: Artifact) -> int | None:
    """The round ``art`` was made in, or None for an artifact that is no refresh round's."""
    if not art.tag.startswith(PREFIX):
        return None
    try:
        return int(art.tag[len(PREFIX) :])
    except ValueError:
        return None


def of_run(store: Store, kind: str, model_id: str) -> list[tuple[int, Artifact]]:
    """The ``kind`` artifacts of the refresh rounds of run ``model_id``, by round number (the
    newest of a round when it was built more than once)."""
    found: dict[int, Artifact] = {}
    for art in store.artifacts(kind):
        n = number(art)
        if n is not None and art.lineage.get("model", "").startswith(f"{model_id}@"):
            found[n] = art
    return sorted(found.items())
