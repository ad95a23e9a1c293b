"""The ``wtal`` command line: a thin Typer layer over the stage functions in ``stages/``.

Conventions: every stage takes ``--workdir`` (default ``./artifacts``); an input artifact that is
not named is the newest matching one in the workdir (the stage says which it used); machine
output (JSON, paths) goes to stdout, logs and progress bars to stderr; exit codes are 0 ok,
1 error, 2 usage. ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from wtalcli import __version__
from wtalcli.core import params
from wtalcli.core.console import emit, err, show
from wtalcli.core.errors import InputError, WtalError
from wtalcli.core.params import Values
from wtalcli.core.store import Store, code_version
from wtalcli.dcc.params import DenoiseParams, PseudolabelParams
from wtalcli.dcc.train_params import DCCParams
from wtalcli.evaluation.localization import LocalizeParams
from wtalcli.evaluation.params import EvalParams
from wtalcli.model.config import BaselineParams
from wtalcli.report.inputs import ReportParams
from wtalcli.video.params import ExtractParams

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
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
DEFAULT_WORKDIR = Path("artifacts")


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
    from wtalcli.core.launch import launched

    command = ctx.invoked_subcommand
    if command and command not in DISTRIBUTED_COMMANDS and launched().active:
        raise InputError(
            f"`wtal {command}` runs as one process, not under torchrun",
            f"launch it without torchrun (only {', '.join(DISTRIBUTED_COMMANDS)} are distributed)",
        )


# ---------------------------------------------------------------- extract


def _extract(
    path: Annotated[
        Path | None, typer.Argument(help="Input folder, or videos' folder or list file (not for synthetic).")
    ] = None,
    workdir: Workdir = DEFAULT_WORKDIR,
    force: Force = False,
    *,
    values: Values,
) -> None:
    from stages.extract import extract

    p = values.build(0)
    art = extract(_store(workdir), p, path, force=force)
    if art is None:
        emit({"shard": p.shard, "done": True})
        return
    _emit_artifact(art)


app.command(
    "extract",
    help=(
        "Make a feature set: the built-in synthetic dataset, or import features in a known layout.\n\n"
        "Examples:\n\n"
        "  wtal extract --from synthetic --preset small\n\n"
        "  wtal extract --from basnet ~/data/THUMOS14   # features/{train,test}/{rgb,flow}/*.npy + gt.json\n\n"
        "  wtal extract --from videos ~/videos --backbone r3d_18 --weights r3d_18-b3b3357e.pth --device cuda"
    ),
)(params.command([params.Group(ExtractParams)], _extract))


# ---------------------------------------------------------------- baseline

Resume = Annotated[
    bool, typer.Option("--resume/--no-resume", help="Continue an interrupted run from its last checkpoint.")
]
Features = Annotated[str | None, typer.Option("--features", help="Feature-set artifact (default: newest).")]


def _baseline(
    features: Features = None,
    resume: Resume = True,
    workdir: Workdir = DEFAULT_WORKDIR,
    force: Force = False,
    *,
    values: Values,
) -> None:
    from stages.baseline import baseline

    model_art, tcas_art = baseline(_store(workdir), features, values.build(0), resume=resume, force=force)
    emit({"model": model_art.id, "tcas": tcas_art.id, "path": str(tcas_art.path)})


app.command(
    "baseline",
    help=(
        "Train BaS-Net on the training videos; write the model (checkpoint, training log, "
        "embeddings) and the T-CAS of every video.\n\n"
        "Examples:\n\n  wtal baseline\n\n"
        "  wtal baseline --features features-1a2b --iterations 1500 --seed 1 --device cuda\n\n"
        "  wtal baseline --holdout 0   # every training video, the last iteration (default: a fifth held out)"
    ),
)(params.command([params.Group(BaselineParams)], _baseline))


# ---------------------------------------------------------------- pseudolabel / denoise


def _pseudolabel(
    tcas: Annotated[str | None, typer.Option("--tcas", help="T-CAS artifact (default: newest).")] = None,
    workdir: Workdir = DEFAULT_WORKDIR,
    force: Force = False,
    *,
    values: Values,
) -> None:
    from stages.pseudolabel import pseudolabel

    _emit_artifact(pseudolabel(_store(workdir), tcas, values.build(0), force=force))


app.command(
    "pseudolabel",
    help=(
        "Snippet-wise pseudo-labels of the training videos from a T-CAS (per-class mean thresholding).\n\n"
        "Examples:\n\n  wtal pseudolabel\n\n  wtal pseudolabel --tcas tcas-1a2b --rule mean"
    ),
)(params.command([params.Group(PseudolabelParams)], _pseudolabel))


def _denoise(
    pseudolabels: Annotated[
        str | None, typer.Option("--pseudolabels", help="Pseudo-label artifact (default: newest).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="Model whose embeddings to cluster (default: the pseudo-labels' model)."
        ),
    ] = None,
    workdir: Workdir = DEFAULT_WORKDIR,
    force: Force = False,
    *,
    values: Values,
) -> None:
    from stages.denoise import denoise

    art = denoise(_store(workdir), pseudolabels, model, values.build(0), force=force)
    _emit_artifact(art, summary=art.manifest.get("summary"))


app.command(
    "denoise",
    help=(
        "k-means over all training snippets' embeddings, then the confidence map S of every "
        "pseudo-label (the share of its cluster that agrees with it).\n\n"
        "Examples:\n\n  wtal denoise --clusters 64\n\n  wtal denoise --clusters 32 --backend faiss --sample 20000"
    ),
)(params.command([params.Group(DenoiseParams)], _denoise))


# ---------------------------------------------------------------- train-dcc


def _train_dcc(
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
    resume: Resume = True,
    workdir: Workdir = DEFAULT_WORKDIR,
    force: Force = False,
    *,
    values: Values,
) -> None:
    from stages.train_dcc import train_dcc

    model_art, tcas_art = train_dcc(
        _store(workdir), model, pseudolabels, confidence, values.build(0), resume=resume, force=force
    )
    emit({"model": model_art.id, "tcas": tcas_art.id, "path": str(tcas_art.path)})


app.command(
    "train-dcc",
    help=(
        "Train with Denoised Cross-Video Contrast from the baseline (or scratch), using the "
        "pseudo-label and confidence artifacts; refresh them every N iterations with the same settings.\n\n"
        "Examples:\n\n  wtal train-dcc\n\n  wtal train-dcc --contrast-scope batch --no-denoise --seed 2\n\n"
        "  wtal train-dcc --tau 0.2 --regions 8 --refresh-every 0\n\n"
        "  wtal train-dcc --targets oracle --grad-every 50   # diagnostics: ground-truth targets, gradient share"
    ),
)(params.command([params.Group(DCCParams)], _train_dcc))


# ---------------------------------------------------------------- localize / evaluate


def _localize(
    tcas: Annotated[str | None, typer.Option("--tcas", help="T-CAS artifact (default: newest).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the JSON here instead of stdout.")] = None,
    workdir: Workdir = DEFAULT_WORKDIR,
    force: Force = False,
    *,
    values: Values,
) -> None:
    from stages.localize import RESULTS, localize

    art = localize(_store(workdir), tcas, values.build(0), force=force)
    data = (art.path / RESULTS).read_bytes()
    if out is not None:
        from wtalcli.core.files import atomic_write_bytes

        atomic_write_bytes(out, data)
        emit({"artifact": art.id, "out": str(out)})
    else:
        sys.stdout.write(data.decode() + "\n")


app.command(
    "localize",
    help=(
        "BaS-Net inference on a T-CAS: ActivityNet results JSON on stdout (or --out FILE), also kept "
        "as a proposals artifact (docs/inference.md says what differs from the official code).\n\n"
        "Examples:\n\n  wtal localize > proposals.json\n\n  wtal localize --threshold 0.5 > proposals.json\n\n"
        "  wtal localize --threshold 0:0.25:0.025 --nms 0.6 --out p.json\n\n  wtal localize --official > p.json\n\n"
        "  wtal localize --official --alignment center > p.json   # official, but wtal's alignment"
    ),
)(params.command([params.Group(LocalizeParams)], _localize))


def _evaluate(
    proposals: Annotated[
        str | None,
        typer.Argument(help="Results JSON file, - for stdin, or a proposals artifact (default: newest)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the full result as JSON on stdout instead of the table.")
    ] = False,
    workdir: Workdir = DEFAULT_WORKDIR,
    force: Force = False,
    *,
    values: Values,
) -> None:
    from stages.evaluate import evaluate, result_table

    result, art = evaluate(_store(workdir), proposals, values.build(0), force=force)
    if as_json:
        emit({"artifact": art.id, **result})
    else:
        show(result_table(result))


app.command(
    "evaluate",
    help=(
        "mAP by the ActivityNet detection protocol: a table on stdout (--json: the full result as JSON), "
        "per-class AP kept as an evaluation artifact. Ground truth defaults to the feature set's annotations.\n\n"
        "Examples:\n\n  wtal evaluate proposals.json\n\n  wtal localize | wtal evaluate -\n\n"
        "  wtal evaluate p.json --gt thumos14 --protocol basnet --tiou thumos14-basnet"
    ),
)(params.command([params.Group(EvalParams)], _evaluate))


# ---------------------------------------------------------------- run


def _run(
    as_json: AsJson = False,
    workdir: Workdir = DEFAULT_WORKDIR,
    *,
    values: Values,
) -> None:
    from stages.run import comparison_table, run

    baseline_p = values.build(1)
    dcc_p = values.build(3, iterations=baseline_p.iterations)
    p = values.build(0, baseline=baseline_p, denoise=values.build(2), dcc=dcc_p)
    out = run(_store(workdir), p)
    if as_json:
        emit(out)
        return
    if out.get("results"):
        show(comparison_table(out["results"]))
    else:
        emit(out)


def _run_groups():
    from stages.run import RunParams

    return [
        params.Group(RunParams),
        params.Group(BaselineParams, "baseline_", only=("iterations",)),
        params.Group(DenoiseParams, "denoise_", only=("clusters",)),
        params.Group(DCCParams, "dcc_", only=()),
    ]


app.command(
    "run",
    help=(
        "The whole pipeline through the artifact cache: extract -> baseline -> pseudolabel -> denoise -> "
        "train-dcc -> localize -> evaluate, ending with a baseline-vs-DCC table on stdout (--json: "
        "everything built, as JSON). With no arguments it runs on the built-in synthetic dataset.\n\n"
        "Examples:\n\n  wtal run\n\n  wtal run --preset tiny --until baseline\n\n"
        "  wtal run --force train-dcc --seed 2"
    ),
)(params.command(_run_groups(), _run))


# ---------------------------------------------------------------- ablate


def _ablate(
    as_json: AsJson = False,
    workdir: Workdir = DEFAULT_WORKDIR,
    force: Force = False,
    *,
    values: Values,
) -> None:
    from stages.ablate import ablate

    dcc_p = values.build(1)
    art = ablate(_store(workdir), values.build(0, dcc=dcc_p), force=force)
    summary = {
        "artifact": art.id,
        "path": str(art.path),
        "table": str(art.path / "table.md"),
        **art.manifest["summary"],
    }
    if as_json:
        emit(summary)
    else:
        show((art.path / "table.md").read_text())


def _ablate_groups():
    from wtalcli.dcc.ablation import AblationParams

    return [params.Group(AblationParams), params.Group(DCCParams, "dcc_", only=("tau", "beta_end"))]


app.command(
    "ablate",
    help=(
        "The DCC study in one command, over several seeds: the baseline, the same-length control "
        "(train-dcc with beta = 0), DCC without denoising, DCC and DCC on oracle targets; contrast "
        "scopes; a K sweep. DCC's options (--grid) and every run's length are chosen on held-out "
        "training videos, never on test. Writes results.parquet, selection.parquet, table.md "
        "(mean ± std and every seed; printed on stdout) and ablation.png.\n\n"
        "Examples:\n\n  wtal ablate --jobs 2\n\n"
        "  wtal ablate --preset tiny --seeds 0,1 --tables main --no-select\n\n"
        "  wtal ablate --tables clusters --clusters 8,32,128 --tau 0.2 --no-select\n\n"
        "  wtal ablate --preset entangled --seeds 0,1,2,3,4 "
        "--grid 'pooling=mean,weighted x beta-end=1,10,100;branch=base,suppression,both'"
    ),
)(params.command(_ablate_groups(), _ablate))


# ---------------------------------------------------------------- report


def _report(
    out: Annotated[Path, typer.Option("--out", help="HTML file to write.")] = Path("report.html"),
    workdir: Workdir = DEFAULT_WORKDIR,
    *,
    values: Values,
) -> None:
    from stages.report import report

    path = report(_store(workdir), out, values.build(0))
    emit({"report": str(path)})


app.command(
    "report",
    help=(
        "Write a self-contained HTML report with figures of every stage: T-CAS against ground truth "
        "and proposals, pseudo-labels and confidence across refresh rounds, embeddings (baseline vs "
        "DCC), precision-recall curves, mAP against tIoU.\n\n"
        "Examples:\n\n  wtal report\n\n  wtal report --out report.html --videos 6"
    ),
)(params.command([params.Group(ReportParams)], _report))


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
    show(table)


@app.command(
    "show",
    help="Print an artifact: its manifest, the shape of each array and the head of each table.\n\n"
    "Examples:\n\n  wtal show features-1a2b3c4d5e6f\n\n  wtal show tcas   # the newest T-CAS artifact",
)
def show_cmd(
    artifact: Annotated[str, typer.Argument(help="Artifact id, id prefix, path, or a kind (its newest).")],
    rows: Annotated[int, typer.Option("--rows", help="Table rows to print.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON instead.")] = False,
    workdir: Workdir = DEFAULT_WORKDIR,
) -> None:
    from wtalcli.report.describe import describe

    store = _store(workdir)
    from wtalcli.core.store import MADE_BY

    art = store.resolve(artifact, None) if artifact in MADE_BY else store.get(artifact)
    if as_json:
        emit(art.manifest)
    else:
        show(describe(art, rows))


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
    from wtalcli.core.launch import launched

    try:
        under_torchrun = launched().active
    except InputError:  # malformed ranks: main() reports them
        under_torchrun = False
    if not under_torchrun:
        sys.exit(main())
    # under torchrun every way out, --debug's traceback and an interrupt included, leaves the
    # process group and exits without interpreter finalization (distributed.finish)
    from wtalcli.core import distributed

    code = 1
    try:
        code = main()
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # --debug re-raises: print the traceback, then end the rank
        import traceback

        traceback.print_exc()
    finally:
        distributed.finish(code)
