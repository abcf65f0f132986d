"""The one fold: a journal (complete, partial, torn, resumed) -> one :class:`RunRecord`.

Every reader of a run goes through here: the runner (resume and conclusion), ``run.json``, the report,
the history, the soak and the planner's compare/bench. The journal is read once, event by event; each
event updates the record, and sample events (``nvml``, ``host``, ``alloc``) become columns of numbers
(named by the one field table, ``stress.fields``) that the report summarises with numpy. Nothing here
judges: the verdict and every other judgement are ``stress.analysis``'s; numbers derived from the record
(images/min, image-time median, failure counts) are defined once, in ``stress.record.derived``.
"""
from __future__ import annotations

import gc
import math
import os
import time
from collections import Counter, deque
from typing import Any

from stress.errors import StressError
from stress.events import JOURNAL_FORMAT
from stress.fields import ENVELOPE
from stress.journal import JournalStream, RunDir
from stress.record.columns import (HOST_SINGLE, PROC_LIST_KEYS, Columns, SampleColumns, host_builder, nvml_builder,
                                   proc_groups_of)

__all__ = ["Columns", "RunRecord", "SampleColumns", "fold", "load", "num", "to_int", "to_str", "iso"]

FAILED_PROBE = ("fail", "timeout", "error")

def num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(v) else None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def to_int(v: Any) -> int | None:
    f = num(v)
    return int(f) if f is not None else None


def to_str(v: Any) -> str | None:
    if v is None:
        return None
    return v if isinstance(v, str) else str(v)


def iso(t: float | None) -> str | None:
    """Local wall-clock time with its UTC offset: what the user's own logs (journalctl) show."""
    if t is None:
        return None
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(t))
    except (OverflowError, OSError, ValueError):
        return None


def _numbers(ev: dict, out: dict, prefix: str = "") -> None:
    """Top-level numbers of a sample and one level of nested dicts (``worker.rss``)."""
    for k, v in ev.items():
        tv = type(v)
        if tv is int or tv is float:
            if not prefix and k in ENVELOPE:
                continue
            out[prefix + k] = v
        elif tv is dict and not prefix:
            _numbers(v, out, k + ".")


