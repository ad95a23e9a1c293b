"""Build the packaged ground truths (``wtalcli/data/datasets/``) from copies of the public files.

Usage: ``python scripts/build_datasets.py SOURCE`` where SOURCE holds the files named in
``wtalcli/data/datasets/PROVENANCE.md`` (``thumos14/original_annotations/``,
``thumos14/basnet_*``, ``activitynet13/bsn_*``, ``activitynet12/wtalc_npy_3cnet/``).  Everything
is deterministic: THUMOS14 txt files and BaS-Net's split files are copied byte for byte, BaS-Net's
``gt.json`` is xz-compressed unchanged, ActivityNet 1.3 / 1.2 are converted to our
ActivityNet-style JSON (compact, xz).  ``SHA256SUMS`` lists the sha256 of each packaged file's
content (after decompression), which ``tests/test_datasets.py`` checks.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import lzma
import shutil
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wtalcli.data.annotations import read_bytes, read_json  # noqa: E402
from wtalcli.data.unpickle import safe_load_object_npy  # noqa: E402

OUT = ROOT / "wtalcli" / "data" / "datasets"
XZ = {"format": lzma.FORMAT_XZ, "check": lzma.CHECK_CRC64, "preset": 9 | lzma.PRESET_EXTREME}


def write_xz(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lzma.compress(data, **XZ))


def compact_json(doc: dict) -> bytes:
    return (json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def thumos14(src: Path) -> None:
    for part in ("annotations_val", "annotations_test"):
        dst = OUT / "thumos14" / part
        dst.mkdir(parents=True, exist_ok=True)
        for f in sorted((src / "thumos14" / "original_annotations" / part).iterdir()):
            shutil.copyfile(f, dst / f.name)


def basnet(src: Path) -> None:
    dst = OUT / "basnet_thumos14"
    dst.mkdir(parents=True, exist_ok=True)
    write_xz(dst / "gt.json.xz", (src / "thumos14" / "basnet_gt.json").read_bytes())
    for s in ("train", "test"):
        shutil.copyfile(src / "thumos14" / f"basnet_split_{s}.txt", dst / f"split_{s}.txt")


def anet13(src: Path) -> None:
    """BSN's conversion of the official v1.3 JSON: annotations from ``anet_anno_action.json``, subset
    and duration (``seconds``) from ``video_info_new.csv``; ids without BSN's ``v_`` prefix; the
    unlabelled ``testing`` videos left out; videos in the csv's order."""
    base = src / "activitynet13"
    anno = read_json(base / "bsn_anet_anno_action.json")
    db = {}
    with open(base / "bsn_video_info_new.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["subset"] == "testing":
                continue
            key = row["video"]
            db[key.removeprefix("v_")] = {
                "subset": row["subset"],
                "duration": float(row["seconds"]),
                "annotations": [
                    {"label": a["label"], "segment": a["segment"]} for a in anno[key]["annotations"]
                ],
            }
    doc = {
        "version": "ActivityNet v1.3 training+validation (the videos BSN's annotation files cover), "
        "converted from wzmsltw/BSN-boundary-sensitive-network f13707f data/activitynet_annotations",
        "database": db,
    }
    write_xz(OUT / "anet13" / "gt.json.xz", compact_json(doc))


def _text(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def anet12(src: Path) -> None:
    """W-TALC's ActivityNet 1.2 arrays (3C-Net's copy), keyed by the YouTube id of ``url.npy``;
    ``wtalc_name`` keeps W-TALC's own name (``video_N``) of each video; array order."""
    base = src / "activitynet12" / "wtalc_npy_3cnet"
    arr = {
        n: safe_load_object_npy(base / f"{n}.npy")
        for n in ("videoname", "subset", "segments", "labels", "duration", "url")
    }
    names, subsets, urls = _text(arr["videoname"]), _text(arr["subset"]), _text(arr["url"])
    db = {}
    for i, name in enumerate(names):
        yid = parse_qs(urlparse(urls[i]).query)["v"][0]
        if yid in db:
            raise SystemExit(f"{yid} twice in url.npy")
        db[yid] = {
            "subset": subsets[i],
            "duration": float(arr["duration"][i]),
            "wtalc_name": name,
            "annotations": [
                {"label": str(lab), "segment": [float(s), float(e)]}
                for (s, e), lab in zip(arr["segments"][i], _text(arr["labels"][i]), strict=True)
            ],
        }
    doc = {
        "version": "ActivityNet v1.2 training+validation, converted from W-TALC's "
        "ActivityNet1.2-Annotations (naraysa/3c-net 8b1d4a9); segment values as stored there",
        "database": db,
    }
    write_xz(OUT / "anet12" / "gt.json.xz", compact_json(doc))


def checksums() -> None:
    lines = []
    for p in sorted(OUT.rglob("*")):
        if p.is_file() and p.name not in ("SHA256SUMS", "PROVENANCE.md"):
            digest = hashlib.sha256(read_bytes(p, "packaged file")).hexdigest()
            lines.append(f"{digest}  {p.relative_to(OUT).as_posix()}")
    (OUT / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source", type=Path, help="folder holding the public files (see PROVENANCE.md)")
    src = ap.parse_args().source
    for part in ("thumos14", "basnet_thumos14", "anet13", "anet12"):
        shutil.rmtree(OUT / part, ignore_errors=True)
    thumos14(src)
    basnet(src)
    anet13(src)
    anet12(src)
    checksums()
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{OUT.relative_to(ROOT)}: {total} bytes")


if __name__ == "__main__":
    main()
