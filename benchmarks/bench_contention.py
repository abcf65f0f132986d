"""Contention: demo image time idle vs with 1 and 2 competing busy processes, old thread policy vs new.

Each trial is a fresh worker-like child process that loads scenarios/demo.yaml's models (tiny SDXL
base + refiner, DPM++ 2M Karras, CFG 6.8, the 2400-token prompt, 256x256) and generates images; the
first image is warm-up and not timed. Policies:

- ``old``: torch's default (one OpenMP thread per core in the affinity mask, libgomp's default
  spinning wait), as the worker ran before issue 15;
- ``new``: what the supervisor and worker do now (``stress.workload.threads``): ``OMP_WAIT_POLICY=PASSIVE``
  and threads = free cores.

Competitors are pure-Python spinners (``while True: pass``) this script starts before a trial and
kills after it. Trials are interleaved (policy x competitors, round after round) so that the
machine's own background load falls on both policies alike; results are ratios to the same policy's
idle median, and to the new policy's idle median.

    .venv/bin/python benchmarks/bench_contention.py [--rounds 2] [--images 2] [--steps 38] [--json]
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


def child(images: int, steps: int) -> None:
    import yaml

    from stress.scenario import Scenario
    from stress.workload.engine import WorkloadSession

    raw = yaml.safe_load((ROOT / "scenarios" / "demo.yaml").read_text(encoding="utf-8"))
    raw.update(steps=steps, images=images + 1, probes={"enabled": False})
    raw["model"]["device"] = "cpu"
    sc = Scenario.model_validate(raw)
    with tempfile.TemporaryDirectory(prefix="bench-contention-") as tmp:
        sess = WorkloadSession(sc, Path(tmp), lambda ev, f: None, base_dir=ROOT / "scenarios")
        info = sess.load()
        times = []
        for i in range(images + 1):
            t0 = time.perf_counter()
            sess.generate({"images": [{"index": i, "seed": 1234}], "width": 256, "height": 256})
            times.append(time.perf_counter() - t0)
    print(json.dumps({"threads": info["cpu_threads"], "why": info["cpu_threads_reason"],
                      "wait": info["omp_wait_policy"], "times": times[1:]}))


def spinner() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def trial(policy: str, competitors: int, images: int, steps: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("STRESS_CPU_THREADS", None)
    if policy == "old":
        env["STRESS_CPU_THREADS"] = str(len(os.sched_getaffinity(0)))  # torch's default
    else:
        from stress.workload.threads import worker_env

        env.update(worker_env({}))
    spin = [spinner() for _ in range(competitors)]
    try:
        out = subprocess.run([sys.executable, __file__, "--child", "--images", str(images), "--steps", str(steps)],
                             env=env, capture_output=True, text=True, timeout=3600)
    finally:
        for p in spin:
            p.kill()
            p.wait()
    if out.returncode:
        raise SystemExit(f"bench child failed ({out.returncode}): {out.stderr[-2000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res.update(policy=policy, competitors=competitors, load_after=round(os.getloadavg()[0], 2))
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--images", type=int, default=2, help="timed images per trial (after one warm-up)")
    ap.add_argument("--steps", type=int, default=38)
    ap.add_argument("--competitors", default="0,1,2")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.images, args.steps)
        return 0
    comps = [int(c) for c in args.competitors.split(",")]
    trials = []
    for r in range(args.rounds):
        for c in comps:
            for policy in (("old", "new") if r % 2 == 0 else ("new", "old")):
                t = trial(policy, c, args.images, args.steps)
                trials.append(t)
                print(f"round {r} {policy} +{c}: threads {t['threads']} ({t['why']}), wait {t['wait']}: "
                      f"{', '.join(f'{x:.2f}' for x in t['times'])} s/image (load {t['load_after']})",
                      file=sys.stderr, flush=True)
    med = {(p, c): statistics.median([x for t in trials if t["policy"] == p and t["competitors"] == c
                                      for x in t["times"]]) for p in ("old", "new") for c in comps}
    rows = []
    for c in comps:
        for p in ("old", "new"):
            rows.append({"policy": p, "competitors": c, "median_s": round(med[(p, c)], 2),
                         "vs_own_idle": round(med[(p, c)] / med[(p, comps[0])], 2),
                         "vs_new_idle": round(med[(p, c)] / med[("new", comps[0])], 2)})
    res = {"cores": len(os.sched_getaffinity(0)), "steps": args.steps, "rounds": args.rounds,
           "images": args.images, "rows": rows, "trials": trials}
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{res['cores']} cores, {args.steps} steps, {args.rounds} rounds x {args.images} images")
        print("| policy | competitors | median s/image | vs own idle | vs new idle |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['policy']} | {r['competitors']} | {r['median_s']} | {r['vs_own_idle']}x | {r['vs_new_idle']}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
