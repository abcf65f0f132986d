"""Where run directories, reports and the history live by default.

Inside a checkout of this repository (from any folder below it): ``<repo>/artifacts``,
``<repo>/reports`` and ``<repo>/reports/history.db``, as the layout says. Elsewhere: the same names
under the current directory. Every command takes these defaults from here."""
from __future__ import annotations

from pathlib import Path


def project_root(cwd: Path | None = None) -> Path:
    cwd = (cwd or Path.cwd()).resolve()
    for d in (cwd, *cwd.parents):
        if (d / "pyproject.toml").is_file() and (d / "stress" / "__init__.py").is_file():
            return d
    return cwd


def default_reports(cwd: Path | None = None) -> Path:
    return project_root(cwd) / "reports"


def default_artifacts(cwd: Path | None = None) -> Path:
    return project_root(cwd) / "artifacts"


def default_history_db(cwd: Path | None = None) -> Path:
    return default_reports(cwd) / "history.db"
