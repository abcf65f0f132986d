"""The X11 capture path (mss, frames as views of the grabbed buffer) against ``xwd`` on a real Xvfb."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from stress.probes.common import frame_stats, make_pattern
from xvfb import TK_VIEWER, xvfb

pytestmark = pytest.mark.x11
XWD = shutil.which("xwd")


def xwd_rgb(display: str) -> np.ndarray:
    """The root window through ``xwd`` (a separate X client and code path), as (H, W, 3) RGB."""
    data = subprocess.run([XWD, "-root", "-silent", "-display", display], capture_output=True,
                          check=True, timeout=20).stdout
    (header_size, _version, fmt, _depth, width, height, _xoff, byte_order, _unit, _bit_order, _pad,
     bpp, bytes_per_line, _class, red_mask, green_mask, blue_mask, _bits_rgb, _cmap, ncolors) = \
        struct.unpack(">20I", data[:80])
    assert fmt == 2 and bpp == 32, f"expected a 32-bit ZPixmap, got format {fmt}, {bpp} bpp"
    start = header_size + 12 * ncolors
    rows = np.frombuffer(data[start:start + height * bytes_per_line], dtype="<u4" if byte_order == 0 else ">u4")
    px = rows.reshape(height, bytes_per_line // 4)[:, :width]

    def channel(mask: int) -> np.ndarray:
        shift = (mask & -mask).bit_length() - 1
        return ((px & mask) >> shift).astype(np.uint8)

    return np.stack([channel(red_mask), channel(green_mask), channel(blue_mask)], axis=-1)


@pytest.fixture
def painted(tmp_path):
    """An Xvfb showing a window with colour bars, a gradient and noise (every channel distinct)."""
    from PIL import Image

    if XWD is None:
        pytest.skip("xwd is not installed (apt-get install -y x11-apps)")
    path = tmp_path / "pattern.png"
    pattern = make_pattern(320, 240, seed=5)
    Image.fromarray(pattern).save(path)
    with xvfb(640, 480) as x:
        viewer = subprocess.Popen([sys.executable, "-c", TK_VIEWER, str(path)], env=x.env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            os.environ["DISPLAY"], before = x.display, os.environ.get("DISPLAY")
            from stress.probes.capture import MssCapturer

            cap = MssCapturer()
            deadline = time.monotonic() + 15
            frame = None
            while time.monotonic() < deadline:   # until the viewer has painted its window (at 0,0: no WM)
                frame = cap.grab(cap.monitors()[0])
                if np.array_equal(frame[:240, :320], pattern):
                    break
                if viewer.poll() is not None:
                    pytest.skip(f"the Tk viewer could not start: {viewer.stderr.read().decode()[-300:]}")
                time.sleep(0.05)
            else:
                shown = (frame[:240, :320] == pattern).all(axis=2).mean() if frame is not None else 0
                pytest.fail(f"the viewer window never showed the pattern at 0,0 ({shown:.1%} of its pixels)")
            time.sleep(0.2)  # let it settle: nothing repaints after this
            yield x, cap
            cap.close()
        finally:
            if before is None:
                os.environ.pop("DISPLAY", None)
            else:
                os.environ["DISPLAY"] = before
            viewer.kill()
            viewer.wait()


def test_desktop_and_region_grabs_are_pixel_identical_to_xwd(painted):
    x, cap = painted
    desktop = cap.monitors()[0]
    frame = cap.grab(desktop)
    ref = xwd_rgb(x.display)
    assert frame.shape == ref.shape == (480, 640, 3) and frame.dtype == np.uint8
    assert np.array_equal(frame, ref)
    # A region, as the display round trip polls one.
    region = {"left": 37, "top": 21, "width": 200, "height": 150}
    part = cap.grab(region)
    assert np.array_equal(part, ref[21:171, 37:237])
    # The channels are where they belong: the pattern's first bar is white, its second yellow.
    assert part.shape == (150, 200, 3)
    assert tuple(frame[5, 5]) == (255, 255, 255) and tuple(frame[5, 60]) == (255, 255, 0)


def test_frames_are_views_that_later_grabs_do_not_overwrite(painted):
    _x, cap = painted
    first = cap.grab(cap.monitors()[0])
    assert not first.flags["C_CONTIGUOUS"] and not first.flags["OWNDATA"]  # no conversion was made
    kept = first.copy()
    second = cap.grab({"left": 0, "top": 0, "width": 640, "height": 480})
    assert not np.shares_memory(first, second)
    assert np.array_equal(first, kept)
    # The checks read the view as they would read a converted copy.
    assert frame_stats(first, 8) == frame_stats(np.ascontiguousarray(first), 8)


def test_capture_benchmark_runs_and_its_frames_match_the_old_conversion():
    """benchmarks/bench_capture.py, tiny: it starts its own Xvfb and compares the probe's frames with
    the conversion it replaced (the figures themselves are in docs/benchmarks.md)."""
    import json
    from pathlib import Path

    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install -y xvfb)")
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root))
    res = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_capture.py"), "--reps", "5",
                          "--size", "320x240", "--region", "64", "--json"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert out["identical_to_old"] is True
    assert out["size"] == "320x240" and out["region"] == "64x64" and out["reps"] == 5
    assert set(out["ratio_to_raw"]) == {"desktop_probe", "desktop_old", "poll_probe", "poll_old"}
    assert all(v > 0 for v in out["median_ms"].values())
