"""The layer contract (docs/CONTRIBUTING.md): which package may import which, no import cycle among
modules, lazy imports (inside functions) included, and stage fingerprints that hold only the code
the stage runs. The graph is read from the sources by the fingerprint's own import parser, so
what is checked here is exactly what a cache key hashes."""

from __future__ import annotations

import ast

import pytest

from wtalcli.core.fingerprint import PACKAGES, ROOT, closure, imported_modules, module_file, stage_module

# lowest first; a module may import its own layer and the layers below, never above; the packages
# that share a layer (evaluation and video) do not import each other
LAYERS: tuple[tuple[str, ...], ...] = (
    ("wtalcli", "wtalcli.core"),
    ("wtalcli.data",),
    ("wtalcli.evaluation", "wtalcli.video"),
    ("wtalcli.model",),
    ("wtalcli.dcc",),
    ("wtalcli.report",),
    ("stages",),
    ("wtalcli.app",),
)


def _modules() -> list[str]:
    out = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out.append(".".join(parts))
    return out


MODULES = _modules()
GRAPH = {m: imported_modules(m) - {m} for m in MODULES}


def unit(module: str) -> str:
    """The package a module belongs to in the contract (its own name for the top-level ones)."""
    best = ""
    for layer in LAYERS:
        for name in layer:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best = name
    assert best, f"{module} is in no layer: add its package to LAYERS (and to docs/CONTRIBUTING.md)"
    return best


def level(name: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if name in layer)


def test_every_module_is_in_a_layer_and_imports_only_below_or_beside_itself():
    wrong = []
    for module, deps in GRAPH.items():
        mine = unit(module)
        for dep in deps:
            theirs = unit(dep)
            if theirs == mine or theirs == "wtalcli":
                continue
            if level(theirs) >= level(mine):
                wrong.append(f"{module} -> {dep}")
    assert wrong == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_no_import_cycle_among_modules_or_packages():
    assert _cycles(GRAPH) == []
    units: dict[str, set[str]] = {}
    for module, deps in GRAPH.items():
        units.setdefault(unit(module), set()).update(unit(d) for d in deps if unit(d) != unit(module))
    assert _cycles(units) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


# what each stage must not run, so that editing it keeps the stage's artifacts (its fingerprint is
# its import closure, wtalcli/core/fingerprint.py)
NOT_RUN = {
    "extract": ("wtalcli.model", "wtalcli.dcc", "wtalcli.evaluation", "wtalcli.report"),
    "baseline": ("wtalcli.dcc", "wtalcli.video", "wtalcli.report"),
    "pseudolabel": (
        "wtalcli.model",
        "wtalcli.video",
        "wtalcli.report",
        "wtalcli.dcc.contrast",
        "wtalcli.dcc.method",
        "wtalcli.dcc.kmeans",
        "wtalcli.dcc.confidence",
    ),
    "denoise": (
        "wtalcli.model",
        "wtalcli.video",
        "wtalcli.report",
        "wtalcli.dcc.contrast",
        "wtalcli.dcc.method",
    ),
    "train-dcc": ("wtalcli.video", "wtalcli.report"),
    "localize": ("wtalcli.model", "wtalcli.dcc", "wtalcli.video", "wtalcli.report"),
    "evaluate": (
        "wtalcli.model",
        "wtalcli.dcc",
        "wtalcli.video",
        "wtalcli.report",
        "wtalcli.evaluation.localization",
    ),
    "ablate": ("wtalcli.video", "stages.extract"),
}
COMPOSITIONS = ("run", "ablate")  # stages that chain the others (their public functions)


@pytest.mark.parametrize("stage", sorted(NOT_RUN))
def test_a_stage_fingerprint_holds_only_what_the_stage_runs(stage):
    mods = closure(stage_module(stage))
    assert stage_module(stage) in mods and "wtalcli.core.store" in mods
    assert [m for m in mods if any(m == n or m.startswith(n + ".") for n in NOT_RUN[stage])] == []
    others = {m for m in mods if m.startswith("stages.") and m != stage_module(stage)}
    assert others == set() or stage in COMPOSITIONS


def test_the_contrast_loss_is_hashed_by_the_stages_that_train_with_it_only():
    runs = {s for s in ("extract", "baseline", "pseudolabel", "denoise", "train-dcc", "localize", "evaluate")
            if "wtalcli.dcc.contrast" in closure(stage_module(s))}  # fmt: skip
    assert runs == {"train-dcc"}


def test_the_pseudolabel_core_split_is_read_after_training_only():
    # a diagnostic that ablate and report compute from stored artifacts: editing it must not
    # invalidate a trained model
    runs = {s for s in ("extract", "baseline", "pseudolabel", "denoise", "train-dcc", "localize", "evaluate",
                        "ablate", "report") if "wtalcli.evaluation.core_split" in closure(stage_module(s))}  # fmt: skip
    assert runs == {"ablate", "report"}


def _imports_of(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def test_stages_are_glue():
    """A stage imports no other stage (but the compositions, which chain their public functions),
    no module imports another's private name, and no stage module grows past about 300 lines."""
    for path in sorted((ROOT / "stages").glob("*.py")):
        name = path.stem
        for module, _names in _imports_of(path):
            if module.startswith("stages.") and module != f"stages.{name}":
                assert name in COMPOSITIONS, f"stages/{name}.py imports {module}"
        assert len(path.read_text().splitlines()) <= 300, f"stages/{name}.py is over 300 lines"
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for module, names in _imports_of(path):
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                assert private == [], f"{path.relative_to(ROOT)} imports {private} from {module}"


def test_the_contributing_map_lists_every_module():
    text = (ROOT / "docs" / "CONTRIBUTING.md").read_text()
    table = text[text.index("## Map") :]
    for module in MODULES:
        parts = module.split(".")
        path = module_file(module)
        if path.name == "__init__.py" and parts[-1] != "importers":
            continue
        entry = f"`{parts[-1]}`" if parts[0] == "stages" else f"{path.name}`"
        assert entry in table, f"docs/CONTRIBUTING.md's map does not list {module}"
    for layer in LAYERS:  # and the contract there is the one checked here
        assert all(name.split(".")[-1] in text for name in layer)
