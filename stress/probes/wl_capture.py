"""Wayland screen capture through the compositor's own screenshooter, where it has one:

- ``weston``: the ``weston_screenshooter`` protocol through ``weston-screenshooter`` (weston only
  exposes it to clients when started with ``--debug``; otherwise the capture is ``unsupported``).
- ``kwin``: KWin's ``org.kde.KWin.ScreenShot2`` D-Bus interface (``gdbus`` passes it the write end
  of a pipe; KWin writes raw pixels into it). KWin refuses callers without the
  ``X-KDE-DBUS-Restricted-Interfaces`` entry in their .desktop file: that refusal is ``unsupported``
  (a permission question, not a broken desktop), not ``fail``.

Same contract as :mod:`stress.probes.capture`: (H, W, 3) uint8 frames, :class:`Unsupported` when the
backend cannot work here, :class:`CaptureError` when it should but the capture failed.
"""
from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import tempfile
import time

import numpy as np
from PIL import Image

from stress.probes.capture import CaptureError, Region, Unsupported, require_session_bus
from stress.probes.common import first_line


class WestonCapturer:
    """weston's screenshooter: the whole desktop as one PNG in a private directory."""

    name = "weston-screenshooter"

    def __init__(self, timeout: float) -> None:
        self._exe = shutil.which("weston-screenshooter")
        if not self._exe:
            raise Unsupported("weston-screenshooter is not installed (package weston)")
        self._timeout = timeout
        self._size: tuple[int, int] | None = None

    def _shot(self) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="stress-shot-") as tmp:
            try:
                proc = subprocess.run([self._exe], cwd=tmp, capture_output=True, text=True,
                                      timeout=max(0.5, self._timeout), stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise CaptureError(f"weston-screenshooter did not answer within {self._timeout:.1f} s") from None
            msg = first_line(proc.stderr or proc.stdout or f"exit status {proc.returncode}")
            if "doesn't support screenshooter" in msg or "unauthorized" in msg.lower():
                raise Unsupported(f"weston refuses screenshots to clients (start weston with --debug): {msg}")
            shots = [f for f in os.listdir(tmp) if f.endswith(".png")]
            if proc.returncode != 0 or not shots:
                if "failed to create display" in msg or "connect" in msg.lower():
                    raise CaptureError(f"weston-screenshooter cannot reach the compositor: {msg}")
                raise CaptureError(f"weston-screenshooter failed: {msg}")
            try:
                with Image.open(os.path.join(tmp, shots[0])) as img:
                    return np.asarray(img.convert("RGB"))
            except OSError as exc:
                raise CaptureError(f"weston-screenshooter wrote an unreadable image: {first_line(exc)}") from None

    def monitors(self) -> list[Region]:
        if self._size is None:
            full = self._shot()
            self._size = (full.shape[1], full.shape[0])
        w, h = self._size
        return [{"left": 0, "top": 0, "width": w, "height": h}]

    def grab(self, region: Region) -> np.ndarray:
        full = self._shot()
        t, l = int(region["top"]), int(region["left"])
        return full[t:t + int(region["height"]), l:l + int(region["width"])].copy()

    def close(self) -> None:
        pass


_KWIN_FIELD = re.compile(r"'(\w+)': <(?:uint32 )?'?([\w.]+)'?>")
# QImage formats KWin writes: 4 RGB32 and 5 ARGB32 and 6 ARGB32_Premultiplied are 0xAARRGGBB words
# (B, G, R, A bytes on little-endian machines).
_QIMAGE_BGRA = {4, 5, 6}


class KWinCapturer:
    """KWin's ScreenShot2 ``CaptureArea`` (raw pixels through a pipe)."""

    name = "kwin"

    def __init__(self, timeout: float) -> None:
        require_session_bus("to reach KWin")
        self._timeout = timeout
        self._size: tuple[int, int] | None = None

    def _call(self, method: str, *args: str) -> tuple[dict, bytes]:
        r, w = os.pipe()
        deadline = time.monotonic() + max(0.5, self._timeout)
        try:
            proc = subprocess.Popen(
                ["gdbus", "call", "--session", "--dest", "org.kde.KWin", "--object-path", "/org/kde/KWin/ScreenShot2",
                 "--method", f"org.kde.KWin.ScreenShot2.{method}", *args, "{}", f"handle {w}"],
                pass_fds=(w,), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except OSError as exc:
            os.close(r)
            os.close(w)
            raise CaptureError(f"cannot run gdbus: {exc}") from None
        os.close(w)
        data = bytearray()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([r], [], [], left)[0]:
                    proc.kill()
                    proc.wait()
                    raise CaptureError(f"KWin did not deliver a screenshot within {self._timeout:.1f} s")
                chunk = os.read(r, 1 << 20)
                if not chunk:
                    break
                data += chunk
            try:
                out, err = proc.communicate(timeout=max(0.5, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise CaptureError(f"KWin did not answer within {self._timeout:.1f} s") from None
        finally:
            os.close(r)
        if proc.returncode != 0:
            msg = first_line(err or f"exit status {proc.returncode}")
            if "NoAuthorized" in msg or "not authorized" in msg.lower():
                raise Unsupported(f"KWin refuses screenshots to this program (permission): {msg}")
            if "ServiceUnknown" in msg or "UnknownObject" in msg or "UnknownMethod" in msg or "UnknownInterface" in msg:
                raise Unsupported(f"no KWin ScreenShot2 interface on this bus: {msg}")
            if "Could not connect" in msg or "Error connecting" in msg:
                raise Unsupported(f"no reachable D-Bus session bus for KWin: {msg}")
            raise CaptureError(f"KWin screenshot failed: {msg}")
        return dict(_KWIN_FIELD.findall(out)), bytes(data)

    def _area(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        meta, data = self._call("CaptureArea", str(x), str(y), str(w), str(h))
        try:
            width, height, stride, fmt = (int(meta[k]) for k in ("width", "height", "stride", "format"))
        except (KeyError, ValueError):
            raise CaptureError(f"KWin answered without an image description: {meta}") from None
        if fmt not in _QIMAGE_BGRA:
            raise CaptureError(f"KWin sent QImage format {fmt}, which this probe does not read")
        if len(data) < stride * height or width * 4 > stride:
            raise CaptureError(f"KWin sent {len(data)} bytes for a {width}x{height} image (stride {stride})")
        rows = np.frombuffer(data, dtype=np.uint8, count=stride * height).reshape(height, stride)
        bgra = rows[:, :width * 4].reshape(height, width, 4)
        return bgra[..., 2::-1].copy()

    def monitors(self) -> list[Region]:
        if self._size is None:
            meta, _ = self._call("CaptureActiveScreen")
            try:
                self._size = (int(meta["width"]), int(meta["height"]))
            except (KeyError, ValueError):
                raise CaptureError(f"KWin answered without an image description: {meta}") from None
        w, h = self._size
        return [{"left": 0, "top": 0, "width": w, "height": h}]

    def grab(self, region: Region) -> np.ndarray:
        return self._area(int(region["left"]), int(region["top"]), int(region["width"]), int(region["height"]))

    def close(self) -> None:
        pass
