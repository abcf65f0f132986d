"""Re-judge finished selftest trials with only the first 5 probes of each kind and phase (no repeats):
what the same runs would have said with 5 repetitions. Analysis of recorded journals only.

    PYTHONPATH=. python benchmarks/rejudge_selftest.py SELFTEST_DIR [SELFTEST_DIR...]
"""
import glob, json, sys
from stress.analysis import verdict, _context
from stress.probes.config import ProbesConfig
from stress.record import Follower
from stress.selftest.faults import FAULTS, reason_categories

cfg = ProbesConfig(kinds=["screenshot", "decode", "display"], repetitions=5, timeout=4, display_wait=2)
out = {}
for d in sys.argv[1:]:
    kept = {t["run_dir"] for t in json.load(open(d + "/selftest.json"))["trials"]}   # finished trials only
    for j in sorted(glob.glob(d + "/*/runs/*/journal.jsonl")):
        if j.rsplit("/", 1)[0] not in kept:
            continue
        name = j.split("/")[-4].rsplit("-", 1)[0]
        f = Follower(j); f.poll()
        ev = f.record.judged_events()
        ev5 = [e for e in ev if not (e.get("ev") == "probe" and (e.get("repeat") or (e.get("rep") or 0) >= 5))]
        v = verdict(ev5, cfg, context=_context(f.record))
        cats = reason_categories(v["reasons"]) if v["verdict"] == "reproduced" else []
        fault = FAULTS.get(name)
        ok = (v["verdict"] == "reproduced" and fault.expected in cats) if fault else (v["verdict"] == "reproduced")
        out.setdefault(name, []).append((v["verdict"], ok))
        if name == "clean" and ok:
            print("  5-probe false alarm:", j.split("/")[-4], v["reasons"][:1])
for k, rs in out.items():
    print(k, len(rs), "detected/false-alarm:", sum(ok for _, ok in rs), {s: sum(1 for v, _ in rs if v == s) for s in {v for v, _ in rs}})
