"""The run history: one row per finished run, in SQLite (``reports/history.db`` by default).

Every ``gpu-stress run`` and every soak iteration records its run here (:func:`record_run`, idempotent
per run id), so that runs can be listed, filtered and compared across nights, drivers and machines
long after their run directories were thinned or deleted. What is stored is derived from the run
directory (the journal is the record of truth), never typed in:

- ``runs``: one row per run: machine (hostname, kept as-is: the DB is local; reports redact), GPU,
  driver, kernel, Python and library versions, scenario name and hash, verdict, status, and where
  the run directory and its report are;
- ``metrics``: named single numbers per run (images/min, median image time, probe latency medians
  per phase and kind, failures, peak GPU memory, ...);
- ``samples``: the raw per-image times and per-probe latencies, so that ``compare`` can test
  significance (Mann-Whitney U) without the run directory.

The schema is versioned with ``PRAGMA user_version`` and upgraded in place by :data:`MIGRATIONS`
(function *i* takes a database from version *i* to *i + 1*); docs/soak.md describes it.
"""
from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from stress.errors import ExitCode, StressError
from stress.record import derived, load
from stress.stats import benjamini_hochberg, finite, mann_whitney, median, rnd
from stress.journal import RunDir



class HistoryError(StressError):
    """The history database cannot be opened, read or upgraded."""

    exit_code = ExitCode.BAD_INPUT


# ---------------------------------------------------------------------------------------------
# Schema and migrations. Each migration is frozen once released: never edit one, add the next.
# ---------------------------------------------------------------------------------------------

def _v0_to_v1(conn: sqlite3.Connection) -> None:
    conn.execute("""
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL UNIQUE,
            recorded_at REAL NOT NULL,
            started_at REAL, ended_at REAL, wall_s REAL,
            hostname TEXT, gpu TEXT, driver TEXT, kernel TEXT,
            scenario TEXT, scenario_sha256 TEXT,
            verdict TEXT, exit_code INTEGER, status TEXT,
            images_ok INTEGER, images_failed INTEGER,
            images_per_min REAL, image_s_median REAL,
            run_dir TEXT, report_path TEXT
        )""")


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    # Named metrics and raw samples, so that new metrics need no schema change.
    conn.execute("""
        CREATE TABLE metrics (
            run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            name TEXT NOT NULL, value REAL,
            PRIMARY KEY (run, name)
        )""")
    conn.execute("""
        CREATE TABLE samples (
            run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            name TEXT NOT NULL, "values" TEXT NOT NULL,
            PRIMARY KEY (run, name)
        )""")
    # Carry the two v1 metrics over, so old rows compare like new ones.
    for col in ("images_per_min", "image_s_median"):
        conn.execute(f"INSERT INTO metrics (run, name, value) SELECT id, '{col}', {col} FROM runs "
                     f"WHERE {col} IS NOT NULL")


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    for col in ("cuda_driver TEXT", "python TEXT", "libraries TEXT", "soak_id TEXT", "soak_iteration INTEGER"):
        conn.execute(f"ALTER TABLE runs ADD COLUMN {col}")
    conn.execute("CREATE INDEX runs_scenario ON runs (scenario, started_at)")
    conn.execute("CREATE INDEX runs_driver ON runs (driver, started_at)")
    conn.execute("CREATE INDEX runs_hostname ON runs (hostname, started_at)")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v0_to_v1, _v1_to_v2, _v2_to_v3]
