"""A minimal native Wayland client over the wire protocol: one ``xdg_toplevel`` showing known pixels
from a ``wl_shm`` buffer. No toolkit, no libwayland: a Unix socket, ``os.memfd_create`` and
``socket.send_fds``, so the display round trip exercises the compositor's own path (not Xwayland).

Used by :mod:`stress.probes.display_wayland` (the ``display-wayland`` probe kind) and by the tests
to put content on a headless compositor's screen (``python -m stress.probes.wl_client W H SEED``).

Wire format (wayland.xml): every message is ``object id (u32)``, ``size << 16 | opcode (u32)``, then
the arguments, each padded to 4 bytes; strings are length (with the NUL) + bytes; file descriptors
travel as SCM_RIGHTS ancillary data.
"""
from __future__ import annotations

import mmap
import os
import select
import socket
import struct
import sys
import time

import numpy as np

WL_SHM_FORMAT_XRGB8888 = 1


class WaylandError(Exception):
    """The compositor is unreachable, closed the connection or reported a protocol error."""


def _string(s: str) -> bytes:
    b = s.encode() + b"\0"
    return struct.pack("<I", len(b)) + b + b"\0" * (-len(b) % 4)


class Connection:
    """One client connection: object ids, outgoing requests, incoming events."""

    def __init__(self, path: str, timeout: float):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as exc:
            self.sock.close()
            raise WaylandError(f"cannot connect to the compositor at {path}: {exc}") from None
        self._next = 2          # 1 is wl_display
        self._buf = b""
        self.interfaces: dict[int, str] = {1: "wl_display"}

    def new_id(self, interface: str) -> int:
        oid = self._next
        self._next += 1
        self.interfaces[oid] = interface
        return oid

    def request(self, obj: int, opcode: int, payload: bytes = b"", fds: list[int] | None = None) -> None:
        msg = struct.pack("<II", obj, ((8 + len(payload)) << 16) | opcode) + payload
        try:
            if fds:
                socket.send_fds(self.sock, [msg], fds)
            else:
                self.sock.sendall(msg)
        except OSError as exc:
            raise WaylandError(f"compositor connection lost: {exc}") from None

    def events(self, deadline: float):
        """Yield ``(object, opcode, payload)`` until the deadline; raises WaylandError on EOF or error."""
        while True:
            while len(self._buf) >= 8:
                obj, word = struct.unpack_from("<II", self._buf)
                size = word >> 16
                if size < 8:
                    raise WaylandError("malformed message from the compositor")
                if len(self._buf) < size:
                    break
                payload, self._buf = self._buf[8:size], self._buf[size:]
                if obj == 1 and word & 0xFFFF == 0:   # wl_display.error(object, code, message)
                    bad, code = struct.unpack_from("<II", payload)
                    n = struct.unpack_from("<I", payload, 8)[0]
                    text = payload[12:12 + n - 1].decode(errors="replace")
                    raise WaylandError(f"protocol error on {self.interfaces.get(bad, bad)} (code {code}): {text}")
                yield obj, word & 0xFFFF, payload
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if not select.select([self.sock], [], [], left)[0]:
                return
            try:
                chunk = self.sock.recv(65536)
            except OSError as exc:
                raise WaylandError(f"compositor connection lost: {exc}") from None
            if not chunk:
                raise WaylandError("the compositor closed the connection")
            self._buf += chunk

    def roundtrip(self, deadline: float, on_event=None) -> None:
        """wl_display.sync and wait for its done event, handing every other event to ``on_event``."""
        cb = self.new_id("wl_callback")
        self.request(1, 0, struct.pack("<I", cb))
        for obj, op, payload in self.events(deadline):
            if obj == cb:
                return
            if on_event:
                on_event(obj, op, payload)
        raise WaylandError("the compositor did not answer (wl_display.sync) in time")

    def close(self) -> None:
        self.sock.close()


class Globals:
    """The compositor's globals (``wl_registry``), read with one round trip, and binding them."""

    def __init__(self, c: Connection, deadline: float):
        self.conn = c
        self.registry = c.new_id("wl_registry")
        c.request(1, 1, struct.pack("<I", self.registry))
        self.offered: dict[str, tuple[int, int]] = {}

        def on_global(obj, op, payload):
            if obj == self.registry and op == 0:
                name = struct.unpack_from("<I", payload)[0]
                n = struct.unpack_from("<I", payload, 4)[0]
                iface = payload[8:8 + n - 1].decode()
                version = struct.unpack_from("<I", payload, 8 + n + (-n % 4))[0]
                self.offered[iface] = (name, version)

        c.roundtrip(deadline, on_global)

    def require(self, *interfaces: str) -> None:
        missing = [i for i in interfaces if i not in self.offered]
        if missing:
            raise WaylandError(f"the compositor does not offer {', '.join(missing)}")

    def bind(self, iface: str, version: int) -> int:
        oid = self.conn.new_id(iface)
        name, have = self.offered[iface]
        self.conn.request(self.registry, 0, struct.pack("<I", name) + _string(iface)
                          + struct.pack("<II", min(version, have), oid))
        return oid


