"""Supervisor side of the probes: run each phase's probes in child processes and journal them.

The runner calls :func:`run_phase` at its phase points. Nothing here touches the display, imports
numpy or Pillow, or can hang on the X server: every probe runs in ``python -m stress.probes.child``
(its own session, so a timeout kills it and anything it started), results come back one JSON line
per repetition on a dedicated pipe, and the child's stderr goes to ``logs/probes.log``. A probe that
gives no result within ``timeout`` is killed and recorded as ``timeout``; a child that dies is
recorded with the tail of its stderr (``fail`` when it lost its display connection, ``error``
otherwise), and a fresh child runs the remaining repetitions.
"""
from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from stress.proc import child_env, signame
from stress.journal import Journal, RunDir
from stress.probes.config import ProbesConfig

DISPLAY_KINDS = ("screenshot", "display", "display-wayland", "viewer")
# Floor for a child's start (interpreter + imports), which the probe timeout does not cover.
STARTUP_TIMEOUT = 10.0
STDERR_TAIL = 1500

# What Xlib, Tk, mss and xcb print when the display server goes away under them.
_DISPLAY_LOST = re.compile(
    r"X connection to \S+ broken|Fatal IO error|XIO: +fatal|couldn't connect to display|"
    r"cannot open display|can't open display|unable to open display|connection to the X server",
    re.IGNORECASE)

_TIMEOUT = object()
_EOF = object()


def session_type(env: dict[str, str]) -> str:
    """``wayland``, ``x11`` or ``none``, from the environment the probes will run in."""
    if env.get("WAYLAND_DISPLAY") or env.get("XDG_SESSION_TYPE") == "wayland":
        return "wayland"
    if env.get("DISPLAY"):
        return "x11"
    return "none"


def probe_env(config: ProbesConfig) -> dict[str, str]:
    """The probe children's environment: ours, with ``probes.display`` applied."""
    env = child_env()
    if config.display:
        # An explicit X display means: probe that X server, even from inside a Wayland session.
        env["DISPLAY"] = config.display
        env.pop("WAYLAND_DISPLAY", None)
        if env.get("XDG_SESSION_TYPE") == "wayland":
            env["XDG_SESSION_TYPE"] = "x11"
    return env


def run_phase(phase: str, config: ProbesConfig, run_dir: RunDir, journal: Journal,
              images: list[dict], *, visit: int = 0, history: list[dict] | None = None,
              env_vars: dict[str, str | None] | None = None) -> list[dict]:
    """Run ``config.kinds`` x ``config.repetitions`` probes for one visit of ``phase``.

    ``images`` are the run's image records so far. Writes one ``probe`` event per result and
    returns them. Never raises for a probe failure; takes at most about ``timeout`` per probe.
    ``env_vars`` (the scenario's ``env:`` for probes) are set in each child and read back from its
    ``/proc/<pid>/environ`` right after it starts (an ``env_readback`` event, stress.experiment).

    ``history``: the run's probe events before this visit (the runner's). With it, a later phase whose
    latency is borderline against baseline (:func:`stress.analysis.borderline_kinds`, pooled over the
    phase's visits as the verdict pools them) has its borderline kinds run again, up to
    ``repeat_borderline`` rounds: each round a ``probe_repeat`` event, then probes with ``repeat`` set
    and ``rep`` numbers after the visit's own (so every probe's seed and kept files differ).
    """
    if not config.enabled or phase not in config.phases:
        return []
    from stress import experiment

    env = experiment.apply(probe_env(config), env_vars or {})
    session = session_type(env)
    events: list[dict] = []

    def record(kind: str, res: dict, repeat: int) -> None:
        extra = {"repeat": repeat} if repeat else {}
        events.append(journal.append(
            "probe", phase=phase, visit=visit, kind=kind, rep=res.get("rep", 0),
            status=res.get("status", "error"), latency_s=res.get("latency_s"),
            metrics=res.get("metrics") or {}, reason=res.get("reason"), **extra))

    def run_kinds(kinds: list[str], repeat: int) -> None:
        reps = list(range(repeat * config.repetitions, (repeat + 1) * config.repetitions))
        for kind in kinds:
            if kind in DISPLAY_KINDS and session == "none":
                record(kind, {"rep": reps[0], "status": "unavailable", "reason": "no display"}, repeat)
                continue
            done: set[int] = set()

            def spawned(pid: int, kind: str = kind) -> None:
                experiment.read_back(journal, env_vars or {}, "probes", pid, phase=phase, visit=visit, kind=kind)

            try:
                for res in _run_kind(kind, phase, visit, config, run_dir, images, env, session, reps, spawned):
                    done.add(res["rep"])
                    record(kind, res, repeat)
            except Exception as exc:  # a harness failure (cannot spawn, disk full...): record, carry on
                for rep in reps:
                    if rep not in done:
                        record(kind, {"rep": rep, "status": "error",
                                      "reason": f"harness: {type(exc).__name__}: {exc}"[:300]}, repeat)

    run_kinds(list(config.kinds), 0)
    if history is not None and config.repeat_borderline:
        from stress.analysis import borderline_kinds

        for repeat in range(1, config.repeat_borderline + 1):
            unsettled = borderline_kinds([*history, *events], phase, config)
            if not unsettled:
                break
            journal.append("probe_repeat", phase=phase, visit=visit, repeat=repeat, of=config.repeat_borderline,
                           kinds={k: {key: c.get(key) for key in ("ratio", "p_value", "n1", "n2", "too_few")}
                                  for k, c in unsettled.items()})
            run_kinds([k for k in config.kinds if k in unsettled], repeat)
    return events


