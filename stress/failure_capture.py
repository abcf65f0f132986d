"""Capture at the moment of failure: evidence saved into the run directory before the machine may freeze.

:class:`FailureCapture` watches the journal events of a run (through :mod:`stress.evidence`). At the
first driver error (an Xid, or a kernel-log line of severity ``error`` in the classification table)
or the first failed desktop probe (status ``fail`` or ``timeout``), it saves, in a thread of its own
and each step with a timeout, into ``<run>/evidence/failure/``:

- ``kernel-log-recorded.txt``: the kernel-log lines this run recorded so far (from the journal);
- ``kernel-log-tail.txt``: the machine's kernel log tail (``journalctl -k -n 500``, else ``dmesg``);
- ``compositor-<name>.log``: the log of each display server / compositor process found
  (``journalctl --user _COMM=<name>``, else the system journal), when journalctl has one;
- ``screenshot.png``: a screenshot attempt (mss, in a subprocess with a timeout);
- ``nvidia-smi-q.txt``: ``nvidia-smi -q`` (10 s timeout: it can hang on a wedged GPU);
- ``nvidia-bug-report.log.gz``: only with ``monitors.bug_report_at_failure`` (opt-in; non-interactive,
  ``--safe-mode``, stopped after ``bug_report_timeout``);
- ``manifest.json``: the trigger and, for every item, the file or why there is none.

It then writes one ``capture`` journal event with the same content. Every step that cannot run says
why and with which command it could; nothing here can stop the run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from stress.hw import kernel_log
from stress.proc import child_env

FAILING_PROBE_STATUSES = ("fail", "timeout")
_STEP_TIMEOUT = 10.0
_TAIL_LINES = 500


def trigger_of(ev: str, fields: dict) -> dict | None:
    """The reason to capture, when this journal event is a driver error or a failed desktop probe."""
    if ev == "xid" and isinstance(fields.get("xid"), int):
        return {"kind": "xid", "xid": fields["xid"], "source": fields.get("source"),
                "description": fields.get("description"), "t": fields.get("t")}
    if ev == "kmsg" and fields.get("cls"):
        p = kernel_log.pattern(fields["cls"])
        if p is not None and p.severity == "error":
            return {"kind": "kernel-log", "cls": p.id, "class": p.cls, "line": fields.get("line"), "t": fields.get("t")}
    if ev == "probe" and fields.get("status") in FAILING_PROBE_STATUSES:
        return {"kind": "probe", "probe": fields.get("kind"), "phase": fields.get("phase"),
                "status": fields.get("status"), "reason": fields.get("reason"), "t": fields.get("t")}
    return None


def _run(argv: list[str], out: Path, timeout: float = _STEP_TIMEOUT, env: dict | None = None) -> dict:
    """Run one command into ``out``; the item's record (file or reason, the command, seconds)."""
    t0 = time.monotonic()
    rec: dict[str, Any] = {"command": " ".join(argv)}
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                              env=env, start_new_session=True)
    except FileNotFoundError:
        return dict(rec, ok=False, reason=f"{argv[0]} not installed")
    except subprocess.TimeoutExpired:
        return dict(rec, ok=False, reason=f"no answer within {timeout:.0f} s (stopped)",
                    s=round(time.monotonic() - t0, 3))
    except OSError as exc:
        return dict(rec, ok=False, reason=f"could not start: {exc.strerror or exc}")
    rec["s"] = round(time.monotonic() - t0, 3)
    text = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode != 0 or not text.strip() or text.strip().startswith("-- No entries --"):
        why = err.splitlines()[0] if err else ("no entries" if proc.returncode == 0 else f"exit {proc.returncode}")
        return dict(rec, ok=False, reason=why[:300])
    out.write_text(text, encoding="utf-8")
    return dict(rec, ok=True, file=out.name, bytes=out.stat().st_size)