class RunRecord:
    """Everything a journal says about a run, collected in one pass (see the module docstring)."""

    def __init__(self) -> None:
        self.count = 0
        self.kinds: Counter = Counter()
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.last_ev: str | None = None
        self.run_start: dict | None = None
        self.run_end: dict | None = None
        self.verdict: dict | None = None
        self.env_event: dict | None = None
        self.plan: dict | None = None
        self.phase_events: list[tuple[str, str, float]] = []
        self.workers: dict[int, dict] = {}
        self.worker_pids: set[int] = set()
        self.image_starts: dict[int, dict] = {}
        self.images: dict[int, dict] = {}
        self.stages: dict[int, dict] = {}
        self.alloc_by_image: dict[int, dict] = {}
        self.source_events: list[dict] = []
        self.gpu_static: dict[Any, dict] = {}
        self.nvml: dict[int, SampleColumns] = {}
        self.host = SampleColumns(host_builder, HOST_SINGLE)
        self.alloc = Columns()
        self.xids: list[dict] = []
        self.kmsg_count = 0
        self.kmsg_suppressed = 0
        self.kmsg_tail: deque = deque(maxlen=100)
        self.kmsg_classified: list[dict] = []   # kernel-log lines of a known class (cls): the fingerprint's steps
        self.capture: dict | None = None        # what was captured at the first failure (stress.failure_capture)
        self.previous_boot: dict | None = None  # the records of the boot the run died in (stress.previous_boot)
        self.evidence_boot: dict | None = None  # the last boot the run was seen in (its kernel's boot id)
        self.alloc_events: list[dict] = []     # the allocator events as written (a few per image)
        self.probes: list[dict] = []           # the probe events as written (the judge reads them)
        self.cycles: list[dict] = []           # desktop cycles that ended (`cycle` state end; stress.cycles)
        self.display_events: list[dict] = []   # host events' dsgone / dsnew / ctxgone: display processes that
                                               # went away or took another's place (stress.hw.host)
        self.torn_tail = False
        self.bad_lines: list[int] = []
        self.format: int | None = None         # run_start.format (None: written before format 2)
        self.last_run_start: dict | None = None
        self.newer_format: int | None = None  # a journal written by a newer version than this one
        self.worker_count = 0                  # ordinals used so far (a resumed run goes on from here)
        self.during_visits = 0                 # visits of the `during` phase so far
        self._nvml_procs: dict[int, dict] = {}  # per GPU: the process lists as they stand now
        self.proc_groups: dict[str, str] = {}
        self.prompts: list[str] = []
        self.resumes: list[dict] = []
        self.monitors_summary: dict | None = None
        self.progress: dict | None = None      # the last `progress` event (stage / step of the image now)
        self.experiment: dict | None = None    # what the run (a matrix cell) asked for: cell, env, settings
        self.env_readbacks: list[dict] = []    # each started process's environment as read back
        self.settings: list[dict] = []         # GPU settings applied / restored, with their read-back

    def feed(self, ev: dict) -> None:
        kind = ev.get("ev")
        t = ev.get("t")
        if type(t) is not float and type(t) is not int:
            t = num(t)
            if t is None:
                self.kinds[str(kind)] += 1
                return
        self.count += 1
        self.kinds[kind] += 1
        if self.first_t is None or t < self.first_t:
            self.first_t = t
        if self.last_t is None or t >= self.last_t:
            self.last_t = t
            self.last_ev = kind
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, ev, t)

    # ---- handlers ----
    def _nvml(self, ev: dict, t: float) -> None:
        gpu = ev.get("gpu")
        gpu = gpu if type(gpu) is int else (to_int(gpu) or 0)
        cols = self.nvml.get(gpu)
        if cols is None:
            cols = self.nvml[gpu] = SampleColumns(nvml_builder(self.worker_pids))
            self._nvml_procs[gpu] = {}
        changed = False
        for k in PROC_LIST_KEYS:
            v = ev.get(k)
            if type(v) is list:                    # change-only: kept until the next list
                self._nvml_procs[gpu][k] = v
                proc_groups_of(k, v, self.proc_groups)
                changed = True
        if changed:
            cols.marks.append((len(cols.events), dict(self._nvml_procs[gpu])))
        cols.push(t, ev)

    def _host(self, ev: dict, t: float) -> None:
        if "dsgone" in ev or "dsnew" in ev or "ctxgone" in ev:
            self.display_events.append({"ev": "host", "t": t, **{k: ev[k] for k in ("dsgone", "dsnew", "ctxgone")
                                                                  if type(ev.get(k)) is list}})
        self.host.push(t, ev)

    @property
    def display_changes(self) -> list[dict]:
        """Display-server/compositor processes that restarted (new pid), vanished or appeared."""
        self.host.cols   # noqa: B018 - built with the host columns
        return self.host.extra.get("display_changes", [])

    def _alloc(self, ev: dict, t: float) -> None:
        self.alloc_events.append(ev)
        values: dict = {}
        _numbers(ev, values)
        self.alloc.add(t, values)
        idx = ev.get("index")
        if type(idx) is int:
            peaks = self.alloc_by_image.setdefault(idx, {})
            for k, v in values.items():
                if k in ("allocated", "reserved", "free", "total"):
                    continue
                peaks[k] = max(peaks.get(k, v), v)

    def _image_start(self, ev: dict, t: float) -> None:
        idx = to_int(ev.get("index"))
        if idx is not None:
            self.image_starts[idx] = dict(ev, t=t)

    def _image(self, ev: dict, t: float) -> None:
        idx = to_int(ev.get("index"))
        if idx is None:
            return
        self.images[idx] = dict(ev, t=t)
        for k in ("prompt", "negative_prompt"):
            if isinstance(ev.get(k), str):
                self.prompts.append(ev[k])

    def _stage(self, ev: dict, t: float) -> None:
        idx = to_int(ev.get("index"))
        s = num(ev.get("s"))
        if idx is not None and s is not None and ev.get("stage"):
            st = self.stages.setdefault(idx, {})
            st[str(ev["stage"])] = st.get(str(ev["stage"]), 0.0) + s

    def _phase(self, ev: dict, t: float) -> None:
        self.phase_events.append((str(ev.get("phase")), str(ev.get("state")), t))

    def _worker_start(self, ev: dict, t: float) -> None:
        w = to_int(ev.get("worker"))
        if w is not None:
            self.worker_count = max(self.worker_count, w + 1)
        pid = to_int(ev.get("pid"))
        if pid is not None:
            self.worker_pids.add(pid)
        self.workers[w if w is not None else len(self.workers)] = {
            "worker": w, "pid": pid, "reason": to_str(ev.get("reason")), "started_t": t}

    def _worker_ready(self, ev: dict, t: float) -> None:
        w = self.workers.setdefault(to_int(ev.get("worker")) or 0, {"worker": to_int(ev.get("worker")),
                                                                    "pid": to_int(ev.get("pid")),
                                                                    "reason": None, "started_t": None})
        w.update(ready_t=t, load_s=num(ev.get("load_s")), device=to_str(ev.get("device")),
                 dtype=to_str(ev.get("dtype")))
        for k in ("torch", "cuda", "models"):
            if ev.get(k) is not None:
                w[k] = ev[k]

    def _worker_exit(self, ev: dict, t: float) -> None:
        w = self.workers.setdefault(to_int(ev.get("worker")) or 0, {"worker": to_int(ev.get("worker")),
                                                                    "pid": to_int(ev.get("pid")),
                                                                    "reason": None, "started_t": None})
        tail = to_str(ev.get("stderr_tail")) or None
        w.update(exit_t=t, returncode=to_int(ev.get("returncode")), signal=to_str(ev.get("signal")),
                 exit_reason=to_str(ev.get("reason")), stderr_tail=tail[-2000:] if tail else None)

    def _load_failed(self, ev: dict, t: float) -> None:
        w = self.workers.setdefault(to_int(ev.get("worker")) or 0, {"worker": to_int(ev.get("worker")),
                                                                    "pid": None, "reason": None,
                                                                    "started_t": None})
        w["load_error"] = to_str(ev.get("error"))

    def _source(self, ev: dict, t: float) -> None:
        self.source_events.append(dict(ev, t=t))

    def _gpu_static(self, ev: dict, t: float) -> None:
        self.gpu_static[ev.get("gpu", len(self.gpu_static))] = ev

    def _xid(self, ev: dict, t: float) -> None:
        self.xids.append(dict(ev, t=t))

    def _kmsg(self, ev: dict, t: float) -> None:
        self.kmsg_count += 1
        self.kmsg_suppressed += to_int(ev.get("suppressed")) or 0
        self.kmsg_tail.append({"t": t, "line": to_str(ev.get("line")) or ""})
        if ev.get("cls"):
            self.kmsg_classified.append(dict(ev, t=t))

    def _probe(self, ev: dict, t: float) -> None:
        self.probes.append(ev if ev.get("t") == t else dict(ev, t=t))
        if ev.get("phase") == "during":
            visit = to_int(ev.get("visit"))
            if visit is not None:
                self.during_visits = max(self.during_visits, visit + 1)

    def _cycle(self, ev: dict, t: float) -> None:
        if ev.get("state") == "end":
            self.cycles.append(dict(ev, t=t))

    def _run_start(self, ev: dict, t: float) -> None:
        if self.run_start is None:
            self.run_start = ev
            self.format = to_int(ev.get("format"))
        self.last_run_start = ev

    # ---- views of the record for its readers ----
    @property
    def in_flight(self) -> list[int]:
        """Images that started and have no record (the run stopped or the machine froze during them)."""
        return sorted(set(self.image_starts) - set(self.images))

    def has_probes(self, phase: str) -> bool:
        return any(p.get("phase") == phase for p in self.probes)

    def judged_events(self) -> list[dict]:
        """What the judge (``stress.analysis``) weighs, in journal order: probe events, Xids, classified
        kernel-log lines, source changes, desktop cycles, phase boundaries and the display processes that
        went away."""
        evs: list[dict] = [*self.probes, *self.xids, *self.kmsg_classified, *self.source_events, *self.cycles]
        evs += [{"ev": "phase", "phase": ph, "state": st, "t": t} for ph, st, t in self.phase_events]
        evs += self.display_events
        evs.sort(key=lambda e: e.get("t") or 0.0)
        return evs

    def _resume(self, ev: dict, t: float) -> None:
        self.resumes.append(ev)


