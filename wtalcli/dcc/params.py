"""The parameters of ``pseudolabel`` and ``denoise``, declared once (:mod:`wtalcli.core.params`),
and the choices of DCC's options (``train-dcc``'s own parameters are
:mod:`wtalcli.dcc.train_params`, apart so that these two stages' fingerprints do not hold the
training configuration). The command line, the cache keys, ``run``, ``ablate`` and the refresh
rounds read these classes. No torch here, so ``wtal --help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from wtalcli.core.params import device_param, param, seed_param
from wtalcli.dcc.pseudolabels import RULES

# k-means (wtalcli/dcc/kmeans.py)
BACKENDS = ("auto", "torch", "faiss")
DEVICES = ("auto", "cpu", "cuda")
INITS = ("k-means++", "random")
PRECISIONS = ("auto", "fp32", "bf16", "mixed")
# who votes on a class's confidence (wtalcli/dcc/confidence.py)
CONFIDENCE_SCOPES = ("labelled", "all")
# the contrast (wtalcli/dcc/contrast.py, wtalcli/dcc/method.py)
SCOPES = ("video", "batch", "bank")
HEADS = ("linear", "mlp", "none")
POOLINGS = ("mean", "weighted")
BACKGROUNDS = ("class", "video")
DCC_INITS = ("baseline", "scratch")
BRANCHES = ("base", "suppression", "both")
TARGETS = ("pseudo", "oracle")
BETA_SHAPES = ("constant", "linear", "exp")


@dataclass(frozen=True)
class PseudolabelParams:
    rule: str = param(
        "mean",
        "Thresholding rule: mean = a snippet is 1 for class c where its min-max normalised CAS "
        "exceeds the video's mean for c.",
        choices=tuple(RULES),
    )
    subset: str = param("train", "Videos to label.", cli=False)


@dataclass(frozen=True)
class DenoiseParams:
    clusters: int = param(64, "K, the number of clusters.", aliases=("-k",))
    iterations: int = param(20, "Lloyd iterations (exactly this many).")
    init: str = param("k-means++", "Initialisation.", choices=INITS)
    backend: str = param(
        "auto", "k-means backend (auto: torch on a CPU, faiss on a GPU when installed).", choices=BACKENDS
    )
    spherical: bool = param(False, "Spherical k-means (unit centroids).")
    normalize: bool = param(True, "L2-normalise the embeddings before clustering.")
    sample: int | None = param(None, "Iterate on this many snippets, then assign all (default: all).")
    precision: str = param(
        "auto",
        "k-means GEMM precision: auto (mixed on a CPU with fast bf16 GEMMs and embeddings of 512+ "
        "dimensions, else fp32), fp32, mixed (certified bf16 with fp32 re-checks: the fp32 "
        "assignments, faster), or bf16 (fastest, approximate).",
        choices=PRECISIONS,
    )
    scope: str = param(
        "all",
        "Snippets that vote on class c's confidence: labelled = those of training videos labelled c "
        "(and every video for the background), all = every training snippet (then S is near 1 on "
        "almost every snippet of a video without c).",
        choices=CONFIDENCE_SCOPES,
    )
    seed: int = seed_param()
    device: str = device_param()