class _Child:
    """One probe child process and the line reader on its result pipe."""

    def __init__(self, request: Path, env: dict[str, str], log: Path):
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log_path = log
        self._log = open(log, "ab")
        self._offset = self._log.tell()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stress.probes.child", str(request)], stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=self._log, env=env, start_new_session=True)
        except BaseException:
            self._log.close()
            raise
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._fd, selectors.EVENT_READ)
        self._buf = b""

    def read_line(self, timeout: float) -> bytes | object:
        """The next result line, or ``_TIMEOUT``, or ``_EOF`` when the child closed its pipe."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return _TIMEOUT
            if not self._sel.select(left):
                continue
            chunk = os.read(self._fd, 65536)
            if not chunk:
                return _EOF
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the child and whatever it started
            except (ProcessLookupError, PermissionError):
                pass
        self.wait()

    def wait(self) -> int | None:
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # stuck in the kernel (D state): do not wait for it
            return None

    def stderr_tail(self) -> str:
        self._log.flush()
        try:
            with open(self._log_path, "rb") as fh:
                fh.seek(max(self._offset, os.path.getsize(self._log_path) - STDERR_TAIL))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def close(self) -> None:
        try:
            self.proc.wait(timeout=2)  # it has reported everything: let it exit on its own
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever it started and left behind
        except (ProcessLookupError, PermissionError):
            pass
        self.kill()
        self._sel.close()
        self.proc.stdout.close()  # type: ignore[union-attr]
        self._log.close()


def _died(rep: int, child: _Child) -> dict:
    """Result for a child that closed its pipe before reporting ``rep``."""
    rc = child.wait()
    if rc is None:
        child.kill()
    tail = child.stderr_tail()
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    last = lines[-1][:200] if lines else "no output"
    if rc is not None and rc < 0:
        how = f"was killed by {signame(-rc)}"
    else:
        how = f"exited with status {rc}"
    lost = next((ln for ln in lines if _DISPLAY_LOST.search(ln)), None)
    if lost:
        # The display server went away under the probe: a symptom, not a harness problem.
        return {"rep": rep, "status": "fail", "latency_s": None,
                "reason": f"display connection lost: {' '.join(lost.split())[:200]} (probe process {how})",
                "metrics": {"returncode": rc, "stderr_tail": tail[-STDERR_TAIL:], "display_lost": True}}
    return {"rep": rep, "status": "error", "latency_s": None,
            "reason": f"probe process {how} before reporting: {last}",
            "metrics": {"returncode": rc, "stderr_tail": tail[-STDERR_TAIL:]}}


def _parse(rep: int, line: bytes) -> dict:
    try:
        res = json.loads(line)
        if not isinstance(res, dict) or "status" not in res:
            raise ValueError("not a result")
    except ValueError:
        return {"rep": rep, "status": "error", "latency_s": None,
                "reason": f"probe process wrote an unreadable result: {line[:120]!r}", "metrics": {}}
    res["rep"] = rep
    return res


def _run_kind(kind: str, phase: str, visit: int, config: ProbesConfig, run_dir: RunDir, images: list[dict],
              env: dict[str, str], session: str, reps: list[int] | None = None, on_spawn=None) -> Iterator[dict]:
    """Yield one result per repetition of ``kind`` (``reps``, default ``0..repetitions-1``), restarting
    the child after a timeout or crash; ``on_spawn(pid)`` is called as each child starts."""
    pending = list(range(config.repetitions)) if reps is None else list(reps)
    log = Path(run_dir.logs) / "probes.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    while pending:
        request = {"kind": kind, "phase": phase, "visit": visit, "reps": pending,
                   "config": config.model_dump(mode="json"), "run_dir": str(Path(run_dir.root).resolve()),
                   "images": images, "session": session}
        fd, req_path = tempfile.mkstemp(prefix="stress-probe-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(request, fh, default=str)
        with open(log, "ab") as fh:
            fh.write(f"--- {time.strftime('%H:%M:%S')} {phase} visit {visit} {kind} reps {pending}\n".encode())
        try:
            child = _Child(Path(req_path), env, log)
        except BaseException:
            os.unlink(req_path)
            raise
        try:
            if on_spawn is not None:
                on_spawn(child.proc.pid)
            first = child.read_line(max(STARTUP_TIMEOUT, config.timeout))
            if first is _TIMEOUT:
                child.kill()
                yield {"rep": pending.pop(0), "status": "timeout", "latency_s": None, "metrics": {},
                       "reason": f"probe process did not start within {max(STARTUP_TIMEOUT, config.timeout):g} s"}
                continue
            if first is _EOF:
                yield _died(pending.pop(0), child)
                continue
            while pending:
                rep = pending[0]
                line = child.read_line(config.timeout)
                if line is _TIMEOUT:
                    child.kill()
                    pending.pop(0)
                    yield {"rep": rep, "status": "timeout", "latency_s": None, "metrics": {},
                           "reason": f"no result within {config.timeout:g} s; probe process killed"}
                    break
                if line is _EOF:
                    pending.pop(0)
                    yield _died(rep, child)
                    break
                pending.pop(0)
                res = _parse(rep, line)  # type: ignore[arg-type]
                yield res
                if res["status"] == "unsupported":
                    pending.clear()  # recorded once per phase visit; the next ones would say the same
                    child.kill()
        except BaseException:  # Ctrl-C or a closing generator: do not wait for the child, end it
            child.kill()
            raise
        finally:
            child.close()
            try:
                os.unlink(req_path)
            except OSError:
                pass

