"""``wtal report``: one self-contained HTML page (PNG figures as data URIs) of every stage: which
artifacts (:mod:`wtalcli.report.inputs`), the sections (:mod:`wtalcli.report.sections`) and the page
(:mod:`wtalcli.report.page`). A section whose artifacts are missing shows a note instead of
figures; the page always renders.
"""

from __future__ import annotations

import time
from pathlib import Path

from wtalcli.core.console import log as _log
from wtalcli.core.errors import InputError
from wtalcli.core.files import atomic_write_bytes
from wtalcli.core.store import Store
from wtalcli.report.inputs import ReportParams, select_artifacts
from wtalcli.report.page import build_section, render_html
from wtalcli.report.sections import SECTIONS, Context


def report(store: Store, out: Path, params: ReportParams | None = None, log=_log) -> Path:
    """Write the HTML report of the workdir to ``out`` (atomically); returns its path."""
    p = params or ReportParams()
    if p.videos < 0:
        raise InputError(f"--videos {p.videos} must be >= 0")
    try:
        import matplotlib  # noqa: F401  (the figures need it)
    except ImportError:
        raise InputError(
            "wtal report draws its figures with matplotlib, which is not installed",
            "pip install 'wtal[plot]' (or matplotlib)",
        ) from None
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{out} is a directory", "pass a file name such as report.html", path=out)
    t0 = time.perf_counter()
    sel = select_artifacts(store)
    for role, art in sel.used():
        log(f"using {role} {art.id}")
    ctx = Context(store, sel, p.videos, p.seed)
    sections = [build_section(spec, ctx) for spec in SECTIONS]
    page = render_html(store, sel, sections, time.perf_counter() - t0, p.videos, p.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, page.encode("utf-8"))
    n_fig = sum(len(s.figures) for s in sections)
    log(f"wrote {out} ({n_fig} figures, {len(page) / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    return out
