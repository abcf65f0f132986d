"""Progress on the terminal: one updating bar with ETA and images/min on a TTY, plain lines otherwise."""
from __future__ import annotations

import time
from typing import TextIO


def _fmt_s(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    def __init__(self, stream: TextIO | None, tty: bool):
        self.stream = stream
        self.tty = tty
        self.total = 0
        self.done = 0
        self.started = 0
        self.failed = 0
        self.t0 = time.monotonic()
        self._bar_shown = False

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
        rate = self._rate()
        return _fmt_s((self.total - self.done) / rate * 60) if rate else "?"

    def _bar(self) -> None:
        if not self.tty or self.stream is None or not self.total:
            return
        width = 28
        filled = int(width * self.done / self.total)
        self.stream.write(f"\r\033[K[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} images"
                          f"  {self._rate():.2f} img/min  ETA {self._eta()}"
                          + (f"  {self.failed} failed" if self.failed else ""))
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
