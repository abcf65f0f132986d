"""Judge finished sway selftest trials twice: as recorded (``display-wayland`` timed from the window's
connection, ``latency_from: connect``) and with the latency of gpu-stress before 2026-12 (from the
mapping commit, kept in every probe as ``commit_visible_s``). The same probes, the same trials, the
same judge (``stress.analysis.judge``): only the definition of that one latency differs, so the two
columns compare the definitions side by side. Analysis of recorded journals only.

    PYTHONPATH=. python benchmarks/rejudge_wayland_latency.py SELFTEST_DIR [SELFTEST_DIR...]

Prints, per fault class (and the clean control): trials, detected (a fault) or false alarms (clean)
under each definition, and the range of the per-trial ratio of ``display-wayland`` medians
(the injected phase over baseline; for the clean control the larger of after and after-exit) under
each.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stress.analysis import judge  # noqa: E402
from stress.probes.config import ProbesConfig  # noqa: E402
from stress.record import fold  # noqa: E402
from stress.selftest.faults import FAULTS, reason_categories  # noqa: E402

KIND = "display-wayland"


def _ratio(probes: list[dict], phase: str) -> float | None:
    base = [e["latency_s"] for e in probes if e["phase"] == "baseline" and e.get("status") == "ok"]
    then = [e["latency_s"] for e in probes if e["phase"] == phase and e.get("status") == "ok"]
    if not base or not then or not statistics.median(base):
        return None
    return statistics.median(then) / statistics.median(base)


def _run_dir(selftest: Path, t: dict) -> Path | None:
    """The trial's run directory: as recorded, else found under the trial's own folder (a selftest
    made with a relative ``--out``, or moved since)."""
    if t.get("run_dir") and (Path(t["run_dir"]) / "journal.jsonl").is_file():
        return Path(t["run_dir"])
    found = sorted((selftest / f"{t['fault']}-{int(t.get('trial') or 0):03d}").glob("runs/*/journal.jsonl"))
    return found[-1].parent if found else None


def _as_commit(rec) -> bool:
    """Replace each display-wayland latency by its commit-to-visible part; False if a probe lacks it."""
    for e in rec.probes:
        if e.get("kind") != KIND or e.get("status") != "ok":
            continue
        m = e.get("metrics") or {}
        if m.get("commit_visible_s") is None:
            return False
        e["latency_s"] = m["commit_visible_s"]
    return True


def main(dirs: list[str]) -> int:
    if not dirs:
        print("usage: rejudge_wayland_latency.py SELFTEST_DIR [SELFTEST_DIR...]", file=sys.stderr)
        return 2
    rows: dict[str, dict] = {}
    for d in dirs:
        try:
            doc = json.loads((Path(d) / "selftest.json").read_text())
        except (OSError, ValueError) as exc:
            print(f"{d}: no readable selftest.json ({exc}); give a folder `gpu-stress selftest` wrote",
                  file=sys.stderr)
            return 2
        for t in doc["trials"]:
            name = t["fault"]
            run = _run_dir(Path(d), t)
            if run is None:
                print(f"{d}: {name} trial {t.get('trial')} has no run directory; left out")
                continue
            cfg = ProbesConfig(**json.loads((run / "scenario.resolved.json").read_text())["probes"])
            fault = FAULTS.get(name)
            # a fault's injected phase; for the clean control the larger ratio of its later phases
            phases = [t.get("phase") or fault.phase] if fault else ["after", "after-exit"]
            row = rows.setdefault(name, {"trials": 0, "connect": 0, "commit": 0, "r_connect": [], "r_commit": []})
            row["trials"] += 1
            rec = fold(run / "journal.jsonl")     # folded once: judged as recorded, then with commit_visible_s
            for label in ("connect", "commit"):
                if label == "commit" and not _as_commit(rec):
                    print(f"{run}: a display-wayland probe has no commit_visible_s (made before 2026-12?)")
                    return 2
                v = judge(rec, cfg)
                if fault:
                    hit = v["verdict"] == "reproduced" and fault.expected in reason_categories(v["reasons"])
                else:
                    hit = v["verdict"] == "reproduced"
                row[label] += hit
                ratios = [_ratio([e for e in rec.probes if e.get("kind") == KIND], ph) for ph in phases]
                ratios = [r for r in ratios if r is not None]
                if ratios:
                    row[f"r_{label}"].append(max(ratios))
    print("| class | trials | detected / false alarms, from the connection | from the mapping commit "
          "| display-wayland median ratio, from the connection | from the mapping commit |")
    print("|---|---:|---:|---:|---|---|")
    for name, r in rows.items():
        span = {k: (f"{min(r[k]):.2f}-{max(r[k]):.2f}x" if r[k] else "-") for k in ("r_connect", "r_commit")}
        print(f"| {name} | {r['trials']} | {r['connect']} | {r['commit']} | {span['r_connect']} | {span['r_commit']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
