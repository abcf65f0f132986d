"""The terminal display: the current image, stage and step, and an ETA from steps."""
from __future__ import annotations

import io
import re

from rich.console import Console

import stress.progress as progress_mod
from stress.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _feed(p: Progress, clock: Clock) -> None:
    p.start(4)
    p.step(index=0, stage="text_encode", step=None, total=None)
    p.step(index=0, stage="base", step=None, total=None)
    for k in range(1, 31):          # 30 base steps of 0.5 s
        clock.t += 0.5
        p.step(index=0, stage="base", step=k, total=30)


def _last_frame(out: io.StringIO) -> str:
    """The live line as last drawn: rich redraws it after moving the cursor back over it."""
    pieces = re.split(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n", out.getvalue())
    return next((x.strip() for x in reversed(pieces) if x.strip()), "")


def _tty(out: io.StringIO, clock: Clock) -> Progress:
    console = Console(file=out, force_terminal=True, width=200, color_system=None, _environ={})
    return Progress(out, tty=True, console=console)


def test_tty_line_shows_the_step_and_an_eta_from_steps(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_mod.time, "monotonic", clock)
    out = io.StringIO()
    p = _tty(out, clock)
    _feed(p, clock)
    last = p.status_line()
    assert _last_frame(out).startswith("0m15s") and _last_frame(out).endswith(last), _last_frame(out)
    assert "0/4 images  image 0 base step 30/30" in last
    # 0 steps left in this image's base, 3 more images of 30 steps at 0.5 s each: 45 s
    assert last.endswith("ETA 0m45s"), last
    p.step(index=0, stage="refiner", step=None, total=None)
    clock.t += 1.0
    p.step(index=0, stage="refiner", step=2, total=6)   # refiner: 0.5 s/step as well
    last = p.status_line()
    assert _last_frame(out).endswith(last), _last_frame(out)
    # 4 refiner steps left here + 3 images x (30 + 6) steps, at 0.5 s
    assert "image 0 refiner step 2/6" in last and last.endswith("ETA 0m56s"), last
    # an image's line scrolls above the live line, which is drawn again under it
    p.image({"index": 0, "width": 256, "height": 256, "seed": 1, "outcome": "ok", "timings": {"base": 15.0}})
    assert "image     0  256x256  seed 1  ok  15.0s\n" in out.getvalue()
    assert _last_frame(out).endswith(p.status_line()) and p.status_line().startswith("1/4 images")
    p.finish()
    assert out.getvalue().endswith("\n\x1b[?25h") and p._live is None   # line ended, cursor shown again


def test_plain_lines_per_stage_and_throttled_steps(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_mod.time, "monotonic", clock)
    out = io.StringIO()
    p = Progress(out, tty=False)
    _feed(p, clock)                  # 15 s of base steps: stage lines + one step line after 10 s
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "\033" not in out.getvalue()
    assert lines[0] == "  image 0 text encode  ETA ?"
    assert lines[1] == "  image 0 base  ETA ?"
    assert lines[2].startswith("  image 0 base step 20/30  ETA ") and len(lines) == 3, lines
    p.image({"index": 0, "width": 256, "height": 256, "seed": 1, "outcome": "ok", "timings": {"base": 15.0}})
    assert out.getvalue().splitlines()[-1].startswith("[1/4] image     0  256x256  seed 1  ok  15.0s")


def test_watch_on_a_terminal_draws_a_live_status_line(tmp_path):
    """`gpu-stress watch` on a TTY: event lines scroll above one rich live status line, which stays,
    last, when the run has ended; the cursor is shown again."""
    from synth_journal import Synth, make_run

    from stress.commands.watch import Watch, status_line

    rd = make_run(tmp_path, Synth(images=3, outputs=0, screenshots=0))
    out = io.StringIO()
    w = Watch(rd, out, tty=True, poll_s=0.01, console=Console(file=out, force_terminal=True, width=300,
                                                              color_system=None, _environ={}))
    assert w.run() == 0
    text = out.getvalue()
    final = status_line(w.follower.record)
    assert final.startswith("3/3 images") and _last_frame(out) == final, _last_frame(out)
    assert "run ended: finished" in text and text.index("run ended: finished") < text.rindex(final)
    assert text.endswith("\n\x1b[?25h") and w._live is None
