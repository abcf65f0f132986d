"""Screen capture backends: mss on X11; on Wayland grim, the compositor's own screenshooter
(:mod:`stress.probes.wl_capture`: weston, KWin) or the xdg-desktop-portal, chosen by the compositor.

Each backend returns frames as (H, W, 3) RGB uint8 arrays. A backend that cannot work in this
session raises :class:`Unsupported` (recorded as ``unsupported: <reason>``); a backend that should
work but fails (display gone, capture refused) raises :class:`CaptureError` (recorded as ``fail``).
Neither ever hands back an empty or black frame in place of an error.
"""
from __future__ import annotations

import io
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from typing import Callable, Protocol, TypeVar
from urllib.parse import unquote, urlparse

import numpy as np
from PIL import Image

from stress.probes.common import ProbeContext, first_line, result

Region = dict  # {"left", "top", "width", "height"}
T = TypeVar("T")


class Unsupported(Exception):
    """This backend cannot work in this session (not a failure of the desktop)."""


class CaptureError(Exception):
    """The backend should work here but the capture failed: a symptom worth recording."""


class Capturer(Protocol):
    name: str

    def monitors(self) -> list[Region]:
        """Index 0: the whole desktop; 1..N: each monitor (may be just index 0 on Wayland)."""

    def grab(self, region: Region) -> np.ndarray: ...

    def close(self) -> None: ...


def rgb_view(bgrx: bytearray, width: int, height: int) -> np.ndarray:
    """(H, W, 3) RGB view of an X11 BGRX buffer, without copying or converting a pixel.

    The view reads the buffer in place (channel stride -1): the whole-desktop capture costs what the
    grab costs. ``ScreenShot.bgra`` would copy the buffer once more, and ``bgra[..., 2::-1].copy()``
    (the conversion the probe used to make) made the capture 5.7-6.3x the grab on a 1080p Xvfb
    (benchmarks/bench_capture.py). mss hands out a new buffer per grab, so a view stays valid after
    the next one. The checks read it as it is (:func:`stress.probes.common.frame_stats` per channel);
    only a kept frame is made contiguous."""
    bgra = np.frombuffer(bgrx, dtype=np.uint8).reshape(height, width, 4)
    return bgra[..., 2::-1]


# A connection refused right after another one closed is common on a busy X server (seen on Xvfb
# under load: 1 in 5 opens, every retry within 150 ms succeeded); a dead server refuses every attempt.
# Three retries over ~0.3 s tell the two apart. Only the *connection* is retried: a server that accepts
# and then hangs (stopped) hangs the first attempt, and the probe's timeout records it.
CONNECT_DELAYS = (0.05, 0.1, 0.15)


def connect_retry(open_fn: Callable[[], T], refused: type[BaseException] | Callable[[BaseException], bool],
                  what: str, delays: tuple[float, ...] = CONNECT_DELAYS) -> tuple[T, int]:
    """``(open_fn(), attempts)``, calling ``open_fn`` again after each refusal (an exception of the type
    ``refused``, or one the predicate ``refused`` accepts) while ``delays`` last; the last refusal is
    raised. Each retry is one line on stderr (the probe log), so a flaky server shows there."""
    is_refusal = refused if not isinstance(refused, type) else (lambda exc: isinstance(exc, refused))
    for attempt, delay in enumerate((*delays, None), start=1):
        try:
            return open_fn(), attempt
        except Exception as exc:
            if delay is None or not is_refusal(exc):
                raise
            print(f"{what}: connection attempt {attempt} refused ({first_line(exc)}); retrying in "
                  f"{delay:g} s", file=sys.stderr, flush=True)
            time.sleep(delay)
    raise AssertionError("unreachable")


