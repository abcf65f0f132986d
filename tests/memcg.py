"""A real memory cgroup for OOM tests: a child of this process's own memory cgroup with a small limit,
made and removed by the test (cgroup v2 ``memory.max`` or v1 ``memory.limit_in_bytes``)."""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from stress.oom import CGROUP_ROOT


def _own(controller_v1: str = "memory") -> tuple[str, Path] | None:
    text = Path("/proc/self/cgroup").read_text()
    for line in text.splitlines():
        hid, controllers, rel = line.split(":", 2)
        if controller_v1 in controllers.split(","):
            d = CGROUP_ROOT / "memory" / rel.lstrip("/")
            if (d / "memory.limit_in_bytes").is_file():
                return "v1", d
    for line in text.splitlines():
        hid, controllers, rel = line.split(":", 2)
        if hid == "0":
            d = CGROUP_ROOT / rel.lstrip("/")
            try:
                delegated = "memory" in (d / "cgroup.subtree_control").read_text().split()
            except OSError:
                delegated = False
            if delegated:
                return "v2", d
    return None


@contextmanager
def memory_cgroup(limit_bytes: int) -> Iterator[Path]:
    """A child memory cgroup limited to ``limit_bytes``; yields its ``cgroup.procs``. Skips with the reason
    when this machine does not let the test make one."""
    own = _own()
    if own is None:
        pytest.skip("no writable memory cgroup controller here (neither v1 memory nor v2 with memory delegated)")
    kind, parent = own
    child = parent / f"stress-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        child.mkdir()
        limit = child / ("memory.limit_in_bytes" if kind == "v1" else "memory.max")
        limit.write_text(str(limit_bytes))
        # no swap to escape into: the limit is a hard one
        _try_write(child / ("memory.memsw.limit_in_bytes" if kind == "v1" else "memory.swap.max"),
                   limit_bytes if kind == "v1" else 0)
    except OSError as exc:
        try:
            child.rmdir()
        except OSError:
            pass
        pytest.skip(f"cannot make a memory cgroup under {parent}: {exc.strerror or exc}")
    try:
        yield child / "cgroup.procs"
    finally:
        for _ in range(50):          # the killed processes leave it once they are reaped
            try:
                child.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def _try_write(path: Path, value: int) -> None:
    try:
        path.write_text(str(value))
    except OSError:
        pass


def in_cgroup_argv(procs: Path, argv: list[str]) -> list[str]:
    """``argv`` started inside the cgroup whose ``cgroup.procs`` is ``procs`` (the shell joins, then execs)."""
    return ["sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh", *argv]
