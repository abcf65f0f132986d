"""Fleet overhead: a one-iteration tiny soak run directly against the same soak through a Buildbot
build (force -> fetch scenario -> soak -> pack -> upload -> record in the shared history), side by
side in one run, alternating, on one loopback master and one worker (SQLite history).

Direct: ``gpu-stress soak tiny.yaml --iterations 1`` until it exits. Fleet: ``gpu-stress fleet force``
until the run's row is in the shared history and the build is complete. The ratio fleet/direct is
what the Buildbot build adds to a soak (a real soak is hours, so the absolute overhead is what
matters there; a tiny one shows it).

    .venv/bin/python benchmarks/bench_fleet.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stress.history import query_runs  # noqa: E402
from tests.test_fleet_buildbot import TINY, _api, _end, _free_port, _wait_for  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    cache = Path(os.environ.get("STRESS_CACHE") or tmp / "cache")
    env = dict(os.environ, PYTHONPATH=str(ROOT), STRESS_CACHE=str(cache), STRESS_NVML_MODULE="tests.fake_nvml")
    (tmp / "tiny.yaml").write_text(TINY)
    pb, www_port = _free_port(), _free_port()
    www = f"127.0.0.1:{www_port}"
    machine_env = json.dumps({k: env[k] for k in ("PYTHONPATH", "STRESS_CACHE", "STRESS_NVML_MODULE")})
    (tmp / "fleet.yaml").write_text(f"""fleet: bench
master: {{host: 127.0.0.1, port: {pb}, listen: 127.0.0.1, www: "{www}"}}
history: {{url: history.db}}
schedule: {{nightly: "03:00"}}
soak: {{iterations: 1, min_free_disk: "0"}}
scenarios: {{tiny: tiny.yaml}}
machines:
  - name: box
    scenarios: [tiny]
    command: {json.dumps([sys.executable, "-m", "stress"])}
    env: {machine_env}
""")
    cli = [sys.executable, "-m", "stress"]
    subprocess.run([*cli, "fleet", "init", str(tmp / "fleet.yaml"), "--master", str(tmp / "master"), "--workers",
                    str(tmp / "workers")], env=env, check=True, capture_output=True, timeout=120)
    bindir = Path(sys.executable).parent
    procs = {}
    direct, fleet = [], []
    try:
        procs["master"] = subprocess.Popen([str(bindir / "buildbot"), "start", "--nodaemon", str(tmp / "master")],
                                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                           start_new_session=True)
        _wait_for(lambda: (tmp / "master" / "twistd.log").exists() and "BuildMaster is running" in
                  (tmp / "master" / "twistd.log").read_text(), 90, "the master")
        procs["box"] = subprocess.Popen([str(bindir / "buildbot-worker"), "start", "--nodaemon",
                                         str(tmp / "workers" / "box")], env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        _wait_for(lambda: any(w["connected_to"] for w in _api(www, "workers")["workers"]), 90, "the worker")
        # warm the model cache once, outside the timings
        subprocess.run([*cli, "soak", str(tmp / "tiny.yaml"), "--iterations", "1", "--state", str(tmp / "warm"),
                        "--reports", str(tmp / "warm-reports"), "--min-free-disk", "0", "--quiet"], env=env,
                       capture_output=True, timeout=600)
        for i in range(args.rounds):
            t = time.monotonic()
            subprocess.run([*cli, "soak", str(tmp / "tiny.yaml"), "--iterations", "1", "--state", str(tmp / f"d{i}"),
                            "--reports", str(tmp / f"d{i}-reports"), "--min-free-disk", "0", "--quiet"], env=env,
                           capture_output=True, timeout=600)
            direct.append(time.monotonic() - t)
            t = time.monotonic()
            subprocess.run([*cli, "fleet", "force", str(tmp / "fleet.yaml")], env=env, check=True,
                           capture_output=True, timeout=60)
            _wait_for(lambda: (tmp / "history.db").exists() and len(query_runs(str(tmp / "history.db"))) == i + 1
                      and all(b["complete"] for b in _api(www, "builds")["builds"]), 600, "the build")
            fleet.append(time.monotonic() - t)
            print(f"round {i + 1}: direct {direct[-1]:.1f} s, fleet {fleet[-1]:.1f} s", flush=True)
    finally:
        _end(procs)
    d, f = statistics.median(direct), statistics.median(fleet)
    print(json.dumps({"rounds": args.rounds, "direct_s": [round(x, 2) for x in direct],
                      "fleet_s": [round(x, 2) for x in fleet], "median_direct_s": round(d, 2),
                      "median_fleet_s": round(f, 2), "ratio_fleet_over_direct": round(f / d, 2),
                      "overhead_s": round(f - d, 2)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
