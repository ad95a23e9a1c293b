# Shared by scripts/reproduce_*.sh (sourced, not run): finding wtal, the common settings, printing
# and running commands, and the stages from the baseline to the evaluation.
#
# The sourcing script reads its folder with `data_folder USAGE HINT "$@"` (setting `data`), sets
# `default_workdir` and `default_preset`, and calls `reproduce_settings`, then `train_all FEATURES`, `localize_all` and `evaluate_all TAG EVALUATE_OPTIONS...`
# (once per tIoU set).

die() {
  echo "error: $*" >&2
  exit 1
}

# data_folder USAGE HINT ARGS...: the script's one argument, the data folder, into `data`; -h/--help
# prints USAGE, any other count of arguments is a usage error (exit 2), a missing folder an error
# saying HINT
data_folder() {
  local usage="$1" hint="$2"
  shift 2
  if [ "$#" -ge 1 ] && { [ "$1" = "-h" ] || [ "$1" = "--help" ]; }; then
    echo "$usage"
    exit 0
  fi
  if [ "$#" -ne 1 ]; then
    echo "$usage" >&2
    exit 2
  fi
  data="$1"
  [ -d "$data" ] || die "$data: no such folder ($hint)"
}

# the wtal command (WTAL, else wtal on PATH, else the repository's .venv) and the common settings
reproduce_settings() {
  local repo
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  if [ -n "${WTAL:-}" ]; then
    read -r -a wtal <<<"$WTAL"
  elif command -v wtal >/dev/null 2>&1; then
    wtal=(wtal)
  elif [ -x "$repo/.venv/bin/wtal" ]; then
    wtal=("$repo/.venv/bin/wtal")
  else
    die "wtal not found: install it (bash scripts/setup.sh) or set WTAL to the command"
  fi
  workdir="${WTAL_WORKDIR:-$default_workdir}"
  results="${WTAL_RESULTS:-$workdir/results}"
  device="${WTAL_DEVICE:-auto}"
  seed="${WTAL_SEED:-0}"
  preset="${WTAL_PRESET:-$default_preset}"
  clusters="${WTAL_CLUSTERS:-64}"
  # the training length is chosen on held-out training videos unless told otherwise (wtal's defaults)
  split_opts=()
  if [ -n "${WTAL_HOLDOUT:-}" ]; then split_opts+=(--holdout "$WTAL_HOLDOUT"); fi
  select_opts=()
  if [ -n "${WTAL_SELECT_EVERY:-}" ]; then select_opts=(--select-every "$WTAL_SELECT_EVERY"); fi
  control="${WTAL_CONTROL:-1}"
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
  mkdir -p "$results"
}

settings_line() {
  echo "== settings: preset $preset, device $device, seed $seed, K $clusters," \
    "iterations ${WTAL_ITERATIONS:-of the preset}, held out ${WTAL_HOLDOUT:-the default share}," \
    "selection every ${WTAL_SELECT_EVERY:-the default}, same-length control $([ "$control" = 1 ] && echo on || echo off)," \
    "workdir $workdir, results $results"
}

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

# train_all FEATURES: baseline, pseudo-labels, confidence, the same-length control (train-dcc with
# the contrast weighted 0 and no refresh rounds; unless WTAL_CONTROL=0) and DCC; sets `runs`
# (name=tcas pairs, in the order they are evaluated)
train_all() {
  local features="$1" base_model base_tcas pseudolabels confidence
  step baseline --features "$features" --preset "$preset" --device "$device" --seed "$seed" \
    ${split_opts[@]+"${split_opts[@]}"} ${select_opts[@]+"${select_opts[@]}"} ${iters[@]+"${iters[@]}"} "${common[@]}" \
    ${x_baseline[@]+"${x_baseline[@]}"}
  base_model="$(field model "$out")"
  base_tcas="$(field tcas "$out")"
  runs=("baseline=$base_tcas")

  step pseudolabel --tcas "$base_tcas" "${common[@]}" ${x_pseudolabel[@]+"${x_pseudolabel[@]}"}
  pseudolabels="$(field artifact "$out")"

  step denoise --pseudolabels "$pseudolabels" --clusters "$clusters" --device "$device" --seed "$seed" \
    "${common[@]}" ${x_denoise[@]+"${x_denoise[@]}"}
  confidence="$(field artifact "$out")"

  local dcc_common=(--model "$base_model" --pseudolabels "$pseudolabels" --confidence "$confidence"
    --device "$device" --seed "$seed" ${select_opts[@]+"${select_opts[@]}"})
  if [ "$control" = 1 ]; then
    step train-dcc "${dcc_common[@]}" --beta-start 0 --beta-end 0 --beta-shape constant --refresh-every 0 \
      ${dcc_iters[@]+"${dcc_iters[@]}"} "${common[@]}" ${x_dcc[@]+"${x_dcc[@]}"}
    runs+=("control=$(field tcas "$out")")
  fi
  step train-dcc "${dcc_common[@]}" ${dcc_iters[@]+"${dcc_iters[@]}"} "${common[@]}" \
    ${x_dcc[@]+"${x_dcc[@]}"}
  runs+=("dcc=$(field tcas "$out")")
}

# localize_all: proposals of every run in `runs`; sets `proposals` (name=artifact pairs)
localize_all() {
  local entry name
  proposals=()
  for entry in "${runs[@]}"; do
    name="${entry%%=*}"
    step localize --tcas "${entry#*=}" --out "$results/$name.proposals.json" "${common[@]}" \
      ${x_localize[@]+"${x_localize[@]}"}
    proposals+=("$name=$(field artifact "$out")")
  done
}

# evaluate_all TAG EVALUATE_OPTIONS...: every run's mAP table, on stdout and in $results/NAME.TAG.txt
evaluate_all() {
  local tag="$1" entry name
  shift
  for entry in "${proposals[@]}"; do
    name="${entry%%=*}"
    echo "== $name, $tag"
    run "${wtal[@]}" evaluate "${entry#*=}" "$@" "${common[@]}" ${x_evaluate[@]+"${x_evaluate[@]}"} |
      tee "$results/$name.$tag.txt"
  done
}

done_line() {
  echo "== done: proposals (JSON) and mAP tables in $results; every evaluation in full (per class," \
    "per tIoU) in the evaluation artifacts of $workdir (wtal status / wtal show)"
}
