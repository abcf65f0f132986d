"""``gpu-stress watch RUN_DIR`` / ``--latest``: follow a running run's journal from another terminal.

Text only (works over SSH while the desktop is frozen): one status line (the image and step now, GPU
memory / BAR1 / temperature and their trend over the last minute, host load and memory) redrawn in
place on a terminal or printed every ``--every`` seconds otherwise, and one line per event as it
arrives: phases, workers, images, probe results, Xids and kernel-log lines. Reads the journal through
``stress.record.Follower`` (the one fold). Exits 0 when ``run_end`` appears; when the supervisor's
process is gone without one (killed, machine trouble) it says so and exits 12 (WORKLOAD_ERROR).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from stress.errors import ExitCode, StressError
from stress.paths import default_artifacts

TREND_S = 60.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("watch", help="follow a running run from another terminal (text only)",
                       description="Follow a run's journal as it is written: the current image and step, "
                                   "probe results, GPU memory / BAR1 / temperature, host load, driver events. "
                                   "Exits 0 when the run ends, 12 when its supervisor is gone without ending it.")
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a run directory (or its run id under ./artifacts)")
    p.add_argument("--latest", action="store_true", help="the newest run directory under ./artifacts")
    p.add_argument("--artifacts", metavar="DIR", help="where --latest looks (default: <repository or cwd>/artifacts)")
    p.add_argument("--every", type=float, default=5.0, metavar="S",
                   help="seconds between status lines when not on a terminal (default: 5)")
    p.set_defaults(func=watch_command)


def latest_run(root: Path) -> Path:
    runs = [d for d in root.iterdir() if (d / "journal.jsonl").is_file()] if root.is_dir() else []
    if not runs:
        raise StressError(f"{root}: no run directory there (nothing with a journal.jsonl); give RUN_DIR")
    return max(runs, key=lambda d: (d / "journal.jsonl").stat().st_mtime)


def _resolve(args: argparse.Namespace) -> Path:
    if args.latest == bool(args.run_dir):
        raise StressError("give either RUN_DIR or --latest")
    if args.latest:
        return latest_run(Path(args.artifacts) if args.artifacts else default_artifacts())
    from stress.commands.report import _resolve_run_dir

    return _resolve_run_dir(args.run_dir)


def _gib(v: Any) -> str:
    return f"{v / (1 << 30):.1f}" if isinstance(v, (int, float)) else "?"


def _last(cols: Any, name: str) -> tuple[float | None, tuple[float, float] | None]:
    """(latest value, (its change, over how many seconds) within the last TREND_S seconds) of one column."""
    col = cols.cols.get(name) if cols is not None else None
    if not col:
        return None, None
    t = cols.t
    i = len(col) - 1
    while i >= 0 and col[i] is None:
        i -= 1
    if i < 0:
        return None, None
    j = i
    while j > 0 and t[i] - t[j - 1] <= TREND_S:
        j -= 1
    while j < i and col[j] is None:
        j += 1
    return col[i], ((col[i] - col[j], t[i] - t[j]) if j < i else None)


def _trend(change: tuple[float, float] | None, unit: float, suffix: str) -> str:
    if change is None or abs(change[0]) < unit / 100:
        return ""
    delta, dt = change
    return f" ({'+' if delta > 0 else ''}{delta / unit:.2f}{suffix} in {dt:.0f}s)"


def status_line(rec: Any) -> str:
    parts = []
    total = (rec.plan or {}).get("images")
    done = len(rec.images)
    parts.append(f"{done}/{total if total is not None else '?'} images")
    pr = rec.progress
    if rec.in_flight:
        idx = rec.in_flight[0]
        now = f"image {idx}"
        if pr and pr.get("index") == idx and pr.get("stage"):
            now += f" {str(pr['stage']).replace('_', ' ')}"
            if pr.get("step") and pr.get("total"):
                now += f" step {pr['step']}/{pr['total']}"
        parts.append(now)
    elif rec.phase_events:
        ph, st, _ = rec.phase_events[-1]
        parts.append(f"phase {ph} {st}")
    for gpu, cols in sorted(rec.nvml.items(), key=lambda kv: str(kv[0])):
        mu, dmu = _last(cols, "mem_used")
        mt, _ = _last(cols, "mem_total")
        b1, db1 = _last(cols, "bar1_used")
        tc, dtc = _last(cols, "temp")
        g = f"GPU{gpu} mem {_gib(mu)}/{_gib(mt)} GiB{_trend(dmu, 1 << 30, ' GiB')}"
        if b1 is not None:
            g += f" BAR1 {b1 / (1 << 20):.0f} MiB{_trend(db1, 1 << 20, ' MiB')}"
        if tc is not None:
            g += f" {tc:.0f}°C{_trend(dtc, 1, '°C')}"
        parts.append(g)
    ld, dld = _last(rec.host, "load1")
    ma, _ = _last(rec.host, "mem_available")
    if ld is not None:
        parts.append(f"load {ld:.1f}{_trend(dld, 1, '')}" + (f" mem avail {_gib(ma)} GiB" if ma is not None else ""))
    return "  ".join(parts)


def event_line(ev: dict) -> str | None:
    """One line for an event worth seeing as it arrives; None for samples and steps."""
    k = ev.get("ev")
    stamp = time.strftime("%H:%M:%S", time.localtime(ev["t"])) if isinstance(ev.get("t"), (int, float)) else "--:--:--"
    if k == "run_start":
        text = f"run {ev.get('run_id')} ({ev.get('scenario')}), supervisor pid {ev.get('pid')}"
    elif k == "phase":
        text = f"phase {ev.get('phase')} {ev.get('state')}"
    elif k == "worker_ready":
        text = (f"worker {ev.get('worker')} ready on {ev.get('device')} in {ev.get('load_s')}s"
                + (f", {ev.get('cpu_threads')} CPU threads" if ev.get("device") == "cpu" else ""))
    elif k == "worker_exit":
        text = f"worker {ev.get('worker')} exited: {ev.get('reason')} (returncode {ev.get('returncode')})"
    elif k == "image":
        secs = sum(v for v in (ev.get("timings") or {}).values() if isinstance(v, (int, float)))
        text = f"image {ev.get('index')} {ev.get('width')}x{ev.get('height')} {ev.get('outcome')}" + \
            (f" {secs:.1f}s" if secs else "") + (f" ({str(ev.get('error'))[:100]})" if ev.get("error") else "")
    elif k == "probe":
        lat = ev.get("latency_s")
        text = f"probe {ev.get('phase')} {ev.get('kind')} #{ev.get('rep')}: {ev.get('status')}" + \
            (f" {lat:.3f}s" if isinstance(lat, (int, float)) else "") + \
            (f" ({str(ev.get('reason'))[:100]})" if ev.get("reason") else "")
    elif k == "xid":
        text = f"XID {ev.get('xid')} on GPU {ev.get('gpu')}: {ev.get('description') or ev.get('category') or ''}"
    elif k == "kmsg":
        text = f"kernel: {str(ev.get('line'))[:160]}"
    elif k == "source" and ev.get("status") not in (None, "ok"):
        text = f"monitor {ev.get('src')}: {ev.get('status')} {ev.get('reason') or ''}".rstrip()
    elif k == "verdict":
        text = f"verdict: {ev.get('verdict')}" + (f" ({'; '.join(map(str, ev.get('reasons') or []))[:200]})"
                                                   if ev.get("reasons") else "")
    elif k == "run_end":
        text = f"run ended: {ev.get('status')}, {ev.get('images_ok')} ok, {ev.get('images_failed')} failed"
    elif k in ("warning", "load_failed", "capture"):
        text = f"{k}: {ev.get('message') or ev.get('error') or ev.get('trigger') or ''}"
    else:
        return None
    return f"{stamp} {text}"


def supervisor_alive(rec: Any) -> bool | None:
    """Whether the run's supervisor still runs (None: the journal names no pid yet)."""
    pid = (rec.last_run_start or {}).get("pid")
    if not isinstance(pid, int):
        return None
    from stress.proc import is_stress_process as _is_stress_process

    return _is_stress_process(pid)


