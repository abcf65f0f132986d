"""A witness on a second machine: it keeps the journal of a run and notices when the host freezes.

``gpu-stress run --witness HOST:PORT`` starts a :class:`WitnessClient` next to the run: it sends a
heartbeat every ``period`` seconds and every line of the run's journal, over one TCP connection, as
newline-delimited JSON. ``gpu-stress witness --listen HOST:PORT`` runs a :class:`WitnessServer`: it
appends the lines it receives to ``<out>/<run-id>/journal.jsonl`` and, when nothing arrived for
``misses`` heartbeat periods, records "host stopped responding at T" with the last events it
received in ``<out>/<run-id>/witness.jsonl`` (and again when the host answers again or the connection
closes without a goodbye).

The journal file on the host is the client's buffer: each (re)connection starts with ``hello``, the
witness answers how many lines it already has, and the client sends the rest from the file. So a
witness that was down, a network gap or a resumed run lose nothing. The client never blocks the run:
it reads the journal in its own thread, every socket operation has a timeout, and a witness that
cannot be reached is retried in the background.

Messages (one JSON object a line): client -> witness ``{"type": "hello", "run_id", "host", "pid",
"period", "resume"}``, ``{"type": "ev", "seq", "line"}`` (``line``: the journal line as written, ``seq``:
its 0-based number), ``{"type": "hb", "t", "seq"}`` (``seq``: lines sent so far), ``{"type": "bye"}``;
witness -> client ``{"type": "ack", "have": N}``.
"""
from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

from stress.errors import StressError

_MAX_LINE = 1 << 20          # longest message accepted by the witness (a journal line is far shorter)
_CONNECT_TIMEOUT = 1.0
_SEND_TIMEOUT = 2.0


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) -> ``(host, port)``; StressError with what to write otherwise."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise StressError(f"witness address {text!r}: write it as HOST:PORT, e.g. 192.168.1.20:7150")
    return host, int(port)


# ---------------------------------------------------------------------------------------- client
class WitnessClient:
    """Sends a run's journal and a heartbeat to a witness, from a thread of its own."""

    def __init__(self, address: str, journal_path: Path, run_id: str, *, period: float = 1.0,
                 resume: bool = False, status: Callable[[str, str | None], None] | None = None):
        self.host, self.port = parse_address(address)
        self.address = address
        self.journal_path = Path(journal_path)
        self.run_id = run_id
        self.period = float(period)
        self.resume = resume
        self.status = status           # status("connected"/"unreachable"/"lost", reason), at most once per change
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._offset = 0               # bytes of the journal already sent on this connection
        self._seq = 0                  # lines already sent (the witness's count after the ack)
        self._last_status: str | None = None
        self.sent = 0
        self.connects = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stress-witness", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """A journal line was written: send it soon. Never blocks."""
        self._wake.set()

    def stop(self, timeout: float = 3.0) -> bool:
        """Send what is left and a goodbye (bounded by ``timeout``), then close."""
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ---- the thread ----
    def _say(self, status: str, reason: str | None = None) -> None:
        if status != self._last_status:
            self._last_status = status
            if self.status:
                try:
                    self.status(status, reason)
                except Exception:
                    pass

    def _run(self) -> None:
        backoff = 0.2
        next_hb = 0.0
        while True:
            stopping = self._stop.is_set()
            if self._sock is None:
                if stopping:
                    return
                err = self._connect()
                if err:
                    self._say("unreachable", err)
                    self._stop.wait(backoff)         # new journal lines do not shorten the back-off
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.2
                self._say("connected")
            try:
                self._send_new_lines()
                now = time.monotonic()
                if stopping:
                    self._send({"type": "bye", "t": time.time(), "seq": self._seq})
                    self._close()
                    return
                if now >= next_hb:
                    self._send({"type": "hb", "t": time.time(), "seq": self._seq})
                    next_hb = now + self.period
            except OSError as exc:
                self._close()
                self._say("lost", f"{type(exc).__name__}: {exc}")
                if stopping:
                    return
                continue
            self._wake.wait(max(0.0, min(self.period, next_hb - time.monotonic())))
            self._wake.clear()

    def _connect(self) -> str | None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=_CONNECT_TIMEOUT)
        except OSError as exc:
            return f"cannot connect to {self.address}: {exc.strerror or exc}"
        try:
            sock.settimeout(_SEND_TIMEOUT)
            hello = {"type": "hello", "run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(),
                     "period": self.period, "resume": self.resume, "t": time.time()}
            sock.sendall((json.dumps(hello) + "\n").encode())
            reply = _read_line(sock, _SEND_TIMEOUT)
            have = int(json.loads(reply)["have"]) if reply else None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            sock.close()
            return f"{self.address} did not answer as a witness: {exc}"
        if have is None:
            sock.close()
            return f"{self.address} closed the connection without an answer"
        self._sock = sock
        self.connects += 1
        self._offset, self._seq = self._skip_lines(have)
        return None

    def _skip_lines(self, have: int) -> tuple[int, int]:
        """Byte offset just after the first ``have`` complete lines of the journal."""
        offset = seq = 0
        try:
            with open(self.journal_path, "rb") as fh:
                for raw in fh:
                    if seq >= have or not raw.endswith(b"\n"):
                        break
                    offset += len(raw)
                    seq += 1
        except OSError:
            pass
        return offset, seq

    def _send_new_lines(self) -> None:
        try:
            with open(self.journal_path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        for raw in data[:end + 1].splitlines():
            self._send({"type": "ev", "seq": self._seq, "line": raw.decode("utf-8", "replace")})
            self._offset += len(raw) + 1
            self._seq += 1
            self.sent += 1

    def _send(self, msg: dict) -> None:
        assert self._sock is not None
        self._sock.sendall((json.dumps(msg) + "\n").encode())

    def _close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None


def _read_line(sock: socket.socket, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer in time")
        sock.settimeout(left)
        chunk = sock.recv(4096)
        if not chunk:
            return None
        buf += chunk
        if len(buf) > _MAX_LINE:
            raise ValueError("answer too long")
    return buf.split(b"\n", 1)[0].decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------- server
class _RunRecord:
    """What the witness keeps of one run: its journal copy and the witness's own log."""

    def __init__(self, root: Path, run_id: str, keep: int):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)[:200] or "unnamed"
        self.dir = root / safe
        self.dir.mkdir(parents=True, exist_ok=True)
        self.journal = self.dir / "journal.jsonl"
        self.log = self.dir / "witness.jsonl"
        self.lock = threading.Lock()
        self.have = 0
        self.last: deque[dict] = deque(maxlen=keep)
        if self.journal.exists():
            with open(self.journal, "rb") as fh:
                for raw in fh:
                    if raw.endswith(b"\n"):
                        self.have += 1
                        self._remember(raw.decode("utf-8", "replace"))

    def _remember(self, line: str) -> None:
        try:
            self.last.append(json.loads(line))
        except ValueError:
            self.last.append({"unparsed": line[:500]})

    def add(self, seq: int, line: str) -> None:
        with self.lock:
            if seq != self.have:        # a line we have already (seq < have) or out of order
                return
            with open(self.journal, "a", encoding="utf-8") as fh:
                fh.write(line.rstrip("\n") + "\n")
            self.have += 1
            self._remember(line)

    def note(self, ev: str, **fields: Any) -> dict:
        rec = {"ev": ev, "t": round(time.time(), 4), **fields}
        with self.lock:
            with open(self.log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec, default=str) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        return rec


