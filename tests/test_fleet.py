"""Fleets without starting Buildbot: the fleet file's validation (file:line errors, secrets kept out),
the master configuration it generates, what a worker packs and the master records (runs under the
fleet's machine name, a host that stopped responding), and the fleet view (matrix, incidence with its
Wilson interval, trends, HTML, --json). The real master and workers: tests/test_fleet_buildbot.py."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stress.errors import StressError
from stress.fleet.records import HOST_STOPPED, history_target, pack, record_host_stopped, record_upload
from stress.fleet.schema import FleetError, load_fleet, matches, read_secret, scenario_names
from stress.fleet.view import fleet_matrix, render_html
from stress.history import RunSummary, query_runs
from stress.journal import write_json_atomic
from stress.stats import wilson_interval
from tests.conftest import run_cli
from tests.test_history import make_run

SCENARIO = "name: tiny\nmodel:\n  base: builtin:tiny-sdxl\n  refiner: null\nsteps: 2\nimages: 1\n" \
           "resolutions: [64x64]\nseeds: 7\nprompt: a lighthouse\nprobes:\n  enabled: false\n"

FLEET = """\
fleet: lab
master:
  host: build.lab.example
  port: 9989
  www: 127.0.0.1:8010
history:
  url: postgresql://stress@db.lab.example/stress
  password: {env: TEST_FLEET_DB_PASSWORD}
bundles: /srv/bundles
schedule:
  nightly: "01:30"
soak:
  duration: 7h
scenarios:
  tiny: tiny.yaml
machines:
  - name: lab-4090
    expect: {gpu: "*4090*", driver: "550.*", compositor: kwin}
    scenarios: [tiny]
  - name: lab-a4000
    expect: {gpu: "*A4000*"}
    scenarios: [tiny]
    env: {DISPLAY: ":0"}
