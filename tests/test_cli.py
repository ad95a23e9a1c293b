"""The command line end to end (in-process): exit codes, stdout JSON, skip/force, imports."""

import json

import numpy as np

from wtalcli.app import main


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_has_examples(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "wtal extract --from synthetic" in out
    code, out, _ = run(capsys, "extract", "--help")
    assert code == 0 and "Examples" in out and "--workdir" in out


def test_extract_synthetic_skip_and_force(tmp_path, capsys):
    wd = str(tmp_path / "wd")
    code, out, err = run(capsys, "extract", "--from", "synthetic", "--preset", "tiny", "--workdir", wd)
    assert code == 0, err
    first = json.loads(out)
    assert first["kind"] == "features" and "wrote" in err
    manifest = json.loads((tmp_path / "wd" / first["artifact"] / "manifest.json").read_text())
    assert manifest["stage"] == "extract" and manifest["params"]["preset"] == "tiny"
    code, out, err = run(capsys, "extract", "--from", "synthetic", "--preset", "tiny", "--workdir", wd)
    assert code == 0 and json.loads(out)["artifact"] == first["artifact"] and "skipped" in err
    code, out, err = run(
        capsys, "extract", "--from", "synthetic", "--preset", "tiny", "--workdir", wd, "--force"
    )
    assert code == 0 and "wrote" in err
    code, out, err = run(capsys, "status", "--workdir", wd, "--json")
    rows = json.loads(out)
    assert len(rows) == 1 and rows[0]["state"] == "ok"


def test_usage_and_input_errors(tmp_path, capsys):
    code, _, err = run(capsys, "extract", "--bogus")
    assert code == 2
    code, _, err = run(
        capsys, "extract", "--from", "synthetic", "--preset", "nope", "--workdir", str(tmp_path)
    )
    assert code == 2 and "'nope' is not one of 'tiny', 'small'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(
        capsys, "extract", "--from", "basnet", str(tmp_path / "missing"), "--workdir", str(tmp_path)
    )
    assert code == 1 and "missing" in err and "Traceback" not in err
    code, _, err = run(capsys, "show", "nothing-here", "--workdir", str(tmp_path))
    assert code == 1 and "wtal status" in err


def test_basnet_import_real_gt(tmp_path, capsys):
    """The real BaS-Net gt.json with generated features imports 410 videos with the right labels."""
    from wtalcli.data.annotations import read_bytes
    from wtalcli.data.named_gt import BASNET_THUMOS14

    text = read_bytes(BASNET_THUMOS14 / "gt.json.xz", "BaS-Net gt").decode()
    gt = json.loads(text)["database"]
    root = tmp_path / "THUMOS14"
    rng = np.random.default_rng(0)
    for vid, entry in gt.items():
        for stream in ("rgb", "flow"):
            d = root / "features" / entry["subset"] / stream
            d.mkdir(parents=True, exist_ok=True)
            np.save(d / f"{vid}.npy", rng.normal(size=(3, 1024)).astype(np.float32))
    (root / "gt.json").write_text(text)
    wd = str(tmp_path / "wd")
    code, out, err = run(
        capsys, "extract", "--from", "basnet", str(root), "--workdir", wd, "--dtype", "float16"
    )
    assert code == 0, err
    art = json.loads(out)
    from wtalcli.data.schema import FeatureSet

    fs = FeatureSet(tmp_path / "wd" / art["artifact"])
    assert len(fs.videos) == 410 and fs.dim == 2048 and len(fs.classes) == 20
    assert (fs.videos["subset"] == "train").sum() == 200
    assert len(fs.annotations) == 3007 + 3311
    row = fs.videos.set_index("video_id").loc["video_validation_0000051"]
    want = sorted({a["label"] for a in gt["video_validation_0000051"]["annotations"]})
    assert list(row["labels"]) == want
