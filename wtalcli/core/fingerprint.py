"""Per-stage code fingerprints: an artifact's cache key names the code that can change its content.

A stage's fingerprint hashes the source of its module and of every project module it imports,
directly or through others (anywhere in a file: imports inside functions count), found by reading
the sources, not by importing them. So editing the report, the plots or the command line's help
leaves every trained artifact valid, while editing the model changes the fingerprint of
``baseline`` (and, through the input fingerprints in their keys, of everything built from it).

Two modules are left out because they cannot change what an artifact holds: the console (log lines
and progress bars) and the error classes (message wording).
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("wtalcli", "stages")
NEUTRAL = frozenset({"wtalcli.core.console", "wtalcli.core.errors"})


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The source file of project module ``name`` (a package's ``__init__.py``), or None."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(path: Path, name: str, root: Path) -> set[str]:
    """Project modules named by the import statements of ``path`` (module ``name``)."""
    st = path.stat()
    return _imported_cached(path, name, root, st.st_mtime_ns, st.st_size)


@functools.cache
def _imported_cached(path: Path, name: str, root: Path, mtime_ns: int, size: int) -> set[str]:
    """:func:`_imported` for one version of the file (the parse is done once per process)."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {m for m in found if module_file(m, root) is not None}


def imported_modules(module: str, root: Path = ROOT) -> set[str]:
    """The project modules that ``module``'s source imports (anywhere in the file), not following
    them further: one edge list of the import graph (``tests/test_layers.py`` checks its layers)."""
    path = module_file(module, root)
    return set() if path is None else set(_imported(path, module, root))


def closure(module: str, root: Path = ROOT) -> list[str]:
    """``module`` and every project module it can run, with their parent packages, sorted."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or name in NEUTRAL:
            continue
        path = module_file(name, root)
        if path is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent __init__ files run too
        todo.extend(_imported(path, name, root))
    return sorted(seen)


@functools.cache
def code_fingerprint(module: str, root: Path = ROOT) -> str:
    """A short hash of the sources in :func:`closure` (paths and bytes)."""
    h = hashlib.sha256()
    for name in closure(module, root):
        path = module_file(name, root)
        assert path is not None
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def stage_module(stage: str) -> str:
    """The module of a stage: ``train-dcc`` -> ``stages.train_dcc``."""
    return "stages." + stage.replace("-", "_")
