"""Follow the kernel log for NVIDIA driver (NVRM, Xid, nvidia-modeset) and DRM lines.

Sources, tried in this order unless the scenario names one: ``journalctl -k -f`` (needs the
systemd-journal or adm group, and a running journald), ``/dev/kmsg`` (needs CAP_SYSLOG or
``kernel.dmesg_restrict=0``), ``dmesg --follow-new`` (same permission as /dev/kmsg, read through
syslog(2) where /dev/kmsg is missing). :func:`probe` says which one is readable and, for each that is
not, why and what would grant it. :class:`KernelLogFollower` reads one of them in a thread, keeps the
lines that match :data:`FILTER`, and hands each one (and each parsed Xid) to callbacks.
"""
from __future__ import annotations

import errno
import grp
import json
import os
import pwd
import re
import select
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from stress.hw.xid import XidLine, parse_xid_line

PATTERNS_FILE = Path(__file__).with_name("kernel_patterns.json")


@dataclass(frozen=True)
class KernelPattern:
    """One entry of :data:`PATTERNS_FILE`: a kernel-log line shape with its class and meaning."""

    id: str
    driver: str
    cls: str
    severity: str
    regex: re.Pattern
    meaning: str

    def as_dict(self) -> dict:
        return {"id": self.id, "driver": self.driver, "class": self.cls, "severity": self.severity,
                "meaning": self.meaning}


def load_patterns(path: Path = PATTERNS_FILE) -> list[KernelPattern]:
    """The classification table. Raises ValueError naming the entry and key that is wrong."""
    data = json.loads(path.read_text(encoding="utf-8"))
    out, seen = [], set()
    for n, e in enumerate(data.get("patterns", [])):
        where = f"{path}: patterns[{n}]"
        missing = [k for k in ("id", "driver", "class", "severity", "pattern", "meaning") if not e.get(k)]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        if e["id"] in seen:
            raise ValueError(f"{where}: id {e['id']!r} appears twice")
        if e["severity"] not in ("error", "warning"):
            raise ValueError(f"{where}: severity must be error or warning, not {e['severity']!r}")
        try:
            rx = re.compile(e["pattern"])
        except re.error as exc:
            raise ValueError(f"{where}: pattern does not compile: {exc}") from None
        seen.add(e["id"])
        out.append(KernelPattern(e["id"], e["driver"], e["class"], e["severity"], rx, e["meaning"]))
    return out


PATTERNS: list[KernelPattern] = load_patterns()
_BY_ID = {p.id: p for p in PATTERNS}


def classify_line(message: str, patterns: list[KernelPattern] | None = None) -> KernelPattern | None:
    """The first table entry matching a kernel-log message (Xid lines excluded: see stress.hw.xid)."""
    if parse_xid_line(message) is not None:
        return None
    for p in PATTERNS if patterns is None else patterns:
        if p.regex.search(message):
            return p
    return None


def pattern(pattern_id: str) -> KernelPattern | None:
    return _BY_ID.get(pattern_id)


# NVIDIA's kernel modules (NVRM = nvidia.ko, nvidia-modeset, nvidia-drm), the DRM core and other DRM
# drivers ("[drm] ...", "[drm:func] *ERROR* ...", "amdgpu 0000:..: ...", "i915 ..."), and every line
# shape of the classification table (some, like the PCI "resource sanity check", name no driver).
FILTER = re.compile(r"NVRM|\bXid\b|nvidia-modeset|nvidia-drm|\[drm|\bdrm:|\bDRM\b|\bamdgpu\b|\bi915\b|"
                    + "|".join(f"(?:{p.regex.pattern})" for p in PATTERNS))

JOURNAL_GROUPS = ("systemd-journal", "adm", "wheel")
JOURNALD_SOCKET = "/run/systemd/journal/socket"
_CAP_SYSLOG = 34


@dataclass
class KernelLogSource:
    """How to read the kernel log: a command whose stdout we follow, or a device file."""

    via: str                         # "journalctl", "kmsg", "dmesg" (or anything, in tests)
    fmt: str                         # line format: "journal", "kmsg", "dmesg"
    argv: list[str] | None = None
    path: str | None = None
    min_uptime: float | None = None  # "dmesg" without --follow-new: drop lines older than this


