"""Progress on the terminal: one updating status line on a TTY (images done, the current image, stage and
denoising step, images/min, an ETA from steps), plain lines otherwise (one per image, one per stage, and
a step line at most every ``PLAIN_EVERY`` seconds)."""
from __future__ import annotations

import shutil
import time
from typing import TextIO


def _fmt_s(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    PLAIN_EVERY = 10.0

    def __init__(self, stream: TextIO | None, tty: bool):
        self.stream = stream
        self.tty = tty
        self.total = 0
        self.done = 0
        self.started = 0
        self.failed = 0
        self.t0 = time.monotonic()
        self._bar_shown = False
        self.index: int | None = None       # the image (first of its batch) being made now
        self.stage: str | None = None
        self.step_n: int | None = None
        self.step_total: int | None = None
        self._stage_t = time.monotonic()
        self._step_s: float | None = None   # seconds per denoising step, smoothed
        self._image_steps: dict[str, int] = {}   # steps per stage of one image, as last seen
        self._plain_t = 0.0

    @classmethod
    def for_stream(cls, stream: TextIO) -> "Progress":
        return cls(stream, tty=hasattr(stream, "isatty") and stream.isatty())

    @classmethod
    def quiet(cls) -> "Progress":
        return cls(None, tty=False)

    def _write(self, text: str) -> None:
        if self.stream is None:
            return
        if self._bar_shown:
            self.stream.write("\r\033[K")
            self._bar_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        self._write(text)
        self._bar()

    def start(self, total: int, already: int = 0) -> None:
        self.total, self.done, self.started = total, already, already
        self.t0 = time.monotonic()
        self._bar()

    def _rate(self) -> float:
        el = time.monotonic() - self.t0
        n = self.done - self.started
        return n / el * 60 if el > 0 and n else 0.0

    def _eta(self) -> str:
        """From steps while images run (seconds per step x steps left in this image and in those to
        come); from images/min once steps are unknown."""
        left_images = self.total - self.done
        if self._step_s and self._image_steps and left_images > 0:
            per_image = sum(self._image_steps.values())
            here = 0
            seen = False
            for st, n in self._image_steps.items():
                if st == self.stage:
                    seen = True
                    here += max(0, n - (self.step_n or 0))
                elif seen:
                    here += n
            if not seen:
                here = per_image
            return _fmt_s((here + per_image * (left_images - 1)) * self._step_s)
        rate = self._rate()
        return _fmt_s(left_images / rate * 60) if rate else "?"

    def _now(self) -> str:
        if not self.stage:
            return ""
        what = f"image {self.index} " if self.index is not None else ""
        what += self.stage.replace("_", " ")
        if self.step_n is not None and self.step_total:
            what += f" step {self.step_n}/{self.step_total}"
        return what

    def step(self, index: int | None, stage: str | None, step: int | None, total: int | None) -> None:
        """A stage started (``step`` None) or denoising steps ended."""
        now = time.monotonic()
        changed = stage != self.stage or index != self.index
        if not changed and step and self.step_n is not None and step > self.step_n:
            per = (now - self._stage_t) / step
            self._step_s = per if self._step_s is None else 0.7 * self._step_s + 0.3 * per
        if changed:
            self._stage_t = now
        if stage and total:
            self._image_steps[stage] = int(total)
        self.index, self.stage, self.step_n, self.step_total = index, stage, step, total
        if self.tty:
            self._bar()
        elif self.stream is not None and (changed or now - self._plain_t >= self.PLAIN_EVERY):
            self._plain_t = now
            self._write(f"  {self._now()}  ETA {self._eta()}")

    def _bar(self) -> None:
        if not self.tty or self.stream is None or not self.total:
            return
        width = 28
        filled = int(width * self.done / self.total)
        now = self._now()
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} images"
                + (f"  {now}" if now else "") + f"  {self._rate():.2f} img/min  ETA {self._eta()}"
                + (f"  {self.failed} failed" if self.failed else ""))
        cols = shutil.get_terminal_size((120, 24)).columns
        self.stream.write("\r\033[K" + line[:max(20, cols - 1)])  # one row: a wrapped line would not be redrawn
        self.stream.flush()
        self._bar_shown = True

    def image(self, rec: dict) -> None:
        self.done += 1
        if rec.get("outcome") != "ok":
            self.failed += 1
        secs = sum((rec.get("timings") or {}).values())
        line = (f"image {rec['index']:5d}  {rec['width']}x{rec['height']}  seed {rec['seed']}  "
                f"{rec.get('outcome')}" + (f"  {secs:.1f}s" if secs else "")
                + (f"  ({rec.get('error', '')[:120]})" if rec.get("outcome") != "ok" else ""))
        if self.tty:
            self.note(line)
        else:
            self._write(f"[{self.done}/{self.total}] {line}  {self._rate():.2f} img/min  ETA {self._eta()}")

    def finish(self) -> None:
        if self._bar_shown and self.stream is not None:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_shown = False