def _keep_last(name: str):
    def handler(rec: "RunRecord", ev: dict, t: float) -> None:
        setattr(rec, name, ev)
    return handler


_HANDLERS = {
    "nvml": RunRecord._nvml, "host": RunRecord._host, "alloc": RunRecord._alloc, "image_start": RunRecord._image_start,
    "image": RunRecord._image, "stage": RunRecord._stage, "phase": RunRecord._phase, "worker_start": RunRecord._worker_start,
    "worker_ready": RunRecord._worker_ready, "worker_exit": RunRecord._worker_exit, "load_failed": RunRecord._load_failed,
    "source": RunRecord._source, "gpu_static": RunRecord._gpu_static, "xid": RunRecord._xid, "kmsg": RunRecord._kmsg,
    "probe": RunRecord._probe, "run_start": RunRecord._run_start, "environment": _keep_last("env_event"),
    "plan": _keep_last("plan"), "verdict": _keep_last("verdict"), "run_end": _keep_last("run_end"),
    "monitors_summary": _keep_last("monitors_summary"), "capture": _keep_last("capture"),
    "previous_boot": _keep_last("previous_boot"), "evidence_boot": _keep_last("evidence_boot"), "progress": _keep_last("progress"),
    "resume": RunRecord._resume, "cycle": RunRecord._cycle, "experiment": _keep_last("experiment"),
    "env_readback": lambda rec, ev, t: rec.env_readbacks.append(dict(ev, t=t)),
    "setting": lambda rec, ev, t: rec.settings.append(dict(ev, t=t)),
}


