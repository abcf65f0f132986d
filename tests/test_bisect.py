"""Version bisection (stress/bisect.py, ``gpu-stress bisect``) on histories built from real runs: the
golden run directories (tests/data/golden: recorded from the real runner, one clean, one whose X server
was stopped for the whole `after` phase) are copied once per synthetic history row, with the driver
version (and run id) rewritten, and recorded through ``stress.history.record_run``."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stress.bisect import bisect, describe, group_by_version, sort_versions, version_key
from stress.history import query_runs, record_run
from tests.conftest import run_cli

GOLDEN = Path(__file__).parent / "data" / "golden"
VERSIONS = ["580.119.02", "595.44", "610.57", "1000.1"]   # as text, 1000.1 would sort first


def _row(tmp: Path, db: Path, kind: str, run_id: str, driver: str, *, after_scale: float = 1.0) -> None:
    """One history row from a golden run: its directory copied, the run id and driver rewritten, and
    (for a latency step) the `after` probes' latencies scaled by ``after_scale``."""
    rd = tmp / run_id
    shutil.copytree(GOLDEN / kind, rd)
    env = json.loads((rd / "environment.json").read_text())
    env["gpu"]["driver"] = driver
    (rd / "environment.json").write_text(json.dumps(env))
    lines = []
    for line in (rd / "journal.jsonl").read_text().splitlines():
        ev = json.loads(line)
        if ev["ev"] == "run_start":
            ev["run_id"] = run_id
        elif ev["ev"] == "probe" and ev.get("phase") == "after" and isinstance(ev.get("latency_s"), float):
            ev["latency_s"] *= after_scale
        lines.append(json.dumps(ev, separators=(",", ":")))
    (rd / "journal.jsonl").write_text("\n".join(lines) + "\n")
    record_run(rd, None, db)


def _history(tmp_path: Path, *, fault_from: str | None = None, slow_from: str | None = None,
             per_version: int = 3) -> Path:
    db = tmp_path / "history.db"
    bad = VERSIONS.index(fault_from) if fault_from else len(VERSIONS)
    slow = VERSIONS.index(slow_from) if slow_from else len(VERSIONS)
    for vi, version in enumerate(VERSIONS):
        for r in range(per_version):
            jitter = 1.0 + 0.03 * ((vi * per_version + r) % 3 - 1)      # -3 %, 0, +3 %: no trend
            _row(tmp_path / "runs", db, "fault" if vi >= bad else "clean", f"run-{vi}-{r}", version,
                 after_scale=(2.5 if vi >= slow else 1.0) * jitter)
    return db


def test_versions_sort_as_versions():
    assert sort_versions(VERSIONS) == ["580.119.02", "595.44", "610.57", "1000.1"]
    assert version_key("595.44") < version_key("610.57") < version_key("1000.1")
    assert version_key("550.54.14") < version_key("550.54.15") < version_key("550.100")
    assert version_key("6.8.0-45-generic") < version_key("6.8.0-50-generic") < version_key("6.10.0-1-amd64")
    assert version_key("1.9rc1") < version_key("1.9") < version_key("1.9-1") < version_key("1.10")
    assert version_key("1.9~beta2") < version_key("1.9")
    assert version_key("610") == version_key("610.0")[:2] + version_key("610")[2:]
    assert version_key("sway version 1.8.1") < version_key("sway version 1.9")
    assert version_key("xvfb 2:21.1.7-3") > version_key("xvfb 99.0")          # the Debian epoch first
    assert version_key("unknown") > version_key("99999")                      # no digits: last, never an error


@pytest.fixture(scope="module")
def fault_db(tmp_path_factory) -> Path:
    """12 rows: 3 runs on each of 4 driver versions, the desktop fault from 610.57 on."""
    return _history(tmp_path_factory.mktemp("fault"), fault_from="610.57")


