"""Progress on the terminal: on a TTY, a rich live status line (time elapsed, a bar, images done, the
current image, stage and denoising step, images/min, an ETA from steps) under the lines that scroll
(one per image, notes), redrawn as the worker reports and twice a second; plain lines otherwise (one per
image, one per stage, and a step line at most every ``PLAIN_EVERY`` seconds), with no escape codes."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console
    from rich.live import Live


def _fmt_s(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    PLAIN_EVERY = 10.0

    def __init__(self, stream: TextIO | None, tty: bool, *, console: "Console | None" = None,
                 refresh_per_second: float | None = None):
        """``console``: the rich console of the TTY form (default: one on ``stream``);
        ``refresh_per_second``: also redraw on a timer (the elapsed time and images/min move between
        the worker's reports); None: only when something is reported."""
        self.stream = stream
        self.tty = tty and stream is not None
        self._console = console
        self._refresh = refresh_per_second
        self._live: "Live | None" = None
        self.total = 0
        self.done = 0
        self.started = 0
        self.failed = 0
        self.t0 = time.monotonic()
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
        return cls(stream, tty=hasattr(stream, "isatty") and stream.isatty(), refresh_per_second=2.0)

    @classmethod
    def quiet(cls) -> "Progress":
        return cls(None, tty=False)

    def console(self) -> "Console":
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False, markup=False, emoji=False,
                                    soft_wrap=True)
        return self._console

    def _write(self, text: str) -> None:
        if self.stream is None:
            return
        if self.tty:   # above the live line, which rich redraws under it
            from rich.text import Text

            self.console().print(Text(text), soft_wrap=True)
            return
        self.stream.write(text + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        self._write(text)
        self._bar()

    def start(self, total: int, already: int = 0) -> None:
        self.total, self.done, self.started = total, already, already
        self.t0 = time.monotonic()
        if self.tty and self._live is None:
            from rich.live import Live

            self._live = Live(get_renderable=self._renderable, console=self.console(), transient=False,
                              auto_refresh=self._refresh is not None, refresh_per_second=self._refresh or 4,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()
            import atexit

            atexit.register(self.finish)   # an exit that skips finish() still shows the cursor again
        self._bar()

    def _rate(self) -> float:
        el = time.monotonic() - self.t0
        n = self.done - self.started
        return n / el * 60 if el > 0 and n else 0.0

    def _eta(self) -> str:
        """From steps while images run (seconds per step x steps left in this image and in those to
        come); from images/min once steps are unknown."""
        left_images = self.total - self.done
        steps = list(self._image_steps.items())   # a copy: the live line's timer thread reads it too
        if self._step_s and steps and left_images > 0:
            per_image = sum(n for _, n in steps)
            here = 0
            seen = False
            for st, n in steps:
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

    def status_line(self) -> str:
        """The live line's text after the bar: images done, the image/stage/step now, rate, ETA."""
        now = self._now()
        return (f"{self.done}/{self.total} images" + (f"  {now}" if now else "")
                + f"  {self._rate():.2f} img/min  ETA {self._eta()}"
                + (f"  {self.failed} failed" if self.failed else ""))

    def _renderable(self):
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        # one row, never wrapped (a wrapped line is not redrawn in place): on a narrow terminal the bar
        # gives way first, then the text is cut
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(min_width=8, max_width=28)
        grid.add_column(no_wrap=True, overflow="ellipsis")
        grid.add_row(Text(_fmt_s(time.monotonic() - self.t0)),
                     ProgressBar(total=max(1, self.total), completed=self.done),
                     Text(self.status_line(), style="bold red" if self.failed else ""))
        return grid

    def _bar(self) -> None:
        if self._live is not None and self.total:
            self._live.refresh()

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
        if self._live is not None:
            self.index = self.stage = self.step_n = self.step_total = None   # nothing is being made now
            self._live.refresh()
            self._live.stop()   # the last status line stays, the cursor below it
            self._live = None
            import atexit

            atexit.unregister(self.finish)