class FailureCapture:
    """One capture per run, at the first failure. ``observe`` is called for every journal event."""

    def __init__(self, run_dir: Path, append: Callable[..., Any], *, journal_path: Path,
                 bug_report: bool = False, bug_report_timeout: float = 300.0,
                 display_processes: Callable[[], list[str]] | None = None):
        self.dir = Path(run_dir) / "evidence" / "failure"
        self.append = append
        self.journal_path = Path(journal_path)
        self.bug_report = bug_report
        self.bug_report_timeout = bug_report_timeout
        self.display_processes = display_processes or _display_process_names
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.trigger: dict | None = None
        self.manifest: dict | None = None

    def observe(self, ev: str, fields: dict) -> None:
        if self.trigger is not None or ev == "capture":
            return
        trig = trigger_of(ev, fields)
        if trig is None:
            return
        with self._lock:
            if self.trigger is not None:
                return
            self.trigger = trig
        self._thread = threading.Thread(target=self._capture, name="stress-failure-capture", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Let a capture in progress finish (bounded); True when none is running."""
        if self._thread is None:
            return True
        limit = timeout if timeout is not None else 4 * _STEP_TIMEOUT + (self.bug_report_timeout if self.bug_report else 0)
        self._thread.join(limit)
        return not self._thread.is_alive()

    # ---- the capture ----
    def _capture(self) -> None:
        t0 = time.monotonic()
        items: dict[str, dict] = {}
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            items["kernel_log_recorded"] = self._recorded_kernel_lines()
            items["kernel_log_tail"] = self._kernel_tail()
            items["compositor_logs"] = self._compositor_logs()
            items["screenshot"] = self._screenshot()
            # the GPU's state as the driver sees it now, incl. the Recovery Action after an Xid 154
            items["nvidia_smi_q"] = _run(["nvidia-smi", "-q"], self.dir / "nvidia-smi-q.txt")
            if self.bug_report:
                items["nvidia_bug_report"] = self._nvidia_bug_report()
            else:
                items["nvidia_bug_report"] = {"ok": False, "reason": "not allowed (opt-in: run --bug-report-at-failure "
                                              "or monitors.bug_report_at_failure)"}
        except Exception as exc:
            items["error"] = {"ok": False, "reason": f"{type(exc).__name__}: {exc}"}
        self.manifest = {"trigger": self.trigger, "dir": "evidence/failure", "items": items,
                         "wall_s": round(time.monotonic() - t0, 3)}
        try:
            (self.dir / "manifest.json").write_text(json.dumps(self.manifest, indent=2, default=str))
        except OSError:
            pass
        try:
            self.append("capture", **self.manifest)
        except (OSError, ValueError):   # journal closed or disk full: the manifest file is the record
            pass

    def _recorded_kernel_lines(self) -> dict:
        lines = []
        try:
            with open(self.journal_path, encoding="utf-8", errors="replace") as fh:
                for raw in fh:
                    if '"ev": "kmsg"' not in raw and '"ev":"kmsg"' not in raw:
                        continue
                    try:
                        lines.append(json.loads(raw)["line"])
                    except (ValueError, KeyError, TypeError):
                        continue
        except OSError as exc:
            return {"ok": False, "reason": f"journal unreadable: {exc.strerror}"}
        if not lines:
            return {"ok": False, "reason": "the run recorded no kernel-log lines"}
        out = self.dir / "kernel-log-recorded.txt"
        out.write_text("\n".join(lines[-_TAIL_LINES:]) + "\n", encoding="utf-8")
        return {"ok": True, "file": out.name, "lines": min(len(lines), _TAIL_LINES)}

    def _kernel_tail(self) -> dict:
        out = self.dir / "kernel-log-tail.txt"
        attempts = []
        for argv in (["journalctl", "-k", "-n", str(_TAIL_LINES), "--no-pager", "-o", "short-precise"],
                     ["dmesg", "-T"]):
            r = _run(argv, out)
            attempts.append(r)
            if r["ok"]:
                if argv[0] == "dmesg":       # the whole ring buffer: keep its tail
                    text = out.read_text(encoding="utf-8", errors="replace").splitlines()[-_TAIL_LINES:]
                    out.write_text("\n".join(text) + "\n", encoding="utf-8")
                return dict(r, tried=attempts[:-1] or None)
        return {"ok": False, "reason": "; ".join(f"{a['command']}: {a['reason']}" for a in attempts),
                "fix": "give the user the systemd-journal group, or kernel.dmesg_restrict=0"}

    def _compositor_logs(self) -> dict:
        names = sorted(set(self.display_processes()))
        if not names:
            return {"ok": False, "reason": "no display server or compositor process found"}
        if not shutil.which("journalctl"):
            return {"ok": False, "reason": "journalctl not installed", "processes": names}
        logs = {}
        for name in names:
            out = self.dir / f"compositor-{''.join(c if c.isalnum() else '_' for c in name)}.log"
            tried = []
            for argv in (["journalctl", "--user", "-n", "300", "--no-pager", "-o", "short-precise", f"_COMM={name[:15]}"],
                         ["journalctl", "-n", "300", "--no-pager", "-o", "short-precise", f"_COMM={name[:15]}"]):
                r = _run(argv, out)
                tried.append(r)
                if r["ok"]:
                    break
            logs[name] = tried[-1] if tried[-1]["ok"] else {
                "ok": False, "reason": "; ".join(f"{t['command']}: {t['reason']}" for t in tried)}
        return {"ok": any(v["ok"] for v in logs.values()), "processes": logs}

    def _screenshot(self) -> dict:
        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
            return {"ok": False, "reason": "no DISPLAY or WAYLAND_DISPLAY in this environment"}
        out = self.dir / "screenshot.png"
        t0 = time.monotonic()
        try:
            # In its own process (grab_screen below): a hung display server hangs that one, not the run.
            proc = subprocess.run([sys.executable, "-m", "stress.failure_capture", "grab", str(out)],
                                  capture_output=True, timeout=_STEP_TIMEOUT, env=child_env(),
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        except subprocess.TimeoutExpired:
            return {"ok": False, "reason": f"the screenshot took longer than {_STEP_TIMEOUT:.0f} s (stopped): "
                                           "the display server may be hung"}
        s = round(time.monotonic() - t0, 3)
        if proc.returncode == 0 and out.is_file() and out.stat().st_size > 0:
            return {"ok": True, "file": out.name, "bytes": out.stat().st_size, "s": s}
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        return {"ok": False, "reason": (err[-1] if err else f"exit {proc.returncode}")[:300], "s": s}

    def _nvidia_bug_report(self) -> dict:
        from stress.report.bundle import capture_nvidia_bug_report

        t0 = time.monotonic()
        path, why = capture_nvidia_bug_report(self.dir, timeout=self.bug_report_timeout)
        s = round(time.monotonic() - t0, 3)
        if path is None:
            return {"ok": False, "reason": why, "s": s}
        return {"ok": True, "file": path.name, "bytes": path.stat().st_size, "s": s}


def _display_process_names() -> list[str]:
    try:
        from stress.hw.host import find_display_processes

        return [name for _, name in find_display_processes()]
    except Exception:
        return []


__all__ = ["FailureCapture", "trigger_of", "FAILING_PROBE_STATUSES"]


def grab_screen(out: str) -> None:
    """The whole screen to a PNG at ``out`` (``python -m stress.failure_capture grab OUT``)."""
    import mss
    import mss.tools

    with mss.mss() as m:
        img = m.grab(m.monitors[0])
        mss.tools.to_png(img.rgb, img.size, output=out)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "grab":
        sys.exit("usage: python -m stress.failure_capture grab OUT.png")
    grab_screen(sys.argv[2])
