"""Cost of the history's back ends, side by side in one run: recording runs, listing them, finding one.

Variants, each on a fresh history per repetition, interleaved in a shuffled order:

- ``sqlite``: stress.history on an SQLite file (SQLAlchemy Core, WAL);
- ``postgresql``: stress.history on a throwaway PostgreSQL cluster (tests/pg.py; skipped without the
  server binaries);
- ``legacy``: with ``--legacy-from REV``, the SQLite-only ``stress/history.py`` of git revision REV
  (plain sqlite3), loaded from ``git show`` (e.g. the commit before the SQLAlchemy port).

Per variant: seconds per ``record_run`` (N synthetic runs, tests/test_history.py's ``make_run``),
per ``query_runs`` of all N with samples, per ``find_run`` by prefix; medians over repetitions and
the median of the per-repetition ratios to ``sqlite``.

    .venv/bin/python benchmarks/bench_history.py [--runs 40] [--reps 5] [--legacy-from a110297] [--json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stress import history  # noqa: E402
from tests import pg  # noqa: E402
from tests.test_history import make_run  # noqa: E402


def load_legacy(rev: str):
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:stress/history.py"], capture_output=True,
                         text=True, check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="legacy-history-")) / "legacy_history.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("legacy_history", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["legacy_history"] = mod      # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def one(mod, db: str, dirs: list[Path], finds: int) -> dict[str, float]:
    t = time.perf_counter()
    for d in dirs:
        mod.record_run(d, None, db)
    rec = (time.perf_counter() - t) / len(dirs)
    t = time.perf_counter()
    got = mod.query_runs(db, None, with_samples=True)
    query = time.perf_counter() - t
    assert len(got) == len(dirs)
    t = time.perf_counter()
    for k in range(finds):
        assert mod.find_run(db, dirs[k % len(dirs)].name) is not None
    find = (time.perf_counter() - t) / finds
    return {"record_s": rec, "query_all_s": query, "find_s": find}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--finds", type=int, default=20)
    ap.add_argument("--legacy-from", metavar="REV")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-history-"))
    dirs = [make_run(work / "runs", f"run-{i:04d}", image_times=[1.0 + (i % 7) * 0.1] * 8,
                     probe_latencies={("after", "screenshot"): [0.1] * 6}, t0=1.79e9 + i) for i in range(args.runs)]
    variants = {"sqlite": history}
    if args.legacy_from:
        variants["legacy"] = load_legacy(args.legacy_from)
    rng = random.Random(args.seed)
    results: dict[str, list[dict]] = {}
    server_cm = None
    if pg.unavailable() is None:
        server_cm = pg.postgres()
        server = server_cm.__enter__()
        variants["postgresql"] = history
    try:
        for rep in range(args.reps):
            order = list(variants)
            rng.shuffle(order)
            for name in order:
                db = server.database() if name == "postgresql" else str(work / f"{name}-{rep}.db")
                results.setdefault(name, []).append(one(variants[name], db, dirs, args.finds))
    finally:
        if server_cm is not None:
            server_cm.__exit__(None, None, None)
    out = {"runs": args.runs, "reps": args.reps, "variants": {}}
    for name, reps in results.items():
        row = {}
        for key in ("record_s", "query_all_s", "find_s"):
            row[key] = statistics.median(r[key] for r in reps)
            row[key + "_ratio_to_sqlite"] = statistics.median(
                r[key] / b[key] for r, b in zip(reps, results["sqlite"]))
        out["variants"][name] = row
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{args.runs} runs, {args.reps} repetitions (medians; ratio: median of per-repetition ratios to sqlite)")
        for name, row in out["variants"].items():
            print(f"{name:11s} record {row['record_s'] * 1e3:7.1f} ms (x{row['record_s_ratio_to_sqlite']:.2f})  "
                  f"query all {row['query_all_s'] * 1e3:7.1f} ms (x{row['query_all_s_ratio_to_sqlite']:.2f})  "
                  f"find {row['find_s'] * 1e3:6.1f} ms (x{row['find_s_ratio_to_sqlite']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
