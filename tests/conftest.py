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


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m stress ...`` as a user would, in a real subprocess."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "stress", *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout, input=input)