def shm_memory(rgb: np.ndarray) -> tuple[int, mmap.mmap]:
    """A memfd holding ``rgb`` ((H, W, 3) uint8) as XRGB8888, and its mapping: the client-side half of
    a ``wl_shm`` buffer, which needs no connection (a probe makes it before it starts timing)."""
    h, w = rgb.shape[:2]
    fd = os.memfd_create("stress-wl", os.MFD_CLOEXEC)
    mem = None
    try:
        os.ftruncate(fd, w * 4 * h)
        mem = mmap.mmap(fd, w * 4 * h)
        paint(mem, rgb)
    except BaseException:
        if mem is not None:
            mem.close()
        os.close(fd)
        raise
    return fd, mem


def shm_buffer(c: Connection, shm: int, rgb: np.ndarray, keep: bool = False,
               memory: tuple[int, mmap.mmap] | None = None) -> tuple[int, mmap.mmap | None]:
    """A ``wl_buffer`` (XRGB8888) holding ``rgb`` ((H, W, 3) uint8); ``keep``: also its memory, mapped
    (a client that redraws writes there: :func:`paint`), else None. ``memory``: what
    :func:`shm_memory` already made for ``rgb``: its fd is closed here, and its mapping too when this fails."""
    h, w = rgb.shape[:2]
    stride = w * 4
    size = stride * h
    fd, mem = memory if memory is not None else shm_memory(rgb)
    try:
        pool = c.new_id("wl_shm_pool")
        c.request(shm, 0, struct.pack("<Ii", pool, size), fds=[fd])
        buffer = c.new_id("wl_buffer")
        c.request(pool, 0, struct.pack("<IiiiiI", buffer, 0, w, h, stride, WL_SHM_FORMAT_XRGB8888))
        c.request(pool, 1)   # destroy the pool; the buffer keeps the memory
    except BaseException:
        mem.close()
        raise
    finally:
        os.close(fd)     # the compositor holds its own copy of the fd once sent
    if not keep:
        mem.close()
        return buffer, None
    return buffer, mem


def paint(mem: mmap.mmap, rgb: np.ndarray) -> None:
    """Write ``rgb`` into a buffer's memory as XRGB8888 (little-endian B, G, R, X)."""
    h, w = rgb.shape[:2]
    px = np.frombuffer(mem, dtype=np.uint8).reshape(h, w, 4)
    px[..., 0], px[..., 1], px[..., 2], px[..., 3] = rgb[..., 2], rgb[..., 1], rgb[..., 0], 255
    del px


