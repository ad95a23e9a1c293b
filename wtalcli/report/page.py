"""The report page: a section (its figures, tables and notes), how a section is built from its
spec (the skeleton every section shares: the models it draws, a note when none is there, a note
instead of a failure on damaged inputs), and the self-contained HTML (PNG figures as data URIs)."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wtalcli.core.errors import WtalError
from wtalcli.core.store import Artifact, Store, code_version
from wtalcli.report.inputs import ROLES, ReportInputs


@dataclass
class ReportFigure:
    png: bytes
    caption: str
    alt: str


@dataclass
class Section:
    anchor: str
    title: str
    intro: str = ""
    figures: list[ReportFigure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # HTML tables, escaped when built
    seconds: float = 0.0


@dataclass(frozen=True)
class SectionSpec:
    """One section: its anchor, title and introduction, and what it draws: ``needs`` names the
    table of :class:`~wtalcli.report.inputs.ReportInputs` whose models it shows (``tcas``,
    ``models``, ``evaluations``; None: the section decides), with the note ``missing`` when none is
    there; ``build(ctx, section, roles)`` adds its figures, tables and notes."""

    anchor: str
    title: str
    intro: str
    build: Callable[[Any, Section, list[str]], None]
    needs: str | None = None
    missing: str = ""


def build_section(spec: SectionSpec, ctx: Any) -> Section:
    """The section of ``spec``, or a note saying why it could not be drawn (damaged or
    inconsistent inputs), with its build time."""
    t0 = time.perf_counter()
    sec = Section(spec.anchor, spec.title, spec.intro)
    try:
        roles = list(ROLES) if spec.needs is None else [r for r in ROLES if r in getattr(ctx.sel, spec.needs)]
        if not roles:
            sec.notes.append(spec.missing)
        else:
            spec.build(ctx, sec, roles)
    except (WtalError, OSError, ValueError, KeyError) as exc:
        msg = exc.one_line() if isinstance(exc, WtalError) else f"{type(exc).__name__}: {exc}"
        sec = Section(spec.anchor, spec.title, notes=[f"This section could not be drawn: {msg}"])
    sec.seconds = time.perf_counter() - t0
    return sec


def code(art: Artifact) -> str:
    """An artifact id as HTML code."""
    return f"<code>{html.escape(art.id)}</code>"


def html_table(header: list[str], rows: list[list]) -> str:
    """A small HTML table; numbers shown with 3 decimals, NaN and None as a dash."""
    esc = html.escape

    def cell(v) -> str:
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            return "-"
        return f"{v:.3f}" if isinstance(v, float) else esc(str(v))

    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows]
    return "".join(out) + "</table>"


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1140px;margin:0 auto;
padding:1.2em 1.5em 3em;color:#1d1d1f;line-height:1.45;background:#fff}
h1{font-size:1.6em;margin:.2em 0 .1em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd;
padding-bottom:.2em}
.meta{color:#555;font-size:.9em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f5f5f7}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.92em;background:#f5f5f7;
padding:0 .2em;border-radius:3px}
figure{margin:1.2em 0 1.8em}figure img{max-width:100%;height:auto;display:block;border:1px solid #eee}
figcaption{font-size:.88em;color:#333;margin-top:.4em;max-width:1000px}
.note{background:#fff6d6;border-left:4px solid #e0b400;padding:.5em .8em;margin:.6em 0;font-size:.92em}
nav a{margin-right:1em}
"""


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(
    store: Store, sel: ReportInputs, sections: list[Section], seconds: float, n_videos: int, seed: int
) -> str:
    """The page: header, artifacts used, then each section's notes and figures."""
    esc = html.escape
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>wtal report - {esc(str(store.root))}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>wtal report</h1>",
        f'<p class="meta">workdir <code>{esc(str(store.root.resolve()))}</code> &middot; '
        f"generated {esc(now)} "
        f"&middot; code {esc(code_version())} &middot; {n_videos} test videos, seed {seed} &middot; "
        f"built in {seconds:.1f} s</p>",
        "<nav>" + "".join(f'<a href="#{s.anchor}">{esc(s.title)}</a>' for s in sections) + "</nav>",
        '<h2 id="artifacts">Artifacts used</h2>',
    ]
    used = sel.used()
    if used:
        parts.append("<table><tr><th>role</th><th>artifact</th><th>stage</th><th>created (UTC)</th></tr>")
        for role, art in used:
            parts.append(
                f"<tr><td>{esc(role)}</td><td>{code(art)}</td><td>{esc(art.stage)}</td>"
                f"<td>{esc(str(art.manifest.get('created', '')))}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append(
            '<p class="note">The workdir holds no artifacts: run <code>wtal extract</code> first.</p>'
        )
    for note in sel.notes:
        parts.append(f'<p class="note">{esc(note)}</p>')
    for sec in sections:
        parts.append(f'<h2 id="{sec.anchor}">{esc(sec.title)}</h2>')
        if sec.intro:
            parts.append(f"<p>{sec.intro}</p>")
        for note in sec.notes:
            parts.append(f'<p class="note">{esc(note)}</p>')
        parts.extend(sec.tables)
        for i, fig in enumerate(sec.figures):
            parts.append(
                f'<figure id="{sec.anchor}-{i + 1}"><img src="{_data_uri(fig.png)}" alt="{esc(fig.alt)}">'
                f"<figcaption>{fig.caption}</figcaption></figure>"
            )
    timing = ", ".join(f"{s.anchor} {s.seconds:.1f} s" for s in sections)
    parts.append(f'<p class="meta">Section build times: {esc(timing)}.</p></body></html>')
    return "\n".join(parts) + "\n"
