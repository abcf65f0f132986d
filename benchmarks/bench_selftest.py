"""The Must-show figures of the verdict (docs/validation.md): `gpu-stress selftest` with >= 10 trials per
fault class and >= 30 clean runs under background load, on Xvfb (or, ``--display sway``, on a real
compositor).

    PYTHONPATH=. python benchmarks/bench_selftest.py [--trials 10] [--clean 30] [--jobs 1] [--display xvfb|sway]
        [--out DIR] [--write-docs]

Runs the real selftest (every trial a real run on the tiny models; hours on a shared 2-core machine:
start it with nohup), prints its Markdown tables, and with ``--write-docs`` puts them into
docs/validation.md between the ``<!-- selftest:begin -->`` / ``<!-- selftest:end -->`` markers.
``--from DIR [DIR...]`` re-renders existing (possibly partial) selftest.json files without running anything,
merged into one matrix (several selftest runs of the same code, e.g. one stopped and continued).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stress.selftest.display import KINDS  # noqa: E402
from stress.selftest.results import markdown, summarize  # noqa: E402

BEGIN, END = "<!-- selftest:begin -->", "<!-- selftest:end -->"


def markers(name: str | None) -> tuple[str, str]:
    """The markers of the section ``name`` (``--marker``) in docs/validation.md; the default section's
    without a name."""
    return (BEGIN, END) if not name else (f"<!-- selftest:{name}:begin -->", f"<!-- selftest:{name}:end -->")


def describe(parts: list[dict]) -> str:
    """How each merged selftest run was made, from its own options."""
    out = []
    for p in parts:
        o = p.get("options") or {}
        shown = f" --display {p['display']}" if p.get("display", "xvfb") != "xvfb" else ""
        out.append(f"`gpu-stress selftest{shown} --classes {','.join(o.get('classes') or [])} --trials {o.get('trials')} "
                   f"--clean {o.get('clean')} --jobs {o.get('jobs', 1)}` ({len(p['trials'])} trials kept, "
                   f"started {p['started']}, load {p['machine'].get('load1_start')} then)")
    return "merged from " + "; ".join(out)


def section(summary: dict, command: str, name: str | None = None) -> str:
    n = {name: c["trials"] for name, c in summary["classes"].items()}
    counts = ", ".join(f"{k} {v}" for k, v in n.items())
    partial = summary.get("options", {})
    want = partial.get("trials")
    note = ""
    if want and any(v < want for v in n.values()) or summary["clean"]["runs"] < (partial.get("clean") or 0):
        note = (f"\n**Partial**: the run was stopped before it finished (asked for {want} trials per class and "
                f"{partial.get('clean')} clean runs); the counts above are what was measured.\n")
    shown = command if command.startswith("merged") else f"`{command}`"
    begin, end = markers(name)
    return (f"{begin}\nCommand: {shown}\n\nTrials per class: {counts}; clean runs: {summary['clean']['runs']}."
            f"\n\n{markdown(summary)}{note}{end}")


def write_docs(text: str, name: str | None = None) -> None:
    begin, end = markers(name)
    doc = ROOT / "docs" / "validation.md"
    old = doc.read_text(encoding="utf-8")
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + text + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    doc.write_text(new, encoding="utf-8")


def merge(parts: list[dict], options: dict) -> dict:
    """One summary of the trials of several selftest.json files (the first one's machine)."""
    from stress.selftest.faults import CLEAN, FAULTS

    displays = sorted({p.get("display", "xvfb") for p in parts})
    if len(displays) > 1:
        raise SystemExit(f"--from: the selftest runs were made on different displays ({', '.join(displays)}); "
                         "merge the runs of one display at a time")
    # trials of a class this code no longer has (renamed or replaced) are not merged
    trials = [t for p in parts for t in p["trials"] if t["fault"] in FAULTS or t["fault"] == CLEAN]
    m = dict(parts[0]["machine"])
    loads = [p["machine"].get("load1_start") for p in parts if p["machine"].get("load1_start") is not None]
    if len(loads) > 1:
        m["load1_start"] = f"{min(loads)}-{max(loads)}"
    return summarize(trials, machine=m, display=parts[0]["display"], started=min(p["started"] for p in parts),
                     wall_s=sum(p["wall_s"] for p in parts), options=options)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--clean", type=int, default=30)
    ap.add_argument("--classes", default=None)
    ap.add_argument("--jobs", type=int, default=1, help="trials at once (selftest --jobs)")
    ap.add_argument("--display", choices=KINDS, default="xvfb", help="selftest --display")
    ap.add_argument("--out", default=None)
    ap.add_argument("--from", dest="from_dirs", nargs="+", default=None,
                    help="render DIR/selftest.json (several: merged); run nothing")
    ap.add_argument("--drop", action="append", default=[], metavar="DIR=CLASS,...",
                    help="with --from: leave these classes of DIR out (measured with a verdict rule since replaced)")
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--marker", default=None, help="which section of docs/validation.md (default: the unnamed one)")
    a = ap.parse_args()
    command = (f"gpu-stress selftest --trials {a.trials} --clean {a.clean} --jobs {a.jobs}"
               + (f" --display {a.display}" if a.display != "xvfb" else "")
               + (f" --classes {a.classes}" if a.classes else ""))
    if a.from_dirs:
        drop = {Path(d).resolve(): set(c.split(",")) for d, _, c in (x.partition("=") for x in a.drop)}
        parts = []
        for d in a.from_dirs:
            part = json.loads((Path(d) / "selftest.json").read_text(encoding="utf-8"))
            part["trials"] = [t for t in part["trials"] if t["fault"] not in drop.get(Path(d).resolve(), ())]
            parts.append(part)
        summary = merge(parts, {"trials": a.trials, "clean": a.clean, "jobs": a.jobs})
        command = describe(parts)
    else:
        out = Path(a.out or ROOT / "artifacts" / "bench-selftest")
        argv = [sys.executable, "-m", "stress", "selftest", "--trials", str(a.trials), "--clean", str(a.clean),
                "--jobs", str(a.jobs), "--display", a.display, "--out", str(out)] + (["--classes", a.classes] if a.classes else [])
        subprocess.run(argv, env=dict(os.environ, PYTHONPATH=str(ROOT)), check=False)
        summary = json.loads((out / "selftest.json").read_text(encoding="utf-8"))
    text = section(summary, command, a.marker)
    print(text)
    if a.write_docs:
        write_docs(text, a.marker)
    return 0 if summary["passed"] else 14


if __name__ == "__main__":
    sys.exit(main())
