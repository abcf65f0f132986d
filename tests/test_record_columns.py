"""The sample columns (stress.record.columns), built column by column, hold exactly what the fold's
tick-by-tick code held before (tests/fold_reference.py): the same names, order, values and carries,
the same display-process changes, on seeded journals that use every shape a sampler writes (and a few
that older or damaged journals hold)."""
from __future__ import annotations

import json
import random

import pytest

from fold_reference import ReferenceSamples
from stress.record.fold import RunRecord, fold
from stress.record.follow import Follower


def _nvml_tick(rng: random.Random, t: float, gpu: int, first: bool) -> dict:
    ev = {"ev": "nvml", "t": t, "gpu": gpu, "mu": rng.randrange(1 << 30), "ug": rng.randrange(101),
          "pw": round(rng.uniform(20, 450), 1), "tc": rng.randrange(30, 90)}
    if first or rng.random() < 0.05:           # change-only keys: the first tick, then now and then
        ev.update(mt=24 << 30, pl=450.0, pg=rng.choice([3, 4]), pwd=16, da=1)
    if first or rng.random() < 0.03:
        ev["rr"] = [rng.randrange(3), 0, rng.choice([0, 1, None]), 0]
    if rng.random() < 0.03:
        ev["aer"] = [rng.randrange(5), 0]        # shorter than its names
    if rng.random() < 0.1:
        ev["enc"] = {"util": rng.randrange(100), "note": "x", "flag": True}
    if rng.random() < 0.05:
        ev["thr"] = None                          # a field the GPU stopped reporting
    if rng.random() < 0.02:
        ev["ug"] = "n/a"
    if rng.random() < 0.3:                        # process lists, when they change
        ev["gp"] = [[1500, "Xorg", rng.randrange(1 << 28)], [1800, "gnome-shell", rng.randrange(1 << 28)]][
            :rng.randrange(3)]
    if rng.random() < 0.2:
        ev["cp"] = ([[4242, "python", rng.randrange(1 << 32)]] if rng.random() < 0.7 else
                    [{"pid": 4242, "name": "python", "mem": rng.randrange(1 << 32), "type": "C+G"}, "junk"])
    if rng.random() < 0.01:
        ev["procs"] = [{"pid": 7, "name": "firefox", "mem": 123, "type": "graphics"}]
    return ev


def _host_tick(rng: random.Random, t: float, state: dict) -> dict:
    ev = {"ev": "host", "t": t, "mu": rng.randrange(1 << 34), "ma": rng.randrange(1 << 34), "su": 0,
          "ld": [round(rng.uniform(0, 8), 2), 1.0, 0.5], "cpu": rng.uniform(0, 100)}
    if state["first"] or rng.random() < 0.02:
        ev.update(mt=64 << 30, st=8 << 30)
    ev["wk"] = [{"r": rng.randrange(1 << 32), "c": rng.uniform(0, 200), "t": 30, "n": 2, "z": 0}
                for _ in range(rng.choice([0, 1, 1, 1, 2]))] + ([None] if rng.random() < 0.02 else [])
    if rng.random() < 0.05:
        state["xorg"] = rng.choice([state["xorg"], state["xorg"] + 1])   # a restart now and then
    if rng.random() < 0.02:
        state["shell"] = not state["shell"]                                # a compositor gone or back
    ds = [{"p": state["xorg"], "nm": "Xorg", "r": rng.randrange(1 << 28), "c": rng.uniform(0, 9), "t": 12,
           "fd": 90}]
    if state["shell"]:
        ds.append({"p": 1800, "nm": "gnome-shell", "r": rng.randrange(1 << 29), "c": 6.5, "t": 24, "fd": 140})
    if rng.random() < 0.03:
        ds.append({"p": 1900, "nm": "Xorg", "r": 5, "c": 1.0})            # two of one name in a tick
    if rng.random() < 0.02:
        ds.append({"nm": "weston", "r": 7})                               # no pid
    if rng.random() < 0.05:
        ev["dsgone"] = [{"p": 1800, "nm": "gnome-shell"}]
    key = "display" if rng.random() < 0.02 else "ds"                      # an older journal's name
    if rng.random() > 0.02:
        ev[key] = ds
    if rng.random() < 0.05:
        ev["io"] = {"read": rng.randrange(1 << 20), "write": None}
    state["first"] = False
    return ev


