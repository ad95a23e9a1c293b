"""Which artifacts ``wtal report`` draws from: the feature set of the newest (non-refresh-round)
T-CAS, then the newest T-CAS of each training stage on that feature set (``baseline`` and
``train-dcc``), the models in their lineage, the newest proposals and evaluation of each T-CAS, and
the pseudo-label / confidence rounds of the DCC run (round 0 = the artifacts it was trained from,
round N = the refresh rounds, :mod:`wtalcli.core.rounds`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from wtalcli.core import rounds as refresh_rounds
from wtalcli.core.params import param
from wtalcli.core.store import Artifact, Store
from wtalcli.evaluation.inputs import artifact_by_id, input_id

ROLES = {"baseline": "baseline", "dcc": "DCC"}  # role -> display name
STAGE_OF = {"baseline": "baseline", "dcc": "train-dcc"}


@dataclass
class ReportParams:
    """Everything ``wtal report`` can set (its ``--out`` file aside), declared once
    (:mod:`wtalcli.core.params`)."""

    videos: int = param(4, "How many test videos to plot.")
    seed: int = param(0, "Seed of the videos drawn for the figures.")


@dataclass
class Round:
    number: int
    pseudolabels: Artifact
    confidence: Artifact | None


@dataclass
class ReportInputs:
    """The artifacts the report draws from (``None`` / absent keys where the workdir lacks them)."""

    features: Artifact | None = None
    tcas: dict[str, Artifact] = field(default_factory=dict)
    models: dict[str, Artifact] = field(default_factory=dict)
    proposals: dict[str, Artifact] = field(default_factory=dict)
    evaluations: dict[str, Artifact] = field(default_factory=dict)
    rounds: list[Round] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def used(self) -> list[tuple[str, Artifact]]:
        rows: list[tuple[str, Artifact]] = []
        if self.features is not None:
            rows.append(("feature set", self.features))
        for role, name in ROLES.items():
            for what, table in (
                ("model", self.models),
                ("T-CAS", self.tcas),
                ("proposals", self.proposals),
                ("evaluation", self.evaluations),
            ):
                if role in table:
                    rows.append((f"{name} {what}", table[role]))
        for r in self.rounds:
            rows.append((f"pseudo-labels round {r.number}", r.pseudolabels))
            if r.confidence is not None:
                rows.append((f"confidence round {r.number}", r.confidence))
        return rows


def _newest(arts: list[Artifact], pred: Callable[[Artifact], bool]) -> Artifact | None:
    found = [a for a in arts if pred(a)]
    return found[-1] if found else None


def select_artifacts(store: Store) -> ReportInputs:
    """Pick the artifacts of the report (see the module docstring for the rules)."""
    sel = ReportInputs()
    stages = set(STAGE_OF.values())
    tcas = [a for a in store.artifacts("tcas") if a.stage in stages and not a.tag]
    if tcas:  # the feature set of the newest T-CAS, even if it is gone (then without ground truth)
        fs_id = tcas[-1].lineage.get("features")
        sel.features = artifact_by_id(store, fs_id)
        if sel.features is None:
            sel.notes.append(f"the feature set {fs_id} of {tcas[-1].id} is gone")
    else:
        sel.features = _newest(store.artifacts("features"), lambda a: True)
        fs_id = sel.features.id if sel.features is not None else None

    def same_fs(a: Artifact) -> bool:
        return fs_id is None or a.lineage.get("features") == fs_id

    proposals, evaluations = store.artifacts("proposals"), store.artifacts("evaluation")
    for role, stage in STAGE_OF.items():
        t = _newest(tcas, lambda a, s=stage: a.stage == s and same_fs(a))
        if t is None:
            continue
        sel.tcas[role] = t
        model = artifact_by_id(store, t.lineage.get("model"))
        if model is not None:
            sel.models[role] = model
        mine = [p for p in proposals if input_id(p, "tcas") == t.id]
        prop = _newest(mine, lambda a: a.params.get("subset") in ("test", "all"))
        if prop is not None:
            sel.proposals[role] = prop
        ids = {p.id for p in mine}
        ev = _newest(evaluations, lambda a, ids=ids: input_id(a, "proposals") in ids)
        if ev is not None:
            sel.evaluations[role] = ev
    for role, stage in STAGE_OF.items():  # a model whose T-CAS is gone still has embeddings and a log
        if role not in sel.tcas:
            m = _newest(store.artifacts("model"), lambda a, s=stage: a.stage == s and same_fs(a))
            if m is not None:
                sel.models[role] = m
    sel.rounds = _rounds(store, sel)
    base, dcc = sel.models.get("baseline"), sel.models.get("dcc")
    if base is not None and dcc is not None and input_id(dcc, "base_model") not in (None, base.id):
        sel.notes.append(
            f"the DCC model {dcc.id} started from {input_id(dcc, 'base_model')}, not from the newest "
            f"baseline {base.id} shown here"
        )
    return sel


def _rounds(store: Store, sel: ReportInputs) -> list[Round]:
    """Round 0 (the pseudo-labels and confidence DCC trained from, or the newest untagged ones of
    the baseline model), then each refresh round of the DCC run, in order."""
    pls, confs = store.artifacts("pseudolabels"), store.artifacts("confidence")

    def conf_of(pl: Artifact) -> Artifact | None:
        return _newest(confs, lambda a: input_id(a, "pseudolabels") == pl.id)

    rounds: list[Round] = []
    dcc = sel.models.get("dcc")
    if dcc is not None:
        pl0 = artifact_by_id(store, input_id(dcc, "pseudolabels"))
        if pl0 is not None:
            rounds.append(Round(0, pl0, artifact_by_id(store, input_id(dcc, "confidence"))))
        rounds += [
            Round(n, pl, conf_of(pl)) for n, pl in refresh_rounds.of_run(store, "pseudolabels", dcc.id)
        ]
    elif "baseline" in sel.models:
        base = sel.models["baseline"]
        pl0 = _newest(pls, lambda a: not a.tag and a.lineage.get("model") == base.id)
        if pl0 is not None:
            rounds.append(Round(0, pl0, conf_of(pl0)))
    return rounds


def choose(candidates: list[str], preferred: set[str], n: int, seed: int) -> list[str]:
    """``n`` of ``candidates`` chosen by a seeded draw, those in ``preferred`` first; returned in
    candidate order."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x2E9]))
    first = [c for c in candidates if c in preferred]
    rest = [c for c in candidates if c not in preferred]
    picked: list[str] = []
    for pool in (first, rest):
        k = min(n - len(picked), len(pool))
        if k > 0:
            picked += [pool[i] for i in rng.choice(len(pool), k, replace=False)]
    order = {c: i for i, c in enumerate(candidates)}
    return sorted(picked, key=order.__getitem__)