def fold(path: str | os.PathLike, *, skip_kinds: tuple[str, ...] = ()) -> RunRecord:
    """Fold one journal file into its record. Never raises on damaged content: a torn last line and
    lines that are not JSON are counted in ``torn_tail`` / ``bad_lines``. Raises ``OSError`` only when
    the file cannot be read at all. ``skip_kinds``: event kinds left out unread (a partial record, for
    a reader that needs none of what their handlers keep)."""
    rec = RunRecord()
    stream = JournalStream(path, skip_kinds=skip_kinds)
    gc_was = gc.isenabled()
    gc.disable()   # hundreds of thousands of small dicts: the cyclic GC would run constantly for nothing
    try:
        feed = rec.feed
        for ev in stream:
            feed(ev)
    finally:
        if gc_was:
            gc.enable()
    rec.torn_tail, rec.bad_lines = stream.torn_tail, stream.bad_lines
    return rec


def load(run_dir: str | os.PathLike, *, skip_kinds: tuple[str, ...] = ()) -> RunRecord:
    """The record of a run directory (``skip_kinds``: see :func:`fold`); a clear :class:`StressError`
    when it is not one."""
    rd = RunDir(run_dir)
    if not rd.journal.is_file():
        raise StressError(f"{rd.root}: no journal.jsonl there; give a run directory (artifacts/<run-id>)")
    try:
        rec = fold(rd.journal, skip_kinds=skip_kinds)
    except OSError as exc:
        raise StressError(f"{rd.journal}: cannot be read ({exc.strerror or exc})") from None
    if rec.format is not None and rec.format > JOURNAL_FORMAT:
        rec.newer_format = rec.format
    return rec