def journal_events(seed: int, ticks: int = 400, gpus: int = 2) -> list[dict]:
    rng = random.Random(seed)
    evs: list[dict] = [{"ev": "run_start", "t": 0.0, "format": 2},
                       {"ev": "worker_start", "t": 0.1, "worker": 0, "pid": 4242}]
    state = {"first": True, "xorg": 1500, "shell": True}
    for i in range(ticks):
        t = 1.0 + i * 0.5
        for g in range(gpus):
            evs.append(_nvml_tick(rng, t, g, i == 0))
        evs.append(_host_tick(rng, t + 0.01, state))
    evs.append({"ev": "run_end", "t": 1.0 + ticks * 0.5})
    return evs


def _reference(evs: list[dict]) -> ReferenceSamples:
    ref = ReferenceSamples()
    for ev in evs:
        ref.feed(ev)
    return ref


def _same(rec: RunRecord, ref: ReferenceSamples) -> None:
    assert sorted(rec.nvml) == sorted(ref.nvml)
    for gpu, cols in ref.nvml.items():
        assert rec.nvml[gpu].t == cols.t
        assert list(rec.nvml[gpu].cols.items()) == list(cols.cols.items())   # names, order and values
    assert rec.host.t == ref.host.t
    assert list(rec.host.cols.items()) == list(ref.host.cols.items())
    assert rec.display_changes == ref.display_changes
    assert rec.proc_groups == ref.proc_groups
    assert rec.display_events == ref.display_events


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_columns_equal_the_tick_by_tick_fold(tmp_path, seed):
    evs = journal_events(seed)
    path = tmp_path / "journal.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in evs))
    rec = fold(path)
    ref = _reference(evs)
    _same(rec, ref)
    # the shapes above are all there: otherwise this test would prove less than it says
    host = rec.host.cols
    assert {"load1", "worker.rss", "display[Xorg].rss", "display[gnome-shell].fds", "mem_total", "io.read"} <= set(host)
    assert any(c["change"] == "restarted" for c in rec.display_changes)
    assert any(c["change"] == "vanished" for c in rec.display_changes)
    gpu0 = rec.nvml[0].cols
    assert {"procs[Xorg].mem", "procs[python].mem", "gfx_procs_mem", "worker_gpu_mem", "remapped_corr",
            "aer_correctable", "enc.util"} <= set(gpu0)
    assert "enc.flag" not in gpu0 and "enc.note" not in gpu0      # booleans and text are not numbers


def test_one_column_without_the_others_equals_the_full_build(tmp_path):
    evs = journal_events(7)
    path = tmp_path / "journal.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in evs))
    rec = fold(path)
    for name in ("load1", "load5", "mem_total", "cpu", "mem_used"):
        alone = rec.host.one(name)
        assert alone == fold(path).host.cols.get(name)
    assert rec.host._cols is None                                # nothing else was built
    assert rec.host.one("worker.rss") == rec.host.cols["worker.rss"]   # not a plain key: the full build


def test_a_live_record_is_rebuilt_when_events_arrive(tmp_path):
    evs = journal_events(11, ticks=120)
    path = tmp_path / "journal.jsonl"
    half = len(evs) // 2
    path.write_text("".join(json.dumps(e) + "\n" for e in evs[:half]))
    follower = Follower(path)
    follower.poll()
    first = {k: list(v) for k, v in follower.record.host.cols.items()}
    _same_prefix = _reference(evs[:half])
    assert list(follower.record.host.cols.items()) == list(_same_prefix.host.cols.items())
    with open(path, "a") as fh:
        fh.write("".join(json.dumps(e) + "\n" for e in evs[half:]))
    follower.poll()
    _same(follower.record, _reference(evs))
    assert len(follower.record.host.t) > len(next(iter(first.values())))
