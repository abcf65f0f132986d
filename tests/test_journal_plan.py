"""The journal survives torn writes; the plan expands seeds, resolutions and batches exactly."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from stress.journal import Journal, read_journal, write_json_atomic
import pytest

from stress.plan import (_timesteps, accounting, base_call_steps, base_steps_run, expand, refiner_call_steps,
                         refiner_steps_run)
from stress.scenario import Scenario


def test_journal_appends_and_reads_back(tmp_path):
    with Journal(tmp_path / "j.jsonl") as j:
        j.append("warning", x=1)
        j.append("host", y=float("nan"))   # a sensor's NaN must not lose the event
    c = read_journal(tmp_path / "j.jsonl")
    assert [e["ev"] for e in c.events] == ["warning", "host"] and c.events[1]["y"] is None and not c.torn_tail


def test_non_finite_floats_become_null_and_strings_are_kept(tmp_path):
    with Journal(tmp_path / "j.jsonl") as j:
        j.append("warning", message="Infinity fabric NaN check", v=float("inf"), n=[float("-inf"), 1.5],
                 d={"x": float("nan"), "s": "-Infinity"})
    (e,) = read_journal(tmp_path / "j.jsonl").events
    assert e["message"] == "Infinity fabric NaN check" and e["v"] is None and e["n"] == [None, 1.5]
    assert e["d"] == {"x": None, "s": "-Infinity"}


def test_unknown_event_kinds_are_refused(tmp_path):
    with Journal(tmp_path / "j.jsonl") as j, pytest.raises(ValueError, match="vocabulary"):
        j.append("no_such_kind")


def test_docs_list_every_event_kind():
    """docs/journal.md and stress/events.py name the same kinds (the vocabulary is the contract)."""
    from stress.events import RUN

    text = Path("docs/journal.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", text, re.M)) - {"ev"}   # "ev" heads the table
    assert documented == set(RUN), (sorted(documented - set(RUN)), sorted(set(RUN) - documented))


def test_run_start_carries_the_journal_format():
    from stress.events import JOURNAL_FORMAT, RUN

    assert "format" in RUN["run_start"].keys and JOURNAL_FORMAT >= 2


def test_torn_tail_is_tolerated(tmp_path):
    p = tmp_path / "j.jsonl"
    with Journal(p) as j:
        j.append("warning")
        j.append("phase")
    with open(p, "ab") as fh:
        fh.write(b'{"ev":"c","t":1.0,"half')
    c = read_journal(p)
    assert [e["ev"] for e in c.events] == ["warning", "phase"] and c.torn_tail


def test_events_survive_sigkill_of_the_writer(tmp_path):
    p = tmp_path / "j.jsonl"
    code = (f"from stress.journal import Journal\nimport os, signal\nj = Journal({str(p)!r})\n"
            "for i in range(50): j.append('host', i=i)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert proc.returncode == -9
    assert [e["i"] for e in read_journal(p).events] == list(range(50))


def test_write_json_atomic(tmp_path):
    write_json_atomic(tmp_path / "x.json", {"a": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    assert not list(tmp_path.glob(".*tmp"))


def test_expand_cycles_resolutions_per_batch_and_locks_seeds():
    sc = Scenario(name="p", images=5, batch_size=2, resolutions=["256x256", "320x256"], seeds={"base": 10})
    jobs = expand(sc)
    assert [(j.width, j.height) for j in jobs] == [(256, 256), (320, 256), (256, 256)]
    assert [j.images for j in jobs] == [((0, 10), (1, 11)), ((2, 12), (3, 13)), ((4, 14),)]


def test_sdnext_step_semantics_cut_by_timestep():
    sc = Scenario(name="p", steps=38, model={"refiner": "builtin:tiny-sdxl-refiner"})
    # base: called with int(38 // 0.8 + 1) = 48 steps; refiner with int(38 // (1 - 0.8) // 2 + 1) = 96
    # (1 - 0.8 == 0.19999999999999996, so 38 // it == 190.0). diffusers cuts at timestep 200, and
    # Karras sigmas put most steps at low noise: the base runs 30 steps and the refiner 36, not 38 + 19.
    assert (base_call_steps(sc), refiner_call_steps(sc)) == (48, 96)
    assert (base_steps_run(sc), refiner_steps_run(sc)) == (30, 36)
    d = Scenario(name="p", steps=38, model={"refiner": "builtin:tiny-sdxl-refiner"}, refiner={"semantics": "diffusers"})
    assert (base_call_steps(d), refiner_call_steps(d)) == (38, 38)
    assert (base_steps_run(d), refiner_steps_run(d)) == (24, 14)


@pytest.mark.parametrize("sampler", ["dpmpp_2m_karras", "dpmpp_2m"])
@pytest.mark.parametrize("n", [4, 10, 25, 38, 48, 95, 150])
def test_numpy_schedule_matches_diffusers(sampler, n):
    from diffusers import DPMSolverMultistepScheduler

    sched = DPMSolverMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", lower_order_final=True,
        use_karras_sigmas=sampler.endswith("karras"), final_sigmas_type="zero", timestep_spacing="linspace")
    sched.set_timesteps(n)
    assert _timesteps(sampler, n).tolist() == sched.timesteps.tolist()


def test_accounting_totals():
    sc = Scenario(name="p", images=3, resolutions=["1024x1024", "848x1152"], steps=38, cfg=6.8)
    acc = accounting(sc)
    assert acc["unet_evaluations"] == 3 * 38 * 2
    assert acc["latent_positions"] == 2 * 128 * 128 + 106 * 144


def test_event_after_a_torn_tail_is_not_lost(tmp_path):
    p = tmp_path / "j.jsonl"
    with Journal(p) as j:
        j.append("warning")
    with open(p, "ab") as fh:
        fh.write(b'{"ev":"half')          # power loss mid-write
    with Journal(p) as j:                 # e.g. `run --resume`
        j.append("resume")
    c = read_journal(p)
    assert [e["ev"] for e in c.events] == ["warning", "resume"] and c.bad_lines == [2]


def test_img2img_runs_strength_of_the_schedule():
    sc = Scenario(name="i", workload="sd15-img2img", steps=30, img2img={"strength": 0.6})
    assert base_steps_run(sc) == 18 and refiner_steps_run(sc) == 0


def test_run_json_from_a_damaged_journal(tmp_path):
    from stress.rundata import build_run_json

    (tmp_path / "journal.jsonl").write_text(
        '{"ev":"run_start"}\n{"ev":"image"}\n{"ev":"image","index":"x","t":2}\nnot json\n'
        '{"ev":"plan","images":"many","t":3}\n{"ev":"image","index":0,"outcome":"ok","t":4}\n{"ev":"run_end","t":"late"}\n')
    data = build_run_json(tmp_path)
    assert [i["index"] for i in data["images"]] == [0] and data["outcomes"] == {"ok": 1}
    assert any("not valid JSON" in m for m in data["missing"])


def test_run_json_holds_probe_records_and_verdict_details(tmp_path):
    from stress.rundata import build_run_json

    with Journal(tmp_path / "journal.jsonl") as j:
        j.append("run_start", run_id="r")
        j.append("probe", phase="baseline", visit=0, kind="screenshot", rep=0, status="ok", latency_s=0.01, metrics={})
        j.append("probe", phase="after", visit=0, kind="display", rep=0, status="fail", latency_s=0.02,
                 reason="41% of pixels differ", metrics={})
        j.append("verdict", verdict="reproduced", reasons=["after: display mismatched"], exit_code=10,
                 details={"phases": {"after": {}}})
        j.append("run_end", status="finished")
    data = build_run_json(tmp_path)
    assert [(p["phase"], p["kind"], p["status"]) for p in data["probes"]] == [
        ("baseline", "screenshot", "ok"), ("after", "display", "fail")]
    assert data["probes"][1]["reason"] == "41% of pixels differ"
    assert data["verdict"]["verdict"] == "reproduced" and "phases" in data["verdict"]["details"]


def test_every_event_the_code_writes_is_in_the_vocabulary():
    """A static check of every literal kind written through a journal (append / the samplers' _emit /
    the worker's relayed events), so an untested path cannot raise at run time."""
    from stress.events import FROM_WORKER, LEDGER, RUN

    root = Path(__file__).resolve().parent.parent / "stress"
    written = set()
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        written |= set(re.findall(r'journal\.append\(\s*"([a-z_]+)"', text))
        written |= set(re.findall(r'self\._emit\(\s*"([a-z_]+)"', text))
        written |= set(re.findall(r'\.emit\(\s*"([a-z_]+)"', text))
    assert written, "the scan found nothing: the pattern is wrong"
    assert written <= set(RUN) | set(LEDGER), sorted(written - set(RUN) - set(LEDGER))
    assert FROM_WORKER <= set(RUN)