class MssCapturer:
    """X11 capture through mss (XShmGetImage, falling back to XGetImage)."""

    name = "mss"

    def __init__(self) -> None:
        import mss
        from mss.exception import ScreenShotError

        self._error = ScreenShotError
        try:
            self._sct, self.connect_attempts = connect_retry(mss.MSS, ScreenShotError, "mss")
        except ScreenShotError as exc:
            raise CaptureError(f"cannot open display {os.environ.get('DISPLAY', '')}: {first_line(exc)} "
                               f"({len(CONNECT_DELAYS) + 1} attempts)") from None

    def monitors(self) -> list[Region]:
        try:
            return [dict(m) for m in self._sct.monitors]
        except self._error as exc:
            raise CaptureError(f"cannot list monitors: {first_line(exc)}") from None

    def grab(self, region: Region) -> np.ndarray:
        box = {k: int(region[k]) for k in ("left", "top", "width", "height")}
        try:
            shot = self._sct.grab(box)
        except self._error as exc:
            raise CaptureError(f"capture failed: {first_line(exc)}") from None
        return rgb_view(shot.raw, shot.width, shot.height)

    def close(self) -> None:
        try:
            self._sct.close()
        except Exception:  # closing a dead connection must not mask the probe's result
            pass


def _ppm_to_array(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


class GrimCapturer:
    """wlroots compositors (sway, Hyprland, river, wayfire...): ``grim`` over wlr-screencopy."""

    name = "grim"

    def __init__(self, timeout: float) -> None:
        if not shutil.which("grim"):
            raise Unsupported("grim is not installed")
        self._timeout = timeout
        self._size: tuple[int, int] | None = None

    def _run(self, args: list[str]) -> np.ndarray:
        try:
            proc = subprocess.run(["grim", "-t", "ppm", *args, "-"], capture_output=True,
                                  timeout=max(0.5, self._timeout))
        except subprocess.TimeoutExpired:
            raise CaptureError(f"grim did not answer within {self._timeout:.1f} s") from None
        if proc.returncode != 0:
            msg = first_line(proc.stderr.decode("utf-8", "replace") or f"exit status {proc.returncode}")
            if "screencopy" in msg:   # not a wlroots compositor ("doesn't support wl_shm": one dying)
                raise Unsupported(f"grim: {msg}")
            if "failed to create display" in msg:   # the compositor went away (or never was)
                raise CaptureError(f"grim cannot connect to the compositor: {msg}")
            raise CaptureError(f"grim failed: {msg}")
        return _ppm_to_array(proc.stdout)

    def monitors(self) -> list[Region]:
        if self._size is None:
            full = self._run([])
            self._size = (full.shape[1], full.shape[0])
        w, h = self._size
        # Per-output capture needs output names (swaymsg/wlr-randr); the full desktop is what we take.
        return [{"left": 0, "top": 0, "width": w, "height": h}]

    def grab(self, region: Region) -> np.ndarray:
        mons = self.monitors()
        if region == mons[0]:
            return self._run([])
        geo = f"{int(region['left'])},{int(region['top'])} {int(region['width'])}x{int(region['height'])}"
        return self._run(["-g", geo])

    def close(self) -> None:
        pass


_RESPONSE = re.compile(r"Request\.Response \(uint32 (\d+),(.*)\)\s*$")
_URI = re.compile(r"'uri': <'([^']*)'>")


def parse_portal_response(line: str, token: str) -> tuple[int, str | None] | None:
    """Parse one ``gdbus monitor`` line; ``(response code, uri)`` if it is our request's answer.

    The portal answers with a ``Response`` signal on ``.../request/<sender>/<token>``: code 0 is
    success (with a ``uri``), 1 the user cancelled, 2 anything else.
    """
    if f"/{token}:" not in line:
        return None
    m = _RESPONSE.search(line)
    if not m:
        return None
    uri = _URI.search(m.group(2))
    return int(m.group(1)), (uri.group(1) if uri else None)


def portal_image(code: int, uri: str | None) -> np.ndarray:
    """The screenshot a portal ``Response`` points to, with each failure mode sorted:

    - response 1 (the user or the permission store refused): :class:`Unsupported`, a permission
      question and not a fault of the desktop;
    - response 2 (the backend failed) or any other code: :class:`CaptureError`;
    - success without a ``uri``, or with one whose file is missing or unreadable: :class:`CaptureError`
      ("success with no image": a backend that claims to capture and hands back nothing).
    The file is removed after reading (portals save into the user's Pictures or /tmp).
    """
    if code == 1:
        raise Unsupported("the portal refused the screenshot (response 1: denied by the user or the "
                          "permission store)")
    if code != 0:
        raise CaptureError(f"the portal's screenshot backend failed (response {code})")
    if not uri:
        raise CaptureError("the portal reported success but gave no image (no uri in its response)")
    path = unquote(urlparse(uri).path)
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise CaptureError(f"the portal reported success but its image is unreadable: {first_line(exc)}") from None
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def require_session_bus(purpose: str) -> None:
    """Raise Unsupported unless gdbus and a D-Bus session bus are there (the D-Bus capture backends)."""
    if not shutil.which("gdbus"):
        raise Unsupported("gdbus is not installed (package libglib2.0-bin)")
    if not os.environ.get("DBUS_SESSION_BUS_ADDRESS") and not os.environ.get("XDG_RUNTIME_DIR"):
        raise Unsupported(f"no D-Bus session bus {purpose}")


class PortalCapturer:
    """xdg-desktop-portal ``Screenshot`` over D-Bus via ``gdbus`` (GNOME, KDE, wlroots and others)."""

    name = "portal"

    def __init__(self, timeout: float) -> None:
        require_session_bus("for xdg-desktop-portal")
        self._timeout = timeout
        self._size: tuple[int, int] | None = None

    def _shot(self) -> np.ndarray:
        import selectors

        token = "stress" + secrets.token_hex(6)
        deadline = time.monotonic() + max(1.0, self._timeout)
        # Listen before calling: the Response signal can come before `gdbus call` returns. gdbus
        # block-buffers a pipe; stdbuf makes it hand over every line as it comes.
        argv = ["gdbus", "monitor", "--session", "--dest", "org.freedesktop.portal.Desktop"]
        if shutil.which("stdbuf"):
            argv = ["stdbuf", "-oL", *argv]
        mon = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        sel = selectors.DefaultSelector()
        assert mon.stdout is not None
        sel.register(mon.stdout, selectors.EVENT_READ)
        buf = b""

        def lines():
            nonlocal buf
            while True:
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    yield line.decode("utf-8", "replace")
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return
                chunk = os.read(mon.stdout.fileno(), 65536)
                if not chunk:
                    return
                buf += chunk

        try:
            reader = lines()
            if next(reader, None) is None:   # "Monitoring signals ..." once subscribed
                mon.kill()
                err = first_line(mon.stderr.read().decode("utf-8", "replace") if mon.stderr else "") or "no output"
                if "Could not connect" in err or "Error connecting" in err:
                    raise Unsupported(f"no reachable D-Bus session bus for xdg-desktop-portal: {err}")
                raise CaptureError(f"cannot watch the session bus for the portal's answer (gdbus monitor: {err})")
            try:
                call = subprocess.run(
                    ["gdbus", "call", "--session", "--dest", "org.freedesktop.portal.Desktop",
                     "--object-path", "/org/freedesktop/portal/desktop",
                     "--method", "org.freedesktop.portal.Screenshot.Screenshot", "",
                     f"{{'handle_token': <'{token}'>, 'interactive': <false>}}"],
                    capture_output=True, text=True, timeout=max(0.5, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise CaptureError(f"the portal's Screenshot call timed out ({self._timeout:.1f} s)") from None
            if call.returncode != 0:
                msg = first_line(call.stderr or f"exit status {call.returncode}")
                if "ServiceUnknown" in msg or "UnknownMethod" in msg or "UnknownInterface" in msg:
                    raise Unsupported(f"xdg-desktop-portal has no Screenshot interface here: {msg}")
                if "Could not connect" in msg or "Error connecting" in msg:
                    raise Unsupported(f"no reachable D-Bus session bus for xdg-desktop-portal: {msg}")
                if "Timeout" in msg or "NoReply" in msg:
                    raise CaptureError(f"the portal did not answer the Screenshot call: {msg}")
                raise CaptureError(f"portal Screenshot call failed: {msg}")
            for line in reader:
                parsed = parse_portal_response(line, token)
                if parsed is not None:
                    return portal_image(*parsed)
            raise CaptureError(f"the portal accepted the Screenshot request but sent no answer within "
                               f"{self._timeout:.1f} s (it may be waiting for someone to allow the screenshot)")
        finally:
            sel.close()
            mon.kill()
            mon.wait()
            mon.stdout.close()
            if mon.stderr:
                mon.stderr.close()

    def monitors(self) -> list[Region]:
        if self._size is None:
            full = self._shot()
            self._size = (full.shape[1], full.shape[0])
        w, h = self._size
        return [{"left": 0, "top": 0, "width": w, "height": h}]

    def grab(self, region: Region) -> np.ndarray:
        full = self._shot()  # the portal only takes the whole desktop
        t, l = int(region["top"]), int(region["left"])
        return full[t:t + int(region["height"]), l:l + int(region["width"])].copy()

    def close(self) -> None:
        pass


# The compositor's own screenshooter first, then the generic ones. ``None``: any compositor.
_WAYLAND_ORDER = {"weston": ("weston", "portal"), "kwin_wayland": ("kwin", "portal"),
                  "gnome-shell": ("portal",)}
WLROOTS_ORDER = ("grim", "portal")


def wayland_backends(compositor: str | None) -> tuple[str, ...]:
    """Capture backends to try, in order, on a Wayland compositor named ``compositor`` (its comm)."""
    if compositor == "mutter":
        return ()   # mutter alone has no screenshot interface (gnome-shell's, or a PipeWire screencast)
    return _WAYLAND_ORDER.get(compositor or "", WLROOTS_ORDER)


def _make(backend: str, timeout: float) -> Capturer:
    if backend == "grim":
        return GrimCapturer(timeout)
    if backend == "portal":
        return PortalCapturer(timeout)
    from stress.probes.wl_capture import KWinCapturer, WestonCapturer
    return (WestonCapturer if backend == "weston" else KWinCapturer)(timeout)


def open_capturer(backend: str, session: str, timeout: float) -> Capturer:
    """The capture backend for this session; raises Unsupported when none can work."""
    if backend == "x11" or (backend == "auto" and session == "x11"):
        if not os.environ.get("DISPLAY"):
            raise Unsupported("the x11 backend needs DISPLAY")
        return MssCapturer()
    if backend != "auto":
        return _make(backend, timeout)
    # auto on Wayland: mss would only see XWayland's windows (black elsewhere), so it is never used.
    # The compositor behind WAYLAND_DISPLAY (its socket's owner) decides which backends can work.
    from stress.hw.display_id import compositor_name, peer_pid, wayland_socket

    path = wayland_socket(dict(os.environ))
    if path and not os.path.exists(path):
        raise CaptureError(f"the Wayland compositor is gone: {path} does not exist")
    comp = compositor_name()
    if path and comp is None:
        raise CaptureError(f"the Wayland compositor does not accept connections on {path}")
    order = wayland_backends(comp)
    if not order:
        raise Unsupported(f"{comp} offers no screenshot interface to clients (gnome-shell's Screenshot "
                          "D-Bus service or a PipeWire screencast would be needed)")
    reasons = []
    for name in order:
        try:
            cap = _make(name, timeout)
            cap.monitors()  # proves it works here; raises Unsupported otherwise
            return cap
        except Unsupported as exc:
            # "does not support" from a compositor that is dying (its globals already gone) is not
            # a fact about the compositor: only a live one's refusal counts as unsupported.
            if path and peer_pid(path) is None:
                raise CaptureError(f"the Wayland compositor went away during the capture ({exc})") from None
            reasons.append(str(exc))
    raise Unsupported(f"no screenshot backend works on {comp or 'this Wayland compositor'} ("
                      + "; ".join(reasons) + ")")


def capturer_for(ctx: ProbeContext) -> tuple[Capturer | None, dict | None]:
    """The probe's capturer, or the result a probe returns when there is none: ``unsupported`` when no
    backend can work here, ``fail`` when the display refused the connection."""
    try:
        return open_capturer(ctx.config.screenshot_backend, ctx.session, ctx.remaining()), None
    except Unsupported as exc:
        return None, result("unsupported", reason=str(exc))
    except CaptureError as exc:
        return None, result("fail", reason=str(exc), connect_failed=True)
