#!/usr/bin/env bash
# Reproduce the BaS-Net baseline and DCC on THUMOS14 from BaS-Net's public I3D features:
# import -> baseline -> pseudolabel -> denoise -> train-dcc -> localize -> evaluate.
#
# Usage: scripts/reproduce_thumos14.sh THUMOS14_DIR
#
#   THUMOS14_DIR   BaS-Net's THUMOS14 folder (docs/formats.md): features/{train,test}/{rgb,flow}/<video>.npy,
#                  gt.json, split_train.txt, split_test.txt
#
# Evaluation: the THUMOS14 test ground truth packaged with wtal (`--gt thumos14`) on BaS-Net's 210
# test videos (`--protocol basnet`), mAP at tIoU 0.1:0.7 (`thumos14`) and 0.1:0.9 (`thumos14-basnet`),
# for the baseline and for DCC.
#
# Settings, as environment variables [default]:
#   WTAL                 the wtal command, split at spaces [`wtal` on PATH, else .venv/bin/wtal]
#   WTAL_WORKDIR         artifact root [artifacts-thumos14]
#   WTAL_RESULTS         proposals (JSON) and mAP tables (text) [$WTAL_WORKDIR/results]
#   WTAL_DEVICE          auto, cpu, cuda or cuda:N, for baseline, denoise and train-dcc [auto]
#   WTAL_SEED            seed of every stage [0]
#   WTAL_PRESET          model/training scale [thumos: T = 750, hidden 2048, lr 1e-4, 1500 iterations]
#   WTAL_ITERATIONS      baseline iterations [empty: the preset's]
#   WTAL_DCC_ITERATIONS  train-dcc iterations [empty: the baseline's]
#   WTAL_CLUSTERS        K, k-means clusters of the denoising [64]
#   WTAL_HOLDOUT         share of training videos held out for selection [0: report the last iteration]
#   WTAL_SELECT_EVERY    with WTAL_HOLDOUT: keep the best held-out iteration, scored every N [0]
#   WTAL_FPS WTAL_STRIDE WTAL_CLIP_LEN   the features' time grid [25 16 16, BaS-Net's]
#   WTAL_EXTRA_EXTRACT WTAL_EXTRA_BASELINE WTAL_EXTRA_PSEUDOLABEL WTAL_EXTRA_DENOISE WTAL_EXTRA_DCC
#   WTAL_EXTRA_LOCALIZE WTAL_EXTRA_EVALUATE   more options for that command, split at spaces [none]
#
# Every command is printed (on stderr, after "+") before it runs; the first failure stops the script.
# Artifacts are cached in WTAL_WORKDIR: a rerun with the same settings rebuilds nothing.
set -euo pipefail

usage="usage: $0 THUMOS14_DIR   (BaS-Net's folder: features/{train,test}/{rgb,flow}/*.npy, gt.json, split_*.txt)"
if [ "$#" -ge 1 ] && { [ "$1" = "-h" ] || [ "$1" = "--help" ]; }; then
  echo "$usage"
  exit 0
fi
if [ "$#" -ne 1 ]; then
  echo "$usage" >&2
  exit 2
fi
data="$1"
die() {
  echo "error: $*" >&2
  exit 1
}
[ -d "$data" ] || die "$data: no such folder (pass BaS-Net's THUMOS14 folder)"
[ -d "$data/features" ] || die "$data: no features/ folder (expected features/{train,test}/{rgb,flow}/<video>.npy, docs/formats.md)"

repo="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "${WTAL:-}" ]; then
  read -r -a wtal <<<"$WTAL"
elif command -v wtal >/dev/null 2>&1; then
  wtal=(wtal)
elif [ -x "$repo/.venv/bin/wtal" ]; then
  wtal=("$repo/.venv/bin/wtal")
else
  die "wtal not found: install it (bash scripts/setup.sh) or set WTAL to the command"
fi

