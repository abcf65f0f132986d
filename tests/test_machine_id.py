"""The machine id: a salted hash of /etc/machine-id, stable, never the raw id, masked in reports."""
from __future__ import annotations

import json

from stress.environment import collect
from stress.hw.machine_id import MACHINE_ID_FILES, hashed, machine_id
from stress.report.redact import MACHINE_ID_MASK, Redactor

RAW = "4c4c4544003957108052b4c04f384d32"


def test_the_id_is_a_stable_salted_hash_of_the_machine_id_file(tmp_path, monkeypatch):
    monkeypatch.delenv("STRESS_MACHINE_ID_SALT", raising=False)
    f = tmp_path / "machine-id"
    f.write_text(RAW + "\n")
    mid = machine_id((f,))
    assert mid == machine_id((f,)) == hashed(RAW) and mid.startswith("m-") and len(mid) == 18
    assert RAW not in mid and RAW[:8] not in mid
    assert machine_id((f,), salt="lab-7") != mid                  # another salt, another id
    monkeypatch.setenv("STRESS_MACHINE_ID_SALT", "lab-7")
    assert machine_id((f,)) == machine_id((f,), salt="lab-7")
    other = tmp_path / "other"
    other.write_text("0" * 32)                                   # systemd's "not initialised yet"
    assert machine_id((tmp_path / "missing", other)) is None
    assert machine_id((tmp_path / "missing", f)) == machine_id((f,))   # the first readable file


def test_the_environment_carries_it_and_reports_mask_it():
    env = collect()
    assert env["host"]["machine_id"] == machine_id(MACHINE_ID_FILES)
    mid = "m-0123456789abcdef"
    env = {"host": {"hostname": "rig-x1", "machine_id": mid}}
    r = Redactor.for_run(environment=env, this_machine=False)
    assert r.obj(env)["host"]["machine_id"] == MACHINE_ID_MASK
    line = json.dumps({"ev": "environment", "env": env}) + "\n" + f"note: recorded on {mid} at night"
    out = r.json_text(line)
    assert mid not in out and out.count(MACHINE_ID_MASK) == 2
    assert r.text(f"fleet/{mid}/report.json") == f"fleet/{MACHINE_ID_MASK}/report.json"
    assert "machine id" in r.summary()["masked"]