@dataclass
class Attempt:
    via: str
    ok: bool
    reason: str | None = None
    fix: str | None = None

    def as_dict(self) -> dict:
        return {"via": self.via, "ok": self.ok, "reason": self.reason, "fix": self.fix}


def dmesg_restrict() -> int | None:
    try:
        with open("/proc/sys/kernel/dmesg_restrict") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def has_cap_syslog() -> bool:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYSLOG & 1)
    except (OSError, ValueError):
        pass
    return os.geteuid() == 0


def user_groups() -> list[str]:
    names = []
    for gid in {os.getegid(), *os.getgroups()}:
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return sorted(names)


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


_KMSG_FIX = ("sudo sysctl kernel.dmesg_restrict=0 (until reboot), or give the Python interpreter "
             "CAP_SYSLOG (sudo setcap cap_syslog+ep <python>), or run as root")


def _probe_journalctl() -> Attempt:
    exe = shutil.which("journalctl")
    if not exe:
        return Attempt("journalctl", False, "journalctl not installed (no systemd journal)", None)
    groups = user_groups()
    if os.geteuid() != 0 and not set(groups) & set(JOURNAL_GROUPS):
        return Attempt("journalctl", False,
                       f"user {_user()} is not in the systemd-journal or adm group, so journalctl "
                       "does not show kernel messages",
                       f"sudo usermod -aG systemd-journal {_user()} (then log out and in)")
    if not os.path.exists(JOURNALD_SOCKET):
        return Attempt("journalctl", False, "systemd-journald is not running (no new lines would arrive)",
                       "start systemd-journald; until then /dev/kmsg or dmesg is used if readable")
    try:
        # Without -q: that is what makes journalctl say "No journal files were found".
        r = subprocess.run([exe, "-k", "-n", "1", "--no-pager", "-o", "short-precise"],
                           capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Attempt("journalctl", False, f"journalctl did not answer: {exc}", None)
    err = (r.stderr or "").strip()
    if "No journal files" in err:
        return Attempt("journalctl", False, "no journal files (journald not running here)",
                       "start systemd-journald, or use /dev/kmsg")
    if r.returncode != 0:
        return Attempt("journalctl", False, f"journalctl failed: {err.splitlines()[0] if err else r.returncode}",
                       None)
    return Attempt("journalctl", True)


def _probe_kmsg(path: str = "/dev/kmsg") -> Attempt:
    if not os.path.exists(path):
        return Attempt("kmsg", False, f"{path} does not exist", None)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except PermissionError:
        return Attempt("kmsg", False,
                       f"permission denied on {path} (kernel.dmesg_restrict={dmesg_restrict()}, "
                       f"CAP_SYSLOG {'present' if has_cap_syslog() else 'missing'})", _KMSG_FIX)
    except OSError as exc:
        return Attempt("kmsg", False, f"cannot open {path}: {exc.strerror}", None)
    try:
        os.lseek(fd, 0, os.SEEK_END)
        try:
            os.read(fd, 8192)
        except BlockingIOError:
            pass   # nothing new: readable
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                pass   # records were overwritten meanwhile: still readable
            else:
                return Attempt("kmsg", False, f"cannot read {path}: {exc.strerror}", _KMSG_FIX)
    finally:
        os.close(fd)
    return Attempt("kmsg", True)


def _dmesg_follow_new(exe: str) -> bool:
    try:
        r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=5, stdin=subprocess.DEVNULL)
        return "--follow-new" in (r.stdout + r.stderr)
    except (OSError, subprocess.TimeoutExpired):
        return False


