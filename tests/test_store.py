import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wtalcli.core.errors import LockedError, MismatchError, MissingArtifactError
from wtalcli.core.store import Store, build_or_skip


def make(
    store, stage="s", params=None, inputs=None, seed=0, kind="thing", lineage=None, payload=b"x", force=False
):
    plan = store.plan(kind, stage, params or {"a": 1}, inputs or {}, seed=seed, lineage=lineage)

    def work(tmp):
        (tmp / "data.bin").write_bytes(payload)
        return {"n": 1}

    return build_or_skip(store, plan, force, lambda m: None, work)


def test_build_writes_manifest(tmp_path):
    store = Store(tmp_path)
    art = make(store)
    m = json.loads((art.path / "manifest.json").read_text())
    assert m["kind"] == "thing" and m["stage"] == "s" and m["seed"] == 0
    assert m["params"] == {"a": 1}
    assert m["files"]["data.bin"]["bytes"] == 1
    assert m["summary"] == {"n": 1}
    assert art.id.startswith("thing-")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_skip_and_force(tmp_path):
    store = Store(tmp_path)
    logs = []
    plan = store.plan("thing", "s", {"a": 1}, seed=0)
    calls = []

    def work(tmp):
        calls.append(1)
        (tmp / "f").write_text(str(len(calls)))

    a1 = build_or_skip(store, plan, False, logs.append, work)
    a2 = build_or_skip(store, plan, False, logs.append, work)
    assert len(calls) == 1 and a1.id == a2.id and "skipped" in logs[-1]
    a3 = build_or_skip(store, plan, True, logs.append, work)
    assert len(calls) == 2 and a3.id == a1.id and (a3.path / "f").read_text() == "2"
    # different parameters or seed -> a different artifact
    assert make(store, params={"a": 2}).id != a1.id
    assert make(store, seed=1).id != a1.id


def test_failure_mid_write_leaves_nothing(tmp_path):
    store = Store(tmp_path)
    plan = store.plan("thing", "s", {"a": 1})

    def work(tmp):
        (tmp / "half").write_bytes(b"partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        build_or_skip(store, plan, False, lambda m: None, work)
    assert list(p.name for p in tmp_path.iterdir() if not p.name.startswith(".locks")) == []


def test_failed_force_keeps_old_artifact(tmp_path):
    store = Store(tmp_path)
    art = make(store, payload=b"old")
    plan = store.plan("thing", "s", {"a": 1}, seed=0)

    def work(tmp):
        raise ValueError("bad")

    with pytest.raises(ValueError):
        build_or_skip(store, plan, True, lambda m: None, work)
    assert (art.path / "data.bin").read_bytes() == b"old"


def test_recover_removes_dead_tmp_and_restores_trash(tmp_path):
    store = Store(tmp_path)
    art = make(store)
    dead = tmp_path / ".tmp-thing-abc-999999999-1"
    dead.mkdir()
    trash = tmp_path / f".trash-{art.id}"
    os.rename(art.path, trash)  # a crash between moving the old artifact out and the new one in
    actions = store.recover()
    assert not dead.exists()
    assert art.path.exists() and any("restored" in a for a in actions)


def test_newest_and_resolve(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(MissingArtifactError, match="wtal extract"):
        store.resolve("features", None)
    a = make(store, kind="features", params={"p": 1})
    b = make(store, kind="features", params={"p": 2})
    assert store.resolve("features", None).id == b.id
    assert store.resolve("features", a.id[:14]).id == a.id
    assert store.resolve("features", str(a.path)).id == a.id
    with pytest.raises(Exception, match="expected tcas"):
        store.resolve("tcas", a.id)


def test_lineage_mismatch_refused(tmp_path):
    store = Store(tmp_path)
    f1 = make(store, kind="features", params={"p": 1}, lineage={"features": "self"})
    f2 = make(store, kind="features", params={"p": 2}, lineage={"features": "self"})
    m1 = make(store, kind="model", inputs={"features": f1}, lineage={"model": "self"})
    assert m1.lineage == {"features": f1.id, "model": m1.id}
    with pytest.raises(MismatchError, match="do not belong together"):
        store.plan("tcas", "x", {}, {"model": m1, "features": f2})
    store.plan("tcas", "x", {}, {"model": m1, "features": f1})  # consistent: fine


def test_staleness(tmp_path):
    store = Store(tmp_path)
    f = make(store, kind="features", payload=b"1")
    m = make(store, kind="model", inputs={"features": f})
    assert store.staleness(m) == "ok"
    make(store, kind="features", payload=b"2", force=True)  # rebuilt with other content
    assert "rebuilt" in store.staleness(store.get(m.id))


def test_lock_refuses_second_holder(tmp_path):
    store = Store(tmp_path)
    root = str(Path(__file__).resolve().parents[1])
    code = (
        f"import sys; sys.path.insert(0, {root!r})\n"
        "from wtalcli.core.store import Store\n"
        f"with Store({str(tmp_path)!r}).lock('x'):\n    print('locked', flush=True); sys.stdin.readline()\n"
    )
    # the holder keeps the lock until it is killed (it waits on its stdin), however slow the machine
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match="another wtal process"):
            with store.lock("x"):
                pass
    finally:
        proc.kill()
        proc.wait()
    with store.lock("x"):  # released when the holder died
        pass


def test_fingerprint_depends_on_content(tmp_path):
    s1, s2 = Store(tmp_path / "a"), Store(tmp_path / "b")
    a = make(s1, payload=np.arange(3).tobytes())
    b = make(s2, payload=np.arange(4).tobytes())
    assert a.id == b.id  # same plan
    assert a.fingerprint != b.fingerprint


def test_refresh_round_names_are_written_and_read_back(tmp_path):
    from wtalcli.core import rounds

    store = Store(tmp_path)

    def made_in(run: str, n: int, payload: bytes):
        plan = store.plan(
            "thing", "s", {"n": n}, lineage={"model": rounds.model_ref(run, n)}, tag=rounds.tag(n)
        )

        def work(tmp):
            (tmp / "x").write_bytes(payload)
            return {}

        return build_or_skip(store, plan, False, lambda m: None, work)

    second, first = made_in("model-a", 2, b"2"), made_in("model-a", 1, b"1")
    made_in("model-b", 3, b"3")  # another run's round
    untagged = make(store, lineage={"model": "model-a"})
    assert rounds.number(second) == 2 and rounds.number(untagged) is None
    assert [(n, a.id) for n, a in rounds.of_run(store, "thing", "model-a")] == [(1, first.id), (2, second.id)]
    assert rounds.of_run(store, "thing", "model-c") == []
