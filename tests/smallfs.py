"""A real small file system for disk-full tests: a tmpfs of a few MB, mounted and unmounted by the test."""
from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest


@contextmanager
def small_fs(where: Path, size: str = "6m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``where``; skip (with the reason) when this machine does not allow it."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN); not root here")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


def fill(fs: Path, leave: int) -> Path:
    """Fill ``fs`` until about ``leave`` bytes are free; returns the filler file."""
    filler = fs / "filler.bin"
    st = os.statvfs(fs)
    free = st.f_bavail * st.f_frsize
    with open(filler, "ab") as fh:
        n = max(0, free - leave)
        chunk = b"\0" * (1 << 20)
        while n > 0:
            fh.write(chunk[: min(n, len(chunk))])
            n -= min(n, len(chunk))
    return filler


def remount_read_only(fs: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True, capture_output=True, timeout=30)
