"""Experiments in parts: ``env:`` / ``settings:`` validation with file:line, matrix over env keys, the
/proc read-back of real processes, the judge's validity rule on real journals, GPU settings applied by
a real command and read back through the NVML stand-in, and the comparison across cells."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stress import experiment, settings
from stress.analysis import judge
from stress.cells import cell_of, compare_cells
from stress.errors import ScenarioError, StressError
from stress.experiment import SettingSpec
from stress.history import RunSummary
from stress.journal import Journal
from stress.probes.config import ProbesConfig
from stress.record import fold
from stress.report.cells_html import render_html
from stress.scenario import load_scenarios
from tests import fake_nvml


def _load(tmp_path: Path, text: str):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return load_scenarios(p, check_files=False)


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ScenarioError) as exc:
        _load(tmp_path, text)
    return [str(p) for p in exc.value.problems]


def test_env_section_and_matrix_over_env_keys(tmp_path):
    runs = _load(tmp_path, """
name: wa
env:
  GDK_BACKEND: {value: x11, for: probes}
  PYTORCH_CUDA_ALLOC_CONF: {value: "expandable_segments:True", for: worker}
matrix:
  env.__NV_DISABLE_EXPLICIT_SYNC: ["0", "1", null]
  env.PYTORCH_CUDA_ALLOC_CONF: ["expandable_segments:True", "backend:native"]
""")
    assert len(runs) == 6
    assert runs[0].name == "wa[__NV_DISABLE_EXPLICIT_SYNC=0,PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True]"
    assert runs[5].name == "wa[__NV_DISABLE_EXPLICIT_SYNC=unset,PYTORCH_CUDA_ALLOC_CONF=backend:native]"
    last = runs[5]
    # a matrix value replaces the value and keeps the variable's targets
    assert experiment.for_target(last.env, "worker") == {"PYTORCH_CUDA_ALLOC_CONF": "backend:native",
                                                         "__NV_DISABLE_EXPLICIT_SYNC": None}
    assert experiment.for_target(last.env, "probes") == {"GDK_BACKEND": "x11", "__NV_DISABLE_EXPLICIT_SYNC": None}
    # the resolved scenario (what a resumed run reads back) validates again
    from stress.scenario import Scenario

    again = Scenario.model_validate(last.model_dump(mode="json"))
    assert again.env == last.env
    env = experiment.apply({"__NV_DISABLE_EXPLICIT_SYNC": "1", "HOME": "/h"}, experiment.for_target(last.env, "worker"))
    assert env == {"HOME": "/h", "PYTORCH_CUDA_ALLOC_CONF": "backend:native"}


def test_bad_env_and_settings_are_one_line_each_with_file_and_line(tmp_path):
    lines = _problems(tmp_path, """name: bad
env:
  1BAD: "x"
  NUM: 1
  PYTHONPATH: "/x"
  TGT: {value: "a", for: [displays]}
  FLAG: true
faults:
  - {image: 0, kind: drop-env}
settings:
  - {name: locked_clocks, value: 1500}
  - {name: persistence_mode, value: 2}
  - {name: clocks, value: 2}
