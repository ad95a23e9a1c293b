import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wtalcli.data.timegrid import TimeGrid


def test_thumos_i3d_convention():
    g = TimeGrid(25.0, 16, 16)
    # snippet t covers [16t/25, 16(t+1)/25) s; its centre is (16t + 8)/25
    assert g.index_to_seconds(0) == 0.0
    assert g.index_to_seconds(10) == pytest.approx(6.4)
    assert g.snippet_centers(3).tolist() == pytest.approx([0.32, 0.96, 1.6])


def test_overlapping_clips_centre_cells():
    g = TimeGrid(30.0, 8, 16)  # clips of 16 frames every 8 frames
    # cell boundaries sit half a stride either side of each snippet centre
    centers = g.snippet_centers(4)
    mids = (g.index_to_seconds(np.arange(4)) + g.index_to_seconds(np.arange(1, 5))) / 2
    assert mids == pytest.approx(centers)


@given(
    st.floats(1.0, 120.0),
    st.integers(1, 64),
    st.integers(1, 64),
    st.floats(-1e3, 1e5, allow_nan=False),
)
def test_round_trip(fps, stride, clip_len, x):
    g = TimeGrid(fps, stride, clip_len)
    assert g.seconds_to_index(g.index_to_seconds(x)) == pytest.approx(x, rel=1e-9, abs=1e-6)


def test_snippet_count():
    g = TimeGrid(25.0, 16, 16)
    assert g.n_snippets(15) == 0
    assert g.n_snippets(16) == 1
    assert g.n_snippets(31) == 1
    assert g.n_snippets(32) == 2
    assert TimeGrid(25.0, 8, 16).n_snippets(32) == 3


def test_invalid_grid():
    with pytest.raises(ValueError):
        TimeGrid(0.0, 16, 16)
