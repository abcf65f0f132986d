"""Pieces every probe shares: the probe context and result, frame checks, pixel comparison,
test patterns and the policy for keeping screenshots.

Runs inside the probe child process (``stress.probes.child``), never in the supervisor: it imports
numpy and Pillow, and a probe may hang or crash on a broken display.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stress.probes.config import ProbesConfig

# Longest side of a screenshot kept on disk: enough to see what went wrong, small enough to attach.
KEEP_MAX_SIDE = 800

Status = str  # "ok" | "fail" | "timeout" | "error" | "unsupported" | "unavailable"


@dataclass
class ProbeContext:
    """What one probe needs to know about its run and phase."""

    phase: str
    visit: int
    rep: int
    config: ProbesConfig
    run_dir: Path
    images: list[dict]
    session: str               # "x11" | "wayland" | "none"
    kind: str = ""
    started: float = field(default_factory=time.monotonic)

    @property
    def probes_dir(self) -> Path:
        return self.run_dir / "probes"

    @property
    def tag(self) -> str:
        """Unique, readable stem for files this probe keeps, e.g. ``after-v0-display-r2``."""
        return f"{self.phase}-v{self.visit}-{self.kind}-r{self.rep}"

    def remaining(self, margin: float = 0.5) -> float:
        """Seconds left before the supervisor kills this probe (minus a margin to report first)."""
        return self.config.timeout - (time.monotonic() - self.started) - margin

    def seed(self) -> int:
        """Differs per phase, visit and repetition, so that a stale frame never matches a new probe."""
        return zlib.crc32(f"{self.phase}/{self.visit}/{self.rep}".encode())


def result(status: Status, latency_s: float | None = None, reason: str | None = None,
           **metrics: Any) -> dict:
    """One probe's outcome, as the child reports it and the journal records it."""
    return {"status": status, "latency_s": None if latency_s is None else round(latency_s, 6),
            "reason": reason, "metrics": metrics}


# ---------------------------------------------------------------------------------------------
# Frame checks


def frame_stats(rgb: np.ndarray, flat_tolerance: int) -> dict:
    """Black / flat-colour flags of an (H, W, 3 or 4) frame.

    A frame is *flat* when every channel spans at most ``flat_tolerance`` levels (one colour, as a
    dead or unpainted output shows), and *black* when it is flat and no channel exceeds
    ``flat_tolerance`` (an all-black capture, which some backends return instead of failing).

    Reduced one channel at a time over the flattened pixels: for a (H, W, 3) array numpy's
    ``min(axis=(0, 1))`` walks three-element rows (~100 ms for 1080p); a channel as one strided
    run is ~15x faster, and reads a view (such as :func:`stress.probes.capture.rgb_view`) in place.
    """
    px = rgb[..., :3]
    n = max(1, px.shape[0] * px.shape[1])
    lo, hi, mean = [], [], []
    for c in range(px.shape[2]):
        ch = px[..., c]
        lo.append(int(ch.min()))
        hi.append(int(ch.max()))
        mean.append(round(float(ch.sum(dtype=np.uint64)) / n, 1))
    flat = max(h - l for h, l in zip(hi, lo)) <= flat_tolerance
    black = bool(flat and max(hi) <= flat_tolerance)
    return {"flat": bool(flat), "black": black, "mean": mean, "min": lo, "max": hi}


def compare(expected: np.ndarray, got: np.ndarray, tolerance: int) -> dict:
    """Pixel comparison of two (H, W, 3) uint8 arrays of the same shape.

    ``fraction``: share of pixels where some channel differs by more than ``tolerance``;
    ``max_diff``: the largest per-channel difference anywhere.
    """
    if expected.shape != got.shape:
        return {"fraction": 1.0, "max_diff": 255, "shape": [list(expected.shape), list(got.shape)]}
    # Per channel in uint8 (max - min never overflows), on views as they come: no int16 copies and no
    # reduction over 3-element rows (7x faster than the int16 way for the round trip's 256x256 polls).
    diff = None
    for c in range(expected.shape[2]):
        a, b = expected[..., c], got[..., c]
        d = np.maximum(a, b) - np.minimum(a, b)
        diff = d if diff is None else np.maximum(diff, d)
    if diff is None or diff.size == 0:
        return {"fraction": 0.0, "max_diff": 0}
    return {"fraction": int(np.count_nonzero(diff > tolerance)) / diff.size, "max_diff": int(diff.max())}


def pixel_sha256(img: Image.Image) -> str:
    """The hash the runner records when it saves an output: sha256 of the decoded RGB bytes."""
    return hashlib.sha256(img.convert("RGB").tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Test patterns


def make_pattern(width: int, height: int, seed: int) -> np.ndarray:
    """A deterministic (H, W, 3) uint8 pattern that makes corruption visible.

    Colour bars (channel swaps), a gradient (banding, gamma), a 1-pixel checkerboard (scaling, blur)
    and a seeded noise block (any stale or shifted pixels; different for every seed).
    """
    img = np.zeros((height, width, 3), dtype=np.uint8)
    bars = np.array([[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0],
                     [255, 0, 255], [255, 0, 0], [0, 0, 255], [16, 16, 16]], dtype=np.uint8)
    q = max(1, height // 4)
    cols = (np.arange(width) * len(bars) // max(1, width)).clip(0, len(bars) - 1)
    img[:q] = bars[cols][None, :, :]
    ramp = (np.arange(width) * 255 // max(1, width - 1)).astype(np.uint8)
    img[q:2 * q, :, 0] = ramp
    img[q:2 * q, :, 1] = ramp[::-1]
    img[q:2 * q, :, 2] = 128
    yy, xx = np.mgrid[2 * q:3 * q, 0:width]
    img[2 * q:3 * q] = (((xx + yy) % 2) * 255).astype(np.uint8)[..., None]
    rng = np.random.default_rng(seed)
    img[3 * q:] = rng.integers(0, 256, size=(height - 3 * q, width, 3), dtype=np.uint8)
    return img


def ppm_bytes(rgb: np.ndarray) -> bytes:
    """Binary PPM of an (H, W, 3) uint8 array: the format Tk's PhotoImage takes without Pillow."""
    h, w = rgb.shape[:2]
    return b"P6\n%d %d\n255\n" % (w, h) + np.ascontiguousarray(rgb[..., :3]).tobytes()


# ---------------------------------------------------------------------------------------------
# Keeping frames


def should_keep(config: ProbesConfig, failed: bool) -> bool:
    return config.keep_screenshots == "all" or (config.keep_screenshots == "failed" and failed)


def keep_frame(ctx: ProbeContext, name: str, rgb: np.ndarray) -> str | None:
    """Save a downscaled PNG of a frame under ``probes/``; returns its path relative to the run."""
    try:
        img = Image.fromarray(np.ascontiguousarray(rgb[..., :3]))
        if max(img.size) > KEEP_MAX_SIDE:
            img.thumbnail((KEEP_MAX_SIDE, KEEP_MAX_SIDE))
        ctx.probes_dir.mkdir(parents=True, exist_ok=True)
        path = ctx.probes_dir / f"{ctx.tag}-{_safe(name)}.png"
        tmp = path.with_name(f".{path.name}.tmp")
        img.save(tmp, format="PNG")
        os.replace(tmp, path)
        return str(path.relative_to(ctx.run_dir))
    except OSError:
        return None  # a full disk must not turn a probe result into a crash


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)[:40] or "frame"


def first_line(text: str, limit: int = 200) -> str:
    """First non-empty line of an error message, shortened for a one-line reason."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return str(text)[:limit]
