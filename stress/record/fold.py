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
from stress.fields import (ENVELOPE, HOST, HOST_CARRY, HOST_LISTS, NVML, NVML_CARRY, NVML_LISTS, NVML_PROCESS_LISTS,
                           WORKER_TREE, DISPLAY_PROC)
from stress.journal import JournalStream, RunDir

_NVML_NAMES = {k: f.name for k, f in NVML.items()}
_NVML_LIST_NAMES = {k: tuple(f.name for f in fs) for k, fs in NVML_LISTS.items()}
_HOST_NAMES = {k: f.name for k, f in HOST.items()}
_HOST_LIST_NAMES = {k: tuple(f.name for f in fs) for k, fs in HOST_LISTS.items()}
_WORKER_FIELDS = tuple((k, f.name) for k, f in WORKER_TREE.items())
_DISPLAY_FIELDS = {k: v[0] for k, v in DISPLAY_PROC.items()}
_DISPLAY_LIST_KEYS = ("display", "compositor", "display_procs")   # older journals' names for ``ds``
_GRAPHICS_TYPES = ("graphics", "g", "c+g", "gfx")
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


class Columns:
    """Samples of one source as aligned columns (None where a tick lacked a field)."""

    __slots__ = ("t", "cols")

    def __init__(self) -> None:
        self.t: list[float] = []
        self.cols: dict[str, list] = {}

    def add(self, t: float, values: dict) -> None:
        n = len(self.t)
        cols = self.cols
        for k, v in values.items():
            col = cols.get(k)
            if col is None:
                col = cols[k] = [None] * n
            col.append(v)
        self.t.append(t)
        if len(values) < len(cols):   # some column got nothing this tick: pad it
            n += 1
            for col in cols.values():
                if len(col) < n:
                    col.append(None)


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
        self.nvml: dict[int, Columns] = {}
        self.host = Columns()
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
        self.display_changes: list[dict] = []
        self._display_pids: dict[str, int | None] = {}
        self._display_seen_any = False
        self._display_last_pid: dict[str, int] = {}
        self._nvml_carry: dict[int, dict] = {}
        self._nvml_procs: dict[int, dict] = {}
        self._host_carry: dict = {}
        self.proc_groups: dict[str, str] = {}
        self._keys: dict[tuple, str] = {}      # column names built once, not once per tick
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
            cols = self.nvml[gpu] = Columns()
            self._nvml_carry[gpu] = {}
            self._nvml_procs[gpu] = {}
        carry = self._nvml_carry[gpu]
        values: dict = {}
        for k, v in ev.items():
            tv = type(v)
            if tv is int or tv is float:
                if k in ENVELOPE:
                    continue
                name = _NVML_NAMES.get(k, k)
                values[name] = v
                if name in NVML_CARRY:
                    carry[name] = v
            elif tv is list:
                names = _NVML_LIST_NAMES.get(k)
                if names:
                    for name, x in zip(names, v):
                        if type(x) is int or type(x) is float:
                            values[name] = carry[name] = x
                elif k in NVML_PROCESS_LISTS or k == "procs":
                    self._nvml_procs[gpu][k] = v     # change-only: kept until the next list
                    for p in v:
                        if type(p) is list and len(p) >= 2:
                            self.proc_groups[str(p[1])] = NVML_PROCESS_LISTS.get(k, "compute")
                        elif type(p) is dict and p.get("name"):
                            ptype = str(p.get("type", "graphics" if k == "gp" else "compute")).lower()
                            self.proc_groups[str(p["name"])] = "graphics" if ptype in _GRAPHICS_TYPES else "compute"
            elif tv is dict:
                for k2, v2 in v.items():
                    if type(v2) is int or type(v2) is float:
                        values[f"{k}.{k2}"] = v2
        for name, v in carry.items():
            if name not in values:
                values[name] = v
        procs = self._nvml_procs[gpu]
        if procs:
            gfx = 0
            worker_mem = None
            pids = self.worker_pids
            for k, lst in procs.items():
                for p in lst:
                    if type(p) is list and len(p) >= 3:        # compact: [pid, name, mem]
                        pid, name, mem = p[0], p[1], p[2]
                        ptype = "graphics" if k == "gp" else "compute"
                    elif type(p) is dict:
                        pid, name, mem = p.get("pid"), p.get("name"), p.get("mem")
                        ptype = str(p.get("type", "graphics" if k == "gp" else "compute")).lower()
                    else:
                        continue
                    if type(mem) is not int and type(mem) is not float:
                        continue
                    key = self._keys.get((k, name, pid))
                    if key is None:
                        key = self._keys[(k, name, pid)] = f"procs[{name or f'pid {pid}'}].mem"
                    values[key] = values.get(key, 0) + mem
                    if ptype in _GRAPHICS_TYPES:
                        gfx += mem
                    if pid in pids:
                        worker_mem = (worker_mem or 0) + mem
            values["gfx_procs_mem"] = gfx
            if worker_mem is not None:
                values["worker_gpu_mem"] = worker_mem
        cols.add(t, values)

    def _host(self, ev: dict, t: float) -> None:
        if "dsgone" in ev or "dsnew" in ev or "ctxgone" in ev:
            self.display_events.append({"ev": "host", "t": t, **{k: ev[k] for k in ("dsgone", "dsnew", "ctxgone")
                                                                  if type(ev.get(k)) is list}})
        values: dict = {}
        carry = self._host_carry
        for k, v in ev.items():
            tv = type(v)
            if tv is int or tv is float:
                if k in ENVELOPE:
                    continue
                name = _HOST_NAMES.get(k, k)
                values[name] = v
                if name in HOST_CARRY:
                    carry[name] = v
            elif k in _HOST_LIST_NAMES and tv is list:
                for name, x in zip(_HOST_LIST_NAMES[k], v):
                    if type(x) is int or type(x) is float:
                        values[name] = x
            elif k == "wk" and tv is list:          # one entry per worker process tree
                for w in v:
                    if type(w) is not dict:
                        continue
                    for short, name in _WORKER_FIELDS:
                        x = w.get(short)
                        if type(x) is int or type(x) is float:
                            values[name] = values.get(name, 0) + x
            elif tv is dict and k not in _DISPLAY_LIST_KEYS:
                for k2, v2 in v.items():
                    if type(v2) is int or type(v2) is float:
                        values[f"{k}.{k2}"] = v2
        for name, v in carry.items():
            if name not in values:
                values[name] = v
        for lk in ("ds",) + _DISPLAY_LIST_KEYS:
            lst = ev.get(lk)
            if type(lst) is not list:
                continue
            seen: dict[str, int | None] = {}
            for p in lst:
                if type(p) is not dict:
                    continue
                pid = p.get("p", p.get("pid"))
                name = str(p.get("nm") or p.get("name") or f"pid {pid}")
                seen.setdefault(name, pid if type(pid) is int else None)
                keys = self._keys
                for k, v in p.items():
                    if (type(v) is int or type(v) is float) and k != "p" and k != "pid":
                        key = keys.get((name, k))
                        if key is None:
                            key = keys[(name, k)] = f"display[{name}].{_DISPLAY_FIELDS.get(k, k)}"
                        values[key] = values.get(key, 0) + v
            self._track_display(t, seen)
            break
        self.host.add(t, values)

    def _track_display(self, t: float, seen: dict[str, int | None]) -> None:
        """Note when a display-server/compositor process restarts (new pid), vanishes or appears."""
        known = self._display_pids
        changes = self.display_changes
        for name, pid in seen.items():
            if name not in known:
                if self._display_seen_any:   # not part of the first sample's set: it appeared mid-run
                    changes.append({"t": t, "name": name, "change": "appeared", "old_pid": None, "new_pid": pid})
            elif known[name] is None:
                old = self._display_last_pid.get(name)
                changes.append({"t": t, "name": name, "change": "restarted" if old not in (None, pid) else "appeared",
                                "old_pid": old, "new_pid": pid})
            elif pid is not None and known[name] != pid:
                changes.append({"t": t, "name": name, "change": "restarted", "old_pid": known[name],
                                "new_pid": pid})
            known[name] = pid
            if pid is not None:
                self._display_last_pid[name] = pid
        for name, old in known.items():
            if name not in seen and old is not None:
                changes.append({"t": t, "name": name, "change": "vanished", "old_pid": old, "new_pid": None})
                known[name] = None
        if seen:
            self._display_seen_any = True

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


def fold(path: str | os.PathLike) -> RunRecord:
    """Fold one journal file into its record. Never raises on damaged content: a torn last line and
    lines that are not JSON are counted in ``torn_tail`` / ``bad_lines``. Raises ``OSError`` only when
    the file cannot be read at all."""
    rec = RunRecord()
    stream = JournalStream(path)
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


def load(run_dir: str | os.PathLike) -> RunRecord:
    """The record of a run directory; a clear :class:`StressError` when it is not one."""
    rd = RunDir(run_dir)
    if not rd.journal.is_file():
        raise StressError(f"{rd.root}: no journal.jsonl there; give a run directory (artifacts/<run-id>)")
    try:
        rec = fold(rd.journal)
    except OSError as exc:
        raise StressError(f"{rd.journal}: cannot be read ({exc.strerror or exc})") from None
    if rec.format is not None and rec.format > JOURNAL_FORMAT:
        rec.newer_format = rec.format
    return rec