SCHEMA_VERSION = len(MIGRATIONS)


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring the database to ``target``; each step is one transaction. Returns the version before."""
    before = _user_version(conn)
    if before > SCHEMA_VERSION:
        raise HistoryError(f"the history database is at schema version {before}, newer than this gpu-stress "
                           f"knows ({SCHEMA_VERSION}); upgrade gpu-stress or use another --db")
    for version in range(before, target):
        try:
            conn.execute("BEGIN IMMEDIATE")
            # Another process may have migrated while we waited for the lock.
            if _user_version(conn) != version:
                conn.execute("ROLLBACK")
                continue
            MIGRATIONS[version](conn)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except sqlite3.Error:
            conn.execute("ROLLBACK")
            raise
    return before


@contextmanager
def open_db(db_path: str | Path, *, create: bool = True) -> Iterator[sqlite3.Connection]:
    """Open (creating and migrating as needed) the history database."""
    path = Path(db_path)
    if not create and not path.exists():
        raise HistoryError(f"{path}: no history database there yet (it is created by the first run)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN ... COMMIT) so migrations are atomic.
        conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    except (sqlite3.Error, OSError) as exc:
        raise HistoryError(f"{path}: cannot open the history database ({exc})") from None
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
        yield conn
    except sqlite3.DatabaseError as exc:
        raise HistoryError(f"{path}: not a usable history database ({exc})") from None
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# What a run contributes: derived from its directory
# ---------------------------------------------------------------------------------------------

@dataclass
class RunSummary:
    """One run as the history sees it."""

    run_id: str
    run_dir: str | None = None
    report_path: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    wall_s: float | None = None
    hostname: str | None = None
    gpu: str | None = None
    driver: str | None = None
    cuda_driver: str | None = None
    kernel: str | None = None
    python: str | None = None
    libraries: dict = field(default_factory=dict)
    scenario: str | None = None
    scenario_sha256: str | None = None
    verdict: str | None = None
    reasons: list[str] = field(default_factory=list)
    exit_code: int | None = None
    status: str | None = None
    images_ok: int = 0
    images_failed: int = 0
    soak_id: str | None = None
    soak_iteration: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self, *, with_samples: bool = False) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "samples"}
        if with_samples:
            out["samples"] = self.samples
        return out


def _environment(rd: RunDir, events_env: dict | None) -> dict:
    try:
        env = json.loads(rd.environment.read_text(encoding="utf-8"))
        if isinstance(env, dict):
            return env
    except (OSError, ValueError):
        pass
    return events_env or {}


def _gpu_facts(env: dict, statics: list[dict]) -> tuple[str | None, str | None, str | None]:
    """GPU name(s), driver and CUDA driver version, from environment.json or gpu_static events."""
    gpu = env.get("gpu") if isinstance(env.get("gpu"), dict) else {}
    names = [g.get("name") for g in gpu.get("gpus") or [] if isinstance(g, dict) and g.get("name")]
    driver, cuda = gpu.get("driver"), gpu.get("cuda_driver")
    for ev in statics:
        if ev.get("name") and ev["name"] not in names:
            names.append(ev["name"])
        driver = driver or ev.get("driver")
        cuda = cuda or ev.get("cuda_driver")
    return (", ".join(names) or None), (str(driver) if driver else None), (str(cuda) if cuda else None)


def summarize_run(run_dir: str | Path, report_dir: str | Path | None = None) -> RunSummary:
    """Everything the history keeps about one run, from its record (``stress.record``): the same
    numbers run.json and report.json show (``stress.record.derived``)."""
    rd = RunDir(run_dir)
    if not rd.journal.exists():
        raise StressError(f"{run_dir}: not a run directory (no journal.jsonl)")
    rec = load(rd.root)
    start = rec.run_start or {}
    end = rec.run_end
    verdict = rec.verdict or {}
    env = _environment(rd, rec.env_event.get("env") if rec.env_event else None)
    s = RunSummary(run_id=start.get("run_id") or rd.run_id, run_dir=str(rd.root.resolve()))
    if report_dir is not None:
        report_dir = Path(report_dir)
        for candidate in (report_dir / "report.json", report_dir):
            if candidate.exists():
                s.report_path = str(candidate.resolve())
                break
    s.started_at = start.get("t") or rec.first_t
    s.ended_at = end.get("t") if end else rec.last_t
    s.wall_s = derived.wall_seconds(rec)
    host = env.get("host") if isinstance(env.get("host"), dict) else {}
    s.hostname = host.get("hostname")
    s.gpu, s.driver, s.cuda_driver = _gpu_facts(env, list(rec.gpu_static.values()))
    os_ = env.get("os") if isinstance(env.get("os"), dict) else {}
    s.kernel = os_.get("release")
    py = env.get("python") if isinstance(env.get("python"), dict) else {}
    s.python = py.get("version")
    libs = env.get("libraries") if isinstance(env.get("libraries"), dict) else {}
    s.libraries = {k: v for k, v in libs.items() if v}
    s.scenario = start.get("scenario")
    s.scenario_sha256 = start.get("scenario_sha256")
    s.verdict = verdict.get("verdict")
    s.reasons = [str(r) for r in verdict.get("reasons") or []]
    s.exit_code = verdict.get("exit_code")
    s.status = end.get("status") if end else "incomplete"

    counts = derived.counts(rec)
    s.images_ok, s.images_failed = counts.ok, counts.failed
    m = s.metrics
    m["images_ok"], m["images_failed"] = float(s.images_ok), float(s.images_failed)
    per_image = [v for _, v in sorted(derived.image_seconds(rec).items())]
    if per_image:
        s.samples["image_s"] = per_image
        m["image_s_median"] = rnd(median(per_image), 4)
    stages: dict[str, list[float]] = {}
    for idx in sorted(rec.images):
        r = rec.images[idx]
        if r.get("outcome") != "ok":
            continue
        timings = r.get("timings") if isinstance(r.get("timings"), dict) else {}
        for k, v in timings.items():
            if finite(v) is not None:
                stages.setdefault(k, []).append(float(v))
    for stage, vals in stages.items():
        s.samples[f"stage_s:{stage}"] = vals
        m[f"stage_s_median:{stage}"] = median(vals)
    m["images_per_min"] = derived.images_per_min(rec)
    probe_lat: dict[str, list[float]] = {}
    probe_fail: dict[str, int] = {}
    for ev in rec.probes:
        key = f"{ev.get('phase')}:{ev.get('kind')}"
        if ev.get("status") == "ok" and finite(ev.get("latency_s")) is not None:
            probe_lat.setdefault(key, []).append(float(ev["latency_s"]))
        elif ev.get("status") in ("fail", "timeout", "error"):
            probe_fail[ev.get("phase") or "?"] = probe_fail.get(ev.get("phase") or "?", 0) + 1
    for key, vals in probe_lat.items():
        s.samples[f"probe_latency_s:{key}"] = vals
        m[f"probe_latency_median:{key}"] = median(vals)
    m["probe_failures"] = float(sum(probe_fail.values()))
    for phase, n in probe_fail.items():
        m[f"probe_failures:{phase}"] = float(n)
    m["xid_events"] = float(len(rec.xids))
    inc = (verdict.get("details") or {}).get("incidence") if isinstance(verdict.get("details"), dict) else None
    if isinstance(inc, dict) and isinstance(inc.get("affected"), int):
        m["probe_visits_affected"] = float(inc["affected"])
        m["probe_visits_after"] = float(inc.get("visits") or 0)
    m["gpu_mem_used_peak_bytes"] = _column_max([c.cols.get("mem_used") for c in rec.nvml.values()])
    m["torch_peak_reserved_bytes"] = _column_max([rec.alloc.cols.get("peak_reserved")])
    m["worker_peak_rss_bytes"] = _column_max([rec.alloc.cols.get("peak_rss")])
    load_s = [w["load_s"] for _, w in sorted(rec.workers.items(), key=lambda kv: str(kv[0]))
              if finite(w.get("load_s")) is not None]
    if load_s:
        m["load_s"] = load_s[0]
    if s.wall_s is not None:
        m["wall_s"] = s.wall_s
    s.metrics = {k: v for k, v in m.items() if v is not None}
    return s


def _column_max(columns: list[list | None]) -> float | None:
    vals = [float(v) for col in columns if col for v in col if finite(v) is not None]
    return max(vals) if vals else None


# ---------------------------------------------------------------------------------------------
# Writing and reading
# ---------------------------------------------------------------------------------------------

_RUN_COLUMNS = ("run_id", "recorded_at", "started_at", "ended_at", "wall_s", "hostname", "gpu", "driver",
                "kernel", "scenario", "scenario_sha256", "verdict", "exit_code", "status", "images_ok",
                "images_failed", "images_per_min", "image_s_median", "run_dir", "report_path", "cuda_driver",
                "python", "libraries", "soak_id", "soak_iteration")


def store_summary(conn: sqlite3.Connection, s: RunSummary) -> int:
    """Insert or update one run (keyed by run id) with its metrics and samples; returns its row id."""
    row = dict(s.__dict__, recorded_at=time.time(), libraries=json.dumps(s.libraries, sort_keys=True),
               images_per_min=s.metrics.get("images_per_min"), image_s_median=s.metrics.get("image_s_median"))
    values = [row[c] for c in _RUN_COLUMNS]
    cols = ", ".join(_RUN_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in _RUN_COLUMNS if c != "run_id")
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(f"INSERT INTO runs ({cols}) VALUES ({', '.join('?' * len(values))}) "
                     f"ON CONFLICT(run_id) DO UPDATE SET {updates}", values)
        rid = int(conn.execute("SELECT id FROM runs WHERE run_id = ?", (s.run_id,)).fetchone()[0])
        conn.execute("DELETE FROM metrics WHERE run = ?", (rid,))
        conn.execute("DELETE FROM samples WHERE run = ?", (rid,))
        conn.executemany("INSERT INTO metrics (run, name, value) VALUES (?, ?, ?)",
                         [(rid, k, v) for k, v in sorted(s.metrics.items())])
        conn.executemany('INSERT INTO samples (run, name, "values") VALUES (?, ?, ?)',
                         [(rid, k, json.dumps(v)) for k, v in sorted(s.samples.items())])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return rid


def record_run(run_dir: Path, report_dir: Path | None, db_path: Path, *, soak_id: str | None = None,
               soak_iteration: int | None = None) -> int:
    """Record one run in the history (idempotent per run id: a second call updates the row).

    Returns the run's row id. Raises :class:`StressError` when the run directory or the database
    cannot be read; callers that must not fail (the end of a run) use :func:`try_record_run`.
    """
    s = summarize_run(run_dir, report_dir)
    with open_db(db_path) as conn:
        if soak_id is not None:
            s.soak_id, s.soak_iteration = soak_id, soak_iteration
        else:  # a plain re-record (e.g. after `report`) keeps the soak membership recorded earlier
            prev = conn.execute("SELECT soak_id, soak_iteration FROM runs WHERE run_id = ?", (s.run_id,)).fetchone()
            if prev:
                s.soak_id, s.soak_iteration = prev["soak_id"], prev["soak_iteration"]
        if s.report_path is None:
            prev = conn.execute("SELECT report_path FROM runs WHERE run_id = ?", (s.run_id,)).fetchone()
            s.report_path = prev["report_path"] if prev else None
        return store_summary(conn, s)


def try_record_run(run_dir: Path, report_dir: Path | None, db_path: Path, **kw: Any) -> str | None:
    """:func:`record_run`, but a failure becomes a warning line (returned) instead of an exception."""
    try:
        record_run(run_dir, report_dir, db_path, **kw)
        return None
    except StressError as exc:
        return f"run not recorded in the history: {exc}"
    except (sqlite3.Error, OSError) as exc:
        return f"run not recorded in the history ({type(exc).__name__}: {exc})"


def _row_to_summary(conn: sqlite3.Connection, row: sqlite3.Row, *, with_samples: bool) -> RunSummary:
    d = dict(row)
    s = RunSummary(run_id=d["run_id"])
    for k in RunSummary.__dataclass_fields__:
        if k in d and k not in ("libraries", "metrics", "samples", "reasons"):
            setattr(s, k, d[k])
    try:
        s.libraries = json.loads(d.get("libraries") or "{}")
    except ValueError:
        s.libraries = {}
    s.images_ok, s.images_failed = d.get("images_ok") or 0, d.get("images_failed") or 0
    s.metrics = {r["name"]: r["value"] for r in conn.execute("SELECT name, value FROM metrics WHERE run = ?",
                                                              (d["id"],))}
    if with_samples:
        s.samples = {r["name"]: json.loads(r["values"]) for r in
                     conn.execute('SELECT name, "values" FROM samples WHERE run = ?', (d["id"],))}
    return s


# filter key -> column; ``machine`` is the user-facing word for the hostname
FILTER_KEYS = {"scenario": "scenario", "machine": "hostname", "hostname": "hostname", "driver": "driver",
               "gpu": "gpu", "kernel": "kernel", "verdict": "verdict", "status": "status", "soak": "soak_id",
               "run": "run_id", "run_id": "run_id", "matrix": "scenario"}


def parse_filter(text: str) -> dict[str, str]:
    """``driver=550.54,scenario=demo`` -> {"driver": "550.54", "scenario": "demo"}."""
    out: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in FILTER_KEYS or not value.strip():
            raise StressError(f"{text!r}: a filter is KEY=VALUE[,KEY=VALUE] with KEY one of "
                              f"{', '.join(sorted(set(FILTER_KEYS) - {'hostname', 'run_id'}))}")
        out[key] = value.strip()
    return out


def query_runs(db_path: str | Path, filters: dict[str, str] | None = None, *, limit: int | None = None,
               with_samples: bool = False) -> list[RunSummary]:
    """Runs matching every filter (exact match; ``*`` and ``?`` glob), oldest first."""
    where, args = [], []
    for key, value in (filters or {}).items():
        col = FILTER_KEYS[key]
        if key == "matrix":            # the cells of a matrix: scenario names 'NAME[...]' (stress.cells)
            where.append("substr(scenario, 1, ?) = ?")
            args.append(len(value) + 1)
            value += "["
        elif any(ch in value for ch in "*?["):
            where.append(f"{col} GLOB ?")
        else:
            where.append(f"{col} = ?")
        args.append(value)
    sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY COALESCE(started_at, recorded_at) DESC, id DESC"
    if limit:
        sql += f" LIMIT {int(limit)}"
    with open_db(db_path, create=False) as conn:
        rows = conn.execute(sql, args).fetchall()
        runs = [_row_to_summary(conn, r, with_samples=with_samples) for r in rows]
    return list(reversed(runs))


def find_run(db_path: str | Path, ref: str, *, with_samples: bool = True) -> RunSummary | None:
    """A run by exact id, or by a prefix that names exactly one run."""
    with open_db(db_path, create=False) as conn:
        rows = conn.execute("SELECT * FROM runs WHERE run_id = ?", (ref,)).fetchall()
        if not rows:
            rows = conn.execute("SELECT * FROM runs WHERE substr(run_id, 1, ?) = ?", (len(ref), ref)).fetchall()
        if len(rows) > 1:
            raise StressError(f"{ref!r} matches {len(rows)} runs ({', '.join(r['run_id'] for r in rows[:3])}, ...); "
                              "give more of the run id")
        return _row_to_summary(conn, rows[0], with_samples=with_samples) if rows else None


# ---------------------------------------------------------------------------------------------
# Trends
# ---------------------------------------------------------------------------------------------

def trends(runs: list[RunSummary]) -> list[dict]:
    """Per (scenario, machine, GPU, driver): runs, reproductions with a Wilson interval, speed."""
    from stress.stats import incidence

    groups: dict[tuple, list[RunSummary]] = {}
    for r in runs:
        groups.setdefault((r.scenario, r.hostname, r.gpu, r.driver), []).append(r)
    out = []
    for (scenario, host, gpu, driver), rs in groups.items():
        verdicts = [r.verdict for r in rs]
        ipm = [r.metrics["images_per_min"] for r in rs if r.metrics.get("images_per_min") is not None]
        ims = [r.metrics["image_s_median"] for r in rs if r.metrics.get("image_s_median") is not None]
        starts = [r.started_at for r in rs if r.started_at]
        out.append({
            "scenario": scenario, "machine": host, "gpu": gpu, "driver": driver, "runs": len(rs),
            "verdicts": {v or "none": verdicts.count(v) for v in sorted(set(verdicts), key=str)},
            "incidence": incidence(verdicts),
            "images_per_min_median": median(ipm), "image_s_median": median(ims),
            "first": min(starts) if starts else None, "last": max(starts) if starts else None,
        })
    out.sort(key=lambda g: (str(g["scenario"]), str(g["machine"]), g["last"] or 0))
    return out


# ---------------------------------------------------------------------------------------------
# Comparing two runs or two groups of runs
# ---------------------------------------------------------------------------------------------

# Metrics for which more is better; for the other timing/failure metrics less is better.
HIGHER_IS_BETTER = ("images_per_min", "images_ok")
NEUTRAL = ("wall_s", "gpu_mem_used_peak_bytes", "torch_peak_reserved_bytes", "worker_peak_rss_bytes")


def sample_key(metric: str) -> str | None:
    """The raw samples behind a median metric, e.g. ``image_s_median`` -> ``image_s``."""
    if metric == "image_s_median":
        return "image_s"
    for med, raw in (("stage_s_median:", "stage_s:"), ("probe_latency_median:", "probe_latency_s:")):
        if metric.startswith(med):
            return raw + metric[len(med):]
    return None


def _direction(metric: str, change: float) -> str:
    if change == 0 or metric in NEUTRAL:
        return "changed"
    better = (change > 0) == (metric in HIGHER_IS_BETTER)
    return "better" if better else "worse"


def compare_runs(a: list[RunSummary], b: list[RunSummary], *, alpha: float = 0.05,
                 min_samples: int = 3) -> dict:
    """Per metric: A, B, the change, and its significance where samples allow a test.

    A median metric backed by raw samples (per-image times, per-probe latencies) is tested on the
    pooled samples of each side; any metric is tested on its per-run values when both sides have at
    least ``min_samples`` runs; otherwise only the change is given.
    """
    from stress.stats import incidence

    names = sorted({k for r in [*a, *b] for k in r.metrics})
    rows = []
    for name in names:
        av = [r.metrics[name] for r in a if r.metrics.get(name) is not None]
        bv = [r.metrics[name] for r in b if r.metrics.get(name) is not None]
        if not av or not bv:
            rows.append({"metric": name, "a": median(av), "b": median(bv), "change": None, "relative": None,
                         "p": None, "basis": "one side only", "n_a": len(av), "n_b": len(bv),
                         "significant": False, "direction": None})
            continue
        key = sample_key(name)
        a_s = [x for r in a for x in r.samples.get(key, [])] if key else []
        b_s = [x for r in b for x in r.samples.get(key, [])] if key else []
        if len(a_s) >= min_samples and len(b_s) >= min_samples:
            va, vb, p, basis, na, nb = median(a_s), median(b_s), mann_whitney(a_s, b_s), "samples", len(a_s), len(b_s)
        elif len(av) >= min_samples and len(bv) >= min_samples:
            va, vb, p, basis, na, nb = median(av), median(bv), mann_whitney(av, bv), "runs", len(av), len(bv)
        else:
            va, vb, p, basis, na, nb = median(av), median(bv), None, "single values", len(av), len(bv)
        change = vb - va
        rows.append({"metric": name, "a": va, "b": vb, "change": change,
                     "relative": (change / va) if va else None, "p": p, "basis": basis, "n_a": na, "n_b": nb,
                     "significant": p is not None and p < alpha,
                     "direction": _direction(name, change) if p is not None and p < alpha else None})
    # Many metrics are tested at once: significance is judged on Benjamini-Hochberg adjusted p-values
    # (false-discovery rate alpha), so twenty noisy metrics do not make one false "worse" by chance.
    for row, q in zip(rows, benjamini_hochberg([r["p"] for r in rows])):
        row["q"] = q
        row["significant"] = q is not None and q < alpha
        row["direction"] = _direction(row["metric"], row["change"]) if row["significant"] else None
    va_ = [r.verdict for r in a]
    vb_ = [r.verdict for r in b]
    env = {}
    for attr in ("scenario", "scenario_sha256", "hostname", "gpu", "driver", "cuda_driver", "kernel", "python"):
        sa = sorted({str(getattr(r, attr)) for r in a})
        sb = sorted({str(getattr(r, attr)) for r in b})
        if sa != sb:
            env[attr] = {"a": sa, "b": sb}
    for lib in sorted({k for r in [*a, *b] for k in r.libraries}):
        sa = sorted({str(r.libraries.get(lib)) for r in a})
        sb = sorted({str(r.libraries.get(lib)) for r in b})
        if sa != sb:
            env[f"libraries.{lib}"] = {"a": sa, "b": sb}
    return {
        "alpha": alpha, "correction": "benjamini-hochberg",
        "a": {"runs": [r.run_id for r in a]}, "b": {"runs": [r.run_id for r in b]},
        "verdicts": {"a": {v or "none": va_.count(v) for v in sorted(set(va_), key=str)},
                     "b": {v or "none": vb_.count(v) for v in sorted(set(vb_), key=str)},
                     "differs": sorted(set(va_), key=str) != sorted(set(vb_), key=str)},
        "incidence": {"a": incidence(va_), "b": incidence(vb_)},
        "environment": env,
        "metrics": rows,
        "significant": [r["metric"] for r in rows if r["significant"]],
    }
