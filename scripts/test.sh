#!/usr/bin/env bash
# The project's test command: install (if needed) and run the whole suite on the CPU.
# The video-extraction tests run in ./.venv-video when it exists (scripts/setup-video.sh);
# without it they are skipped by the core run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/python -m pytest -q "$@"
if [ -x .venv-video/bin/python ]; then
  .venv-video/bin/python -m pytest -q tests/test_video.py tests/test_video_clips.py
  .venv-video/bin/python -m pytest -q tests/test_distributed.py -k "extract_videos"
fi
