"""The terminal display: the current image, stage and step, and an ETA from steps."""
from __future__ import annotations

import io

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


def test_tty_line_shows_the_step_and_an_eta_from_steps(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_mod.time, "monotonic", clock)
    out = io.StringIO()
    p = Progress(out, tty=True)
    _feed(p, clock)
    last = out.getvalue().rsplit("\r\033[K", 1)[-1]
    assert "0/4 images  image 0 base step 30/30" in last
    # 0 steps left in this image's base, 3 more images of 30 steps at 0.5 s each: 45 s
    assert last.endswith("ETA 0m45s"), last
    p.step(index=0, stage="refiner", step=None, total=None)
    clock.t += 1.0
    p.step(index=0, stage="refiner", step=2, total=6)   # refiner: 0.5 s/step as well
    last = out.getvalue().rsplit("\r\033[K", 1)[-1]
    # 4 refiner steps left here + 3 images x (30 + 6) steps, at 0.5 s
    assert "image 0 refiner step 2/6" in last and last.endswith("ETA 0m56s"), last


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