""")
    f = str(tmp_path / "s.yaml")
    assert sorted(lines, key=lambda ln: int(ln[len(f) + 1:].split(":")[0])) == [
        f"{f}:3: env.1BAD: '1BAD' is not an environment variable name (letters, digits and _, not starting "
        "with a digit) (got '1BAD')",
        f'{f}:4: env.NUM.value: an environment value must be a string; quote the number ("1") (got 1)',
        f"{f}:5: env.PYTHONPATH: PYTHONPATH is set by the suite for its own processes; a scenario cannot set it "
        "(got 'PYTHONPATH')",
        f"{f}:6: env.TGT.for[0]: Input should be 'worker' or 'probes' (got 'displays')",
        f"{f}:7: env.FLAG.value: an environment value must be a string; YAML read a boolean: quote it ('true') "
        "(got true)",
        f"{f}:9: faults[0]: give env: NAME with kind drop-env, and only with it",
        f"{f}:11: settings[0].value: locked_clocks takes two numbers in MHz, e.g. [1500, 1500] (got 1500)",
        f"{f}:12: settings[1].value: persistence_mode is 0 or 1 (got 2)",
        f"{f}:13: settings[2].name: Input should be 'persistence_mode', 'power_limit_w', 'application_clocks' "
        "or 'locked_clocks' (got 'clocks')",
    ]
    # values the matrix sets are located at their matrix key
    assert _problems(tmp_path, 'name: x\nmatrix:\n  env.1BAD: ["a"]\n  env.OK: [1, "b"]\n') == [
        f"{f}:3: env.1BAD: '1BAD' is not an environment variable name (letters, digits and _, not starting "
        "with a digit) (got '1BAD')",
        f'{f}:4: env.OK.value: an environment value must be a string; quote the number ("1") (got 1)']
    lines = _problems(tmp_path, 'name: x\nenv: {A: {value: "1", for: probes}}\nfaults: [{image: 0, kind: drop-env, env: A}]\n')
    assert lines == [f"{f}:3: faults.env: A is not a variable of env for the worker; drop-env leaves out one "
                     "the scenario sets"]


def test_read_back_of_real_processes(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                         env={"PATH": os.environ["PATH"], "A": "1", "B": "two words"})
    try:
        found, why = experiment.read_environ(p.pid)
        assert why is None and found["A"] == "1" and found["B"] == "two words"
        ok = experiment.compare({"A": "1", "C": None}, found, why)
        assert ok["status"] == "ok" and ok["found"] == {"A": "1", "C": None}
        bad = experiment.compare({"A": "2", "B": None, "PATH": os.environ["PATH"]}, found, why)
        assert bad["status"] == "mismatch" and bad["wrong"] == ["A", "B"]
        assert set(bad["found"]) == {"A", "B", "PATH"}           # only what was asked, never the rest
    finally:
        p.kill()
        p.wait()
    found, why = experiment.read_environ(p.pid)
    assert found is None and "gone" in why
    z = subprocess.Popen([sys.executable, "-c", "pass"])
    while experiment._zombie(z.pid) is False:    # exited, not yet reaped: a zombie has no environment
        pass
    found, why = experiment.read_environ(z.pid, settle=0.05)
    z.wait()
    assert found is None and why == f"process {z.pid} exited before its environment could be read"


def _record(tmp_path: Path, events: list[tuple[str, dict]]):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    for kind, fields in events:
        j.append(kind, **fields)
    j.close()
    return fold(path)


BASE = [("phase", {"phase": "baseline", "state": "start"}),
        ("probe", {"phase": "baseline", "kind": "decode", "rep": 0, "visit": 0, "status": "ok", "latency_s": 0.1,
                   "metrics": {"ref_s_per_mp": 0.1}}),
        ("phase", {"phase": "baseline", "state": "end"}),
        ("probe", {"phase": "after", "kind": "decode", "rep": 0, "visit": 0, "status": "ok", "latency_s": 0.1,
                   "metrics": {"ref_s_per_mp": 0.1}})]
EXP = ("experiment", {"cell": {"env.A": "1"}, "env": {"worker": {"A": "1"}, "probes": {"A": "1"}}, "settings": []})


def _rb(target: str, pid: int, found: str | None, **where) -> tuple[str, dict]:
    return ("env_readback", dict(experiment.compare({"A": "1"}, {"A": found} if found else {}, None),
                                 target=target, pid=pid, **where))


def test_the_judge_makes_a_run_whose_condition_was_not_in_effect_invalid(tmp_path):
    cfg = ProbesConfig(kinds=["decode"], repetitions=1)
    probes_ok = [_rb("probes", 7, "1", phase="baseline", visit=0, kind="decode"),
                 _rb("probes", 8, "1", phase="after", visit=0, kind="decode")]
    good = _record(tmp_path / "a", [EXP, ("worker_start", {"worker": 0, "pid": 5, "reason": "start"}),
                                    _rb("worker", 5, "1", worker=0), *probes_ok, *BASE])
    v = judge(good, cfg)
    assert v["verdict"] != "invalid" and v["details"]["validity"]["valid"]
    assert v["details"]["validity"]["checked"] == {"workers": 1, "probe_children": 2, "settings": 0}

    dropped = _record(tmp_path / "b", [EXP, ("worker_start", {"worker": 0, "pid": 5, "reason": "start"}),
                                       _rb("worker", 5, None, worker=0),
                                       ("worker_start", {"worker": 1, "pid": 6, "reason": "after-crash"}),
                                       *probes_ok[:1], *BASE])
    v = judge(dropped, cfg)
    assert v["verdict"] == "invalid" and v["exit_code"] == 11
    assert v["reasons"][:3] == [
        "invalid: A was not in effect in worker 0 (pid 5): asked for '1', found unset",
        "invalid: the environment of worker 1 (pid 6) was never read back",
        "invalid: the environment of the decode probe child (after, visit 0) was never read back"]
    assert v["details"]["observed_verdict"] == "not-reproduced"
    assert v["reasons"][3].startswith("observed (not-reproduced, not attributable to this cell): ")
    assert v["details"]["incidence"] is None

    # a setting that did not take effect; a run that asked for nothing has no validity at all
    s = ("setting", {"name": "persistence_mode", "gpu": 0, "action": "apply", "wanted": 1, "before": 0, "after": 0,
                     "unit": "", "readback": "nvmlDeviceGetPersistenceMode (1: on)", "status": "not-in-effect",
                     "reason": "exit status 4: Insufficient Permissions (changing it needs root)"})
    exp = ("experiment", {"cell": {}, "env": {}, "settings": [{"name": "persistence_mode", "gpu": 0, "value": 1},
                                                                {"name": "power_limit_w", "gpu": 0, "value": 300}]})
    v = judge(_record(tmp_path / "c", [exp, s, *BASE]), cfg)
    assert v["verdict"] == "invalid"
    assert v["reasons"][:2] == [
        "invalid: the setting power_limit_w on GPU 0 was never applied",
        "invalid: the setting persistence_mode = 1 on GPU 0 was not in effect: read back 0 through "
        "nvmlDeviceGetPersistenceMode (1: on) (exit status 4: Insufficient Permissions (changing it needs root))"]
    assert "validity" not in judge(_record(tmp_path / "d", BASE), cfg)["details"]


class _J:
    def __init__(self):
        self.events = []

    def append(self, kind, **fields):
        self.events.append(dict(fields, ev=kind))
        return self.events[-1]


def test_settings_applied_by_a_real_command_and_read_back_through_nvml(tmp_path, monkeypatch):
    state = tmp_path / "pm"
    state.write_text("0")
    nv = fake_nvml.FakeNvml([dict(fake_nvml.default_script(0),
                                  nvmlDeviceGetPersistenceMode=lambda n: int(state.read_text()),
                                  nvmlDeviceGetPowerManagementLimit=300000)])
    monkeypatch.setattr("stress.hw.nvml._load_pynvml", lambda: nv)
    smi = tmp_path / "nvidia-smi"          # stands in for nvidia-smi: `-i 0 -pm V` sets the stand-in's state
    smi.write_text(f'#!/bin/sh\n[ "$3" = "-pm" ] && echo "$4" > {state} && exit 0\necho "not supported" >&2\nexit 3\n')
    smi.chmod(0o755)
    monkeypatch.setenv("STRESS_NVIDIA_SMI", str(smi))
    specs = [SettingSpec(name="persistence_mode", value=1), SettingSpec(name="power_limit_w", value=300),
             SettingSpec(name="locked_clocks", value=[1500, 1600])]
    j = _J()
    applied = settings.apply_all(specs, j)
    pm, pl, lc = applied
    assert pm["status"] == "ok" and pm["before"] == 0 and pm["after"] == 1 and pm["command"][-2:] == ["-pm", "1"]
    assert pl["status"] == "ok" and pl["command"] is None and pl["reason"] == "already in effect; nothing run"
    assert lc["status"] == "not-in-effect" and lc["command"][-2:] == ["-lgc", "1500,1600"]
    assert "exit status 3: not supported" in lc["reason"]
    assert state.read_text().strip() == "1"
    assert settings.restore_all(specs, applied, j) == []
    restored = [e for e in j.events if e["action"] == "restore"]
    assert [(e["name"], e["status"], e["after"]) for e in restored] == [("persistence_mode", "ok", 0)]
    assert state.read_text().strip() == "0"
    monkeypatch.setattr("stress.hw.nvml._load_pynvml", lambda: fake_nvml.FakeNvml(init_error=9))
    (ev,) = settings.apply_all(specs[:1], _J())
    assert ev["status"] == "unreadable" and "NVML is not available" in ev["reason"]


def _summary(run_id: str, cell: str, verdict: str, lat: list[float], t: float) -> RunSummary:
    return RunSummary(run_id=run_id, scenario=f"wa[{cell}]", verdict=verdict, started_at=t,
                      samples={"probe_latency_s:after:display": lat}, reasons=["invalid: A was not in effect"]
                      if verdict == "invalid" else [])


def test_compare_cells_names_the_cells_that_differ_from_the_reference():
    assert cell_of("wa[A=1,B=x]") == ("wa", "A=1,B=x") and cell_of("plain") == ("plain", "plain")
    runs = []
    for i in range(8):
        runs.append(_summary(f"r{i}", "A=0", "not-reproduced", [0.010 + 0.001 * k for k in range(5)], i))
        runs.append(_summary(f"s{i}", "A=1", "not-reproduced", [0.0105 + 0.001 * k for k in range(5)], 10 + i))
        runs.append(_summary(f"u{i}", "A=2", "reproduced", [0.050 + 0.001 * k for k in range(5)], 20 + i))
    runs.append(_summary("bad", "A=1", "invalid", [9.0] * 5, 30))
    res = compare_cells(runs, alpha=0.05)
    by = {c["cell"]: c for c in res["cells"]}
    assert res["reference"] == "A=0" and res["tests"] == 4
    assert res["differing"] == ["A=2"]
    assert by["A=2"]["differs"] == ["incidence", "latency:after:display"]
    assert by["A=2"]["vs_reference"]["latency:after:display"]["ratio"] == pytest.approx(0.052 / 0.012)
    assert by["A=1"]["invalid"] == 1 and by["A=1"]["latency"]["after:display"]["n"] == 40   # the invalid run's 9 s left out
    assert by["A=2"]["incidence"]["reproduced"] == 8 and by["A=2"]["incidence"]["ci95"][0] > 0.6
    assert compare_cells(runs, reference="=2")["reference"] == "A=2"
    with pytest.raises(StressError, match="matches 3 cells"):
        compare_cells(runs, reference="A=")
    with pytest.raises(StressError, match="no cell matches"):
        compare_cells(runs, reference="B")
    page = render_html(res)
    assert page.count("<svg") == 2 and "A=2" in page and "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")


def test_the_json_schema_takes_env_and_settings_as_written(tmp_path):
    import jsonschema
    import yaml

    from stress.scenario import json_schema

    v = jsonschema.Draft202012Validator(json_schema())
    doc = yaml.safe_load("""
