"""stress.background: work beside the caller in a forked child, with the caller's own result whenever
the child cannot give one (no fork allowed, the child failed or died); and the report and the plan made
that way are the same as made in one process."""
from __future__ import annotations

import json
import os
import shutil
import tarfile
import threading
from pathlib import Path

import pytest

from stress import background
from stress.background import Background

GOLDEN = Path(__file__).parent / "data" / "golden"


def _leftovers(tmp_path: Path) -> list[str]:
    return [p.name for p in tmp_path.iterdir() if p.name.startswith(".stress-report-")]


def test_the_value_comes_from_a_child(tmp_path, monkeypatch):
    monkeypatch.setattr(background.tempfile, "tempdir", str(tmp_path))
    job = Background(lambda: {"pid": os.getpid(), "data": b"x" * 100_000})
    assert job.pid is not None and job.pid != os.getpid()
    value = job.result()
    assert value["pid"] != os.getpid() and value["data"] == b"x" * 100_000
    assert job.result() is value                        # asked twice: computed once
    assert _leftovers(tmp_path) == []


def test_in_child_runs_in_the_child_only(monkeypatch):
    seen: list[int] = []
    job = Background(lambda: seen[:], in_child=lambda: seen.append(os.getpid()))
    got = job.result()
    assert len(got) == 1 and got[0] != os.getpid()      # it ran in the child, before fn
    assert seen == []                                    # never here
    monkeypatch.setenv("STRESS_FORK", "0")
    here = Background(lambda: seen[:], in_child=lambda: seen.append(os.getpid()))
    assert here.result() == [] and seen == []            # the caller's fallback does not run it


def test_no_fork_when_another_thread_runs(monkeypatch):
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        job = Background(lambda: os.getpid())
        assert job.pid is None                          # a lock held by that thread would stay held
        assert job.result() == os.getpid()              # computed here instead
    finally:
        stop.set()
        t.join()


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("STRESS_FORK", "0")
    job = Background(lambda: os.getpid())
    assert job.pid is None and job.result() == os.getpid()


def test_a_child_that_fails_or_dies_is_replaced_by_the_caller(tmp_path, monkeypatch):
    monkeypatch.setattr(background.tempfile, "tempdir", str(tmp_path))
    parent = os.getpid()

    def fails():
        if os.getpid() != parent:
            raise RuntimeError("only in the child")
        return "here"

    assert Background(fails).result() == "here"

    def dies():
        if os.getpid() != parent:
            os.kill(os.getpid(), 9)
        return "here too"

    assert Background(dies).result() == "here too"
    assert _leftovers(tmp_path) == []


def test_cancel_ends_the_child_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(background.tempfile, "tempdir", str(tmp_path))
    import time

    job = Background(lambda: time.sleep(60))
    pid = job.pid
    assert pid is not None
    job.cancel()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert _leftovers(tmp_path) == []


def _report_files(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    report.pop("generated_at", None)
    bundle = next(out.glob("*.tar.gz"))
    with tarfile.open(bundle) as tf:
        members = {m.name.split("/", 1)[1]: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}
    return {"report": report, "html": (out / "report.html").read_text(), "ticket": (out / "ticket.md").read_text(),
            "journal": members["journal.jsonl.gz"], "names": sorted(members)}


@pytest.mark.parametrize("run", ["clean", "fault"])
def test_reports_are_the_same_with_and_without_children(tmp_path, monkeypatch, run):
    from stress.report import write_reports

    src = tmp_path / "run"
    shutil.copytree(GOLDEN / run, src)
    write_reports(src, tmp_path / "forked")
    monkeypatch.setenv("STRESS_FORK", "0")
    write_reports(src, tmp_path / "single")
    a, b = _report_files(tmp_path / "forked"), _report_files(tmp_path / "single")
    assert a == b
    assert a["report"]["monitors"]["metrics"]          # sampler summaries made in the child are there


def test_the_plan_is_the_same_with_and_without_a_child(monkeypatch):
    """Three resolutions: the first traced here (with the shared prefix), the second in the child, the
    third here; every figure but the timings equal to the plan made in one process."""
    from stress.memory import make_plan
    from stress.scenario import Scenario

    sc = Scenario.model_validate({"name": "t", "model": {"base": "builtin:tiny-sdxl", "refiner": "builtin:tiny-sdxl-refiner"},
                                  "steps": 6, "images": 3, "resolutions": ["256x256", "320x256", "256x384"],
                                  "seeds": 1})

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if not k.endswith("seconds")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    forked = make_plan(sc)
    monkeypatch.setenv("STRESS_FORK", "0")
    single = make_plan(sc)
    assert strip(forked) == strip(single)
    assert [(r["width"], r["height"]) for r in forked["memory"]["resolutions"]] == [(256, 256), (320, 256), (256, 384)]
