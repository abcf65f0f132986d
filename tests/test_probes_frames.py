"""Frame checks on what the X11 capturer hands out: channel-reversed views, not converted copies."""
from __future__ import annotations

import numpy as np
import pytest

from stress.probes.common import compare, frame_stats


def test_frame_checks_read_channel_reversed_views_as_copies():
    """What the X11 capturer hands out: an RGB view (channel stride -1) of a BGRX buffer."""
    rng = np.random.default_rng(3)
    bgrx = rng.integers(0, 256, size=(37, 53, 4), dtype=np.uint8)
    bgrx[0, 0, :3] = (0, 255, 0)   # the extremes: a uint8 difference must not wrap
    view = bgrx[..., 2::-1]
    rgb = np.ascontiguousarray(view)
    assert not view.flags["C_CONTIGUOUS"]
    assert frame_stats(view, 8) == frame_stats(rgb, 8)
    st = frame_stats(view, 8)
    assert st["min"] == rgb.reshape(-1, 3).min(axis=0).tolist() and st["max"] == rgb.reshape(-1, 3).max(axis=0).tolist()
    assert st["mean"] == [round(float(v), 1) for v in rgb.reshape(-1, 3).mean(axis=0)]
    other = rng.integers(0, 256, size=rgb.shape, dtype=np.uint8)
    other[0, 0] = (255, 0, 255)
    ref = np.abs(rgb.astype(np.int16) - other.astype(np.int16)).max(axis=2)
    for tol in (0, 8, 200):
        got = compare(other, view, tol)
        assert got["max_diff"] == int(ref.max()) == 255
        assert got["fraction"] == pytest.approx(float((ref > tol).mean()), abs=0)
    assert compare(rgb, view, 0) == {"fraction": 0.0, "max_diff": 0}
    # Plain Python numbers: they go into the journal as JSON.
    got = compare(other, view, 8)
    assert type(got["fraction"]) is float and type(got["max_diff"]) is int
    assert all(type(v) is bool for k, v in frame_stats(view, 8).items() if k in ("flat", "black"))
