"""`gpu-stress schema` describes the YAML a user writes: every shipped scenario passes, wrong values fail."""
from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from stress.errors import ScenarioError
from stress.scenario import SAMPLERS, load_scenarios
from tests.conftest import ROOT, run_cli
from tests.fuzz_yaml import cases


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    proc = run_cli("schema", timeout=60)
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_scenario_is_valid_against_the_schema(validator, path):
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []


@pytest.mark.parametrize("doc", [
    {"name": "x", "resolutions": ["256x256", [320, 256]]},
    {"name": "x", "resolutions": "1024x1024"},
    {"name": "x", "session": {"time_limit": "8h", "image_timeout": 90, "load_timeout": "1.5m"}},
    {"name": "x", "prompt": "a lighthouse", "negative_prompt": {"tokens": 75}},
    {"name": "x", "sampler": {"name": "euler_a"}, "extends": "base.yaml", "matrix": {"cfg": [5, 7]}},
])
def test_the_short_forms_a_user_writes_are_accepted(validator, doc):
    assert list(validator.iter_errors(doc)) == []


@pytest.mark.parametrize("doc,where", [
    ({"name": "x", "resolutions": ["256by256"]}, "resolutions"),
    ({"name": "x", "session": {"time_limit": "10 minutes"}}, "session"),
    ({"name": "x", "session": {"idle_after": 1e308}}, "session"),
    ({"name": "x", "sampler": {"name": "dpm_fast_magic"}}, "sampler"),
    ({"name": "x", "prompt": 5}, "prompt"),
    ({"name": "x", "prompt": {"tokens": 0}}, "prompt"),
    ({"name": "x", "stepz": 3}, None),
    ({"steps": 3}, None),
])
def test_wrong_values_are_rejected(validator, doc, where):
    errors = list(validator.iter_errors(doc))
    assert errors, doc
    if where:
        assert any(list(e.absolute_path)[:1] == [where] for e in errors), [e.message for e in errors]


def test_the_sampler_is_an_enum_of_the_known_names(validator):
    name = validator.schema["$defs"]["SamplerSpec"]["properties"]["name"]
    assert name["enum"] == list(SAMPLERS)


def test_what_the_loader_accepts_the_schema_accepts(validator, tmp_path):
    """The schema is never stricter than the loader: on 300 generated files the loader accepted."""
    accepted = 0
    for i, case in enumerate(cases(seed=7, n=300)):
        if case.kind not in ("value", "mutation"):
            continue
        path = case.write(tmp_path / f"c{i}")
        try:
            load_scenarios(path, check_files=False)
        except ScenarioError:
            continue
        doc = yaml.safe_load(path.read_bytes())
        if "extends" in doc:
            continue
        accepted += 1
        errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(doc)]
        assert errors == [], (case.kind, doc)
    assert accepted >= 5