"""


def write_fleet(tmp_path: Path, text: str = FLEET) -> Path:
    (tmp_path / "tiny.yaml").write_text(SCENARIO)
    p = tmp_path / "fleet.yaml"
    p.write_text(text)
    return p


# ---------------------------------------------------------------------------------------------
# The fleet file
# ---------------------------------------------------------------------------------------------

def test_a_valid_fleet_file_loads(tmp_path):
    fleet = load_fleet(write_fleet(tmp_path))
    assert [m.name for m in fleet.machines] == ["lab-4090", "lab-a4000"]
    assert fleet.schedule.hour_minute == (1, 30) and fleet.schedule.every_s is None
    assert fleet.soak.seconds("duration") == 7 * 3600 and fleet.soak.stop_on == "never"
    assert fleet.scenario_path("tiny") == (tmp_path / "tiny.yaml").resolve()
    assert scenario_names(fleet) == {"tiny": ["tiny"]}
    assert fleet.machine("lab-a4000").env == {"DISPLAY": ":0"} and fleet.machine("lab-4090").argv == ["gpu-stress"]


@pytest.mark.parametrize("edit, expected", [
    (("  nightly: \"01:30\"", "  nightly: \"01:30\"\n  every: 6h"), r"fleet.yaml:\d+: schedule: give exactly one"),
    (("  nightly: \"01:30\"", "  nightly: \"25:00\""), r"fleet.yaml:11: schedule.nightly: must be HH:MM"),
    (("soak:\n  duration: 7h", "soak:\n  duraton: 7h"), r"fleet.yaml:13: soak.duraton: unknown key 'duraton'; "
                                                        r"did you mean 'duration'\?"),
    (("    scenarios: [tiny]\n  - name", "    scenarios: [tiyn]\n  - name"),
     r"fleet.yaml:\d+: machines\[0\].scenarios\[0\]: 'tiyn' is not in 'scenarios'; did you mean 'tiny'\?"),
    (("name: lab-a4000", "name: lab-4090"), r"fleet.yaml:20: machines\[1\].name: 'lab-4090' is named twice"),
    (("url: postgresql://stress@", "url: postgresql://stress:hunter2@"),
     r"fleet.yaml:7: history.url: the URL holds a password: keep it out of the fleet file"),
    (("name: lab-a4000", "name: 'lab a4000'"), r"fleet.yaml:20: machines\[1\].name: must be letters"),
    (("tiny: tiny.yaml", "tiny: missing.yaml"), r"fleet.yaml:15: scenarios.tiny: no such scenario file"),
    (("  www: 127.0.0.1:8010", "  www: localhost"), r"fleet.yaml:5: master.www: must be HOST:PORT"),
    (("  port: 9989", "  port: 99890"), r"fleet.yaml:4: master.port: Input should be less than or equal to 65535"),
])
def test_fleet_file_problems_are_located(tmp_path, edit, expected):
    text = FLEET.replace(*edit)
    assert text != FLEET
    with pytest.raises(FleetError) as exc:
        load_fleet(write_fleet(tmp_path, text))
    import re

    assert any(re.search(expected, line) for line in exc.value.lines()), exc.value.lines()
    assert "hunter2" not in str(exc.value)  # a password in the URL is refused, never echoed


def test_fleet_check_prints_one_line_per_problem_and_exits_2(tmp_path):
    p = write_fleet(tmp_path, FLEET.replace("scenarios: [tiny]\n  - name", "scenarios: [nope]\n  - name")
                    .replace("nightly", "nigthly"))
    res = run_cli("fleet", "check", str(p))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert any("schedule.nigthly: unknown key" in ln for ln in lines), res.stderr
    ok = run_cli("fleet", "check", str(write_fleet(tmp_path)))
    assert ok.returncode == 0 and "lab-a4000" in ok.stdout and "TEST_FLEET_DB_PASSWORD" in ok.stdout
    assert run_cli("fleet", "check", str(tmp_path / "absent.yaml")).returncode == 2


def test_yaml_bombs_and_bad_yaml_are_one_located_line(tmp_path):
    p = write_fleet(tmp_path, "fleet: lab\nmachines: [&a [*a]]\n")
    with pytest.raises(FleetError) as exc:
        load_fleet(p)
    assert exc.value.lines()[0].startswith(str(p.name)) or str(p) in exc.value.lines()[0]
    p.write_text("- just\n- a list\n")
    with pytest.raises(FleetError, match="a fleet file is a mapping"):
        load_fleet(p)


def test_secrets_come_from_the_environment_or_a_private_file(tmp_path, monkeypatch):
    from stress.fleet.schema import Secret

    f = tmp_path / "pw"
    f.write_text("s3cret\n")
    os.chmod(f, 0o644)
    with pytest.raises(StressError, match="readable by others; chmod 600"):
        read_secret(Secret(file=str(f)), what="history password")
    os.chmod(f, 0o600)
    assert read_secret(Secret(file=str(f)), what="x") == "s3cret"
    monkeypatch.setenv("TEST_FLEET_DB_PASSWORD", "from-env")
    assert read_secret(Secret(env="TEST_FLEET_DB_PASSWORD", file=str(f)), what="x") == "from-env"
    monkeypatch.delenv("TEST_FLEET_DB_PASSWORD")
    with pytest.raises(StressError, match="TEST_FLEET_DB_PASSWORD is not set"):
        read_secret(Secret(env="TEST_FLEET_DB_PASSWORD"), what="x")
    with pytest.raises(StressError, match="fleet init writes it"):
        read_secret(None, default_file=tmp_path / "worker-x", what="worker x")


def test_history_target(tmp_path):
    assert history_target("history.db", None, tmp_path) == str(tmp_path / "history.db")
    assert history_target("sqlite:////srv/h.db", None, tmp_path) == "/srv/h.db"
    url = history_target("postgresql://stress@db:5432/stress", "p@ss/word", tmp_path)
    pytest.importorskip("sqlalchemy")
    from sqlalchemy.engine import make_url

    assert make_url(url).password == "p@ss/word" and make_url(url).username == "stress"


def test_expectations_are_globs_or_substrings():
    assert matches("*4090*", "NVIDIA GeForce RTX 4090") and matches("4090", "NVIDIA GeForce RTX 4090")
    assert matches("550.*", "550.54.14") and not matches("555.*", "550.54.14")
    assert matches(None, None) and not matches("kwin", None)


# ---------------------------------------------------------------------------------------------
# The master configuration (Buildbot's objects, no master started)
# ---------------------------------------------------------------------------------------------

def test_configure_builds_one_builder_per_machine_and_both_schedulers(tmp_path, monkeypatch):
    pytest.importorskip("buildbot")
    from buildbot.config.errors import ConfigErrors
    from buildbot.schedulers.forcesched import ForceScheduler
    from buildbot.schedulers.timed import Nightly, Periodic

    from stress.fleet.master import configure, soak_command

    p = write_fleet(tmp_path)
    master = tmp_path / "master"
    (master / "secrets").mkdir(parents=True)
    for name in ("lab-4090", "lab-a4000"):
        f = master / "secrets" / f"worker-{name}"
        f.write_text(f"pw-{name}\n")
        os.chmod(f, 0o600)
    with pytest.raises(ConfigErrors, match="TEST_FLEET_DB_PASSWORD is not set"):
        configure({}, p, basedir=master)
    monkeypatch.setenv("TEST_FLEET_DB_PASSWORD", "s3cr3t-pw")
    c: dict = {}
    configure(c, p, basedir=master)
    record = c["builders"][0].factory.steps[-2]
    assert "s3cr3t-pw" in record.kwargs["history"].target  # the master uses it ...
    assert "s3cr3t-pw" not in repr(c["builders"][0].factory.steps)  # ... and never shows it (twistd.log)
    assert c["buildbotNetUsageData"] is None
    assert c["protocols"] == {"pb": {"port": "tcp:9989:interface=0.0.0.0"}}
    assert c["www"]["port"] == "tcp:8010:interface=127.0.0.1"
    assert [w.workername for w in c["workers"]] == ["lab-4090", "lab-a4000"]
    assert [b.name for b in c["builders"]] == ["lab-4090", "lab-a4000"]
    nightly, force = c["schedulers"]
    kw = nightly._config_kwargs  # Buildbot services keep their arguments until the master starts them
    assert isinstance(nightly, Nightly) and (kw["hour"], kw["minute"]) == (1, 30) and not kw["onlyIfChanged"]
    assert isinstance(force, ForceScheduler) and force._config_kwargs["builderNames"] == ["lab-4090", "lab-a4000"]
    names = [s.kwargs.get("name") or s.step_class.name for s in c["builders"][0].factory.steps]
    assert names == ["pack leftover", "upload leftover", "record leftover", "clean", "scenario tiny", "soak",
                     "pack", "upload", "record", "mark uploaded"]
    fleet = load_fleet(p)
    cmd = soak_command(fleet, fleet.machines[0])
    assert cmd[:3] == ["gpu-stress", "soak", "scenarios/tiny.yaml"] and cmd[cmd.index("--duration") + 1] == "7h"
    short = soak_command(fleet, fleet.machines[0], iterations="1")
    assert "--duration" not in short and short[short.index("--iterations") + 1] == "1"

    p.write_text(FLEET.replace('nightly: "01:30"', "every: 6h"))
    c = {}
    configure(c, p, basedir=master)
    assert isinstance(c["schedulers"][0], Periodic)
    assert c["schedulers"][0]._config_kwargs["periodicBuildTimer"] == 6 * 3600
    (master / "secrets" / "worker-lab-a4000").unlink()
    with pytest.raises(ConfigErrors, match="worker lab-a4000: .* does not exist"):
        configure({}, p, basedir=master)


# ---------------------------------------------------------------------------------------------
# Pack on the worker, record on the master
# ---------------------------------------------------------------------------------------------

def fake_soak(tmp_path: Path, verdicts: list[str]) -> Path:
    state, reports = tmp_path / "state", tmp_path / "reports"
    its = []
    for i, v in enumerate(verdicts, 1):
        rd = make_run(state / "iterations" / f"{i:04d}-1", f"run{i}", image_times=[1.0, 2.0], verdict=v,
                      scenario="tiny", hostname="real-hostname", t0=1.79e9 + 100 * i, reports=reports)
        (rd / "outputs").mkdir()
        (rd / "outputs" / "big.jpg").write_bytes(b"\xff" * 1000)
        (reports / rd.name / "report.html").write_text("<html></html>")
        os.symlink("/etc/passwd", reports / rd.name / "link-out")  # never followed
        its.append({"iteration": i, "scenario": "tiny", "run_id": rd.name, "run_dir": str(rd.relative_to(state)),
                    "report_dir": str(reports / rd.name), "verdict": v})
    write_json_atomic(state / "summary.json", {"soak_id": "soak-1", "status": "completed", "exit_code": 10,
                                               "iterations": its})
    (state / "soak.json").write_text("{}")
    return state


def test_pack_and_record_upload_under_the_fleet_machine_name(tmp_path):
    state = fake_soak(tmp_path, ["not-reproduced", "reproduced"])
    up = tmp_path / "upload"
    man = pack(state, up, machine="lab-4090")
    assert [r["run_id"] for r in man["runs"]] == ["run1", "run2"] and all(r["report"] for r in man["runs"])
    assert (up / "runs" / "run1" / "journal.jsonl").is_file() and not (up / "runs" / "run1" / "outputs").exists()
    assert (up / "reports" / "run2" / "report.html").is_file() and not (up / "reports" / "run2" / "link-out").exists()
    db = tmp_path / "shared.db"
    rec = record_upload(up, db, machine="lab-4090", expect={"gpu": "*4090*", "driver": "555.*"})
    assert rec.mismatches[0] == "run1: driver is '550.54.14', the fleet expects '555.*'"
    rec = record_upload(up, db, machine="lab-4090", expect={"gpu": "*4090*", "driver": "555.*", "compositor": "kwin"})
    assert not any("compositor" in m for m in rec.mismatches)  # none seen (probes off): unknown, not different
    assert [(r["run_id"], r["verdict"]) for r in rec.runs] == [("run1", "not-reproduced"), ("run2", "reproduced")]
    assert rec.mismatches == ["run1: driver is '550.54.14', the fleet expects '555.*'",
                              "run2: driver is '550.54.14', the fleet expects '555.*'"] and not rec.problems
    rows = query_runs(db, {"machine": "lab-4090"})
    assert [(r.run_id, r.soak_id, r.soak_iteration) for r in rows] == [("run1", "soak-1", 1), ("run2", "soak-1", 2)]
    assert rows[0].report_path == str((up / "reports" / "run1" / "report.json").resolve())
    env = json.loads((up / "runs" / "run1" / "environment.json").read_text())
    assert env["host"]["hostname"] == "real-hostname"  # the real one stays in the run's record
    again = record_upload(up, db, machine="lab-4090")  # idempotent per run id
    assert len(again.runs) == 2 and len(query_runs(db, None)) == 2
    with pytest.raises(StressError, match="no readable pack.json"):
        record_upload(tmp_path, db, machine="x")
    with pytest.raises(StressError, match="no soak summary"):
        pack(tmp_path / "nothing", tmp_path / "up2")


def test_pack_leftover_packs_only_what_a_previous_build_did_not_upload(tmp_path):
    state = fake_soak(tmp_path, ["not-reproduced"])
    marker = tmp_path / "uploaded"
    res = run_cli("fleet", "pack", str(state), "--out", str(tmp_path / "up"), "--leftover", str(marker))
    assert res.returncode == 0 and "run1" in res.stdout, res.stderr  # its host stopped before the upload
    assert json.loads((tmp_path / "up" / "pack.json").read_text())["runs"][0]["run_id"] == "run1"
    marker.write_text("done")
    res = run_cli("fleet", "pack", str(state), "--out", str(tmp_path / "up"), "--leftover", str(marker))
    assert res.returncode == 0 and "nothing left over" in res.stdout
    assert json.loads((tmp_path / "up" / "pack.json").read_text())["runs"] == []
    res = run_cli("fleet", "pack", str(tmp_path / "none"), "--out", str(tmp_path / "up"), "--leftover", str(marker))
    assert res.returncode == 0 and record_upload(tmp_path / "up", tmp_path / "h.db", machine="m").runs == []


def test_host_stopped_responding_is_one_row_per_build_with_the_last_event(tmp_path):
    db = tmp_path / "shared.db"
    for _ in range(2):  # recorded twice (the ping and the lost connection): still one row
        rid = record_host_stopped(db, machine="lab-4090", scenario="tiny", build="build7", started_at=1.79e9,
                                  last_event_at=1.79e9 + 3600, reason="no answer from the worker for 600 s",
                                  last_output="[3/40] image 2 ok", note_dir=tmp_path / "bundles" / "lab-4090" / "7")
    (row,) = query_runs(db, None)
    assert row.run_id == rid and row.verdict == HOST_STOPPED and row.status == HOST_STOPPED
    assert row.ended_at == 1.79e9 + 3600 and row.wall_s == 3600 and row.hostname == "lab-4090"
    note = json.loads(Path(row.report_path).read_text())
    assert note["last_event_at"] == 1.79e9 + 3600 and "last output: [3/40] image 2 ok" in note["reasons"]


# ---------------------------------------------------------------------------------------------
# The fleet view
# ---------------------------------------------------------------------------------------------

def _row(run_id, machine, scenario, verdict, t, ipm=10.0, report=None):
    return RunSummary(run_id=run_id, hostname=machine, scenario=scenario, verdict=verdict, started_at=t,
                      ended_at=t + 60, driver="550.54.14", gpu="RTX 4090", report_path=report,
                      metrics={"images_per_min": ipm})


def test_fleet_matrix_counts_incidence_with_its_interval_and_host_stops_apart(tmp_path):
    day = 86400
    runs = [_row("a1", "m1", "s1", "reproduced", 1.79e9), _row("a2", "m1", "s1", "not-reproduced", 1.79e9 + 10),
            _row("a3", "m1", "s1", "not-reproduced", 1.79e9 + day), _row("a4", "m1", "s1", "inconclusive", 1.79e9 + day),
            _row("a5", "m1", "s1", HOST_STOPPED, 1.79e9 + 2 * day),
            _row("b1", "m2", "s2", "not-reproduced", 1.79e9, ipm=20.0)]
    mx = fleet_matrix(runs, machines=["m0", "m1", "m2"], scenarios=["s1", "s2"])
    assert mx["machines"] == ["m0", "m1", "m2"] and mx["scenarios"] == ["s1", "s2"]
    cells = {(c["machine"], c["scenario"]): c for c in mx["cells"]}
    c = cells[("m1", "s1")]
    assert c["runs"] == 5 and c["host_stopped"] == 1 and c["last"]["verdict"] == HOST_STOPPED
    inc = c["incidence"]
    assert (inc["reproduced"], inc["conclusive"], inc["inconclusive"]) == (1, 3, 1)
    assert inc["ci95"] == pytest.approx(list(wilson_interval(1, 3)))
    assert cells[("m0", "s1")]["runs"] == 0 and cells[("m0", "s1")]["last"] is None
    trend = mx["trends"]["m1"]
    assert [(t["runs"], t["incidence"]["reproduced"], t["host_stopped"]) for t in trend] == [(2, 1, 0), (2, 0, 0), (1, 0, 1)]
    assert mx["trends"]["m2"][0]["images_per_min_median"] == 20.0


def test_fleet_view_html_is_self_contained_escaped_and_links_relative(tmp_path):
    rep = tmp_path / "bundles" / "m1" / "1" / "reports" / "a1"
    rep.mkdir(parents=True)
    (rep / "report.json").write_text("{}")
    (rep / "report.html").write_text("<html></html>")
    runs = [_row("a1", "m1", "<script>alert(1)</script>", "reproduced", 1.79e9, report=str(rep / "report.json"))]
    page = render_html(fleet_matrix(runs), title="lab & co", page_dir=tmp_path)
    assert "<script>" not in page and "&lt;script&gt;" in page and "lab &amp; co" in page
    assert "href='bundles/m1/1/reports/a1/report.html'" in page
    assert "src=" not in page and "<link" not in page  # nothing outside the page is loaded


def test_fleet_status_and_view_commands_read_the_history(tmp_path):
    p = write_fleet(tmp_path, FLEET.replace("url: postgresql://stress@db.lab.example/stress\n  password: "
                                            "{env: TEST_FLEET_DB_PASSWORD}", "url: shared.db"))
    db = tmp_path / "shared.db"
    state = fake_soak(tmp_path, ["reproduced"])
    pack(state, tmp_path / "up", machine="lab-4090")
    record_upload(tmp_path / "up", db, machine="lab-4090")
    record_host_stopped(db, machine="lab-a4000", scenario="tiny", build="build1", started_at=1.79e9,
                        last_event_at=1.79e9 + 5, reason="the worker's connection was lost during the soak")
    res = run_cli("fleet", "status", str(p))
    assert res.returncode == 0, res.stderr
    line = {ln.split()[0]: ln for ln in res.stdout.splitlines() if ln.startswith("lab-")}
    assert "reproduced" in line["lab-4090"] and "(1/1 of 1)" in line["lab-4090"]
    assert "HOST STOPPED RESPONDING" in line["lab-a4000"] and "stopped 1x" in line["lab-a4000"]
    res = run_cli("fleet", "view", str(p), "--json")
    mx = json.loads(res.stdout)
    assert mx["machines"] == ["lab-4090", "lab-a4000"] and mx["runs"] == 2
    res = run_cli("fleet", "view", "--history", str(db), "--out", str(tmp_path / "v" / "fleet.html"))
    assert res.returncode == 0 and (tmp_path / "v" / "fleet.html").is_file(), res.stderr
    # a build recorded again (the database was down at the time): idempotent, nothing lost or doubled
    db2 = tmp_path / "again.db"
    (tmp_path / "note").mkdir()
    record_host_stopped(db, machine="lab-a4000", scenario="tiny", build="build2", started_at=1.79e9,
                        last_event_at=1.79e9 + 9, reason="no answer", note_dir=tmp_path / "note")
    for _ in range(2):
        res = run_cli("fleet", "record", str(tmp_path / "up"), str(tmp_path / "note"), "--history", str(db2))
        assert res.returncode == 0, res.stderr
    rows = query_runs(db2, None)
    assert sorted((r.hostname, r.verdict) for r in rows) == [("lab-4090", "reproduced"), ("lab-a4000", HOST_STOPPED)]
    assert next(r for r in rows if r.verdict == HOST_STOPPED).ended_at == 1.79e9 + 9
    res = run_cli("fleet", "record", str(tmp_path), "--history", str(db2))
    assert res.returncode == 2 and "not a fleet upload" in res.stderr
    res = run_cli("fleet", "status", "--history", str(tmp_path / "absent.db"))
    assert res.returncode == 2 and "no history database there yet" in res.stderr
