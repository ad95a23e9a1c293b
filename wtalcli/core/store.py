"""The artifact store: one directory per artifact under a workdir, each with a ``manifest.json``.

An artifact's directory name is ``<kind>-<key[:12]>`` where the key hashes everything that
determines its content: the stage, the parameters that can change the result (``key=True`` in the
stage's parameter dataclass, :mod:`wtalcli.core.params`), the fingerprints of its input artifacts,
the seed, and the fingerprint of the code the stage can run (:mod:`wtalcli.core.fingerprint`:
editing the report or the CLI's help invalidates nothing; editing the model invalidates
``baseline`` and what follows). So a stage that would rebuild an existing artifact can skip it,
and ``--force`` rebuilds it in place. The manifest records every parameter, keyed or not.

Writes are atomic: files are built in a hidden temporary directory beside the final one, the
manifest is written last, and one ``rename`` publishes it. A crash leaves at most a temporary
directory, which the next run removes.

``lineage`` records the identity of the feature set and of the model an artifact derives from;
a stage refuses inputs whose lineages disagree (e.g. pseudo-labels of one model with embeddings
of another).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import functools
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from wtalcli import __version__
from wtalcli.core.errors import InputError, LockedError, MismatchError, MissingArtifactError
from wtalcli.core.files import file_sha256
from wtalcli.core.fingerprint import code_fingerprint, stage_module

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
LOCK_DIR = ".locks"

# Which command makes each kind of artifact (for "missing input" messages).
MADE_BY = {
    "features": "wtal extract --from synthetic",
    "model": "wtal baseline",
    "tcas": "wtal baseline",
    "embeddings": "wtal baseline",
    "pseudolabels": "wtal pseudolabel",
    "confidence": "wtal denoise",
    "proposals": "wtal localize --out FILE",
    "evaluation": "wtal evaluate",
}


@functools.cache
def code_version() -> str:
    """Package version plus a hash of all library and stage sources (provenance and ``--version``;
    cache keys use the per-stage :func:`~wtalcli.core.fingerprint.code_fingerprint`)."""
    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for pkg in ("wtalcli", "stages"):
        for p in sorted((root / pkg).rglob("*.py")):
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return f"{__version__}+{h.hexdigest()[:10]}"


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


@dataclass
class Artifact:
    """A published artifact (read-only view of its manifest)."""

    path: Path
    manifest: dict

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def stage(self) -> str:
        return self.manifest["stage"]

    @property
    def params(self) -> dict:
        return self.manifest.get("params", {})

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def lineage(self) -> dict:
        return self.manifest.get("lineage", {})

    @property
    def created_ns(self) -> int:
        return int(self.manifest.get("created_ns", 0))

    @property
    def tag(self) -> str:
        """E.g. ``round 2`` for the artifacts of a DCC refresh round; empty otherwise."""
        return str(self.manifest.get("tag") or "")


@dataclass
class Plan:
    """What a stage is about to build: kind, identity and provenance, before any work is done."""

    kind: str
    stage: str
    params: dict
    inputs: dict[str, Artifact]
    seed: int | None
    key: str
    lineage: dict
    tag: str | None = None

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.key[:12]}"


def read_manifest(path: Path) -> dict:
    mpath = path / MANIFEST
    try:
        manifest = json.loads(mpath.read_text())
    except FileNotFoundError as exc:
        raise MissingArtifactError(
            f"{path} is not an artifact (no {MANIFEST})",
            "pass an artifact directory from `wtal status`",
            path=path,
        ) from exc
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, absurd numbers or nesting
        raise InputError(
            f"corrupt manifest ({exc})", "rebuild the artifact with --force or delete it", path=mpath
        ) from exc
    if not isinstance(manifest, dict) or "kind" not in manifest or "fingerprint" not in manifest:
        raise InputError(
            "manifest lacks kind/fingerprint", "rebuild the artifact with --force or delete it", path=mpath
        )
    return manifest


def merge_lineage(inputs: dict[str, Artifact]) -> dict:
    """Union of the inputs' lineages; raises if two inputs derive from different sources."""
    merged: dict[str, tuple[str, str]] = {}  # lineage key -> (value, which input said so)
    for role, art in inputs.items():
        for key, value in art.lineage.items():
            if key in merged and merged[key][0] != value:
                raise MismatchError(
                    f"inputs do not belong together: {role} ({art.id}) comes from {key} {value}, "
                    f"but {merged[key][1]} comes from {key} {merged[key][0]}",
                    f"pass inputs built from the same {key} (see `wtal status`)",
                )
            merged.setdefault(key, (value, f"{role} ({art.id})"))
    return {k: v[0] for k, v in merged.items()}