workdir="${WTAL_WORKDIR:-artifacts-thumos14}"
results="${WTAL_RESULTS:-$workdir/results}"
device="${WTAL_DEVICE:-auto}"
seed="${WTAL_SEED:-0}"
preset="${WTAL_PRESET:-thumos}"
clusters="${WTAL_CLUSTERS:-64}"
holdout="${WTAL_HOLDOUT:-0}"
select_every="${WTAL_SELECT_EVERY:-0}"
grid=(--fps "${WTAL_FPS:-25}" --stride "${WTAL_STRIDE:-16}" --clip-len "${WTAL_CLIP_LEN:-16}")
read -r -a x_extract <<<"${WTAL_EXTRA_EXTRACT:-}"
read -r -a x_baseline <<<"${WTAL_EXTRA_BASELINE:-}"
read -r -a x_pseudolabel <<<"${WTAL_EXTRA_PSEUDOLABEL:-}"
read -r -a x_denoise <<<"${WTAL_EXTRA_DENOISE:-}"
read -r -a x_dcc <<<"${WTAL_EXTRA_DCC:-}"
read -r -a x_localize <<<"${WTAL_EXTRA_LOCALIZE:-}"
read -r -a x_evaluate <<<"${WTAL_EXTRA_EVALUATE:-}"
iters=()
if [ -n "${WTAL_ITERATIONS:-}" ]; then iters=(--iterations "$WTAL_ITERATIONS"); fi
dcc_iters=()
if [ -n "${WTAL_DCC_ITERATIONS:-}" ]; then dcc_iters=(--iterations "$WTAL_DCC_ITERATIONS"); fi
common=(--workdir "$workdir")

# run CMD...: print the command, then run it
run() {
  printf '+' >&2
  printf ' %q' "$@" >&2
  printf '\n' >&2
  "$@"
}
# field NAME TEXT: the string value of "NAME" in a command's JSON output (fails if absent)
field() {
  local value
  value="$(sed -n "s/^ *\"$1\": \"\([^\"]*\)\".*/\1/p" <<<"$2" | head -n 1)"
  [ -n "$value" ] || die "no \"$1\" in wtal's output: $2"
  printf '%s' "$value"
}
# step CMD...: run a wtal command, echo its JSON output, keep it in $out
step() {
  out="$(run "${wtal[@]}" "$@")"
  printf '%s\n' "$out"
}

echo "== THUMOS14 reproduction: BaS-Net I3D features in $data"
echo "== protocol: THUMOS14 test, BaS-Net's 210 videos (--gt thumos14 --protocol basnet);" \
  "mAP at tIoU 0.1:0.7 (--tiou thumos14) and 0.1:0.9 (--tiou thumos14-basnet); Ambiguous segments ignored"
echo "== settings: preset $preset, device $device, seed $seed, K $clusters," \
  "iterations ${WTAL_ITERATIONS:-of the preset}, workdir $workdir, results $results"
mkdir -p "$results"

step extract --from basnet "$data" "${grid[@]}" --seed "$seed" "${common[@]}" ${x_extract[@]+"${x_extract[@]}"}
features="$(field artifact "$out")"

step baseline --features "$features" --preset "$preset" --device "$device" --seed "$seed" \
  --holdout "$holdout" --select-every "$select_every" ${iters[@]+"${iters[@]}"} "${common[@]}" \
  ${x_baseline[@]+"${x_baseline[@]}"}
base_model="$(field model "$out")"
base_tcas="$(field tcas "$out")"

step pseudolabel --tcas "$base_tcas" "${common[@]}" ${x_pseudolabel[@]+"${x_pseudolabel[@]}"}
pseudolabels="$(field artifact "$out")"

step denoise --pseudolabels "$pseudolabels" --clusters "$clusters" --device "$device" --seed "$seed" \
  "${common[@]}" ${x_denoise[@]+"${x_denoise[@]}"}
confidence="$(field artifact "$out")"

step train-dcc --model "$base_model" --pseudolabels "$pseudolabels" --confidence "$confidence" \
  --device "$device" --seed "$seed" --select-every "$select_every" ${dcc_iters[@]+"${dcc_iters[@]}"} \
  "${common[@]}" ${x_dcc[@]+"${x_dcc[@]}"}
dcc_tcas="$(field tcas "$out")"

for name in baseline dcc; do
  if [ "$name" = baseline ]; then tcas="$base_tcas"; else tcas="$dcc_tcas"; fi
  step localize --tcas "$tcas" --out "$results/$name.proposals.json" "${common[@]}" \
    ${x_localize[@]+"${x_localize[@]}"}
  proposals="$(field artifact "$out")"
  for tiou in thumos14 thumos14-basnet; do
    echo "== $name, tIoU $tiou"
    run "${wtal[@]}" evaluate "$proposals" --gt thumos14 --protocol basnet --tiou "$tiou" "${common[@]}" \
      ${x_evaluate[@]+"${x_evaluate[@]}"} | tee "$results/$name.$tiou.txt"
  done
done

echo "== done: proposals (JSON) and mAP tables in $results; every evaluation in full (per class," \
  "per tIoU) in the evaluation artifacts of $workdir (wtal status / wtal show)"
