"""Scenario loading and validation: every problem at once, located, with a fix; extends; matrix."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from stress.errors import ScenarioError
from stress.scenario import Scenario, json_schema, load_scenario, load_scenarios, parse_duration
from tests.conftest import ROOT, run_cli


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def problems(path: Path) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        load_scenarios(path)
    return info.value.lines()


def test_shipped_scenarios_validate():
    for path in sorted((ROOT / "scenarios").glob("*.yaml")):
        assert load_scenarios(path), path


def test_demo_stacks_every_stressor():
    sc = load_scenario(ROOT / "scenarios/demo.yaml")
    assert sc.model.base == "builtin:tiny-sdxl" and sc.model.refiner == "builtin:tiny-sdxl-refiner"
    assert (sc.steps, sc.cfg, sc.sampler.name) == (38, 6.8, "dpmpp_2m_karras")
    assert sc.prompt.tokens == 2400 and len(sc.resolutions) > 1 and isinstance(sc.seeds, int)


def test_regression_scenario_matches_the_report():
    sc = load_scenario(ROOT / "scenarios/sdnext-regression.yaml")
    assert sc.images == 500 and sc.refiner.switch == 0.8 and sc.model.dtype == "fp16"
    assert sc.resolutions == [(1152, 1536), (1024, 1024), (1152, 1152), (848, 1152), (1024, 1536)]
    assert sc.session.restart_worker_every == 0


def test_every_problem_reported_with_file_line_and_fix(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    p = write(tmp_path, "bad.yaml", """name: bad
model:
  base: ./missing/sd_xl_base_1.0.safetensors
  dtyp: fp16
sampler:
  name: dpmpp_2m_karas
steps: -3
resolutions: [1152x1536, 1000x1001, abc]
prompt:
  file: empty.txt
