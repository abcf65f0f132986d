"""report.json: schema, figures computed from the journal, damaged journals."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from stress.errors import StressError
from stress.journal import Journal
from stress.report.build import build_report, dumps_report
from stress.report.schema import SCHEMA_VERSION, report_json_schema, validate_report
from stress.report.series import minmax_downsample
from synth_journal import GiB, MiB, Synth, make_run, truncate_journal


# ---- a small JSON Schema checker (the subset pydantic emits), so report.json is tested against the
# exported schema itself and not only against the models it came from ----

def _check(value, schema: dict, root: dict, path: str = "$") -> list[str]:
    if "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        return _check(value, root["$defs"][name], root, path)
    if "anyOf" in schema:
        results = [_check(value, s, root, path) for s in schema["anyOf"]]
        return [] if any(not r for r in results) else [f"{path}: matches none of anyOf ({results[0][:1]})"]
    errors: list[str] = []
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: {value!r} != const {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        ok = {"object": isinstance(value, dict), "array": isinstance(value, list), "string": isinstance(value, str),
              "integer": isinstance(value, int) and not isinstance(value, bool),
              "number": isinstance(value, (int, float)) and not isinstance(value, bool),
              "boolean": isinstance(value, bool), "null": value is None}
        if not any(ok[x] for x in types):
            return errors + [f"{path}: {type(value).__name__} is not {t}"]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for req in schema.get("required", []):
            if req not in value:
                errors.append(f"{path}: missing {req}")
        for k, v in value.items():
            if k in props:
                errors += _check(v, props[k], root, f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected key {k}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += _check(v, schema["additionalProperties"], root, f"{path}.{k}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            errors += _check(v, schema["items"], root, f"{path}[{i}]")
    return errors


def check_schema(report: dict) -> list[str]:
    schema = report_json_schema()
    return _check(report, schema, schema)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, dict]:
    run = make_run(tmp_path_factory.mktemp("runs"), Synth(images=8, failed_images=(3,)))
    return run, build_report(run).report


def test_report_follows_its_json_schema(finished):
    _, report = finished
    text = dumps_report(report)
    back = json.loads(text)               # strict JSON: no NaN/Infinity
    assert check_schema(back) == []
    validate_report(back)
    assert back["schema_version"] == SCHEMA_VERSION


def test_schema_checker_catches_violations(finished):
    _, report = finished
    bad = json.loads(dumps_report(report))
    bad["verdict"]["reasons"] = "not a list"
    del bad["workload"]["images_ok"]
    bad["surprise"] = 1
    errors = check_schema(bad)
    assert any("reasons" in e for e in errors)
    assert any("images_ok" in e for e in errors)
    assert any("surprise" in e for e in errors)


def test_verdict_and_run_come_from_the_journal(finished):
    _, r = finished
    assert r["verdict"]["verdict"] == "reproduced" and r["verdict"]["source"] == "journal"
    assert r["exit_code"] == 10
    assert r["run"]["status"] == "finished"
    assert r["run"]["command"] == "gpu-stress run ~/gpu-stress/scenarios/sdnext-regression.yaml"
    assert r["completeness"]["complete"] and r["completeness"]["missing"] == []


def test_workload_totals_follow_the_formulas(finished):
    _, r = finished
    ok = [i for i in r["images"] if i["outcome"] == "ok"]
    assert len(ok) == 7 and r["workload"]["images_failed"] == 1
    # the synthetic run cycles 1152x1536, 848x1152, 1024x1024 and image 3 runs out of memory
    sizes = [(1152, 1536), (848, 1152), (1024, 1024)]
    expected_latent = sum((sizes[i % 3][0] // 8) * (sizes[i % 3][1] // 8) for i in range(8) if i != 3)
    assert r["workload"]["latent_positions"] == expected_latent
    assert r["workload"]["unet_evaluations"] == 7 * (38 + 7) * 2      # cfg 6.8 > 1 doubles the batch
    assert r["workload"]["outcomes"] == {"ok": 7, "oom": 1}
    # one definition (stress.record.derived): ok images per minute of time with an image in flight
    assert r["workload"]["images_per_min"] == pytest.approx(7 / r["workload"]["busy_s"] * 60, rel=1e-3)
    assert r["workload"]["busy_s"] < r["workload"]["workload_s"]      # model loading does not count
    assert set(r["workload"]["stage_s"]) == {"text_encode", "base", "refiner", "vae_decode", "save"}


def test_monitor_deltas_show_the_leak(finished):
    _, r = finished
    m = {(x["src"], x["key"]): x for x in r["monitors"]["metrics"]}
    xorg = m[("host", "display[Xorg].rss")]
    # the synthetic Xorg grows from 220 MiB to 620 MiB over the workload
    assert xorg["baseline"] == 220 * MiB
    assert xorg["after_exit"] == 620 * MiB
    assert xorg["delta_after_exit"] == 400 * MiB
    bar1 = m[("nvml", "bar1_used")]
    assert bar1["baseline"] == 12 * MiB and bar1["peak"] == 192 * MiB
    mem = m[("nvml", "mem_used")]
    assert mem["peak"] > 17 * GiB > mem["after_exit"]           # the worker's memory is gone after exit
    assert m[("nvml", "procs[Xorg].mem")]["delta_after_exit"] == 250 * MiB
    assert r["monitors"]["display_processes"] == [
        {"t": pytest.approx(r["monitors"]["display_processes"][0]["t"]), "name": "gnome-shell", "change": "restarted",
         "old_pid": 1800, "new_pid": 2900}]
    # the same Xid from NVML's event and from the kernel log: the second is marked as a duplicate
    assert [(x["xid"], x["source"], x["duplicate"]) for x in r["xid_events"]] == [
        (56, "nvml-event", False), (56, "kernel-log", True)]
    assert [m["label"] for m in r["timeline"]["marks"] if m["kind"] == "xid"] == ["Xid 56"]
    nvml = next(s for s in r["monitors"]["sources"] if s["src"] == "nvml")
    assert nvml["unsupported"] == {"retired_pages": "not supported"}


def test_probe_rows_and_comparison(finished):
    _, r = finished
    rows = {(x["phase"], x["kind"]): x for x in r["probes"]["rows"]}
    assert rows[("baseline", "screenshot")]["failures"] == 0
    assert rows[("after", "screenshot")]["statuses"] == {"timeout": 2, "ok": 1}
    assert len(rows[("after", "screenshot")]["latencies"]) == 1
    cmp = {c["kind"]: c for c in r["probes"]["compare"]}
    assert cmp["decode"]["ratio_after"] > 2     # the synthetic 'after' probes run 3x slower
    assert cmp["screenshot"]["after_failures"] == 2


def test_probe_visits_are_what_the_load_chart_draws(finished):
    run, r = finished
    from stress.journal import read_journal

    probes = [e for e in read_journal(run / "journal.jsonl").events if e["ev"] == "probe"]
    visits = r["probes"]["visits"]
    groups = {(e["phase"], e["visit"], e["kind"]) for e in probes}
    assert {(v["phase"], v["visit"], v["kind"]) for v in visits} == groups and len(visits) == len(groups)
    assert sum(v["n"] for v in visits) == len(probes) and all(v["repeat"] == 0 for v in visits)
    assert [v["t"] for v in visits] == sorted(v["t"] for v in visits)
    after = next(v for v in visits if (v["phase"], v["kind"]) == ("after", "screenshot"))
    row = next(x for x in r["probes"]["rows"] if (x["phase"], x["kind"]) == ("after", "screenshot"))
    assert after["failed"] == row["failures"] == 2 and after["median_s"] == row["latencies"][0]
    assert after["t"] <= after["t_end"] and after["t"] >= 0
    # the host load is the timeline's own series: the chart draws both from report.json alone
    assert any(s["key"] == "host.load1" and s["t"] for s in r["timeline"]["series"])


def test_timeline_is_downsampled_and_marked(finished):
    _, r = finished
    tl = r["timeline"]
    keys = {s["key"] for s in tl["series"]}
    assert {"nvml[0].mem_used", "nvml[0].bar1_used", "host.display[Xorg].rss", "host.worker.rss"} <= keys
    assert {p["phase"] for p in tl["phases"]} == {"baseline", "workload", "after", "after-exit"}
    assert len(tl["images"]) == 8
    assert {m["kind"] for m in tl["marks"]} == {"xid", "display-process"}
    for s in tl["series"]:
        assert len(s["t"]) == len(s["v"]) <= 2 * 500 + 10


def test_minmax_downsample_keeps_peaks_and_breaks_gaps():
    rng = np.random.default_rng(1)
    t = np.arange(100_000) * 0.5
    v = rng.normal(100, 5, t.size)
    v[31_337] = 10_000.0         # one spike
    v[77_000] = -500.0           # one dip
    t[60_000:] += 900            # 15 minutes without samples (a freeze)
    tt, vv = minmax_downsample(t, v, 300, gap_s=10)
    assert len(tt) <= 2 * 300 + 5
    assert np.nanmax(vv) == 10_000.0 and np.nanmin(vv) == -500.0
    assert np.all(np.diff(tt) >= 0)
    nan_at = np.flatnonzero(np.isnan(vv))
    assert len(nan_at) == 1 and tt[nan_at[0] - 1] < t[60_000] - 900 + 1 and tt[nan_at[0] + 1] >= t[60_000]


def test_change_only_keys_are_carried_forward(tmp_path):
    """prc/mt/gp are written only when they change (docs/monitors.md); the report must carry them."""
    run = tmp_path / "r1"
    run.mkdir()
    j = Journal(run / "journal.jsonl", fsync=False)
    j.append("run_start", t=1000.0, run_id="r1", argv=["gpu-stress", "run", "x.yaml"])
    j.append("phase", t=1000.0, phase="baseline", state="start")
    for k in range(40):
        ev = {"gpu": 0, "mu": (1 + (k >= 10) * 5) * GiB, "b1u": 5 * MiB}
        if k == 0:
            ev.update(mt=24 * GiB, prc=0, gp=[[10, "Xorg", 100 * MiB]])
        if k == 25:
            ev.update(prc=3)
        if k == 30:
            ev.update(prc=7, gp=[[10, "Xorg", 300 * MiB]])
        j.append("nvml", t=1000.5 + k, **ev)
        if k == 5:
            j.append("phase", t=1005.6, phase="baseline", state="end")
            j.append("phase", t=1005.7, phase="workload", state="start")
    j.close()
    r = build_report(run).report
    m = {x["key"]: x for x in r["monitors"]["metrics"]}
    assert m["mem_total"]["n"] == 40                      # one value, carried over every tick
    assert m["pcie_replay"]["kind"] == "counter"
    assert m["pcie_replay"]["delta_last"] == 7 and m["pcie_replay"]["increments"] == 2
    assert m["pcie_replay"]["first_increase_t"] == pytest.approx(25.5)
    assert m["procs[Xorg].mem"]["n"] == 40 and m["procs[Xorg].mem"]["last"] == 300 * MiB
    assert m["gfx_procs_mem"]["baseline"] == 100 * MiB
    assert m["mem_used"]["baseline"] == 1 * GiB


def test_truncated_journal_names_what_is_missing(tmp_path):
    run = make_run(tmp_path, Synth(images=6, finish=False))
    truncate_journal(run, 0.93)
    r = build_report(run).report
    assert check_schema(json.loads(dumps_report(r))) == []
    c = r["completeness"]
    assert c["torn_tail"] and not c["complete"]
    text = " | ".join(c["missing"])
    assert "journal ends without run_end" in text and "froze at" in text
    assert "last journal line was cut off" in text
    assert "no verdict" in text
    assert r["verdict"]["verdict"] == "incomplete" and r["verdict"]["source"] == "derived"
    assert r["exit_code"] is None and r["run"]["status"] == "incomplete"
    assert not c["files"]["run.json"]


def test_machine_froze_mid_image(tmp_path):
    run = make_run(tmp_path, Synth(images=10, finish=False))
    r = build_report(run).report
    incomplete = [i for i in r["images"] if i["outcome"] == "incomplete"]
    assert len(incomplete) == 1
    assert r["workload"]["images_unfinished"] == 1
    assert r["workload"]["images_failed"] == r["workload"]["outcomes"].get("oom", 0)
    assert any(f"image {incomplete[0]['index']} " in m and "never finished" in m for m in r["completeness"]["missing"])
    assert any("phase 'workload' started" in m for m in r["completeness"]["missing"])


def test_bad_lines_and_missing_files_are_reported(tmp_path):
    run = make_run(tmp_path, Synth(images=3))
    lines = (run / "journal.jsonl").read_bytes().split(b"\n")
    lines.insert(5, b"\x00\x00garbage{")
    (run / "journal.jsonl").write_bytes(b"\n".join(lines))
    (run / "environment.json").unlink()
    (run / "scenario.resolved.json").write_text("{not json")
    r = build_report(run).report
    assert r["completeness"]["bad_lines"] == 1
    assert any("not valid JSON" in m and "line 6" in m for m in r["completeness"]["missing"])
    assert any("environment.json is missing" in n for n in r["completeness"]["notes"])
    assert any("scenario.resolved.json cannot be read" in n for n in r["completeness"]["notes"])
    assert r["machine"]["os"] == "Ubuntu 24.04.1 LTS"     # taken from the journal's environment event
    assert r["scenario"] is None


def test_empty_journal_and_no_journal(tmp_path):
    (tmp_path / "journal.jsonl").write_bytes(b"")
    r = build_report(tmp_path).report
    assert r["verdict"]["verdict"] == "incomplete"
    assert "the journal holds no events" in r["completeness"]["missing"]
    assert check_schema(json.loads(dumps_report(r))) == []
    with pytest.raises(StressError, match="no journal.jsonl"):
        build_report(tmp_path / "nowhere")


def test_no_nvml_says_so(tmp_path):
    run = make_run(tmp_path, Synth(images=3, nvml=False))
    r = build_report(run).report
    nvml = [s for s in r["monitors"]["sources"] if s["src"] == "nvml"]
    assert nvml and nvml[0]["status"] == "unavailable" and nvml[0]["samples"] == 0
    assert any("no samples from nvml" in n and "NVML library not found" in n for n in r["completeness"]["notes"])
    assert not any(s["src"] == "nvml" for s in r["timeline"]["series"])
    assert r["machine"]["gpus"] == []


def test_robust_to_odd_values(tmp_path):
    """Strings where numbers belong, nulls, unknown events: summarised or ignored, never a crash."""
    j = Journal(tmp_path / "journal.jsonl", fsync=False)
    j.append("run_start", t=5.0, run_id="odd", argv="not a list")
    j.append("nvml", t=6.0, gpu="0", mu="12", b1u=None, procs=[{"pid": 1, "name": "Xorg", "mem": "x"}, 7])
    j.append("host", t=6.0, ds="nope", wk=[None, {"r": 5}])
    j.append("image", t=7.0, index="2", outcome=None, timings={"base": "3"}, width=None)
    j.append("probe", t=8.0, phase="after", kind="screenshot", status="fail", latency_s="slow")
    j.append("stage", t=8.0, index=None, stage="base", s=1.0)
    j.append("verdict", t=10.0, verdict="inconclusive", reasons=[{"message": "no display"}, 3], exit_code="11")
    j.close()
    with open(tmp_path / "journal.jsonl", "a", encoding="utf-8") as fh:   # a kind from a newer writer
        fh.write('{"ev":"something_new","t":9.0,"x":[1,2]}\n')
    r = build_report(tmp_path).report
    assert check_schema(json.loads(dumps_report(r))) == []
    assert r["verdict"]["reasons"] == ["no display", "3"] and r["exit_code"] == 11
    assert r["images"][0]["index"] == 2 and r["images"][0]["timings"] == {"base": 3.0}
    assert r["completeness"]["event_counts"]["something_new"] == 1


def test_images_record_carries_no_prompt_text(finished, tmp_path):
    _, r = finished
    assert "PROMPTSENTINEL" not in dumps_report(r)
    assert r["scenario"]["prompt"]["text"].startswith("<prompt sha256:")
    assert r["scenario"]["prompt"]["digest"]["tokens"] > 100
    run = make_run(tmp_path, Synth(images=2))
    assert "PROMPTSENTINEL" in dumps_report(build_report(run, include_prompts=True).report)


def test_display_restart_detected_without_pid_rescan_gap(tmp_path):
    """A compositor that vanishes (dsgone) and comes back with a new pid is a restart."""
    j = Journal(tmp_path / "journal.jsonl", fsync=False)
    j.append("run_start", t=0.0, run_id="x")
    rng = random.Random(0)
    for k in range(10):
        ds = [{"p": 100, "nm": "Xorg", "r": 1000 + rng.randrange(10)}]
        if k < 4:
            ds.append({"p": 200, "nm": "kwin_wayland", "r": 5000})
        elif k >= 6:
            ds.append({"p": 300, "nm": "kwin_wayland", "r": 5000})
        j.append("host", t=1.0 + k, mu=1, ds=ds)
    j.close()
    changes = build_report(tmp_path).report["monitors"]["display_processes"]
    assert [(c["name"], c["change"], c["old_pid"], c["new_pid"]) for c in changes] == [
        ("kwin_wayland", "vanished", 200, None), ("kwin_wayland", "restarted", 200, 300)]


def test_long_runs_get_a_detailed_end(tmp_path, finished):
    _, short = finished
    assert short["timeline"]["zoom"] is None
    run = make_run(tmp_path, Synth(images=5, seconds_per_image=300, rate_hz=1.0, outputs=0))
    r = build_report(run).report
    zoom = r["timeline"]["zoom"]
    wl_end = next(p["end"] for p in r["timeline"]["phases"] if p["phase"] == "workload")
    assert zoom["start"] < wl_end < zoom["end"] and zoom["end"] - zoom["start"] <= 300 + 60
    mem = next(s for s in zoom["series"] if s["key"] == "nvml[0].mem_used")
    full = next(s for s in r["timeline"]["series"] if s["key"] == "nvml[0].mem_used")
    assert mem["t"][0] >= zoom["start"] and mem["n"] < full["n"]
    # every sample of the window (the full timeline has fewer there: it is downsampled)
    in_window = [t for t in full["t"] if t >= zoom["start"]]
    assert len(mem["t"]) == mem["n"] > len(in_window)
    from stress.report.charts import render_charts

    charts, warnings = render_charts(r)
    assert warnings == [] and "end-zoom" in [c.id for c in charts]


def test_machine_gpus_carry_what_the_sampler_wrote(finished):
    """The gpu_static names are the field table's (stress.fields.GPU_STATIC): nothing is lost on the way."""
    _, r = finished
    (gpu,) = r["machine"]["gpus"]
    assert gpu["pcie_max_gen"] == 4 and gpu["pcie_max_width"] == 16 and gpu["power_default_limit_w"] == 450.0
    assert gpu["bar1_total"] == 256 * MiB
