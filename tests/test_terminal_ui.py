"""`gpu-stress run` on a real terminal (a private tmux server): the rich status line shows the current
image, stage and denoising step and is redrawn at least every few seconds, the image lines scroll
above it, and the terminal is left usable (cursor shown, the last line kept)."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (.ci/run installs it)")]

SCENARIO = """
name: on-a-terminal
model: {base: builtin:tiny-sdxl, refiner: null}
steps: 12
images: 3
resolutions: [64x64]
seeds: 1234
prompt: "a lighthouse"
probes: {enabled: false}
monitors: {enabled: false}
session: {image_timeout: 300s}
"""


def _status(screen: str) -> str | None:
    lines = [x for x in screen.splitlines() if "img/min" in x]
    return lines[-1].rstrip() if lines else None


class Tmux:
    """A tmux server of our own (-L: a private socket, -f /dev/null: no user configuration)."""

    def __init__(self) -> None:
        self.sock = f"stress-test-{uuid.uuid4().hex[:8]}"

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.sock, "-f", "/dev/null", *args], capture_output=True,
                              text=True, timeout=20, check=True).stdout

    def capture(self) -> str:
        return self("capture-pane", "-p", "-S", "-500", "-t", "t")   # with the scrollback

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True, timeout=20)


def test_run_on_a_terminal_shows_the_step_and_redraws(tmp_path, model_cache):
    scen = tmp_path / "term.yaml"
    scen.write_text(SCENARIO)
    done = tmp_path / "rc"
    # the pane's shell: the run as a newcomer types it, then its exit status for us; the pane stays
    script = tmp_path / "run.sh"
    script.write_text(
        f"export PYTHONPATH={shlex.quote(str(ROOT))} STRESS_CACHE={shlex.quote(str(model_cache))}\n"
        f"unset NO_COLOR DISPLAY WAYLAND_DISPLAY COLUMNS LINES\ncd {shlex.quote(str(ROOT))}\n"
        f"{shlex.quote(sys.executable)} -m stress run {shlex.quote(str(scen))} --out {tmp_path / 'artifacts'} "
        f"--no-report --no-history\necho $? > {shlex.quote(str(done))}\nsleep 600\n")
    tmux = Tmux()
    tmux("new-session", "-d", "-s", "t", "-x", "150", "-y", "20", f"sh {shlex.quote(str(script))}")
    frames: list[tuple[float, str]] = []
    try:
        deadline = time.monotonic() + 400
        while not done.exists() and time.monotonic() < deadline:
            frames.append((time.monotonic(), tmux.capture()))
            time.sleep(0.25)
        final = tmux.capture()
        cursor_shown = tmux("display-message", "-p", "-t", "t", "#{cursor_flag}").strip()
    finally:
        tmux.close()
    assert done.exists(), "the run did not end within 400 s:\n" + (frames[-1][1] if frames else "")
    assert done.read_text().strip() == "11", final          # inconclusive: probes are off
    steps = {m.group(0) for _, s in frames for m in re.finditer(r"image \d base step \d+/12", s)}
    assert len(steps) >= 3, steps                            # the step moves while an image is made
    # from the status line's first drawing to the run's end, the screen changed at least every 3 s (it
    # is redrawn as steps end and, with its elapsed time, twice a second): each capture differs from
    # the first one taken 3 s or more after it (captures themselves may be slow on a busy machine)
    live = [(t, _status(s)) for t, s in frames if _status(s)]
    stale = []
    for i, (t, line) in enumerate(live):
        later = next(((u, x) for u, x in live[i + 1:] if u - t >= 3.0), None)
        if later and later[1] == line and "3/3 images" not in line:   # the run over, the line stays
            stale.append((round(later[0] - t, 1), line))
    assert len(live) >= 3 and not stale, stale[:3]
    # image lines scrolled above the status line; it stays, last, at 3/3
    lines = [x.rstrip() for x in final.splitlines() if x.strip()]
    assert sum(1 for x in lines if re.match(r"image +\d  64x64  seed 1234  ok", x)) == 3, final
    status = [x for x in lines if "images" in x and "img/min" in x]
    assert len(status) == 1 and "3/3 images" in status[0], final   # one status line, not one per redraw
    assert cursor_shown == "1"                                # the live display hid it; shown again
    assert re.search(r"^\d+m\d\ds .*3/3 images  \d+\.\d\d img/min  ETA 0m00s$", status[0]), status  # one row, not wrapped