def _probe_dmesg() -> Attempt:
    exe = shutil.which("dmesg")
    if not exe:
        return Attempt("dmesg", False, "dmesg not installed", "sudo apt-get install util-linux")
    try:
        r = subprocess.run([exe], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=10,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Attempt("dmesg", False, f"dmesg did not answer: {exc}", None)
    if r.returncode != 0:
        err = (r.stderr or "").strip().splitlines()
        return Attempt("dmesg", False, f"dmesg failed: {err[0] if err else r.returncode}", _KMSG_FIX)
    return Attempt("dmesg", True)


def _uptime() -> float | None:
    try:
        with open("/proc/uptime") as fh:
            return float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _source_for(via: str) -> KernelLogSource:
    if via == "journalctl":
        return KernelLogSource("journalctl", "journal",
                               argv=[shutil.which("journalctl") or "journalctl", "-k", "-f", "-n", "0", "-q",
                                     "--no-pager", "-o", "short-precise"])
    if via == "kmsg":
        return KernelLogSource("kmsg", "kmsg", path="/dev/kmsg")
    exe = shutil.which("dmesg") or "dmesg"
    if _dmesg_follow_new(exe):
        return KernelLogSource("dmesg", "dmesg", argv=[exe, "--follow-new", "-T"])
    # Old util-linux: --follow prints the whole buffer first; drop what is older than now.
    return KernelLogSource("dmesg", "dmesg", argv=[exe, "--follow"], min_uptime=_uptime())


_PROBES: dict[str, Callable[[], Attempt]] = {
    "journalctl": _probe_journalctl, "kmsg": _probe_kmsg, "dmesg": _probe_dmesg}


STAND_IN_ENV = "STRESS_KERNEL_LOG_COMMAND"
STAND_IN_FORMAT_ENV = "STRESS_KERNEL_LOG_FORMAT"


def probe(preferred: str = "auto") -> tuple[KernelLogSource | None, list[Attempt]]:
    """The first readable source (or the one asked for) and every attempt, with reasons and fixes.

    ``STRESS_KERNEL_LOG_COMMAND`` (a shell command) replaces every real source: its stdout is followed
    as the kernel log, in the format ``STRESS_KERNEL_LOG_FORMAT`` names (journal, kmsg, dmesg; default
    journal). Tests use it to drive recorded real log lines through a whole ``gpu-stress run``."""
    command = os.environ.get(STAND_IN_ENV)
    if command:
        fmt = os.environ.get(STAND_IN_FORMAT_ENV) or "journal"
        return KernelLogSource("stand-in", fmt, argv=["sh", "-c", command]), [Attempt("stand-in", True)]
    order = list(_PROBES) if preferred == "auto" else [preferred]
    attempts = []
    for via in order:
        a = _PROBES[via]()
        attempts.append(a)
        if a.ok:
            return _source_for(via), attempts
    return None, attempts


# ---- line formats ----
# journal (short-precise): "Nov 20 00:22:01.123456 host kernel: NVRM: Xid ..."
# kmsg:                    "3,1234,5678901,-;NVRM: Xid ..."   (continuation lines start with a space)
# dmesg -T:                "[Thu Nov 20 00:22:01 2025] NVRM: Xid ..."; dmesg: "[  269.516977] NVRM: ..."
_DMESG_RE = re.compile(r"^\[\s*(?P<ts>[^\]]*)\]\s?(?P<msg>.*)$")


def split_line(line: str, fmt: str) -> tuple[str | None, float | None]:
    """``(message, uptime-seconds-or-None)`` of one raw line; message None for lines to skip."""
    if fmt == "kmsg":
        if line.startswith(" "):
            return None, None          # dictionary continuation ("  SUBSYSTEM=pci")
        head, sep, msg = line.partition(";")
        if not sep:
            return line, None
        parts = head.split(",")
        ts = None
        if len(parts) >= 3:
            try:
                ts = int(parts[2]) / 1e6
            except ValueError:
                ts = None
        return msg, ts
    if fmt == "journal":
        i = line.find(" kernel: ")
        return (line[i + 9:] if i >= 0 else line), None
    if fmt == "dmesg":
        m = _DMESG_RE.match(line)
        if not m:
            return line, None
        try:
            ts = float(m.group("ts"))
        except ValueError:
            ts = None
        return m.group("msg"), ts
    return line, None


@dataclass
class FollowerStats:
    lines: int = 0
    matched: int = 0
    xids: int = 0
    overruns: int = 0     # /dev/kmsg records lost because the ring buffer wrapped before we read
    errors: int = 0       # callbacks that raised (their line is lost, the follower goes on)
    ended: str | None = None


class KernelLogFollower:
    """Reads a kernel-log source in a thread; ``on_line(raw, message)`` for each line matching
    :data:`FILTER`, ``on_xid(parsed, raw)`` for each Xid, ``on_end(reason)`` if the source ends by
    itself (journalctl killed, pipe closed). The follower owns ``fd`` and closes it in :meth:`stop`."""

    def __init__(self, fd: int, fmt: str, *, on_line: Callable[[str, str], None],
                 on_xid: Callable[[XidLine, str], None] | None = None,
                 on_end: Callable[[str], None] | None = None,
                 proc: subprocess.Popen | None = None, record_mode: bool = False,
                 min_uptime: float | None = None, via: str = "fd"):
        self.fd = fd
        self.fmt = fmt
        self.via = via
        self.on_line = on_line
        self.on_xid = on_xid
        self.on_end = on_end
        self.proc = proc
        self.record_mode = record_mode      # /dev/kmsg: one read() returns one record
        self.min_uptime = min_uptime
        self.stats = FollowerStats()
        self.cpu_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._buf = b""

    @classmethod
    def open(cls, source: KernelLogSource, **callbacks: Callable) -> "KernelLogFollower":
        """Start reading ``source`` (spawn the command or open the device). Raises OSError."""
        if source.path:
            fd = os.open(source.path, os.O_RDONLY | os.O_NONBLOCK)
            if source.fmt == "kmsg":
                os.lseek(fd, 0, os.SEEK_END)   # only what happens from now on
            return cls(fd, source.fmt, record_mode=source.fmt == "kmsg", via=source.via, **callbacks)
        assert source.argv
        # A session of its own: Ctrl-C in the terminal goes to the runner, which stops us in order.
        proc = subprocess.Popen(source.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        assert proc.stdout is not None
        return cls(proc.stdout.fileno(), source.fmt, proc=proc, min_uptime=source.min_uptime,
                   via=source.via, **callbacks)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"stress-kernel-log-{self.via}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    ready, _, _ = select.select([self.fd], [], [], 0.25)
                except (OSError, ValueError):
                    self._end("source closed")
                    return
                if not ready:
                    continue
                try:
                    chunk = os.read(self.fd, 16384)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno == errno.EPIPE:      # kmsg ring buffer wrapped: next read goes on
                        self.stats.overruns += 1
                        continue
                    self._end(f"read failed: {exc.strerror}")
                    return
                if not chunk:
                    rc = None
                    if self.proc:  # EOF can arrive before the process is reaped: give it a moment
                        try:
                            rc = self.proc.wait(timeout=1.0)
                        except subprocess.TimeoutExpired:
                            rc = None
                    self._end("source ended" + (f" (exit status {rc})" if rc is not None else ""))
                    return
                try:
                    self._feed(chunk)
                except Exception:  # noqa: BLE001 - a failing callback must not stop the follower
                    self.stats.errors += 1
        finally:
            self.cpu_s = time.thread_time()

    def _end(self, reason: str) -> None:
        if self._buf:
            self._handle(self._buf.decode("utf-8", "replace"))
            self._buf = b""
        if not self._stop.is_set():
            self.stats.ended = reason
            if self.on_end:
                self.on_end(reason)

    def _feed(self, chunk: bytes) -> None:
        if self.record_mode:
            self._handle(chunk.decode("utf-8", "replace").split("\n", 1)[0])
            return
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        for raw in lines:
            self._handle(raw.decode("utf-8", "replace"))

    def _handle(self, raw: str) -> None:
        raw = raw.rstrip("\r\n")
        if not raw:
            return
        self.stats.lines += 1
        msg, ts = split_line(raw, self.fmt)
        if msg is None:
            return
        if self.min_uptime is not None and ts is not None and ts < self.min_uptime:
            return
        if not FILTER.search(msg):
            return
        self.stats.matched += 1
        self.on_line(raw, msg)
        if self.on_xid is not None:
            parsed = parse_xid_line(msg)
            if parsed is not None:
                self.stats.xids += 1
                self.on_xid(parsed, raw)

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop reading; end the command or close the device. True if the thread ended in time."""
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.terminate()
                self.proc.wait(timeout=min(1.0, timeout))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=1.0)
            except OSError:
                pass
        ended = True
        if self._thread is not None:
            self._thread.join(timeout)
            ended = not self._thread.is_alive()
        if ended:
            try:
                if self.proc is not None and self.proc.stdout is not None:
                    self.proc.stdout.close()
                elif self.proc is None:
                    os.close(self.fd)
            except OSError:
                pass
        return ended


__all__ = ["FILTER", "PATTERNS", "KernelPattern", "load_patterns", "classify_line", "pattern", "KernelLogSource", "Attempt", "probe", "split_line", "KernelLogFollower",
           "FollowerStats", "dmesg_restrict", "has_cap_syslog", "user_groups"]
