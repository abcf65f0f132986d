"""Shared test set-up. Tests run the real code: real subprocesses, real files, real diffusers."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pg import pg_url, postgres_server  # noqa: F401 - fixtures: a throwaway PostgreSQL server (tests/pg.py)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One cache of built-in models for the whole session (built once, then loaded from disk)."""
    path = Path(os.environ.get("STRESS_TEST_CACHE") or tmp_path_factory.mktemp("model-cache"))
    os.environ["STRESS_CACHE"] = str(path)
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a test module (``pytest.mark.usefixtures("one_torch_thread")``): tiny
    models run fastest so (on a shared 2-core machine several threads per process wait on each other
    at every op, see engine.set_cpu_threads), and oneDNN's per-thread scratch would blur comparisons
    of traced against real allocations."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m stress ...`` as a user would, in a real subprocess."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "stress", *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout, input=input)
