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
# for the baseline, the same-length control and DCC.
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
#   WTAL_HOLDOUT         share of training videos held out to choose the training length [wtal's 0.2; 0: the last iteration]
#   WTAL_SELECT_EVERY    keep the best held-out iteration, scored every N [wtal's: 50 with held-out videos]
#   WTAL_CONTROL         1: also train and evaluate the same-length control (train-dcc, beta = 0) [1]
#   WTAL_FPS WTAL_STRIDE WTAL_CLIP_LEN   the features' time grid [25 16 16, BaS-Net's]
#   WTAL_EXTRA_EXTRACT WTAL_EXTRA_BASELINE WTAL_EXTRA_PSEUDOLABEL WTAL_EXTRA_DENOISE WTAL_EXTRA_DCC
#   WTAL_EXTRA_LOCALIZE WTAL_EXTRA_EVALUATE   more options for that command, split at spaces [none]
#
# Every command is printed (on stderr, after "+") before it runs; the first failure stops the script.
# Artifacts are cached in WTAL_WORKDIR: a rerun with the same settings rebuilds nothing.
set -euo pipefail
# shellcheck source=scripts/reproduce_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/reproduce_lib.sh"

usage="usage: $0 THUMOS14_DIR   (BaS-Net's folder: features/{train,test}/{rgb,flow}/*.npy, gt.json, split_*.txt)"
data_folder "$usage" "pass BaS-Net's THUMOS14 folder" "$@"
[ -d "$data/features" ] || die "$data: no features/ folder (expected features/{train,test}/{rgb,flow}/<video>.npy, docs/formats.md)"

default_workdir=artifacts-thumos14
default_preset=thumos
reproduce_settings

echo "== THUMOS14 reproduction: BaS-Net I3D features in $data"
echo "== protocol: THUMOS14 test, BaS-Net's 210 videos (--gt thumos14 --protocol basnet);" \
  "mAP at tIoU 0.1:0.7 (--tiou thumos14) and 0.1:0.9 (--tiou thumos14-basnet); Ambiguous segments ignored"
settings_line

step extract --from basnet "$data" "${grid[@]}" --seed "$seed" "${common[@]}" ${x_extract[@]+"${x_extract[@]}"}
features="$(field artifact "$out")"

train_all "$features"
localize_all
evaluate_all "thumos14" --gt thumos14 --protocol basnet --tiou thumos14
evaluate_all "thumos14-basnet" --gt thumos14 --protocol basnet --tiou thumos14-basnet
done_line
