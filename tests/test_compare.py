"""``compare``: two runs or two groups, with known differences planted in synthetic runs."""
from __future__ import annotations

import json
import random

import pytest

from stress.history import compare_runs, record_run, summarize_run
from tests.conftest import run_cli
from tests.test_history import make_run


def times(seed: int, n: int = 10, scale: float = 1.0) -> list[float]:
    rng = random.Random(seed)
    return [round(scale * rng.uniform(0.9, 1.1), 4) for _ in range(n)]


def lat(seed: int, scale: float = 1.0) -> dict:
    rng = random.Random(seed)
    return {("after", "screenshot"): [round(scale * rng.uniform(0.08, 0.12), 4) for _ in range(8)],
            ("after", "decode"): [round(rng.uniform(0.02, 0.03), 4) for _ in range(8)]}


def by_metric(result: dict) -> dict:
    return {r["metric"]: r for r in result["metrics"]}


def test_a_run_slowed_twofold_is_told_apart(tmp_path):
    a = summarize_run(make_run(tmp_path, "fast", image_times=times(1), probe_latencies=lat(1)))
    b = summarize_run(make_run(tmp_path, "slow", image_times=times(2, scale=2.0), probe_latencies=lat(2, scale=3.0),
                               verdict="reproduced"))
    res = compare_runs([a], [b])
    m = by_metric(res)
    img = m["image_s_median"]
    assert img["basis"] == "samples" and img["n_a"] == img["n_b"] == 10
    assert img["significant"] and img["p"] < 0.001 and img["direction"] == "worse"
    assert img["relative"] == pytest.approx(1.0, abs=0.15)
    assert m["stage_s_median:base"]["significant"]
    shot = m["probe_latency_median:after:screenshot"]
    assert shot["significant"] and shot["direction"] == "worse" and shot["basis"] == "samples"
    assert not m["probe_latency_median:after:decode"]["significant"]  # untouched probe kind
    # a single number per side: only the change, no test
    ipm = m["images_per_min"]
    assert ipm["basis"] == "single values" and ipm["p"] is None and ipm["change"] < 0
    assert res["verdicts"]["differs"] and res["verdicts"]["b"] == {"reproduced": 1}
    assert "image_s_median" in res["significant"]


def test_two_runs_of_the_same_speed_are_not_called_different(tmp_path):
    a = summarize_run(make_run(tmp_path, "r1", image_times=times(11), probe_latencies=lat(11)))
    b = summarize_run(make_run(tmp_path, "r2", image_times=times(12), probe_latencies=lat(12)))
    res = compare_runs([a], [b])
    assert res["significant"] == [] and not res["verdicts"]["differs"]
    assert by_metric(res)["image_s_median"]["p"] > 0.05


def test_groups_by_filter_test_per_run_values_and_show_environment(tmp_path):
    db = tmp_path / "history.db"
    for i in range(6):   # 6 runs a side: enough to stay significant after the correction for many metrics
        record_run(make_run(tmp_path / "old", f"old{i}", image_times=times(i, n=4), driver="550.54.14",
                            t0=1.79e9 + i), None, db)
        record_run(make_run(tmp_path / "new", f"new{i}", image_times=times(10 + i, n=4, scale=1.5), driver="555.42.02",
                            verdict="reproduced" if i % 2 else "not-reproduced", t0=1.79e9 + 10 + i), None, db)
    res = run_cli("compare", "driver=550.54.14", "driver=555.42.02", "--db", str(db), "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    m = by_metric(data)
    assert m["images_per_min"]["basis"] == "runs" and m["images_per_min"]["n_a"] == 6
    assert m["images_per_min"]["significant"] and m["images_per_min"]["direction"] == "worse"
    assert m["image_s_median"]["basis"] == "samples" and m["image_s_median"]["n_a"] == 24
    assert data["environment"]["driver"] == {"a": ["550.54.14"], "b": ["555.42.02"]}
    assert data["incidence"]["b"]["reproduced"] == 3 and data["incidence"]["b"]["frequency"] == "sometimes"
    assert data["verdicts"]["differs"]
    text = run_cli("compare", "driver=550.54.14", "driver=555.42.02", "--db", str(db))
    assert text.returncode == 0
    assert "SIGNIFICANT (worse)" in text.stdout and "driver: A 550.54.14 | B 555.42.02" in text.stdout
    assert "verdicts: A not-reproduced 6 | B not-reproduced 3, reproduced 3  -> DIFFER" in text.stdout


def test_compare_run_directories_and_ids_from_the_command_line(tmp_path):
    fast = make_run(tmp_path / "artifacts", "20261101-010101-demo-aaaa", image_times=times(3))
    slow = make_run(tmp_path / "artifacts", "20261101-020202-demo-bbbb", image_times=times(4, scale=2.0))
    res = run_cli("compare", str(fast), str(slow))
    assert res.returncode == 0, res.stderr
    assert "image_s_median" in res.stdout and "SIGNIFICANT (worse)" in res.stdout
    db = tmp_path / "h.db"
    record_run(fast, None, db)
    record_run(slow, None, db)
    res = run_cli("compare", "20261101-01", "20261101-02", "--db", str(db), "--json")  # unambiguous prefixes
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["significant"][0] == "image_s_median"


@pytest.mark.parametrize("args, message", [
    (["no-such-run", "other"], "no history database"),
    (["scenario=x", "colour=blue"], "KEY=VALUE"),
])
def test_bad_references_are_one_line_errors(tmp_path, args, message):
    res = run_cli("compare", *args, "--db", str(tmp_path / "missing.db"))
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_unknown_run_id_and_ambiguous_prefix(tmp_path):
    db = tmp_path / "h.db"
    for rid in ("abc-1", "abc-2"):
        record_run(make_run(tmp_path, rid, image_times=[1.0]), None, db)
    res = run_cli("compare", "abc", "abc-1", "--db", str(db))
    assert res.returncode == 2 and "matches 2 runs" in res.stderr
    res = run_cli("compare", "zzz", "abc-1", "--db", str(db))
    assert res.returncode == 2 and "no run with that id" in res.stderr


def test_many_metrics_from_one_distribution_compare_as_no_change():
    """23 metrics, both sides drawn from the same distribution: with the Benjamini-Hochberg correction
    none is significant (uncorrected, about one in twenty would be at alpha 0.05)."""
    import random

    from stress.history import RunSummary, compare_runs

    rng = random.Random(11)

    def runs(n):
        out = []
        for i in range(n):
            s = RunSummary(run_id=f"r{i}-{rng.random()}", run_dir="/x")
            s.metrics = {f"m{k}": rng.gauss(10, 1) for k in range(23)}
            out.append(s)
        return out

    flagged = raw = 0
    for _ in range(20):
        res = compare_runs(runs(8), runs(8))
        assert res["correction"] == "benjamini-hochberg"
        flagged += len(res["significant"])
        raw += sum(1 for r in res["metrics"] if r["p"] is not None and r["p"] < 0.05)
    assert flagged <= 1, flagged          # at most one false discovery in 20 x 23 tests
    assert raw >= 5, raw                  # while the uncorrected tests would have flagged several
