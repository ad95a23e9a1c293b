"""``wtal pseudolabel``: snippet-wise pseudo-labels of the training videos from a T-CAS
(docs/method.md §4), as a dense ``uint8`` array plus a long Parquet view for inspection."""

from __future__ import annotations

from wtalcli.core.console import log as _log
from wtalcli.core.params import check_choices
from wtalcli.core.store import Artifact, Store
from wtalcli.dcc.params import PseudolabelParams
from wtalcli.dcc.pseudolabel_artifact import build_pseudolabels


def pseudolabel(
    store: Store,
    tcas: str | None = None,
    params: PseudolabelParams | None = None,
    force: bool = False,
    log=_log,
) -> Artifact:
    """Pseudo-labels ``A`` for the ``subset`` videos of a T-CAS artifact (default: the newest)."""
    p = params or PseudolabelParams()
    check_choices(p)
    return build_pseudolabels(store, store.resolve("tcas", tcas, log), p, force, log)