""")
    lines = problems(p)
    text = "\n".join(lines)
    assert "bad.yaml:4: model.dtyp: unknown key 'dtyp'; did you mean 'dtype'?" in text
    assert "bad.yaml:6: sampler.name: unknown sampler; did you mean 'dpmpp_2m_karras'?" in text
    assert "bad.yaml:7: steps:" in text and "(got -3)" in text
    assert "resolutions[1]: 1000x1001 is not divisible by 8" in text and "try 1000x1000" in text
    assert "resolutions[2]: is not WIDTHxHEIGHT" in text
    assert "bad.yaml:3: model.base: checkpoint not found" in text and "builtin:sdxl" in text
    assert "bad.yaml:10: prompt.file: prompt file is empty" in text
    assert len(lines) == 7


def test_unknown_sampler_alone_is_one_line(tmp_path):
    p = write(tmp_path, "s.yaml", "name: s\nsampler: {name: dpm_fast_magic}\n")
    [line] = problems(p)
    assert line.startswith(f"{p}:2: sampler.name: unknown sampler") or ":2: sampler.name: unknown sampler" in line


def test_a_cross_key_check_points_at_its_key(tmp_path):
    """A check between two keys of one section is located at that section, not at line 1."""
    p = write(tmp_path, "o.yaml", "name: o\nsteps: 4\noptimizations:\n  cpu_offload: true\n  sequential_offload: true\n")
    [line] = problems(p)
    assert ":3: optimizations: cpu_offload and sequential_offload exclude each other" in line


def test_yaml_syntax_error_is_located(tmp_path):
    p = write(tmp_path, "y.yaml", "name: x\nsteps: [1,\n")
    [line] = problems(p)
    assert "not valid YAML" in line and "y.yaml:3" in line


def test_extends_deep_merges_and_detects_cycles(tmp_path):
    write(tmp_path, "base.yaml", "name: base\nsteps: 10\nmodel: {base: builtin:tiny-sdxl, dtype: bf16}\n")
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nname: child\nmodel: {refiner: builtin:tiny-sdxl-refiner}\n")
    sc = load_scenario(child)
    assert (sc.name, sc.steps, sc.model.dtype, sc.model.refiner) == ("child", 10, "bf16", "builtin:tiny-sdxl-refiner")
    write(tmp_path, "a.yaml", "extends: b.yaml\nname: a\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\nname: b\n")
    [line] = problems(tmp_path / "a.yaml")
    assert "cycle detected: a.yaml -> b.yaml -> a.yaml" in line


def test_error_in_parent_is_located_in_parent(tmp_path):
    write(tmp_path, "base.yaml", "name: base\n\ncfg: lots\n")
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nname: child\n")
    [line] = problems(child)
    assert "base.yaml:3: cfg:" in line and "lots" in line


def test_matrix_expands_into_named_runs(tmp_path):
    p = write(tmp_path, "m.yaml", "name: sweep\nmatrix:\n  cfg: [5, 6.8]\n  model.dtype: [fp16, bf16]\n")
    runs = load_scenarios(p)
    assert [r.name for r in runs] == ["sweep[cfg=5,dtype=fp16]", "sweep[cfg=5,dtype=bf16]",
                                      "sweep[cfg=6.8,dtype=fp16]", "sweep[cfg=6.8,dtype=bf16]"]
    assert runs[3].cfg == 6.8 and runs[3].model.dtype == "bf16" and runs[3].matrix_values == {"cfg": 6.8, "model.dtype": "bf16"}


def test_matrix_value_errors_are_reported(tmp_path):
    p = write(tmp_path, "m.yaml", "name: sweep\nmatrix:\n  cfg: 5\n")
    [line] = problems(p)
    assert "matrix.cfg: must be a non-empty list" in line


def test_seeds_forms():
    assert Scenario(name="a", seeds=7).seed_for(5) == 7
    assert Scenario(name="a", seeds=[1, 2, 3]).seed_for(4) == 2
    assert Scenario(name="a", seeds={"base": 100, "increment": 2}).seed_for(3) == 106


def test_durations():
    assert parse_duration("90s") == 90 and parse_duration("10m") == 600 and parse_duration("2h") == 7200
    assert parse_duration(5) == 5.0
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_schema_is_json_schema_with_extends_and_matrix():
    schema = json_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"model", "sampler", "prompt", "extends", "matrix", "probes", "monitors"} <= set(schema["properties"])


def test_cli_validate_and_schema_exit_codes(tmp_path):
    ok = run_cli("validate", "scenarios/demo.yaml")
    assert ok.returncode == 0 and "ok: scenarios/demo.yaml: demo" in ok.stdout
    bad = write(tmp_path, "bad.yaml", "name: x\nresolutions: [1001x1000]\n")
    res = run_cli("validate", str(bad))
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert "resolutions[0]: 1001x1000 is not divisible by 8" in res.stderr
    schema = run_cli("schema")
    assert schema.returncode == 0 and json.loads(schema.stdout)["title"] == "stress scenario"


def test_cli_run_with_bad_scenario_writes_nothing(tmp_path):
    bad = write(tmp_path, "bad.yaml", "name: x\nsampler: {name: nope}\n")
    res = run_cli("run", str(bad), "--out", str(tmp_path / "artifacts"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert not (tmp_path / "artifacts").exists()


def test_workload_and_model_must_agree(tmp_path):
    assert Scenario(name="i", workload="sd15-img2img").model.base == "builtin:tiny-sd15"
    p = write(tmp_path, "w.yaml", "name: w\nworkload: sd15-img2img\nmodel: {base: builtin:tiny-sdxl}\n")
    [line] = problems(p)
    assert "w.yaml:3: model.base: builtin:tiny-sdxl is not an SD 1.5 model" in line
    p = write(tmp_path, "v.yaml", "name: v\nmodel: {base: builtin:tiny-sd15}\n")
    [line] = problems(p)
    assert "cannot be the base of the sdxl workload" in line
