#!/usr/bin/env bash
# Reproduce the BaS-Net baseline and DCC on ActivityNet 1.3 from per-video features (the layout
# ACM-Net and ASM-Loc ship): import -> baseline -> pseudolabel -> denoise -> train-dcc -> localize
# -> evaluate.
#
# Usage: scripts/reproduce_anet13.sh ANET_DIR
#
#   ANET_DIR   {train,test}/<video>.npy (T x D each; folders named training/ and validation/ work too),
#              with its ActivityNet-style ground truth (gt.json, or the only *.json in ANET_DIR); a
#              folder without one is imported with the packaged ActivityNet 1.3 ground truth
#              (`--gt anet13`). Layouts: docs/formats.md.
#
# Evaluation: ActivityNet 1.3 validation, the ground truth packaged with wtal (`--gt anet13`, 4728
# videos), mAP at tIoU 0.5:0.95 in steps of 0.05 (`--tiou anet`) and their average, for the
# baseline, the same-length control and DCC. Validation videos without features count as missed.
#
# Settings, as environment variables [default]:
#   WTAL                 the wtal command, split at spaces [`wtal` on PATH, else .venv/bin/wtal]
#   WTAL_WORKDIR         artifact root [artifacts-anet13]
#   WTAL_RESULTS         proposals (JSON) and mAP tables (text) [$WTAL_WORKDIR/results]
#   WTAL_GT              ground truth of the import [the folder's own JSON, else anet13]
#   WTAL_ALLOW_MISSING   1: import although some ground-truth videos have no features [0: stop]
#   WTAL_EVAL_GT         ground truth of the evaluation [anet13]
#   WTAL_DEVICE          auto, cpu, cuda or cuda:N, for baseline, denoise and train-dcc [auto]
#   WTAL_SEED            seed of every stage [0]
#   WTAL_PRESET          model/training scale [anet: T = 50, hidden 2048, lr 1e-4, 1500 iterations]
#   WTAL_ITERATIONS      baseline iterations [empty: the preset's]
#   WTAL_DCC_ITERATIONS  train-dcc iterations [empty: the baseline's]
#   WTAL_CLUSTERS        K, k-means clusters of the denoising [64]
#   WTAL_HOLDOUT         share of training videos held out to choose the training length [wtal's 0.2; 0: the last iteration]
#   WTAL_SELECT_EVERY    keep the best held-out iteration, scored every N [wtal's: 50 with held-out videos]
#   WTAL_CONTROL         1: also train and evaluate the same-length control (train-dcc, beta = 0) [1]
#   WTAL_FPS WTAL_STRIDE WTAL_CLIP_LEN   the features' time grid [25 16 16]
#   WTAL_EXTRA_EXTRACT WTAL_EXTRA_BASELINE WTAL_EXTRA_PSEUDOLABEL WTAL_EXTRA_DENOISE WTAL_EXTRA_DCC
#   WTAL_EXTRA_LOCALIZE WTAL_EXTRA_EVALUATE   more options for that command, split at spaces [none]
#
# Every command is printed (on stderr, after "+") before it runs; the first failure stops the script.
# Artifacts are cached in WTAL_WORKDIR: a rerun with the same settings rebuilds nothing.
set -euo pipefail
# shellcheck source=scripts/reproduce_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/reproduce_lib.sh"

usage="usage: $0 ANET_DIR   ({train,test}/<video>.npy, with or without an ActivityNet-style JSON)"
data_folder "$usage" "pass the folder of per-video ActivityNet 1.3 features" "$@"

default_workdir=artifacts-anet13
default_preset=anet
reproduce_settings
# the import's ground truth: WTAL_GT, else the folder's own JSON (found by the importer), else anet13
if [ -n "${WTAL_GT:-}" ]; then
  gt=(--gt "$WTAL_GT")
  gt_text="$WTAL_GT"
else
  shopt -s nullglob
  jsons=("$data"/*.json)
  shopt -u nullglob
  if [ -e "$data/gt.json" ]; then
    gt=()
    gt_text="$data/gt.json"
  elif [ "${#jsons[@]}" -eq 1 ]; then
    gt=()
    gt_text="${jsons[0]}"
  elif [ "${#jsons[@]}" -gt 1 ]; then
    die "$data: several JSON files and no gt.json: set WTAL_GT to the ground truth (a file, or anet13)"
  else
    gt=(--gt anet13)
    gt_text="anet13 (packaged; the folder has no JSON)"
  fi
fi
missing=()
if [ "${WTAL_ALLOW_MISSING:-0}" = 1 ]; then missing=(--allow-missing); fi

eval_gt="${WTAL_EVAL_GT:-anet13}"

echo "== ActivityNet 1.3 reproduction: features in $data, ground truth $gt_text"
echo "== protocol: ActivityNet 1.3 validation (--gt $eval_gt);" \
  "mAP at tIoU 0.5:0.95, step 0.05 (--tiou anet), and their average"
settings_line

if ! out="$(run "${wtal[@]}" extract --from folder "$data" ${gt[@]+"${gt[@]}"} ${missing[@]+"${missing[@]}"} \
  "${grid[@]}" --seed "$seed" "${common[@]}" ${x_extract[@]+"${x_extract[@]}"})"; then
  if [ ${#missing[@]} -eq 0 ]; then
    echo "hint: if ground-truth videos lack features, WTAL_ALLOW_MISSING=1 imports the others" \
      "(the evaluation still counts the missing validation videos as missed)" >&2
  fi
  exit 1
fi
printf '%s\n' "$out"
features="$(field artifact "$out")"

train_all "$features"
localize_all
evaluate_all "anet" --gt "$eval_gt" --tiou anet
done_line
