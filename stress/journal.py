"""The run directory and its append-only journal: the record of truth for a run.

Every event is one JSON object on one line of ``journal.jsonl``, written, flushed and fsync'd as it
happens, so a hard freeze or a reboot leaves every earlier event on disk. Readers tolerate a torn last
line (power loss mid-write). Everything else in a run directory (``run.json``, reports) is derived from
the journal and can be rebuilt from it. The event vocabulary is documented in docs/journal.md.
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

try:   # a declared dependency; json alone still reads every journal, 2.6x slower
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover
    _fast_loads = json.loads

from stress.fields import DISPLAY_EVENT_KEYS
from stress.events import RUN, Kind


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str, allow_nan=False)


def _finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +-inf from a sensor) replaced by None, recursively.
    Strings are left alone: "Infinity fabric NaN check" stays what it says."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


RESERVE_BYTES = 2 * 1024 * 1024
# Sampler ticks: what a journal on a full disk gives up first (every other event is kept, and so is a
# host tick that says a display process went away).
_SHED_WHEN_FULL = frozenset({"nvml", "host"})
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class Journal:
    """Thread-safe, append-only JSONL writer. One per run; shared by the runner, samplers and probes.

    Disk full: a reserve file (``.journal.reserve``, ``reserve_bytes``) is allocated next to the
    journal when it opens. The first write that fails for lack of space deletes the reserve and is
    retried, and from then on sampler ticks are shed (counted in a ``journal_low_space`` event), so the
    rest of the run, its verdict and ``run_end`` still fit. A write that still fails is kept in memory
    and retried with the next one; ``append`` never raises for lack of space. ``close`` deletes the
    reserve (room for run.json)."""

    def __init__(self, path: str | os.PathLike, *, fsync: bool = True, reserve_bytes: int = RESERVE_BYTES,
                 vocabulary: dict[str, Kind] = RUN):
        self.path = Path(path)
        self.vocabulary = vocabulary
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._lock = threading.Lock()
        # O_APPEND: concurrent writers (a resumed run) never overwrite each other.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.count = 0
        self.low_space = False      # the reserve was used: sampler ticks are being shed
        self.shed = 0               # sampler ticks not written for lack of space
        self.unwritten: list[bytes] = []   # events that did not fit even then (retried with the next)
        self.reserve = self.path.with_name(".journal.reserve")
        self._make_reserve(reserve_bytes)
        # A torn last line (power loss mid-write) must not swallow the next event: start a new line.
        size = os.fstat(self._fd).st_size
        if size:
            with open(self.path, "rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    os.write(self._fd, b"\n")

    def append(self, ev: str, /, **fields: Any) -> dict:
        """Write one event now. ``t`` (unix seconds) is added unless given. ``ev`` must be a kind of
        this journal's vocabulary (``stress.events``): an unknown kind is a programming error."""
        if ev not in self.vocabulary:
            raise ValueError(f"journal event kind {ev!r} is not in the vocabulary (stress/events.py)")
        rec = {"ev": ev, "t": round(fields.pop("t", None) or time.time(), 4), **fields}
        try:
            line = _dumps(rec)
        except ValueError:  # NaN/inf from a sensor: record it as null rather than lose the event
            line = _dumps(_finite(rec))
        data = (line + "\n").encode("utf-8")
        with self._lock:
            if self._fd < 0:
                raise ValueError("journal is closed")
            if self.low_space and ev in _SHED_WHEN_FULL and not DISPLAY_EVENT_KEYS & fields.keys():  # kept
                self.shed += 1
                return rec
            self.unwritten.append(data)
            self._flush_unwritten()
            self.count += 1
        return rec

    # ---- disk full ----
    def _make_reserve(self, size: int) -> None:
        if size <= 0:
            return
        try:
            fd = os.open(self.reserve, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_size < size:
                    os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
        except OSError:  # already short of space, or no fallocate: there is no reserve to fall back on
            try:
                self.reserve.unlink()
            except OSError:
                pass

    def _release_reserve(self) -> bool:
        try:
            self.reserve.unlink()
            return True
        except OSError:
            return False

    def _write_line(self, data: bytes) -> None:
        """Write one whole line or nothing (a partial write on a full disk is cut off again)."""
        before = os.fstat(self._fd).st_size
        try:
            done = os.write(self._fd, data)
            if done != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if self._fsync:
                os.fsync(self._fd)
        except OSError:
            try:
                if os.fstat(self._fd).st_size > before:
                    os.ftruncate(self._fd, before)
            except OSError:
                pass
            raise

    def _flush_unwritten(self) -> None:
        while self.unwritten:
            try:
                self._write_line(self.unwritten[0])
            except OSError as exc:
                if exc.errno not in _FULL:
                    raise
                if not self.low_space:
                    self.low_space = True
                    released = self._release_reserve()
                    note = {"ev": "journal_low_space", "t": round(time.time(), 4), "reserve_released": released,
                            "note": "the file system is full: sampler ticks (nvml, host) are no longer journalled"}
                    self.unwritten.insert(1, (_dumps(note) + "\n").encode())
                    continue
                if len(self.unwritten) > 10000:   # bounded: the oldest pending events are given up
                    del self.unwritten[: len(self.unwritten) - 10000]
                return
            self.unwritten.pop(0)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                if self.shed or self.unwritten:
                    self._release_reserve()
                    lost = len(self.unwritten)
                    self.unwritten.append((_dumps({"ev": "journal_low_space", "t": round(time.time(), 4),
                                                   "shed_ticks": self.shed, "unwritten": lost}) + "\n").encode())
                    try:
                        self._flush_unwritten()
                    except OSError:
                        pass
                os.close(self._fd)
                self._fd = -1
                self._release_reserve()   # room for run.json and the report

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class JournalContents:
    events: list[dict] = field(default_factory=list)
    torn_tail: bool = False        # the last line was cut off (crash or power loss mid-write)
    bad_lines: list[int] = field(default_factory=list)  # 1-based line numbers that were not JSON

    def of(self, *kinds: str) -> Iterator[dict]:
        return (e for e in self.events if e.get("ev") in kinds)

    def first(self, kind: str) -> dict | None:
        return next(self.of(kind), None)

    def last(self, kind: str) -> dict | None:
        found = None
        for e in self.of(kind):
            found = e
        return found


class JournalStream:
    """Iterate a journal's events one at a time; never raises on damaged content.

    After iterating, ``torn_tail`` says whether the last line was cut off mid-write and
    ``bad_lines`` lists the 1-based numbers of other lines that were not JSON objects."""

    def __init__(self, path: str | os.PathLike, *, skip_kinds: tuple[str, ...] = ()):
        self.path = Path(path)
        self.torn_tail = False
        self.bad_lines: list[int] = []
        # Lines the journal wrote for these kinds (``{"ev":"<kind>",`` first, one "ev" key) are passed
        # over unparsed: a reader that needs none of them (the redactor's facts) skips 94% of a long run.
        self._skip = tuple(f'{{"ev":"{k}",'.encode() for k in skip_kinds)

    def __iter__(self) -> Iterator[dict]:
        with open(self.path, "rb") as fh:
            raw = fh.read()
        ends_clean = raw.endswith(b"\n") or not raw
        # orjson parses a line 2.6x faster than json on an 8-hour journal. What it refuses (NaN or
        # Infinity written by an older version, invalid UTF-8, integers beyond 64 bits) goes through
        # json, which accepts those, on the line decoded with replacement characters.
        lines = raw.split(b"\n")
        del raw
        last = len(lines)
        fast, slow = _fast_loads, json.loads
        skip = self._skip
        for i, line in enumerate(lines, 1):
            if not line or line.isspace():
                continue
            if skip and line.startswith(skip) and line.count(b'"ev"') == 1 and (i < last or ends_clean):
                continue
            try:
                ev = fast(line)
            except ValueError:
                try:
                    ev = slow(line.decode("utf-8", "replace"))
                except ValueError:
                    ev = None
            if type(ev) is not dict:
                if i == last and not ends_clean:
                    self.torn_tail = True
                else:
                    self.bad_lines.append(i)
                continue
            yield ev


def read_journal(path: str | os.PathLike) -> JournalContents:
    """Read every complete event; never raises on damaged content (only on a missing file)."""
    stream = JournalStream(path)
    events = list(stream)
    return JournalContents(events=events, torn_tail=stream.torn_tail, bad_lines=stream.bad_lines)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """Write JSON so that a reader sees either the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=indent, ensure_ascii=False, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk or a read-only folder: never leave a temp file behind
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:60] or "run"


def new_run_id(name: str, now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now or time.time()))
    return f"{stamp}-{_slug(name)}-{secrets.token_hex(2)}"


class RunDir:
    """Layout of ``artifacts/<run-id>/``. Paths only; creating it is explicit."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @property
    def run_id(self) -> str:
        return self.root.name

    journal = property(lambda self: self.root / "journal.jsonl")
    run_json = property(lambda self: self.root / "run.json")
    scenario = property(lambda self: self.root / "scenario.resolved.json")
    environment = property(lambda self: self.root / "environment.json")
    outputs = property(lambda self: self.root / "outputs")
    probes = property(lambda self: self.root / "probes")
    logs = property(lambda self: self.root / "logs")

    def create(self) -> "RunDir":
        for d in (self.root, self.outputs, self.probes, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def exists(self) -> bool:
        return self.journal.exists()