class Watch:
    """Event lines as they arrive and a status line. On a terminal the status line is a rich live line
    under the event lines (redrawn every poll, cut to the width); otherwise plain lines, a status line
    at most every ``every`` seconds when it changed."""

    def __init__(self, run_dir: Path, out: TextIO, tty: bool, every: float = 5.0, poll_s: float = 0.5,
                 console: Any = None):
        from stress.record import Follower

        self.follower = Follower(run_dir / "journal.jsonl")
        self.out, self.tty, self.every, self.poll_s = out, tty, every, poll_s
        self._console = console
        self._live: Any = None
        self._line = ""
        self._last_status = ("", 0.0)

    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.out, highlight=False, markup=False, emoji=False, soft_wrap=True)
        return self._console

    def _print(self, line: str) -> None:
        if self.tty:   # above the live status line
            from rich.text import Text

            self.console().print(Text(line), soft_wrap=True)
            return
        self.out.write(line + "\n")
        self.out.flush()

    def _status(self) -> None:
        line = status_line(self.follower.record)
        if self.tty:
            self._line = line
            if self._live is None:
                from rich.live import Live
                from rich.text import Text

                self._live = Live(get_renderable=lambda: Text(self._line, no_wrap=True, overflow="ellipsis"),
                                  console=self.console(), auto_refresh=False, transient=False,
                                  redirect_stdout=False, redirect_stderr=False)
                self._live.start()
            self._live.refresh()
            return
        now = time.monotonic()
        if line != self._last_status[0] and now - self._last_status[1] >= self.every:
            self._last_status = (line, now)
            self._print(line)

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()   # the last status line stays; the cursor is shown again below it
            self._live = None

    def run(self) -> int:
        try:
            return self._follow()
        finally:
            self._stop_live()

    def _follow(self) -> int:
        rec = self.follower.record
        gone_since: float | None = None
        while True:
            for ev in self.follower.poll():
                line = event_line(ev)
                if line:
                    self._print(line)
            if rec.run_end is not None:
                self._last_status = ("", 0.0)
                self.every = 0.0
                self._status()
                return int(ExitCode.OK)
            self._status()
            alive = supervisor_alive(rec)
            if alive is False:
                # Give the supervisor's last lines a moment to land, then say what happened.
                gone_since = gone_since or time.monotonic()
                if time.monotonic() - gone_since > 2 * self.poll_s:
                    for ev in self.follower.poll():
                        line = event_line(ev)
                        if line:
                            self._print(line)
                    if rec.run_end is None:
                        pid = (rec.last_run_start or {}).get("pid")
                        self._print(f"the run's supervisor (pid {pid}) is gone and the journal has no run_end: "
                                    f"the run was killed or the machine is in trouble; resume it with "
                                    f"'gpu-stress run --resume {self.follower.path.parent}'")
                        return int(ExitCode.WORKLOAD_ERROR)
                    continue
            time.sleep(self.poll_s)


def watch_command(args: argparse.Namespace) -> int:
    run_dir = _resolve(args)
    if args.every <= 0:
        raise StressError(f"--every must be a positive number of seconds (got {args.every})")
    out = sys.stdout
    print(f"watching {run_dir} (Ctrl-C to stop watching; the run goes on)", file=out, flush=True)
    return Watch(run_dir, out, tty=out.isatty(), every=args.every).run()
