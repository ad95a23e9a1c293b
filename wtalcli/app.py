"""The ``wtal`` command line: a thin Typer layer over the stage functions in ``stages/``.

Conventions: every stage takes ``--workdir`` (default ``./artifacts``); an input artifact that is
not named is the newest matching one in the workdir (the stage says which it used); machine
output (JSON, paths) goes to stdout, logs and progress bars to stderr; exit codes are 0 ok,
1 error, 2 usage. ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from wtalcli import __version__
from wtalcli.core.console import emit, err
from wtalcli.core.errors import InputError, WtalError
from wtalcli.core.store import Store, code_version

app = typer.Typer(
    name="wtal",
    help=(
        "Weakly-supervised temporal action localization: BaS-Net baseline + Denoised Cross-Video "
        "Contrast (DCC), stage by stage, with cached, inspectable artifacts.\n\n"
        "Example (the whole flow on the built-in synthetic dataset):\n\n"
        "  wtal extract --from synthetic && wtal baseline && wtal localize > p.json && wtal evaluate p.json"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

# ---------------------------------------------------------------- shared options (one place)

Workdir = Annotated[
    Path,
    typer.Option("--workdir", "-w", help="Artifact root: inputs are looked up and outputs written here."),
]
Force = Annotated[bool, typer.Option("--force", help="Rebuild even if an up-to-date artifact exists.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (fixes the result on CPU).")]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
DEFAULT_WORKDIR = Path("artifacts")


class Source(StrEnum):
    synthetic = "synthetic"
    basnet = "basnet"
    wtalc = "wtalc"
    folder = "folder"
    videos = "videos"


def _store(workdir: Path) -> Store:
    return Store(workdir)


def _emit_artifact(art, **extra) -> None:
    emit({"artifact": art.id, "kind": art.kind, "path": str(art.path), **extra})


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"wtal {__version__} (code {code_version()})")
        raise typer.Exit(0)


# the commands that run under torchrun (docs/distributed.md); the others refuse it
DISTRIBUTED_COMMANDS = ("baseline", "train-dcc", "extract")


@app.callback()
def _main(
    ctx: typer.Context,
    debug: Debug = False,
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """Global options (``--debug`` is also accepted after the command)."""
    from wtalcli.core import distributed

    command = ctx.invoked_subcommand
    if command and command not in DISTRIBUTED_COMMANDS and distributed.launched().active:
        raise InputError(
            f"`wtal {command}` runs as one process, not under torchrun",
            f"launch it without torchrun (only {', '.join(DISTRIBUTED_COMMANDS)} are distributed)",
        )


# ---------------------------------------------------------------- extract


@app.command(
    "extract",
    help=(
        "Make a feature set: the built-in synthetic dataset, or import features in a known layout.\n\n"
        "Examples:\n\n"
        "  wtal extract --from synthetic --preset small\n\n"
        "  wtal extract --from basnet ~/data/THUMOS14   # features/{train,test}/{rgb,flow}/*.npy + gt.json\n\n"
        "  wtal extract --from videos ~/videos --backbone r3d_18 --weights r3d_18-b3b3357e.pth --device cuda"
    ),
)
def extract_cmd(
    source: Annotated[
        Source, typer.Option("--from", help="Where the features come from.")
    ] = Source.synthetic,
    path: Annotated[Path | None, typer.Argument(help="Input folder (not for synthetic).")] = None,
    preset: Annotated[str, typer.Option(help="Synthetic preset: tiny, small or thumos.")] = "small",
    dtype: Annotated[str, typer.Option(help="Stored feature dtype: float32 or float16.")] = "float32",
    gt: Annotated[
        Path | None,
        typer.Option("--gt", help="Ground-truth JSON (basnet: gt.json; folder: ActivityNet-style)."),
    ] = None,
    annotations: Annotated[
        Path | None,
        typer.Option(help="Replace the source's annotations: THUMOS14 txt folder or ActivityNet-style JSON."),
    ] = None,
    classes: Annotated[
        Path | None, typer.Option("--classes", help="Class list (JSON list or one name per line).")
    ] = None,
    features_file: Annotated[
        Path | None, typer.Option(help="wtalc: the joint features .npy, if not the default name.")
    ] = None,
    streams: Annotated[str, typer.Option(help="basnet: both (rgb ++ flow), rgb or flow.")] = "both",
    fps: Annotated[float, typer.Option(help="Feature time grid: frames per second.")] = 25.0,
    stride: Annotated[int, typer.Option(help="Feature time grid: frames between snippets.")] = 16,
    clip_len: Annotated[int, typer.Option(help="Feature time grid: frames per snippet.")] = 16,
    allow_missing: Annotated[
        bool, typer.Option(help="Warn (not fail) on ground-truth videos without features.")
    ] = False,
    keep_unlabeled: Annotated[bool, typer.Option(help="Import videos with features but no labels.")] = False,
    backbone: Annotated[
        str, typer.Option(help="videos: r2plus1d_18, r3d_18, s3d, mvit_v2_s or swin3d_t.")
    ] = "r2plus1d_18",
    weights: Annotated[
        str, typer.Option(help="videos: a weights file, 'hub' (torch hub cache) or 'random'.")
    ] = "hub",
    batch_size: Annotated[int, typer.Option(help="videos: clips per forward pass.")] = 32,
    device: Annotated[str, typer.Option("--device", help="videos: auto, cpu or cuda.")] = "auto",
    shard: Annotated[
        str | None, typer.Option(help="videos: extract only shard i/N (rerun without it to merge).")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="videos: CSV video_id,label of video-level labels.")
    ] = None,
    size: Annotated[int | None, typer.Option(help="videos: crop side override (quick runs).")] = None,
    decoder: Annotated[str, typer.Option(help="videos: pyav or torchcodec.")] = "pyav",
    workers: Annotated[int, typer.Option(help="videos: decoder threads.")] = 1,
    seed: Seed = 0,
    workdir: Workdir = DEFAULT_WORKDIR,
    force: Force = False,
) -> None:
    from stages import extract as stage
    from wtalcli.data.timegrid import TimeGrid

    store = _store(workdir)
    if source is Source.synthetic:
        if path is not None:
            raise typer.BadParameter("--from synthetic takes no input path")
        art = stage.extract_synthetic(store, preset=preset, seed=seed, dtype=dtype, force=force)
    elif source is Source.videos:
        if path is None:
            raise typer.BadParameter("--from videos needs a folder of videos or a list file")
        art = stage.extract_videos(
            store,
            path,
            backbone,
            weights,
            TimeGrid(fps, stride, clip_len),
            batch_size,
            device,
            shard,
            labels_csv=labels,
            annotations=annotations,
            size=size,
            decoder=decoder,
            workers=workers,
            dtype=dtype,
            seed=seed,
            force=force,
        )
        if art is None:
            emit({"shard": shard, "done": True})
            return
    else:
        if path is None:
            raise typer.BadParameter(f"--from {source.value} needs the input folder")
        try:
            grid = TimeGrid(fps, stride, clip_len)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        art = stage.extract_import(
            store,
            source.value,
            path,
            grid,
            dtype,
            gt_json=gt,
            annotations=annotations,
            classes_file=classes,
            features_file=features_file,
            streams=streams,
            allow_missing=allow_missing,
            keep_unlabeled=keep_unlabeled,
            force=force,
        )
    _emit_artifact(art)


# ---------------------------------------------------------------- baseline

Device = Annotated[str, typer.Option("--device", help="auto (a GPU if present), cpu, cuda or cuda:N.")]
Resume = Annotated[
    bool, typer.Option("--resume/--no-resume", help="Continue an interrupted run from its last checkpoint.")
]


@app.command(
    "baseline",
    help=(
        "Train BaS-Net on the training videos; write the model (checkpoint, training log, "
        "embeddings) and the T-CAS of every video.\n\n"
        "Examples:\n\n  wtal baseline\n\n  wtal baseline --features features-1a2b --iterations 1500 --seed 1 --device cuda"
    ),
)
def baseline_cmd(
    features: Annotated[
        str | None, typer.Option("--features", help="Feature-set artifact (default: newest).")
    ] = None,
    preset: Annotated[
        str, typer.Option(help="Model/training scale: auto, tiny, small, thumos, anet.")
    ] = "auto",
    iterations: Annotated[
        int | None, typer.Option(help="Training iterations (default: the preset's).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Videos per batch.")] = 16,
    lr: Annotated[
        float | None, typer.Option(help="Adam learning rate (default 1e-4; the tiny preset 1e-3).")
    ] = None,
    weight_decay: Annotated[float, typer.Option(help="Adam weight decay.")] = 5e-4,
    num_segments: Annotated[int | None, typer.Option(help="T: snippets sampled per video.")] = None,
    hidden: Annotated[int | None, typer.Option(help="Embedding width (2048 for real features).")] = None,
    holdout: Annotated[float, typer.Option(help="Share of training videos held out as subset 'val'.")] = 0.0,
    amp: Annotated[str, typer.Option(help="Mixed precision on GPU: none or bf16.")] = "none",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    num_workers: Annotated[int, typer.Option(help="Background batch-loading threads.")] = 0,
    seed: Seed = 0,
    device: Device = "auto",
    resume: Resume = True,
    workdir: Workdir = DEFAULT_WORKDIR,
    force: Force = False,
) -> None:
    from stages.baseline import BaselineParams, baseline

    params = BaselineParams(
        preset=preset,
        iterations=iterations,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        num_segments=num_segments,
        hidden=hidden,
        seed=seed,
        device=device,
        num_workers=num_workers,
        amp=amp,
        compile=compile,
        holdout=holdout,
    )
    model_art, tcas_art = baseline(_store(workdir), features, params, resume=resume, force=force)
    emit({"model": model_art.id, "tcas": tcas_art.id, "path": str(tcas_art.path)})


# ---------------------------------------------------------------- pseudolabel / denoise


@app.command(
    "pseudolabel",
    help=(
        "Snippet-wise pseudo-labels of the training videos from a T-CAS (per-class mean thresholding).\n\n"
        "Examples:\n\n  wtal pseudolabel\n\n  wtal pseudolabel --tcas tcas-1a2b --rule mean"
    ),
)
def pseudolabel_cmd(
    tcas: Annotated[str | None, typer.Option("--tcas", help="T-CAS artifact (default: newest).")] = None,
    rule: Annotated[str, typer.Option(help="Thresholding rule.")] = "mean",
    workdir: Workdir = DEFAULT_WORKDIR,
    force: Force = False,
) -> None:
    from stages.pseudolabel import pseudolabel

    art = pseudolabel(_store(workdir), tcas, rule=rule, force=force)
    _emit_artifact(art)


@app.command(
    "denoise",
    help=(
        "k-means over all training snippets' embeddings, then the confidence map S of every "
        "pseudo-label (the share of its cluster that agrees with it).\n\n"
        "Examples:\n\n  wtal denoise --clusters 64\n\n  wtal denoise --clusters 32 --backend faiss --sample 20000"
    ),
)
def denoise_cmd(
    clusters: Annotated[int, typer.Option("--clusters", "-k", help="K, the number of clusters.")] = 64,
    iterations: Annotated[int, typer.Option(help="Lloyd iterations (exactly this many).")] = 20,
    backend: Annotated[str, typer.Option(help="k-means backend: auto, torch or faiss.")] = "auto",
    init: Annotated[str, typer.Option(help="Initialisation: k-means++ or random.")] = "k-means++",
    spherical: Annotated[
        bool, typer.Option("--spherical", help="Spherical k-means (unit centroids).")
    ] = False,
    sample: Annotated[
        int | None, typer.Option(help="Iterate on this many snippets, then assign all.")
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            help=(
                "k-means GEMM precision: auto (mixed on a CPU with fast bf16 GEMMs and embeddings "
                "of 512+ dimensions, else fp32), fp32, mixed (certified bf16 with fp32 re-checks: "
                "the fp32 assignments, faster), or bf16 (fastest, approximate)."
            )
        ),
    ] = "auto",
    pseudolabels: Annotated[
        str | None, typer.Option("--pseudolabels", help="Pseudo-label artifact (default: newest).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="Model whose embeddings to cluster (default: the pseudo-labels' model)."
        ),
    ] = None,
    seed: Seed = 0,
    device: Device = "auto",
    workdir: Workdir = DEFAULT_WORKDIR,
    force: Force = False,
) -> None:
    from stages.denoise import DenoiseParams, denoise

    params = DenoiseParams(
        clusters=clusters,
        iterations=iterations,
        seed=seed,
        init=init,
        backend=backend,
        spherical=spherical,
        sample=sample,
        device=device,
        precision=precision,
    )
    art = denoise(_store(workdir), pseudolabels, model, params, force=force)
    _emit_artifact(art, summary=art.manifest.get("summary"))


# ---------------------------------------------------------------- train-dcc


class Scope(StrEnum):
    video = "video"
    batch = "batch"
    bank = "bank"


@app.command(
    "train-dcc",
    help=(
        "Train with Denoised Cross-Video Contrast from the baseline (or scratch), using the "
        "pseudo-label and confidence artifacts; optionally refresh them every N iterations.\n\n"
        "Examples:\n\n  wtal train-dcc\n\n  wtal train-dcc --contrast-scope batch --no-denoise --seed 2\n\n"
        "  wtal train-dcc --tau 0.2 --regions 8 --refresh-every 0"
    ),
)
def train_dcc_cmd(
    model: Annotated[
        str | None, typer.Option("--model", help="Baseline model artifact (default: newest).")
    ] = None,
    pseudolabels: Annotated[
        str | None, typer.Option("--pseudolabels", help="Pseudo-labels of that model (default: newest).")
    ] = None,
    confidence: Annotated[
        str | None,
        typer.Option("--confidence", help="Confidence map of those pseudo-labels (default: newest)."),
    ] = None,
    iterations: Annotated[int | None, typer.Option(help="Iterations (default: the baseline's).")] = None,
    init: Annotated[str, typer.Option(help="Start from the baseline weights or from scratch.")] = "baseline",
    contrast_scope: Annotated[
        Scope, typer.Option("--contrast-scope", help="Where contrast pairs come from.")
    ] = Scope.bank,
    denoise: Annotated[
        bool, typer.Option("--denoise/--no-denoise", help="Weight features by the confidence map S.")
    ] = True,
    regions: Annotated[int, typer.Option(help="M, regions per video.")] = 5,
    tau: Annotated[float, typer.Option(help="InfoNCE temperature.")] = 0.1,
    proj_dim: Annotated[int, typer.Option(help="Projection head width.")] = 512,
    clusters: Annotated[int, typer.Option("--clusters", help="K for the refresh rounds' k-means.")] = 64,
    beta_start: Annotated[float, typer.Option(help="Contrast weight at the start.")] = 0.1,
    beta_end: Annotated[float, typer.Option(help="Contrast weight at the end.")] = 1.0,
    beta_shape: Annotated[str, typer.Option(help="constant, linear or exp.")] = "exp",
    momentum: Annotated[float, typer.Option(help="Memory-bank momentum (0: overwrite).")] = 0.0,
    refresh_every: Annotated[
        int,
        typer.Option(
            help="Recompute pseudo-labels/confidence every N iterations (-1: once per pass over the "
            "training videos, at most --max-rounds times; 0: never)."
        ),
    ] = -1,
    max_rounds: Annotated[int, typer.Option(help="With --refresh-every -1: the most refresh rounds.")] = 10,
    num_workers: Annotated[int, typer.Option(help="Background batch-loading threads.")] = 0,
    seed: Seed = 0,
    device: Device = "auto",
    resume: Resume = True,
    workdir: Workdir = DEFAULT_WORKDIR,
    force: Force = False,
) -> None:
    from stages.train_dcc import DCCParams, train_dcc

    params = DCCParams(
        iterations=iterations,
        init=init,
        scope=contrast_scope.value,
        denoise=denoise,
        regions=regions,
        tau=tau,
        proj_dim=proj_dim,
        beta_start=beta_start,
        beta_end=beta_end,
        beta_shape=beta_shape,
        momentum=momentum,
        refresh_every=refresh_every,
        max_rounds=max_rounds,
        clusters=clusters,
        seed=seed,
        device=device,
        num_workers=num_workers,
    )
    model_art, tcas_art = train_dcc(
        _store(workdir), model, pseudolabels, confidence, params, resume=resume, force=force
    )
    emit({"model": model_art.id, "tcas": tcas_art.id, "path": str(tcas_art.path)})


# ---------------------------------------------------------------- localize / evaluate


@app.command(
    "localize",
    help=(
        "BaS-Net inference on a T-CAS: ActivityNet results JSON on stdout (or --out FILE), also kept "
        "as a proposals artifact.\n\n"
        "Examples:\n\n  wtal localize > proposals.json\n\n  wtal localize --threshold 0.5 > proposals.json\n\n"
        "  wtal localize --threshold 0:0.25:0.025 --nms 0.6 --out p.json"
    ),
)
def localize_cmd(
    tcas: Annotated[str | None, typer.Option("--tcas", help="T-CAS artifact (default: newest).")] = None,
    threshold: Annotated[
        list[str] | None,
        typer.Option(
            "--threshold",
            help="Activation threshold(s): repeat, or a range start:stop:step (stop excluded). Default: BaS-Net's ten, 0:0.25:0.025.",
        ),
    ] = None,
    class_threshold: Annotated[
        float, typer.Option(help="Keep classes whose video score is at least this.")
    ] = 0.25,
    upsample: Annotated[int, typer.Option(help="Temporal upsampling factor.")] = 24,
    nms: Annotated[float, typer.Option("--nms", help="Per-class NMS tIoU.")] = 0.7,
    oic_lambda: Annotated[float, typer.Option(help="Outer band, as a share of the proposal length.")] = 0.25,
    oic_gamma: Annotated[float, typer.Option(help="Weight of the class score in the proposal score.")] = 0.2,
    max_proposals: Annotated[
        int | None, typer.Option(help="Keep at most this many proposals per video.")
    ] = None,
    subset: Annotated[str, typer.Option(help="Videos: test, val, train or all.")] = "test",
    out: Annotated[Path | None, typer.Option("--out", help="Write the JSON here instead of stdout.")] = None,
    workdir: Workdir = DEFAULT_WORKDIR,
    force: Force = False,
) -> None:
    from stages.localize import RESULTS, localize
    from wtalcli.evaluation.localization import BASNET_ACT_THRESHOLDS, LocalizeParams, parse_act_thresholds

    if threshold:
        values: list[float] = []
        for spec in threshold:
            values.extend(parse_act_thresholds(spec))
        thresholds = tuple(sorted(set(values)))
    else:
        thresholds = BASNET_ACT_THRESHOLDS
    params = LocalizeParams(
        class_threshold=class_threshold,
        act_thresholds=thresholds,
        upsample=upsample,
        oic_lambda=oic_lambda,
        oic_gamma=oic_gamma,
        nms_tiou=nms,
        max_proposals=max_proposals,
    )
    art = localize(_store(workdir), tcas, params, subset=subset, force=force)
    data = (art.path / RESULTS).read_bytes()
    if out is not None:
        from wtalcli.core.files import atomic_write_bytes

        atomic_write_bytes(out, data)
        emit({"artifact": art.id, "out": str(out)})
    else:
        sys.stdout.write(data.decode() + "\n")


class Protocol(StrEnum):
    all = "all"
    basnet = "basnet"
    opentad = "opentad"


@app.command(
    "evaluate",
    help=(
        "mAP by the ActivityNet detection protocol: a table on stderr, JSON on stdout with --json, "
        "per-class AP kept as an evaluation artifact. Ground truth defaults to the feature set's annotations.\n\n"
        "Examples:\n\n  wtal evaluate proposals.json\n\n  wtal localize | wtal evaluate -\n\n"
        "  wtal evaluate p.json --gt ../shared/datasets/thumos14/original_annotations/annotations_test "
        "--protocol basnet --tiou thumos14-basnet"
    ),
)
def evaluate_cmd(
    proposals: Annotated[
        str | None,
        typer.Argument(help="Results JSON file, - for stdin, or a proposals artifact (default: newest)."),
    ] = None,
    gt: Annotated[
        Path | None, typer.Option("--gt", help="Ground truth: ActivityNet-style JSON or THUMOS14 txt folder.")
    ] = None,
    subset: Annotated[
        str | None,
        typer.Option(help="Subset to evaluate (default: test; for --gt JSON files, as the file names it)."),
    ] = None,
    tiou: Annotated[
        str,
        typer.Option(
            help="tIoU thresholds: thumos14 (0.1:0.7), thumos14-basnet (0.1:0.9), anet, a list or a:b:c."
        ),
    ] = "thumos14",
    protocol: Annotated[
        Protocol, typer.Option(help="THUMOS14 test videos kept: all 212, basnet 210, opentad 211.")
    ] = Protocol.all,
    ties: Annotated[
        str, typer.Option(help="Order of equal scores: reference (the official evaluator's) or stable.")
    ] = "reference",
    ambiguous: Annotated[
        str, typer.Option(help="THUMOS14 Ambiguous segments: ignore, or exclude overlapping false positives.")
    ] = "ignore",
    drop_unknown: Annotated[
        bool,
        typer.Option(
            "--drop-unknown",
            help="Drop predictions of classes absent from the ground truth instead of failing.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON on stdout.")] = False,
    workdir: Workdir = DEFAULT_WORKDIR,
    force: Force = False,
) -> None:
    from stages.evaluate import EvalParams, evaluate, result_table

    params = EvalParams(
        subset=subset or "test",
        tiou=tiou,
        protocol=protocol.value,
        ties=ties,
        ambiguous=ambiguous,
        unknown_labels="drop" if drop_unknown else "error",
    )
    result, art = evaluate(_store(workdir), proposals, gt, params, force=force)
    err.print(result_table(result))
    if as_json:
        emit({"artifact": art.id, **result})
    else:
        emit(
            {"artifact": art.id, "average_map": result["average_map"], "map_per_tiou": result["map_per_tiou"]}
        )


# ---------------------------------------------------------------- run


@app.command(
    "run",
    help=(
        "The whole pipeline through the artifact cache: extract -> baseline -> pseudolabel -> denoise -> "
        "train-dcc -> localize -> evaluate, ending with a baseline-vs-DCC table. With no arguments it "
        "runs on the built-in synthetic dataset.\n\n"
        "Examples:\n\n  wtal run\n\n  wtal run --preset tiny --until baseline\n\n"
        "  wtal run --force train-dcc --seed 2"
    ),
)
def run_cmd(
    preset: Annotated[str, typer.Option(help="Synthetic preset: tiny, small or thumos.")] = "small",
    features: Annotated[
        str | None, typer.Option("--features", help="Use this feature set instead of the synthetic one.")
    ] = None,
    until: Annotated[str, typer.Option("--until", help="Stop after this stage.")] = "evaluate",
    force: Annotated[
        list[str] | None, typer.Option("--force", help="Rebuild this stage (repeatable).")
    ] = None,
    clusters: Annotated[int, typer.Option("--clusters", help="K for denoise.")] = 64,
    iterations: Annotated[
        int | None, typer.Option(help="Training iterations of baseline and DCC (default: the preset's).")
    ] = None,
    seed: Seed = 0,
    data_seed: Annotated[int, typer.Option(help="Seed of the synthetic dataset.")] = 0,
    device: Device = "auto",
    workdir: Workdir = DEFAULT_WORKDIR,
) -> None:
    from stages.baseline import BaselineParams
    from stages.denoise import DenoiseParams
    from stages.run import RunParams, comparison_table, run
    from stages.train_dcc import DCCParams

    params = RunParams(
        preset=preset,
        features=features,
        seed=seed,
        data_seed=data_seed,
        device=device,
        until=until,
        force=tuple(force or ()),
        baseline=BaselineParams(iterations=iterations),
        denoise=DenoiseParams(clusters=clusters),
        dcc=DCCParams(iterations=iterations, clusters=clusters),
    )
    out = run(_store(workdir), params)
    if out.get("results"):
        err.print(comparison_table(out["results"]))
    emit(out)


# ---------------------------------------------------------------- ablate


def _number_list(value: str, what: str, kind=float) -> tuple:
    """``"0,1,2"`` -> (0, 1, 2); a bad entry is a usage error naming the option."""
    try:
        items = tuple(kind(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a comma-separated list of numbers", param_hint=what
        ) from None
    if not items:
        raise typer.BadParameter("give at least one value", param_hint=what)
    return items


@app.command(
    "ablate",
    help=(
        "The paper's ablations in one command: baseline / DCC without denoising / DCC (plus a "
        "same-length baseline control), single-video / mini-batch / memory-bank contrast and a K "
        "sweep, each over several seeds, after choosing tau and beta on held-out training videos "
        "(never on test). Writes results.parquet, table.md (mean ± std) and ablation.png.\n\n"
        "Examples:\n\n  wtal ablate --jobs 2\n\n"
        "  wtal ablate --preset tiny --seeds 0,1 --tables main --no-select\n\n"
        "  wtal ablate --tables clusters --clusters 8,32,128 --tau 0.2 --no-select"
    ),
)
def ablate_cmd(
    preset: Annotated[str, typer.Option(help="Synthetic preset: tiny, small or thumos.")] = "small",
    features: Annotated[
        str | None, typer.Option("--features", help="Use this feature set instead of the synthetic one.")
    ] = None,
    seeds: Annotated[str, typer.Option(help="Training seeds, comma-separated.")] = "0,1,2",
    tables: Annotated[str, typer.Option(help="Which tables: main, scope, clusters.")] = "main,scope,clusters",
    clusters: Annotated[str, typer.Option("--clusters", help="The K sweep.")] = "16,64,256",
    select: Annotated[
        bool,
        typer.Option("--select/--no-select", help="Choose tau and beta_end on held-out training videos."),
    ] = True,
    holdout: Annotated[
        float, typer.Option(help="Share of training videos held out for the selection.")
    ] = 0.2,
    select_seeds: Annotated[str, typer.Option(help="Seeds of the selection runs.")] = "0",
    grid_tau: Annotated[str, typer.Option(help="Selection grid: tau values.")] = "0.1,0.2",
    grid_beta_end: Annotated[str, typer.Option(help="Selection grid: beta_end values.")] = "1,100,10000",
    tau: Annotated[float, typer.Option(help="InfoNCE temperature (with --no-select).")] = 0.1,
    beta_end: Annotated[float, typer.Option(help="Contrast weight at the end (with --no-select).")] = 1.0,
    iterations: Annotated[
        int | None, typer.Option(help="Training iterations of baseline and DCC (default: the preset's).")
    ] = None,
    jobs: Annotated[int, typer.Option(help="Trainings run at once (worker processes).")] = 1,
    data_seed: Annotated[int, typer.Option(help="Seed of the synthetic dataset.")] = 0,
    device: Device = "auto",
    workdir: Workdir = DEFAULT_WORKDIR,
    force: Force = False,
) -> None:
    from stages.ablate import AblationParams, ablate
    from stages.train_dcc import DCCParams

    params = AblationParams(
        preset=preset,
        features=features,
        data_seed=data_seed,
        seeds=_number_list(seeds, "--seeds", int),
        tables=tuple(t.strip() for t in tables.split(",") if t.strip()),
        clusters=_number_list(clusters, "--clusters", int),
        select=select,
        holdout=holdout,
        select_seeds=_number_list(select_seeds, "--select-seeds", int),
        grid_tau=_number_list(grid_tau, "--grid-tau"),
        grid_beta_end=_number_list(grid_beta_end, "--grid-beta-end"),
        iterations=iterations,
        dcc=DCCParams(tau=tau, beta_end=beta_end),
        jobs=jobs,
        device=device,
    )
    art = ablate(_store(workdir), params, force=force)
    err.print((art.path / "table.md").read_text())
    emit(
        {
            "artifact": art.id,
            "path": str(art.path),
            "table": str(art.path / "table.md"),
            **art.manifest["summary"],
        }
    )


# ---------------------------------------------------------------- report


@app.command(
    "report",
    help=(
        "Write a self-contained HTML report with figures of every stage: T-CAS against ground truth "
        "and proposals, pseudo-labels and confidence across refresh rounds, embeddings (baseline vs "
        "DCC), precision-recall curves, mAP against tIoU.\n\n"
        "Examples:\n\n  wtal report\n\n  wtal report --out report.html --videos 6"
    ),
)
def report_cmd(
    out: Annotated[Path, typer.Option("--out", help="HTML file to write.")] = Path("report.html"),
    videos: Annotated[int, typer.Option("--videos", help="How many test videos to plot.")] = 4,
    seed: Seed = 0,
    workdir: Workdir = DEFAULT_WORKDIR,
) -> None:
    from stages.report import report

    path = report(_store(workdir), out, n_videos=videos, seed=seed)
    emit({"report": str(path)})


# ---------------------------------------------------------------- status / show


@app.command(
    "status",
    help="List the artifacts in the workdir: kind, stage, key parameters, inputs, staleness.\n\nExample:\n\n  wtal status",
)
def status_cmd(
    workdir: Workdir = DEFAULT_WORKDIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")] = False,
) -> None:
    from rich.table import Table

    store = _store(workdir)
    rows = []
    for art in store.artifacts():
        rows.append(
            {
                "id": art.id,
                "kind": art.kind,
                "stage": art.stage,
                "created": art.manifest.get("created"),
                "params": _key_params(art.params),
                "inputs": {r: v["id"] for r, v in art.manifest.get("inputs", {}).items()},
                "state": store.staleness(art),
                "bytes": art.manifest.get("bytes", 0),
            }
        )
    if as_json:
        emit(rows)
        return
    table = Table(title=f"artifacts in {workdir}")
    for col in ("id", "stage", "created", "key parameters", "inputs", "state"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["id"],
            r["stage"],
            str(r["created"])[:19],
            ", ".join(f"{k}={v}" for k, v in r["params"].items()),
            ", ".join(f"{k}={v}" for k, v in r["inputs"].items()),
            r["state"],
        )
    err.print(table)


@app.command(
    "show",
    help="Print an artifact: its manifest, the shape of each array and the head of each table.\n\n"
    "Examples:\n\n  wtal show features-1a2b3c4d5e6f\n\n  wtal show tcas   # the newest T-CAS artifact",
)
def show_cmd(
    artifact: Annotated[str, typer.Argument(help="Artifact id, id prefix, path, or a kind (its newest).")],
    rows: Annotated[int, typer.Option("--rows", help="Table rows to print.")] = 5,
    workdir: Workdir = DEFAULT_WORKDIR,
) -> None:
    from wtalcli.report.describe import describe

    store = _store(workdir)
    from wtalcli.core.store import MADE_BY

    art = store.resolve(artifact, None) if artifact in MADE_BY else store.get(artifact)
    err.print(describe(art, rows))
    emit(art.manifest)


def _key_params(params: dict, limit: int = 6) -> dict:
    flat = {k: v for k, v in params.items() if not isinstance(v, dict | list)}
    return dict(list(flat.items())[:limit])


# ---------------------------------------------------------------- entry point


# typer vendors click: its usage-error classes are reached through the public BadParameter
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: maps errors to one line and exit codes (0 ok, 1 error, 2 usage)."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args or os.environ.get("WTAL_DEBUG") == "1"
    if "--debug" in args:  # accepted anywhere on the line, not only before the command
        args = ["--debug"] + [a for a in args if a != "--debug"]
    try:
        # not standalone: usage errors come back here and are printed as one line
        code = app(args=args, prog_name="wtal", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except _USAGE_ERROR as exc:
        if debug:
            raise
        where = exc.ctx.command_path if exc.ctx is not None else "wtal"
        message = " ".join(exc.format_message().split())
        if not message:  # `wtal` alone: the help was printed
            return 2
        err.print(f"[red]error:[/red] {escape(message)} (see `{escape(where)} -h`)")
        return 2
    except _CLICK_EXCEPTION as exc:  # other command-line errors (e.g. a missing file argument)
        if debug:
            raise
        err.print(f"[red]error:[/red] {escape(' '.join(exc.format_message().split()))}")
        return exc.exit_code
    except typer.Abort:
        err.print("[red]error:[/red] interrupted")
        return 130
    except WtalError as exc:
        if debug:
            raise
        err.print(f"[red]error:[/red] {escape(exc.one_line())}")
        return exc.exit_code
    except BrokenPipeError:
        return 1
    except Exception as exc:  # unexpected: one line, the traceback only with --debug
        if debug:
            raise
        err.print(
            f"[red]error:[/red] internal error {type(exc).__name__}: {escape(str(exc))} "
            "(rerun with --debug for the traceback)"
        )
        return 1
    return 0


def run() -> None:
    sys.exit(main())
