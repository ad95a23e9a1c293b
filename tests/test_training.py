"""Sampling, the training engine (determinism, resume, workers, hooks, checkpoints) and inference."""

from __future__ import annotations

import io
import pickle
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from wtalcli.core.devices import resolve_device
from wtalcli.core.errors import InputError, MismatchError, WtalError
from wtalcli.data.schema import FeatureSet, write_feature_set
from wtalcli.model import sampling
from wtalcli.model.config import PRESETS, TrainConfig, preset_config
from wtalcli.model.inference import cas_probabilities, infer
from wtalcli.model.trainer import BatchPlan, Trainer, model_from_checkpoint, read_checkpoint

D, C = 16, 3


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy machine the OpenMP threads'
    spin-waiting makes these tests several times slower; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------- data


def _write_toy(path: Path, n_videos: int, seed: int, lengths=(10, 70)) -> FeatureSet:
    """Videos of Gaussian noise with one segment shifted by its class's mean vector."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 2.0, (C, D)).astype(np.float32)
    videos, feats = [], []
    for v in range(n_videos):
        n = int(rng.integers(*lengths))
        x = rng.normal(0.0, 1.0, (n, D)).astype(np.float32)
        c = v % C
        start = int(rng.integers(0, n // 2))
        x[start : start + max(2, n // 3)] += means[c]
        subset = "train" if v < (3 * n_videos) // 4 else "test"
        videos.append(
            dict(video_id=f"v{v:03d}", subset=subset, n_snippets=n, duration_s=n * 0.64, fps=25.0,
                 stride=16, clip_len=16, labels=[f"c{c}"])
        )  # fmt: skip
        feats.append(x)
    write_feature_set(path, pd.DataFrame(videos), feats, [f"c{i}" for i in range(C)])
    return FeatureSet(path)


@pytest.fixture(scope="module")
def fs(tmp_path_factory) -> FeatureSet:
    return _write_toy(tmp_path_factory.mktemp("fs") / "toy", n_videos=24, seed=0)


def _cfg(**kw) -> TrainConfig:
    base = dict(
        iterations=6, batch_size=4, lr=1e-3, num_segments=16, hidden=16, attn_hidden=8, seed=3, device="cpu"
    )
    return TrainConfig(**{**base, **kw})


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _assert_same_optimizer(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for i in sa["state"]:
        for k in sa["state"][i]:
            assert torch.equal(sa["state"][i][k], sb["state"][i][k]), (i, k)


# ------------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize(
    ("length", "t"), [(100, 7), (7, 7), (5, 12), (1, 4), (750, 750), (2000, 750), (33, 32)]
)
def test_train_sampling_draws_one_index_per_bin(length, t):
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = sampling.train_indices(length, t, rng)
        assert idx.shape == (t,) and idx.dtype == np.int64
        for i, j in enumerate(idx):  # snippet j's cell [j, j+1) must overlap bin [i L/T, (i+1) L/T)
            assert Fraction(i * length, t) < j + 1 and j < Fraction((i + 1) * length, t)
        assert np.all(np.diff(idx) >= 0)
    if length == t:
        assert np.array_equal(sampling.train_indices(length, t, rng), np.arange(t))
    if length < t:
        assert len(np.unique(idx)) < t  # indices repeat


def test_train_sampling_picks_snippets_in_proportion_to_bin_cover():
    # L = 10, T = 4: bin 0 = [0, 2.5) covers snippets 0 and 1 fully and half of snippet 2
    rng = np.random.default_rng(1)
    draws = sampling.batch_train_indices(np.full(20000, 10), 4, rng)[:, 0]
    freq = np.bincount(draws, minlength=3)[:3] / len(draws)
    np.testing.assert_allclose(freq, [0.4, 0.4, 0.2], atol=0.015)


def test_train_sampling_uses_only_the_generator_passed_in():
    state = np.random.get_state()
    a = sampling.batch_train_indices(np.array([50, 9, 300]), 16, np.random.default_rng(7))
    b = sampling.batch_train_indices(np.array([50, 9, 300]), 16, np.random.default_rng(7))
    assert np.array_equal(a, b)
    assert np.array_equal(np.random.get_state()[1], state[1])


@pytest.mark.parametrize(
    ("length", "t"), [(100, 7), (7, 7), (5, 12), (1, 4), (2000, 750), (749, 750), (751, 750)]
)
def test_eval_sampling_is_floor_i_l_over_t(length, t):
    expected = [int(Fraction(i * length, t)) for i in range(t)]  # exact floor
    assert sampling.eval_indices(length, t).tolist() == expected
    assert sampling.batch_eval_indices(np.array([length, length]), t).tolist() == [expected, expected]


@pytest.mark.parametrize(("length", "t"), [(100, 7), (7, 7), (5, 12), (1, 4), (31, 8), (9, 10), (3, 2)])
def test_map_back_inverts_eval_sampling(length, t):
    idx = sampling.eval_indices(length, t)
    index, weight = sampling.back_map(length, t)
    np.testing.assert_allclose(weight.sum(axis=1), 1.0, rtol=1e-6)
    values = np.random.default_rng(0).normal(size=(t, 3))
    mapped = sampling.map_back(values, length)
    assert mapped.shape == (length, 3)
    for j in range(length):
        pointing = np.flatnonzero(idx == j)
        if len(pointing):  # sampled snippets get the mean of their samples
            np.testing.assert_allclose(mapped[j], values[pointing].mean(axis=0), rtol=1e-12)
        else:  # others hold the last sample before them
            np.testing.assert_array_equal(mapped[j], values[np.flatnonzero(idx <= j).max()])
    if length <= t:  # a per-snippet function survives sampling + mapping back unchanged
        f = np.sin(np.arange(length) * 1.7)
        np.testing.assert_allclose(sampling.map_back(f[idx], length), f, rtol=1e-12)
    else:  # the sampled positions carry exactly their own values
        np.testing.assert_array_equal(mapped[idx], values)


def test_batch_back_map_is_each_videos_map_side_by_side():
    # videos shorter than, equal to and longer than T in one batch: each snippet's row gathers the
    # same samples with the same weights as its own video's table, shifted to that video's block of T
    t, lengths = 8, np.array([3, 8, 31, 1, 9])
    index, weight = sampling.batch_back_map(lengths, t)
    assert index.shape == weight.shape == (lengths.sum(), 8)  # the widest: a 1-snippet video, all 8 samples
    row = 0
    for b, n in enumerate(lengths):
        ix, w = sampling.back_map(int(n), t)
        m = ix.shape[1]
        np.testing.assert_array_equal(index[row : row + n, :m], ix + b * t)
        np.testing.assert_array_equal(weight[row : row + n, :m], w)
        assert not weight[row : row + n, m:].any()  # padding carries no weight
        assert ((index[row : row + n] >= b * t) & (index[row : row + n] < (b + 1) * t)).all()
        row += n
    values = np.random.default_rng(1).normal(size=(len(lengths) * t, 2))
    mapped = (values[index] * weight[..., None]).sum(axis=1)
    expected = np.concatenate(
        [sampling.map_back(values[b * t : (b + 1) * t], int(n)) for b, n in enumerate(lengths)]
    )
    np.testing.assert_allclose(mapped, expected, rtol=1e-12)


def test_sampling_rejects_empty_videos():
    with pytest.raises(ValueError):
        sampling.eval_indices(0, 8)
    with pytest.raises(ValueError):
        sampling.back_map(5, 0)


def test_batch_plan_covers_every_video_once_per_pass():
    plan = BatchPlan(np.arange(1, 11), batch_size=4, num_segments=8, seed=0)
    seen = np.concatenate([plan.positions(s) for s in range(5)])  # 20 = two passes over 10 videos
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert not np.array_equal(seen[:10], seen[10:])  # a fresh order each pass
    again = BatchPlan(np.arange(1, 11), batch_size=4, num_segments=8, seed=0)
    assert np.array_equal(again.positions(3), plan.positions(3))
    assert np.array_equal(again.snippets(3, again.positions(3)), plan.snippets(3, plan.positions(3)))


# ------------------------------------------------------------------------------------- config


def test_config_validation_presets_and_derived_t():
    with pytest.raises(InputError):
        TrainConfig(amp="fp8").validate()
    with pytest.raises(InputError):
        TrainConfig(batch_size=0).validate()
    with pytest.raises(InputError):
        TrainConfig.from_dict({"iterations": 5, "lr_schedule": "cosine"})
    assert preset_config("thumos").num_segments == 750
    assert preset_config("anet", seed=4).seed == 4
    with pytest.raises(InputError):
        preset_config("kinetics")
    with pytest.raises(TypeError):
        PRESETS["mine"] = {}  # read-only
    with pytest.raises(TypeError):
        PRESETS["small"]["hidden"] = 1  # read-only too
    assert preset_config("small", iterations=None).iterations == 600  # None leaves the preset's value


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(WtalError, match="--device cuda"):
            resolve_device("cuda")


# ------------------------------------------------------------------------------------- training


def test_training_learns_a_toy_problem(fs):
    log: list[dict[str, float]] = []
    cfg = _cfg(iterations=40, batch_size=8, lr=3e-3, num_segments=32, hidden=32, dropout=0.5)
    trainer = Trainer(fs, cfg, on_step=lambda step, terms: log.append({"step": step, **terms}))
    assert trainer.train() == 40
    assert [r["step"] for r in log] == list(range(1, 41))
    assert set(log[0]) == {"step", "base", "supp", "norm", "total"}
    first = np.mean([r["total"] for r in log[:5]])
    last = np.mean([r["total"] for r in log[-5:]])
    assert last < 0.8 * first
    test_rows = fs.rows_of("test")
    res = infer(trainer.model, fs, test_rows, 32, "cpu", batch=4)
    truth = fs.label_matrix(test_rows).argmax(axis=1)
    assert np.array_equal(res.scores[:, :C].argmax(axis=1), truth)


def test_same_seed_gives_identical_weights_and_a_different_seed_does_not(fs):
    runs = []
    for seed in (3, 3, 4):
        log: list[float] = []
        trainer = Trainer(fs, _cfg(seed=seed), on_step=lambda s, t, log=log: log.append(t["total"]))
        trainer.train()
        runs.append((trainer.model.state_dict(), log))
    _assert_same_state(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    assert not torch.equal(runs[0][0]["cas_1.weight"], runs[2][0]["cas_1.weight"])


def test_training_leaves_the_callers_rngs_alone(fs):
    torch.manual_seed(123)
    np.random.seed(5)
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    Trainer(fs, _cfg(iterations=2)).train()
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)


def test_resume_from_a_checkpoint_matches_an_uninterrupted_run(fs, tmp_path):
    log_straight: list[tuple[int, float]] = []
    straight = Trainer(fs, _cfg(), on_step=lambda s, t: log_straight.append((s, t["total"])))
    straight.train()

    ckpt = tmp_path / "ckpt.pt"
    first = Trainer(fs, _cfg(iterations=3), checkpoint_path=ckpt)
    first.train()
    assert ckpt.exists() and read_checkpoint(ckpt)["step"] == 3
    del first

    log_resumed: list[tuple[int, float]] = []
    resumed = Trainer(fs, _cfg(), on_step=lambda s, t: log_resumed.append((s, t["total"])))
    resumed.load_checkpoint(ckpt)
    assert resumed.step == 3
    resumed.train()
    assert resumed.step == 6
    _assert_same_state(straight.model.state_dict(), resumed.model.state_dict())
    _assert_same_optimizer(straight.optimizer, resumed.optimizer)
    assert log_resumed == log_straight[3:]


def test_periodic_checkpoints_and_pausing_do_not_change_the_result(fs, tmp_path):
    straight = Trainer(fs, _cfg())
    straight.train()
    ckpt = tmp_path / "every2.pt"
    paused = Trainer(fs, _cfg(checkpoint_every=2), checkpoint_path=ckpt)
    paused.train(until=4)
    assert read_checkpoint(ckpt)["step"] == 4
    # what a DCC refresh does between two training calls: inference and other torch randomness
    infer(paused.model, fs, fs.rows_of(None), 16, "cpu", batch=5, with_h=True)
    torch.rand(100)
    assert paused.model.training
    paused.train()
    _assert_same_state(straight.model.state_dict(), paused.model.state_dict())
    _assert_same_state(straight.model.state_dict(), read_checkpoint(ckpt)["model"])


def test_a_run_killed_mid_way_resumes_from_its_last_periodic_checkpoint(fs, tmp_path):
    straight = Trainer(fs, _cfg())
    straight.train()
    ckpt = tmp_path / "periodic.pt"

    def crash(step, terms):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(fs, _cfg(checkpoint_every=2, num_workers=1), checkpoint_path=ckpt, on_step=crash).train()
    assert read_checkpoint(ckpt)["step"] == 4
    resumed = Trainer(fs, _cfg(checkpoint_every=2), checkpoint_path=ckpt)
    resumed.load_checkpoint(ckpt)
    resumed.train()
    _assert_same_state(straight.model.state_dict(), resumed.model.state_dict())
    _assert_same_optimizer(straight.optimizer, resumed.optimizer)


def test_loader_threads_give_the_same_result_as_inline_loading(fs):
    a = Trainer(fs, _cfg(num_workers=0))
    b = Trainer(fs, _cfg(num_workers=2))
    a.train()
    b.train()
    _assert_same_state(a.model.state_dict(), b.model.state_dict())


def test_checkpoint_loads_with_weights_only_and_round_trips_every_rng(fs, tmp_path):
    trainer = Trainer(fs, _cfg(iterations=2))
    trainer.np_rng.random(5)  # advance the aux generator: its PCG64 state holds 128-bit integers
    trainer.train()
    path = tmp_path / "c.pt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["rng"]["numpy_aux"] == trainer.np_rng.bit_generator.state
    assert raw["rng"]["numpy_aux"]["state"]["state"] > 2**64
    assert torch.equal(raw["rng"]["torch_cpu"], trainer.state_dict()["rng"]["torch_cpu"])

    other = Trainer(fs, _cfg(iterations=2, seed=3))
    other.load_checkpoint(path)
    assert np.array_equal(other.np_rng.random(4), trainer.np_rng.random(4))
    _assert_same_state(other.model.state_dict(), trainer.model.state_dict())
    rebuilt = model_from_checkpoint(raw)
    _assert_same_state(rebuilt.state_dict(), trainer.model.state_dict())
    assert not rebuilt.training


def test_resume_refuses_incompatible_or_unsafe_checkpoints(fs, tmp_path):
    path = tmp_path / "c.pt"
    Trainer(fs, _cfg(iterations=1), checkpoint_path=path).train()
    with pytest.raises(MismatchError, match="lr"):
        Trainer(fs, _cfg(lr=5e-4)).load_checkpoint(path)
    with pytest.raises(MismatchError, match="training videos"):
        Trainer(fs, _cfg(), rows=fs.rows_of("train")[:-1]).load_checkpoint(path)
    Trainer(fs, _cfg(iterations=10, num_workers=1)).load_checkpoint(path)  # allowed to differ
    with pytest.raises(InputError, match="missing"):
        read_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="unreadable"):
        read_checkpoint(tmp_path / "junk.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pickle code ran",))

    buf = io.BytesIO()
    torch.save({"format": "wtal-basnet-trainer/1", "x": Evil()}, buf)
    (tmp_path / "evil.pt").write_bytes(buf.getvalue())
    with pytest.raises(InputError, match="unreadable"):
        read_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(InputError):
        read_checkpoint(tmp_path / "plain.pt")


class _Bank:
    """A stand-in for DCC's memory bank: one vector per training video."""

    def __init__(self, n: int, dim: int) -> None:
        self.slots = torch.zeros(n, dim)

    def state_dict(self) -> dict:
        return {"slots": self.slots.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.slots = state["slots"].clone()


def test_extra_loss_hook_sees_the_sampled_snippets_and_its_state_is_checkpointed(fs, tmp_path):
    features = np.asarray(fs.features)
    offsets = fs.videos["offset"].to_numpy()
    labels = fs.label_matrix()
    seen: list[int] = []

    def make(bank, head):
        def extra(step, batch, out):
            seen.append(step)
            expected = features[offsets[batch.rows][:, None] + batch.snippets]
            assert np.array_equal(batch.x.numpy(), expected)
            assert np.array_equal(batch.y.numpy(), labels[batch.rows])
            assert np.all(batch.snippets < batch.lengths[:, None])
            z = head(out.h.mean(dim=1))  # (B, 4): a projection of the embedding
            bank.slots[torch.from_numpy(batch.positions)] = z.detach()
            return 0.1 * z.pow(2).mean(), {"dcc": z.pow(2).mean()}

        return extra

    def build(iterations, path=None):
        torch.manual_seed(0)
        head = torch.nn.Linear(16, 4)
        bank = _Bank(len(fs.rows_of("train")), 4)
        trainer = Trainer(
            fs, _cfg(iterations=iterations), extra_loss=make(bank, head), extra_modules={"head": head},
            extra_state=bank, checkpoint_path=path,
        )  # fmt: skip
        return trainer, head, bank

    log: list[dict] = []
    straight, head_a, bank_a = build(4)
    straight.on_step = lambda s, t: log.append(t)
    head_before = head_a.weight.detach().clone()
    straight.train()
    assert seen == [0, 1, 2, 3]
    assert set(log[0]) == {"base", "supp", "norm", "dcc", "total"}
    assert log[0]["total"] > log[0]["base"] + log[0]["supp"]
    assert not torch.equal(head_before, head_a.weight)  # the optimizer trains the hook's module

    ckpt = tmp_path / "dcc.pt"
    build(2, ckpt)[0].train()
    resumed, head_b, bank_b = build(4)
    resumed.load_checkpoint(ckpt)
    resumed.train()
    assert torch.equal(head_a.weight, head_b.weight)
    assert torch.equal(bank_a.slots, bank_b.slots)
    with pytest.raises(MismatchError, match="extra"):
        Trainer(fs, _cfg(iterations=4)).load_checkpoint(ckpt)


def test_non_finite_loss_stops_training_with_a_clear_error(fs):
    def bad(step, batch, out):
        return out.p_base.sum() * float("nan"), {}

    with pytest.raises(WtalError, match="diverged"):
        Trainer(fs, _cfg(iterations=2), extra_loss=bad).train()


# ------------------------------------------------------------------------------------- inference


def test_inference_maps_back_to_every_snippet_and_streams_into_memmaps(fs, tmp_path):
    trainer = Trainer(fs, _cfg(iterations=2))
    trainer.train()
    model, t = trainer.model, 16
    rows = fs.rows_of(None)[::-1].copy()  # any order
    res = infer(model, fs, rows, t, "cpu", batch=5, with_h=True, h_dtype=np.float32)
    lengths = fs.videos["n_snippets"].to_numpy()[rows]
    assert res.cas.shape == (lengths.sum(), C + 1) and res.cas.dtype == np.float32
    assert res.scores.shape == (len(rows), C + 1) and res.h.shape == (lengths.sum(), 16)
    assert res.samples is None
    assert np.array_equal(res.offsets, np.concatenate([[0], np.cumsum(lengths)[:-1]]))
    assert model.training  # mode restored

    # one video by hand: sample, run, map the raw CAS back (no softmax)
    k = 2
    feats = np.asarray(fs.features_of(int(rows[k])))
    idx = sampling.eval_indices(len(feats), t)
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(feats[idx])[None])
    model.train()
    raw = out.cas_supp[0].numpy()
    span = slice(res.offsets[k], res.offsets[k] + lengths[k])
    np.testing.assert_allclose(res.cas[span], sampling.map_back(raw, len(feats)), rtol=1e-5, atol=1e-6)
    # the probability view is the softmax of the raw CAS
    prob = cas_probabilities(res.cas[span])
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(
        prob, torch.softmax(torch.from_numpy(res.cas[span]).double(), dim=-1).numpy(), rtol=1e-10
    )
    np.testing.assert_allclose(res.scores[k], out.p_supp[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        res.h[span], sampling.map_back(out.h_base[0].numpy(), len(feats)), rtol=1e-5, atol=1e-5
    )

    # streaming into memory maps (float16 embeddings) gives the same numbers
    cas_mm = np.lib.format.open_memmap(tmp_path / "cas.npy", mode="w+", dtype=np.float32, shape=res.cas.shape)
    h_mm = np.lib.format.open_memmap(tmp_path / "h.npy", mode="w+", dtype=np.float16, shape=res.h.shape)
    res2 = infer(model, fs, rows, t, "cpu", batch=3, cas_out=cas_mm, h_out=h_mm, with_samples=True)
    assert res2.cas is cas_mm and res2.h is h_mm
    # the raw CAS at the T test samples, as the model gave it
    assert res2.samples.shape == (len(rows), t, C + 1)
    np.testing.assert_allclose(res2.samples[k], raw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cas_mm, res.cas, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_mm.astype(np.float32), res.h, rtol=2e-3, atol=2e-3)
    with pytest.raises(ValueError):
        infer(model, fs, rows, t, "cpu", cas_out=np.empty((3, C + 1), np.float32))


def test_machine_numerics_records_the_kernel_isa_its_caps_and_the_gpu(monkeypatch):
    from wtalcli.core.devices import machine_numerics

    for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"):
        monkeypatch.delenv(k, raising=False)
    cpu = machine_numerics(torch.device("cpu"))
    assert cpu == {
        "torch": torch.__version__,
        "device": "cpu",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert machine_numerics(torch.device("cpu"))["isa_caps"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    # the CUDA branch, without a GPU: the device's name is what it records
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some GPU")
    gpu = machine_numerics(torch.device("cuda", 0))
    assert gpu == {"torch": torch.__version__, "device": "cuda", "gpu": "Some GPU"}
