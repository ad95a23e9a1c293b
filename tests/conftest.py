from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# One intra-op thread: the test models are tiny, and on a busy 2-core machine two OpenMP threads
# spin-wait for each other (measured 3-15x slower under load); subprocess tests inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# bench/ holds code only benchmarks and tests use (e.g. the synthetic data probes)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


@pytest.fixture
def datasets() -> Path:
    """The packaged public ground truths (``wtalcli/data/datasets``), part of every checkout."""
    from wtalcli.data.named_gt import PACKAGE_DIR

    return PACKAGE_DIR