class WitnessServer(socketserver.ThreadingTCPServer):
    """Accepts runs; one thread per connection. ``on_note(run_id, record)`` hears every record."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], out: Path, *, misses: int = 3, keep: int = 50,
                 on_note: Callable[[str, dict], None] | None = None):
        self.out = Path(out)
        self.misses = misses
        self.keep = keep
        self.on_note = on_note
        self._records: dict[str, _RunRecord] = {}
        self._records_lock = threading.Lock()
        super().__init__(address, _Handler)

    def record(self, run_id: str) -> _RunRecord:
        with self._records_lock:
            rec = self._records.get(run_id)
            if rec is None:
                rec = self._records[run_id] = _RunRecord(self.out, run_id, self.keep)
            return rec

    def note(self, run_id: str, rec: _RunRecord, ev: str, **fields: Any) -> None:
        r = rec.note(ev, **fields)
        if self.on_note:
            self.on_note(run_id, r)


class _Handler(socketserver.BaseRequestHandler):
    server: WitnessServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        try:
            line = _read_line(sock, 10.0)
            hello = json.loads(line) if line else None
        except (OSError, ValueError):
            return
        if not isinstance(hello, dict) or hello.get("type") != "hello" or not hello.get("run_id"):
            return
        run_id = str(hello["run_id"])
        period = min(max(float(hello.get("period") or 1.0), 0.05), 600.0)
        rec = self.server.record(run_id)
        srv = self.server
        srv.note(run_id, rec, "connected", peer=peer, host=hello.get("host"), pid=hello.get("pid"),
                 period=period, resume=bool(hello.get("resume")), have=rec.have)
        try:
            sock.sendall((json.dumps({"type": "ack", "have": rec.have}) + "\n").encode())
        except OSError:
            return
        silence = srv.misses * period
        last_heard = time.monotonic()
        last_hb_t: float | None = None
        stopped = False
        buf = b""
        sock.settimeout(min(period / 4, 0.25))
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                chunk = None
            except OSError as exc:
                srv.note(run_id, rec, "connection_lost", at=time.time(), reason=str(exc),
                         last_heartbeat=last_hb_t, last_events=list(rec.last))
                return
            now = time.monotonic()
            if chunk is None:
                if not stopped and now - last_heard > silence:
                    stopped = True
                    at = time.time() - (now - last_heard)
                    srv.note(run_id, rec, "stopped_responding", at=round(at, 4),
                             message=f"host stopped responding at {_iso(at)}",
                             silent_s=round(now - last_heard, 3), period=period, last_heartbeat=last_hb_t,
                             events_received=rec.have, last_events=list(rec.last))
                continue
            if chunk == b"":
                srv.note(run_id, rec, "connection_closed", at=time.time(),
                         message=f"connection closed without a goodbye at {_iso(time.time())} "
                                 "(run killed, or the host's network went away)",
                         last_heartbeat=last_hb_t, events_received=rec.have, last_events=list(rec.last))
                return
            last_heard = now
            if stopped:
                stopped = False
                srv.note(run_id, rec, "responding_again", at=time.time(), events_received=rec.have)
            buf += chunk
            *lines, buf = buf.split(b"\n")
            if len(buf) > _MAX_LINE:
                srv.note(run_id, rec, "protocol_error", reason="line too long")
                return
            for raw in lines:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                kind = msg.get("type") if isinstance(msg, dict) else None
                if kind == "ev" and isinstance(msg.get("seq"), int) and isinstance(msg.get("line"), str):
                    rec.add(msg["seq"], msg["line"])
                elif kind == "hb":
                    last_hb_t = msg.get("t")
                elif kind == "bye":
                    srv.note(run_id, rec, "goodbye", at=time.time(), events_received=rec.have)
                    return


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


__all__ = ["parse_address", "WitnessClient", "WitnessServer"]