class Store:
    """A workdir of artifacts."""

    def __init__(self, workdir: str | Path = "artifacts"):
        self.root = Path(workdir)

    # ---------------------------------------------------------------- listing and lookup

    def artifacts(self, kind: str | None = None) -> list[Artifact]:
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.iterdir():
            if p.name.startswith(".") or not p.is_dir() or not (p / MANIFEST).exists():
                continue
            try:
                art = Artifact(p, read_manifest(p))
            except InputError:
                continue
            if kind is None or art.kind == kind:
                found.append(art)
        return sorted(found, key=lambda a: (a.created_ns, a.id))

    def get(self, ref: str | Path) -> Artifact:
        """An artifact by directory path, id, or unique id prefix."""
        p = Path(ref)
        if p.is_dir() and ((p / MANIFEST).exists() or os.sep in str(ref)):
            return Artifact(p, read_manifest(p))  # a folder that is no artifact says so
        named = self.root / str(ref)
        if os.sep not in str(ref) and (named / MANIFEST).is_file():
            return Artifact(named, read_manifest(named))  # a damaged manifest says so, not "no artifact"
        candidates = [a for a in self.artifacts() if a.id == str(ref) or a.id.startswith(str(ref))]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise MissingArtifactError(
                f"no artifact {str(ref)!r} in {self.root}", "list them with `wtal status`", path=None
            )
        raise InputError(f"{str(ref)!r} matches several artifacts", "give more of the id (see `wtal status`)")

    def newest(self, kind: str, lineage: dict | None = None) -> Artifact | None:
        arts = self.artifacts(kind)
        if lineage:
            arts = [
                a for a in arts if all(a.lineage.get(k) == v for k, v in lineage.items() if k in a.lineage)
            ]
        return arts[-1] if arts else None

    def resolve(self, kind: str, ref: str | Path | None, log=None, lineage: dict | None = None) -> Artifact:
        """The named artifact, or the newest of ``kind`` (matching ``lineage`` if given)."""
        if ref is not None:
            art = self.get(ref)
            if art.kind != kind:
                raise InputError(
                    f"{art.id} is a {art.kind} artifact, expected {kind}",
                    f"pass a {kind} artifact (see `wtal status`)",
                )
            return art
        art = self.newest(kind, lineage)
        if art is None:
            raise MissingArtifactError(
                f"no {kind} artifact in {self.root}",
                f"run `{MADE_BY.get(kind, 'the stage that makes it')}` first, or pass --workdir",
            )
        if log is not None:
            log(f"using {kind} {art.id} (newest in {self.root})")
        return art

    # ---------------------------------------------------------------- building

    def plan(
        self,
        kind: str,
        stage: str,
        params: dict,
        inputs: dict[str, Artifact] | None = None,
        seed: int | None = None,
        lineage: dict | None = None,
        key_params: dict | None = None,
        tag: str | None = None,
    ) -> Plan:
        """What ``stage`` will build: ``params`` are recorded in the manifest, ``key_params``
        (default: ``params``) are the ones that enter the cache key; ``tag`` (e.g. ``round 2`` of
        a DCC run) is recorded and keyed."""
        inputs = inputs or {}
        merged = merge_lineage(inputs)
        key_src = canonical_json(
            {
                "stage": stage,
                "params": params if key_params is None else key_params,
                "inputs": {r: a.fingerprint for r, a in sorted(inputs.items())},
                "seed": seed,
                "code": code_fingerprint(stage_module(stage)),
                **({"tag": tag} if tag else {}),
            }
        )
        key = hashlib.sha256(key_src.encode()).hexdigest()
        plan = Plan(kind, stage, params, inputs, seed, key, merged, tag)
        if lineage:
            plan.lineage.update({k: (plan.id if v == "self" else v) for k, v in lineage.items()})
        return plan

    def existing(self, plan: Plan) -> Artifact | None:
        path = self.root / plan.id
        if (path / MANIFEST).exists():
            try:
                art = Artifact(path, read_manifest(path))
            except InputError:
                return None
            if art.manifest.get("key") == plan.key:
                return art
        return None

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive, non-blocking lock; the loser gets a clear message."""
        lock_dir = self.root / LOCK_DIR
        lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                raise LockedError(
                    f"another wtal process (pid {holder}) is building {name} in {self.root}",
                    "wait for it to finish; the lock is released when that process exits",
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def build(self, plan: Plan, summary: dict | None = None) -> Iterator[Path]:
        """Yield a fresh temporary directory; on success publish it atomically as ``plan.id``.

        On any exception the temporary directory is removed and an existing artifact of the
        same id is left untouched.  ``summary`` (mutable) is stored in the manifest.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self.recover()
        tmp = self.root / f"{TMP_PREFIX}{plan.id}-{os.getpid()}-{time.time_ns()}"
        tmp.mkdir()
        try:
            yield tmp
            self._finish(tmp, plan, summary or {})
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _finish(self, tmp: Path, plan: Plan, summary: dict) -> None:
        files = {}
        fp = hashlib.sha256(plan.key.encode())
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                rel = str(p.relative_to(tmp))
                digest = file_sha256(p)
                files[rel] = {"bytes": p.stat().st_size, "sha256": digest}
                fp.update(f"{rel}:{digest}\n".encode())
        now = time.time_ns()
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "id": plan.id,
            "kind": plan.kind,
            "stage": plan.stage,
            "key": plan.key,
            "params": plan.params,
            "inputs": {
                role: {"id": a.id, "kind": a.kind, "fingerprint": a.fingerprint}
                for role, a in plan.inputs.items()
            },
            "lineage": plan.lineage,
            **({"tag": plan.tag} if plan.tag else {}),
            "seed": plan.seed,
            "code_version": code_version(),
            "code": code_fingerprint(stage_module(plan.stage)),
            "created": _dt.datetime.fromtimestamp(now / 1e9, _dt.UTC).isoformat(timespec="milliseconds"),
            "created_ns": now,
            "files": files,
            "bytes": sum(f["bytes"] for f in files.values()),
            "fingerprint": fp.hexdigest(),
            "summary": summary,
        }
        mtmp = tmp / (MANIFEST + ".part")
        with open(mtmp, "w") as f:
            f.write(json.dumps(manifest, indent=1, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(mtmp, tmp / MANIFEST)
        final = self.root / plan.id
        if final.exists():
            trash = self.root / f"{TRASH_PREFIX}{plan.id}"
            shutil.rmtree(trash, ignore_errors=True)
            os.rename(final, trash)
            os.rename(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, final)

    def recover(self) -> list[str]:
        """Remove temporary directories of dead processes; restore a replaced artifact whose
        replacement never landed."""
        actions = []
        if not self.root.is_dir():
            return actions
        for p in self.root.iterdir():
            if p.name.startswith(TRASH_PREFIX):
                final = self.root / p.name[len(TRASH_PREFIX) :]
                if not final.exists() and (p / MANIFEST).exists():
                    os.rename(p, final)
                    actions.append(f"restored {final.name}")
                else:
                    shutil.rmtree(p, ignore_errors=True)
            elif p.name.startswith(TMP_PREFIX):
                pid = _pid_of(p.name)
                if pid is None or not _alive(pid):
                    shutil.rmtree(p, ignore_errors=True)
                    actions.append(f"removed {p.name}")
        return actions

    # ---------------------------------------------------------------- status

    def staleness(self, art: Artifact) -> str:
        """'ok', or why the artifact no longer matches its inputs; a note when other code built it."""
        state = self._input_state(art, depth=0)
        built_by = art.manifest.get("code")
        if state == "ok" and built_by != code_fingerprint(stage_module(art.stage)):
            return f"ok (its stage's code changed since: built by {built_by or art.manifest.get('code_version')})"
        return state

    def _input_state(self, art: Artifact, depth: int) -> str:
        if depth > 64:
            return "stale: input chain too deep"
        for role, ref in art.manifest.get("inputs", {}).items():
            path = self.root / ref["id"]
            if not (path / MANIFEST).exists():
                return f"stale: {role} {ref['id']} is gone"
            try:
                parent = Artifact(path, read_manifest(path))
            except InputError:
                return f"stale: {role} {ref['id']} is damaged"
            if parent.fingerprint != ref["fingerprint"]:
                return f"stale: {role} {ref['id']} was rebuilt"
            if self._input_state(parent, depth + 1) != "ok":
                return f"stale: {role} {ref['id']} is stale"
        return "ok"


def _pid_of(name: str) -> int | None:
    parts = name.split("-")
    try:
        return int(parts[-2])
    except (IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def build_or_skip(store: Store, plan: Plan, force: bool, log, work) -> Artifact:
    """Skip if ``plan`` already produced an artifact (unless ``force``); else run
    ``work(tmp_dir) -> summary dict | None`` under the plan's lock and publish the result."""
    if not force:
        art = store.existing(plan)
        if art is not None:
            log(f"{art.id} is up to date (same inputs, parameters and code): skipped; --force redoes it")
            return art
    with store.lock(plan.id):
        if not force:
            art = store.existing(plan)
            if art is not None:
                log(f"{art.id} was just built by another process: skipped")
                return art
        summary: dict = {}
        with store.build(plan, summary) as tmp:
            summary.update(work(tmp) or {})
    art = store.get(store.root / plan.id)
    log(f"wrote {art.id}")
    return art