class Window:
    """An xdg_toplevel with an XRGB8888 buffer holding ``rgb`` ((H, W, 3) uint8), configured and ready;
    :meth:`show` maps it (``show=True``: at once)."""

    def __init__(self, path: str, rgb: np.ndarray, title: str = "stress-probe", timeout: float = 5.0,
                 show: bool = True):
        self._timeout = timeout
        memory = shm_memory(rgb)        # the pixels are painted before the connection exists
        # Ours until shm_buffer takes it (it closes the fd, and the mapping if it fails).
        self._memory: tuple[int, mmap.mmap] | None = memory
        # perf_counter when the connection began: a new window's latency (display-wayland) runs from here.
        self.started = time.perf_counter()
        deadline = time.monotonic() + timeout
        c = None
        try:
            self.conn = c = Connection(path, timeout)
            self._setup(c, rgb, title, deadline, memory)
            if show:
                self.show()
        except BaseException:
            if c is not None:
                c.close()
            if self._memory is not None:
                os.close(memory[0])
                memory[1].close()
            raise

    def _setup(self, c: Connection, rgb: np.ndarray, title: str, deadline: float,
               memory: tuple[int, mmap.mmap]) -> None:
        g = Globals(c, deadline)
        g.require("wl_compositor", "wl_shm", "xdg_wm_base")
        compositor, shm, self.wm_base = g.bind("wl_compositor", 4), g.bind("wl_shm", 1), g.bind("xdg_wm_base", 1)
        self.shm = shm                         # a client that redraws makes its own buffers from it
        # wp_presentation: when the frame with our commit reached the screen, in the compositor's clock.
        self.presentation = g.bind("wp_presentation", 1) if "wp_presentation" in g.offered else None
        self.clock_id: int | None = None
        self._feedback: int | None = None
        self.presented: float | None = None    # seconds, in clock ``clock_id``
        self.discarded = False
        self.committed: float | None = None    # the commit that mapped the window, same clock
        h, w = rgb.shape[:2]
        self._memory = None
        buffer, _ = shm_buffer(c, shm, rgb, memory=memory)
        self.surface = c.new_id("wl_surface")
        c.request(compositor, 0, struct.pack("<I", self.surface))
        self.xdg_surface = c.new_id("xdg_surface")
        c.request(self.wm_base, 2, struct.pack("<II", self.xdg_surface, self.surface))
        self.toplevel = c.new_id("xdg_toplevel")
        c.request(self.xdg_surface, 1, struct.pack("<I", self.toplevel))
        c.request(self.toplevel, 2, _string(title))
        c.request(self.toplevel, 3, _string(title))          # app_id
        c.request(self.surface, 6)                           # commit without a buffer: ask for configure
        serial = None
        for obj, op, payload in c.events(deadline):
            if obj == self.xdg_surface and op == 0:          # configure(serial)
                serial = struct.unpack_from("<I", payload)[0]
                break
            self._on_event(obj, op, payload)                 # ping -> pong, presentation clock
        if serial is None:
            raise WaylandError("the compositor did not configure the window in time")
        c.request(self.xdg_surface, 4, struct.pack("<I", serial))   # ack_configure
        self._buffer, self._size = buffer, (w, h)

    def show(self) -> None:
        """Attach the buffer and commit (the window is mapped from here), then wait until the
        compositor has processed it (wl_display.sync)."""
        c, (w, h) = self.conn, self._size
        if self.presentation is not None and self.clock_id is not None:
            self._feedback = c.new_id("wp_presentation_feedback")
            c.request(self.presentation, 1, struct.pack("<II", self.surface, self._feedback))
        c.request(self.surface, 1, struct.pack("<Iii", self._buffer, 0, 0))  # attach
        c.request(self.surface, 2, struct.pack("<iiii", 0, 0, w, h))         # damage
        self.committed = time.clock_gettime(self.clock_id) if self.clock_id is not None else None
        c.request(self.surface, 6)                                           # commit
        c.roundtrip(time.monotonic() + self._timeout, self._on_event)

    def presentation_s(self) -> float | None:
        """Seconds from the mapping commit to the compositor presenting that frame, if it said so."""
        if self.presented is None or self.committed is None:
            return None
        return max(0.0, self.presented - self.committed)

    def _on_event(self, obj: int, op: int, payload: bytes) -> None:
        if obj == self.presentation and op == 0:          # clock_id(u32)
            self.clock_id = struct.unpack_from("<I", payload)[0]
        elif obj == self._feedback and op == 1:           # presented(tv_sec_hi, tv_sec_lo, tv_nsec, ...)
            hi, lo, nsec = struct.unpack_from("<III", payload)
            self.presented = ((hi << 32) | lo) + nsec / 1e9
        elif obj == self._feedback and op == 2:           # discarded
            self.discarded = True
        elif obj == self.wm_base and op == 0:
            self.conn.request(self.wm_base, 3, payload[:4])
        elif obj == self.xdg_surface and op == 0:
            self.conn.request(self.xdg_surface, 4, payload[:4])
            if self.committed is not None and self.presented is None and self.presentation is not None:
                # A re-configure (a tiling compositor sizing the new window) makes us commit again, which
                # discards the first commit's feedback: ask again; the same pixels, first presentation wins.
                self._feedback = self.conn.new_id("wp_presentation_feedback")
                self.conn.request(self.presentation, 1, struct.pack("<II", self.surface, self._feedback))
                self.discarded = False
            self.conn.request(self.surface, 6)

    def dispatch(self, seconds: float = 0.0) -> None:
        """Answer pings and configures for up to ``seconds`` (a compositor kills unresponsive clients)."""
        for obj, op, payload in self.conn.events(time.monotonic() + seconds):
            self._on_event(obj, op, payload)

    def close(self) -> None:
        """Unmap and disconnect: the compositor destroys every object of this client."""
        try:
            self.conn.request(self.toplevel, 0)
            self.conn.request(self.xdg_surface, 0)
            self.conn.request(self.surface, 0)
            self.conn.roundtrip(time.monotonic() + 2.0, self._on_event)
        except WaylandError:
            pass
        finally:
            self.conn.close()


def socket_path(env: dict[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    name = env.get("WAYLAND_DISPLAY")
    if not name:
        return None
    if name.startswith("/"):
        return name
    rt = env.get("XDG_RUNTIME_DIR")
    return os.path.join(rt, name) if rt else None


def main(argv: list[str]) -> int:
    """``python -m stress.probes.wl_client W H SEED``: map a test pattern, say ``ready``, hold it until
    stdin closes (a desktop's other window, for tests and demos)."""
    from stress.probes.common import make_pattern

    w, h, seed = (int(a) for a in argv[:3])
    path = socket_path()
    if not path:
        print("WAYLAND_DISPLAY is not set", file=sys.stderr)
        return 2
    win = Window(path, make_pattern(w, h, seed), title="stress-content")
    print("ready", flush=True)
    while not select.select([sys.stdin], [], [], 0)[0]:
        win.dispatch(0.1)
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
