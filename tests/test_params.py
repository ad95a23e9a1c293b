"""Stage parameters declared once: the command line, the cache key and manifests read them."""

from __future__ import annotations

import dataclasses

import pytest

from wtalcli.app import main
from wtalcli.core.errors import InputError
from wtalcli.core.params import check_choices, from_dict, key_dict, record_dict, spec
from wtalcli.dcc.params import DenoiseParams, PseudolabelParams
from wtalcli.dcc.train_params import DCCParams
from wtalcli.model.config import BaselineParams, TrainConfig

ALL = (BaselineParams, PseudolabelParams, DenoiseParams, DCCParams, TrainConfig)


@pytest.mark.parametrize("cls", ALL)
def test_every_field_has_help_and_a_round_trip(cls):
    obj = cls()
    for f in dataclasses.fields(cls):
        assert spec(f).help or not spec(f).cli, f"{cls.__name__}.{f.name} has no help"
    assert from_dict(cls, record_dict(obj)) == obj


def test_how_it_runs_stays_out_of_the_key():
    for cls in (BaselineParams, DenoiseParams, DCCParams):
        key = key_dict(cls())
        assert "device" not in key and "seed" in key
    assert "num_workers" not in key_dict(TrainConfig()) and "lr" in key_dict(TrainConfig())
    assert key_dict(DenoiseParams(device="cuda")) == key_dict(DenoiseParams(device="cpu"))
    assert key_dict(DenoiseParams(clusters=8)) != key_dict(DenoiseParams(clusters=16))


def test_choices_are_checked_for_callers_outside_the_cli():
    with pytest.raises(InputError, match="--backend 'gpu'"):
        check_choices(DenoiseParams(backend="gpu"))
    with pytest.raises(InputError, match="--pooling"):
        DCCParams(pooling="max").validate()


def test_unknown_names_in_a_manifest_are_refused():
    with pytest.raises(InputError, match="unknown parameters"):
        from_dict(DenoiseParams, {"clusters": 4, "kmeans": "fast"})


@pytest.mark.parametrize(
    ("argv", "values"),
    [
        (["denoise", "--backend", "gpu"], "auto, torch, faiss"),
        (["denoise", "--precision", "fp64"], "auto, fp32, bf16, mixed"),
        (["train-dcc", "--head", "deep"], "linear, mlp, none"),
        (["baseline", "--amp", "fp8"], "none, bf16"),
        (["pseudolabel", "--rule", "median"], "mean"),
        (["evaluate", "--ties", "random"], "reference, stable"),
    ],
)
def test_a_bad_choice_is_a_usage_error_listing_the_values(argv, values, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and all(v in err for v in values.split(", "))


def test_help_lists_the_choices(capsys):
    assert main(["denoise", "--help"]) == 0
    out = capsys.readouterr().out
    assert "auto|torch|faiss" in out.replace(" ", "") or "[auto|torch|faiss]" in out


def test_run_options_come_from_the_stage_classes(capsys):
    """`wtal run --clusters` and `--iterations` are DenoiseParams' and BaselineParams' own fields."""
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--clusters" in out and "--iterations" in out and str(DenoiseParams().clusters) in out


def test_a_parameter_is_declared_once():
    """A field that sets a TrainConfig field carries TrainConfig's declaration (help, key), and the
    seed and the device read the same in every class."""
    from stages.run import RunParams
    from wtalcli.dcc.ablation import AblationParams
    from wtalcli.video.params import ExtractParams

    train = {f.name: spec(f) for f in dataclasses.fields(TrainConfig)}
    for cls in (BaselineParams, DCCParams):
        shared = [f for f in dataclasses.fields(cls) if f.name in train]
        assert len(shared) >= 5
        for f in shared:
            mine, theirs = spec(f), train[f.name]
            assert mine.key == theirs.key and mine.help.startswith(theirs.help.rstrip(".")), (
                f"{cls.__name__}.{f.name}"
            )
    every = (*ALL, RunParams, AblationParams, ExtractParams)
    seeds = {spec(f).help for cls in every for f in dataclasses.fields(cls) if f.name == "seed"}
    devices = {
        spec(f).help.split(": ")[-1] for cls in every for f in dataclasses.fields(cls) if f.name == "device"
    }
    assert len(seeds) == 1 and len(devices) == 1
    assert not any(spec(f).key for cls in every for f in dataclasses.fields(cls) if f.name == "device")
