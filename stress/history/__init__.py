"""The run history: one row per finished run, in SQLite (``reports/history.db`` by default) or in a
shared PostgreSQL database (``--history postgresql://...`` or ``$STRESS_HISTORY_URL``).

Every ``gpu-stress run`` and every soak iteration records its run here (:func:`record_run`, idempotent
per run id), so that runs can be listed, filtered and compared across nights, drivers and machines
long after their run directories were thinned or deleted. What is stored is derived from the run
directory (the journal is the record of truth), never typed in (:mod:`.summary`):

- ``runs``: one row per run: machine (hostname, kept as-is; a salted machine id; reports redact
  both), GPU, driver, kernel, compositor, display server, session type, Python and library
  versions, scenario name and hash, verdict, status, and where the run directory and its report are;
- ``metrics``: named single numbers per run (images/min, median image time, probe latency medians
  per phase and kind, failures, peak GPU memory, ...);
- ``samples``: the raw per-image times and per-probe latencies, so that ``compare`` can test
  significance (Mann-Whitney U) without the run directory.

The modules: :mod:`.db` (locations, URLs, engines, Alembic upgrades), :mod:`.schema` (the tables),
:mod:`.legacy` (the SQLite schema before Alembic), :mod:`.store` (writing and reading),
:mod:`.summary` (a run's summary), :mod:`.compare` (trends and comparisons). docs/history.md
describes them.
"""
from __future__ import annotations

from stress.history.compare import HIGHER_IS_BETTER, NEUTRAL, compare_runs, sample_key, trends
from stress.history.db import (ENV_VAR, HEAD as SCHEMA_REVISION, HistoryError, HistoryUnavailable, display,
                               exists, history_location, is_url, open_db)
from stress.history.legacy import MIGRATIONS, SCHEMA_VERSION as LEGACY_VERSION
from stress.history.store import (FILTER_KEYS, find_run, parse_filter, query_runs, record_run, record_summary,
                                  store_summary, try_record_run)
from stress.history.summary import RunSummary, summarize_run

__all__ = ["ENV_VAR", "FILTER_KEYS", "HIGHER_IS_BETTER", "LEGACY_VERSION", "MIGRATIONS", "NEUTRAL",
           "SCHEMA_REVISION", "HistoryError", "HistoryUnavailable", "RunSummary", "compare_runs", "display",
           "exists", "find_run", "history_location", "is_url", "open_db", "parse_filter", "query_runs",
           "record_run", "record_summary", "sample_key", "store_summary", "summarize_run", "trends",
           "try_record_run"]