def test_a_desktop_fault_from_one_version_on_names_it(fault_db):
    db = fault_db
    runs = query_runs(db, with_samples=True)
    assert len(runs) == 12 and {r.verdict for r in runs} == {"reproduced", "not-reproduced"}
    groups, unknown = group_by_version((r.driver, r) for r in runs)
    assert unknown == 0 and [g.version for g in groups] == VERSIONS
    res = bisect(groups)
    f = res["finding"]
    assert f is not None and f["metric"] == "incidence"
    assert (f["first_bad"], f["last_good"]) == ("610.57", "595.44")
    assert (f["before"]["reproduced"], f["before"]["conclusive"]) == (0, 6)
    assert (f["after"]["reproduced"], f["after"]["conclusive"]) == (6, 6)
    # Fisher exact, 0/6 vs 6/6: p = 2 / C(12, 6); Bonferroni over the 3 splits
    assert f["p"] == pytest.approx(2 / 924)
    assert f["p_corrected"] == pytest.approx(3 * 2 / 924) and f["significant"]
    assert res["summary"].startswith("first bad: 610.57, last good: 595.44; incidence 0/6 -> 6/6")
    assert "595.44 0/3, 610.57 3/3" in res["summary"]


def test_no_change_names_none(tmp_path):
    db = _history(tmp_path)
    groups, _ = group_by_version((r.driver, r) for r in query_runs(db, with_samples=True))
    res = bisect(groups)
    assert res["finding"] is None
    assert res["steps"] and not any(s["significant"] for s in res["steps"])
    assert any(s["metric"].startswith("latency:after:") for s in res["steps"])    # latency was tested too
    assert res["summary"] == "no significant change across 4 versions (580.119.02 .. 1000.1) at alpha=0.05"


def test_a_latency_only_step_is_found(tmp_path):
    db = _history(tmp_path, slow_from="1000.1", per_version=4)
    runs = query_runs(db, with_samples=True)
    assert {r.verdict for r in runs} == {"not-reproduced"}     # the verdicts did not change...
    res = bisect(group_by_version((r.driver, r) for r in runs)[0])
    f = res["finding"]
    assert f is not None and f["metric"].startswith("latency:after:")   # ...the after-phase latency did
    assert (f["first_bad"], f["last_good"]) == ("1000.1", "610.57")
    assert f["after"]["median"] / f["before"]["median"] == pytest.approx(2.5, rel=0.1)
    inc = next(s for s in res["steps"] if s["metric"] == "incidence")
    assert not inc["significant"]


def test_too_few_versions_or_runs_say_so():
    assert describe(None, [], 0.05).startswith("no bisection: the runs cover 0 version(s)")
    assert bisect([])["finding"] is None


def test_bisect_command(fault_db, tmp_path):
    db = fault_db
    out = run_cli("bisect", "--by", "driver", "--db", str(db), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "first bad: 610.57, last good: 595.44; incidence 0/6 -> 6/6" in out.stdout
    lines = out.stdout.splitlines()
    order = [ln.split()[0] for ln in lines[1:6]]
    assert order == ["version"] + VERSIONS
    # 595.44 and 610.57 only: 0/3 vs 3/3 (Fisher p = 0.1) is too little to tell
    few = run_cli("bisect", "--db", str(db), "--driver", "[56][91]*", timeout=120)
    assert few.returncode == 0 and "no significant change across 2 versions (595.44 .. 610.57)" in few.stdout
    js = run_cli("bisect", "--by", "kernel", "--db", str(db), "--json", timeout=120)
    data = json.loads(js.stdout)
    assert js.returncode == 0 and data["by"] == "kernel" and len(data["versions"]) == 1
    assert data["finding"] is None and data["summary"].startswith("no bisection: the runs cover 1 version(s)")
    comp = json.loads(run_cli("bisect", "--by", "compositor", "--db", str(db), "--json", timeout=120).stdout)
    assert [v["version"] for v in comp["versions"]] == ["xvfb 2:21.1.7-3+deb12u13"]
    bad = run_cli("bisect", "--db", str(tmp_path / "none.db"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.splitlines()) == 1
