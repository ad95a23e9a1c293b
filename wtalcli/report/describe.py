"""Human-readable views of artifacts (``wtal show``)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
from rich.console import Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from wtalcli.core.store import Artifact


def describe(art: Artifact, rows: int = 5) -> Group:
    m = art.manifest
    head = Table.grid(padding=(0, 2))
    for key in ("id", "kind", "stage", "created", "seed", "code_version", "fingerprint"):
        head.add_row(key, escape(str(m.get(key))))
    head.add_row("inputs", escape(", ".join(f"{r}={v['id']}" for r, v in m.get("inputs", {}).items()) or "-"))
    head.add_row("lineage", escape(json.dumps(m.get("lineage", {}))))
    head.add_row("params", escape(json.dumps(m.get("params", {}), default=str)[:2000]))
    if m.get("summary"):
        head.add_row("summary", escape(json.dumps(m["summary"], default=str)[:2000]))
    parts = [Panel(head, title=art.id)]
    for name, info in sorted(m.get("files", {}).items()):
        path = art.path / name
        if name.endswith(".npy"):
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            parts.append(
                f"[bold]{escape(name)}[/bold]  {arr.dtype} {tuple(arr.shape)}  {info['bytes']:,} bytes"
            )
        elif name.endswith(".parquet"):
            pf = pq.ParquetFile(path)
            table = Table(title=f"{name}  ({pf.metadata.num_rows:,} rows)", title_justify="left")
            n = min(rows, pf.metadata.num_rows)
            df = pf.read().slice(0, n).to_pandas() if n else None
            for col in pf.schema_arrow.names:
                table.add_column(col)
            if df is not None:
                for rec in df.itertuples(index=False):
                    table.add_row(*(escape(_fmt(v)) for v in rec))
            parts.append(table)
        else:
            parts.append(f"[bold]{escape(name)}[/bold]  {info['bytes']:,} bytes")
    return Group(*parts)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, np.ndarray | list):
        return ",".join(map(str, list(v)[:6])) + ("..." if len(v) > 6 else "")
    return str(v)
