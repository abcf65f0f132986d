"""The journal survives torn writes; the plan expands seeds, resolutions and batches exactly."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from stress.journal import Journal, read_journal, write_json_atomic
from stress.plan import accounting, base_steps_run, expand, refiner_steps_run
from stress.scenario import Scenario


def test_journal_appends_and_reads_back(tmp_path):
    with Journal(tmp_path / "j.jsonl") as j:
        j.append("a", x=1)
        j.append("b", y=float("nan"))   # a sensor's NaN must not lose the event
    c = read_journal(tmp_path / "j.jsonl")
    assert [e["ev"] for e in c.events] == ["a", "b"] and c.events[1]["y"] is None and not c.torn_tail


def test_torn_tail_is_tolerated(tmp_path):
    p = tmp_path / "j.jsonl"
    with Journal(p) as j:
        j.append("a")
        j.append("b")
    with open(p, "ab") as fh:
        fh.write(b'{"ev":"c","t":1.0,"half')
    c = read_journal(p)
    assert [e["ev"] for e in c.events] == ["a", "b"] and c.torn_tail


def test_events_survive_sigkill_of_the_writer(tmp_path):
    p = tmp_path / "j.jsonl"
    code = (f"from stress.journal import Journal\nimport os, signal\nj = Journal({str(p)!r})\n"
            "for i in range(50): j.append('tick', i=i)\nos.kill(os.getpid(), signal.SIGKILL)\n")
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


def test_sdnext_step_semantics():
    sc = Scenario(name="p", steps=38, model={"refiner": "builtin:tiny-sdxl-refiner"})
    # base: int(38 // 0.8 + 1) = 48 scheduled, denoising_end=0.8 -> 38 run
    assert base_steps_run(sc) == 38
    # refiner: int(38 // 0.2 // 2 + 1) = 95 scheduled (38 // 0.2 == 189.0 in floating point), last 20% -> 19
    assert refiner_steps_run(sc) == 19
    d = Scenario(name="p", steps=38, model={"refiner": "builtin:tiny-sdxl-refiner"}, refiner={"semantics": "diffusers"})
    assert (base_steps_run(d), refiner_steps_run(d)) == (30, 8)


def test_accounting_totals():
    sc = Scenario(name="p", images=3, resolutions=["1024x1024", "848x1152"], steps=38, cfg=6.8)
    acc = accounting(sc)
    assert acc["unet_evaluations"] == 3 * 38 * 2
    assert acc["latent_positions"] == 2 * 128 * 128 + 106 * 144