name: wa
env:
  __NV_DISABLE_EXPLICIT_SYNC: "1"
  GONE: null
  PYTORCH_CUDA_ALLOC_CONF: {value: "expandable_segments:True", for: worker}
  GDK_BACKEND: {value: x11, for: [probes]}
settings:
  - {name: locked_clocks, value: [1500, 1500], gpu: 0, restore: false}
faults: [{image: 0, kind: drop-env, env: PYTORCH_CUDA_ALLOC_CONF}]
matrix:
  env.__NV_DISABLE_EXPLICIT_SYNC: ["0", "1", null]
""")
    assert [e.message for e in v.iter_errors(doc)] == []
    (tmp_path / "wa.yaml").write_text(yaml.safe_dump(doc))
    assert len(load_scenarios(tmp_path / "wa.yaml", check_files=False)) == 3    # the loader agrees
    for bad in ({"env": {"1X": "a"}}, {"env": {"A": 1}}, {"env": {"A": {"value": "a", "for": ["displays"]}}},
                {"settings": [{"name": "clocks", "value": 1}]}):
        assert list(v.iter_errors(dict(bad, name="x"))), bad


def test_compare_cells_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    from stress.cli import main

    for args, says in ((["compare"], "give two runs (or groups of runs) A and B, or --cells RUNS..."),
                       (["compare", "a", "--cells", str(tmp_path)], "give either A and B, or --cells RUNS..."),
                       (["compare", "--cells", str(tmp_path)], "a folder with no run directory in it"),
                       (["compare", "a", "b", "--html", "x.html"], "--html and --reference go with --cells")):
        assert main([*args, "--db", str(tmp_path / "none.db")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err, (args, err)


def test_cells_of_several_matrices_keep_their_matrix_name():
    runs = [_summary("a", "A=0", "not-reproduced", [0.01], 1), _summary("b", "A=0", "reproduced", [0.01], 2)]
    runs[1].scenario = "other[A=0]"
    res = compare_cells(runs)
    assert [c["cell"] for c in res["cells"]] == ["wa[A=0]", "other[A=0]"] and res["matrix"] == ["other", "wa"]


def test_the_history_filter_matrix_names_the_cells_of_one_matrix(tmp_path):
    from stress.history import parse_filter, query_runs
    from stress.history.store import record_summary

    db = tmp_path / "history.db"
    for i, name in enumerate(("wa[A=0]", "wa[A=1]", "wab[A=0]", "wa", "xwa[A=0]")):
        record_summary(db, RunSummary(run_id=f"r{i}", scenario=name, verdict="not-reproduced", started_at=float(i),
                                      samples={"probe_latency_s:after:display": [0.01]}))
    got = query_runs(db, parse_filter("matrix=wa"), with_samples=True)
    assert [r.scenario for r in got] == ["wa[A=0]", "wa[A=1]"]
    assert [c["cell"] for c in compare_cells(got)["cells"]] == ["A=0", "A=1"]
