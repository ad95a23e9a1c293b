"""The contrast weight's schedule (``--beta-start``, ``--beta-end``, ``--beta-shape``): plain
Python, so the parameter check (:meth:`wtalcli.dcc.params.DCCParams.validate`) runs it without
importing torch or the contrast loss."""

from __future__ import annotations


def beta_at(step: int, total: int, start: float, end: float, shape: str, warmup: int = 0) -> float:
    """The contrast weight at ``step`` of ``total``: ``constant`` (= end), ``linear`` or ``exp``
    (geometric) from start to end after ``warmup`` steps of ``start``."""
    if shape == "constant":
        return float(end)
    if step < warmup or total <= warmup + 1:
        return float(start)
    f = min(1.0, (step - warmup) / max(1, total - warmup - 1))
    if shape == "linear":
        return float(start + f * (end - start))
    if shape == "exp":
        if start <= 0 or end <= 0:
            raise ValueError("an exp beta schedule needs positive start and end")
        return float(start * (end / start) ** f)
    raise ValueError(f"unknown beta shape {shape!r} (constant, linear, exp)")
