"""The golden journals: two real runs of the runner on the tiny models under a private Xvfb (recorded
once with tests/data/golden/record.sh), one clean and one whose X server was stopped (SIGSTOP) for the
whole `after` phase. Every view is built from each, and every number they share must agree: the
record and the judgement are single."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from stress.history import query_runs, record_run
from stress.junit import case_from_verdict
from stress.report.build import build_report
from stress.report.html import key_metrics
from stress.report.ticket import render_ticket
from stress.rundata import build_run_json

GOLDEN = Path(__file__).parent / "data" / "golden"


def _views(name: str, tmp_path: Path) -> dict:
    run = tmp_path / name
    shutil.copytree(GOLDEN / name, run)
    run_json = build_run_json(run)
    report = build_report(run).report
    db = tmp_path / "history.db"
    record_run(run, None, db)
    (row,) = query_runs(db, {"run": report["run_id"]})
    ticket = render_ticket(report)
    v = report["verdict"]
    junit = case_from_verdict("run", "gpu-stress.run", v["verdict"], v["reasons"], report["workload"]["wall_s"])
    return {"run_json": run_json, "report": report, "row": row, "ticket": ticket, "junit": junit}


def _incidence_line(ticket: str) -> str:
    m = re.search(r"### Bug incidence\n\*\*(.+?)\*\* \((.*)\)", ticket)
    assert m, ticket
    return m.group(1)


@pytest.mark.parametrize("name", ["clean", "fault"])
def test_every_view_shares_the_same_numbers(name, tmp_path):
    g = _views(name, tmp_path)
    rj, rep, row = g["run_json"], g["report"], g["row"]
    wl = rep["workload"]
    assert rj["images_ok"] == wl["images_ok"] == row.images_ok == 3
    assert rj["images_failed"] == wl["images_failed"] == row.images_failed == 0
    assert rj["images_per_min"] == wl["images_per_min"] == row.metrics["images_per_min"]
    assert rj["images_per_min"] > 0
    assert rj["image_s_median"] is not None
    assert round(rj["image_s_median"], 4) == wl["image_s"]["p50"] == row.metrics["image_s_median"]
    assert rj["verdict"]["verdict"] == rep["verdict"]["verdict"] == row.verdict
    assert rep["completeness"]["complete"], rep["completeness"]["missing"]


def test_clean_run_claims_no_incidence(tmp_path):
    g = _views("clean", tmp_path)
    v = g["report"]["verdict"]
    assert v["verdict"] == "not-reproduced"
    assert v["details"]["incidence"] is None
    assert _incidence_line(g["ticket"]) == "Not observed"
    assert "probe_visits_affected" not in g["row"].metrics
    assert g["junit"].outcome == "passed"


def test_injected_failure_has_one_incidence_everywhere(tmp_path):
    g = _views("fault", tmp_path)
    v = g["report"]["verdict"]
    assert v["verdict"] == "reproduced"
    assert any("after: screenshot timed out" in r for r in v["reasons"])
    inc = v["details"]["incidence"]
    # the X server was stopped for the `after` visit only: 1 visit of the during visits, after, after-exit
    assert inc["affected"] == 1 and inc["visits"] >= 3 and inc["word"] == "Once"
    assert _incidence_line(g["ticket"]) == inc["word"]
    from stress.report.charts import render_charts
    from stress.report.html import render_html

    charts, _ = render_charts(g["report"])
    html = render_html(g["report"], charts)
    assert f"Bug incidence: <strong>{inc['word']}</strong>" in html
    assert g["row"].metrics["probe_visits_affected"] == inc["affected"]
    assert g["row"].metrics["probe_visits_after"] == inc["visits"]
    assert g["junit"].outcome == "failure"


def test_the_judge_decides_what_changed(tmp_path):
    """"What changed" rows carry the judge's flag (stress.analysis.metric_changed), not a view's."""
    from stress.analysis import metric_changed

    rep = _views("clean", tmp_path)["report"]
    metrics = rep["monitors"]["metrics"]
    assert metrics and all(m["changed"] == metric_changed(m) for m in metrics)
    by_key = {m["key"]: m for m in metrics}
    for row in key_metrics(rep):
        assert row["changed"] == by_key[row["key"]]["changed"]


def test_golden_journals_are_the_current_format():
    from stress.events import JOURNAL_FORMAT, RUN

    for name in ("clean", "fault"):
        lines = (GOLDEN / name / "journal.jsonl").read_text(encoding="utf-8").splitlines()
        first = json.loads(lines[0])
        assert first["ev"] == "run_start" and first["format"] == JOURNAL_FORMAT
        assert {json.loads(x)["ev"] for x in lines} <= set(RUN)
