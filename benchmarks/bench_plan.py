"""`gpu-stress plan` wall and CPU time, this tree against another commit, interleaved in one run.

    python benchmarks/bench_plan.py [--against REV] [--rounds N] [--scenario PATH]

The other commit's tree is exported with ``git archive`` into a temporary folder and both run with
the same interpreter, alternately (old, new, old, new, ...), so machine noise hits both alike. Prints
one line per run and the medians with the ratio new/old; figures go to docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _export(rev: str, into: Path) -> Path:
    data = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev], check=True,
                          capture_output=True, timeout=120).stdout
    tar_path = into / "tree.tar"
    tar_path.write_bytes(data)
    with tarfile.open(tar_path) as tf:
        tf.extractall(into / "tree", filter="data")
    return into / "tree"


def _run(tree: Path, scenario: Path) -> tuple[float, float, str]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "stress", "plan", str(scenario), "--no-detect", "--json", "--quiet"],
                       cwd=tree, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"plan failed in {tree}: {p.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    plan = json.loads(p.stdout)
    rows = [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in plan["memory"]["resolutions"]]
    return wall, cpu, json.dumps(rows, sort_keys=True, default=str)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", default="HEAD", help="the commit to compare with (default HEAD)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scenario", default="scenarios/sdnext-regression.yaml")
    a = ap.parse_args()
    scenario = (ROOT / a.scenario).resolve()
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        old_tree = _export(a.against, Path(tmp))
        results: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
        outputs: dict[str, set[str]] = {"old": set(), "new": set()}
        for r in range(a.rounds):
            for name, tree in (("old", old_tree), ("new", ROOT)):
                wall, cpu, out = _run(tree, scenario)
                results[name].append((wall, cpu))
                outputs[name].add(out)
                print(f"round {r + 1} {name}: wall {wall:.1f} s, cpu {cpu:.1f} s", flush=True)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in results.items()}
    for k, (w, c) in med.items():
        print(f"median {k}: wall {w:.1f} s, cpu {c:.1f} s")
    print(f"ratio new/old: wall {med['new'][0] / med['old'][0]:.2f}, cpu {med['new'][1] / med['old'][1]:.2f}")
    same = outputs["old"] == outputs["new"]
    print("memory predictions identical: " + ("yes" if same else "NO"))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
