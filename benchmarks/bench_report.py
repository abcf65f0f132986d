"""How long writing the reports takes for a long session, and how big they are.

Fabricates the run directory of an 8-hour, 500-image SDXL session sampled at 2 Hz (tests/synth_journal.py:
~57,600 nvml ticks + ~57,600 host ticks, 500 images with stages and allocator events, probes before,
during and after, 500 full-size output JPGs), then times ``write_reports`` and each of its parts.

    .venv/bin/python benchmarks/bench_report.py [--images 500] [--hours 8] [--rate-hz 2] [--repeat 3]
                                                [--json results.json] [--keep DIR] [--against REV]

With ``--against REV``: ``write_reports`` of this tree and of commit REV (exported with ``git archive``)
on the same run directory, each in a fresh process, alternately ``--repeat`` times (old, new, old, ...),
so machine noise hits both alike; wall time and CPU time (the process and the children it forks) and
the ratio new/old of the medians; report.json must be identical but for ``generated_at``.

Wall time depends on how busy the machine is; CPU time (process_time) is the steadier figure.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tarfile
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--hours", type=float, default=8.0)
    ap.add_argument("--rate-hz", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3, help="runs of write_reports; the best is reported")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--keep", type=Path, help="generate into this folder and keep it")
    ap.add_argument("--against", metavar="REV", help="compare with this commit, interleaved")
    args = ap.parse_args(argv)

    from synth_journal import Synth, make_run

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        spi = args.hours * 3600 / args.images
        print(f"generating: {args.images} images x {spi:.1f} s at {args.rate_hz:g} Hz ...", file=sys.stderr)
        run, gen_wall, _ = _timed(lambda: make_run(work / "artifacts", Synth(
            images=args.images, seconds_per_image=spi, rate_hz=args.rate_hz, outputs=args.images,
            output_size=None, reuse_outputs=True, probe_reps=5)))
        journal = run / "journal.jsonl"
        lines = sum(1 for _ in open(journal, "rb"))
        outputs_bytes = sum(p.stat().st_size for p in (run / "outputs").iterdir())

        if args.against:
            return _against(args.against, run, work, args.repeat)

        from stress.report import write_reports
        from stress.report.bundle import write_bundle
        from stress.report.charts import render_charts
        from stress.report.build import build_report, dumps_report
        from stress.report.html import render_html
        from stress.report.ticket import render_ticket

        best: dict | None = None
        for i in range(args.repeat):
            out = work / f"reports-{i}"
            res, wall, cpu = _timed(lambda: write_reports(run, out))
            if best is None or wall < best["wall_s"]:
                best = {"wall_s": wall, "cpu_s": cpu, "res": res}
        assert best is not None
        res = best["res"]
        # the parts, once each
        built, b_wall, b_cpu = _timed(lambda: build_report(run))
        report = built.report
        (charts, _), c_wall, c_cpu = _timed(lambda: render_charts(report))
        _, h_wall, h_cpu = _timed(lambda: render_html(report, charts))
        _, t_wall, t_cpu = _timed(lambda: render_ticket(report))
        bout = work / "bundle-only"
        bout.mkdir(exist_ok=True)
        files = {"report.json": res["report_json"], "report.html": res["report_html"], "ticket.md": res["ticket_md"]}
        _, z_wall, z_cpu = _timed(lambda: write_bundle(run, bout / "b.tar.gz", files, report, built.redactor))

        figures = {
            "images": args.images, "hours": args.hours, "rate_hz": args.rate_hz,
            "journal_lines": lines, "journal_bytes": journal.stat().st_size,
            "nvml_events": report["completeness"]["event_counts"].get("nvml", 0),
            "host_events": report["completeness"]["event_counts"].get("host", 0),
            "outputs_bytes": outputs_bytes, "generate_s": round(gen_wall, 1),
            "write_reports_wall_s": round(best["wall_s"], 2), "write_reports_cpu_s": round(best["cpu_s"], 2),
            "build_report_wall_s": round(b_wall, 2), "build_report_cpu_s": round(b_cpu, 2),
            "charts_wall_s": round(c_wall, 2), "charts_cpu_s": round(c_cpu, 2),
            "html_wall_s": round(h_wall, 3), "ticket_wall_s": round(t_wall, 3),
            "bundle_wall_s": round(z_wall, 2), "bundle_cpu_s": round(z_cpu, 2),
            "report_json_bytes": res["report_json"].stat().st_size,
            "report_json_bytes_check": len(dumps_report(report).encode()),
            "report_html_bytes": res["report_html"].stat().st_size,
            "ticket_md_bytes": res["ticket_md"].stat().st_size,
            "bundle_bytes": res["bundle"].stat().st_size if res["bundle"] else None,
            "warnings": res["warnings"],
        }
        width = max(len(k) for k in figures)
        for k, v in figures.items():
            print(f"{k:<{width}}  {v}")
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


# In the measured process: write_reports only (not the interpreter's start-up and imports), its own CPU
# time and that of the children it forked (reaped by then).
_ONE = ("import resource, sys, time; from stress.report import write_reports; w = time.perf_counter(); "
        "c = time.process_time(); write_reports(sys.argv[1], sys.argv[2]); "
        "k = resource.getrusage(resource.RUSAGE_CHILDREN); "
        "print(time.perf_counter() - w, time.process_time() - c + k.ru_utime + k.ru_stime)")


def _export(rev: str, into: Path) -> Path:
    data = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev], check=True,
                          capture_output=True, timeout=120).stdout
    (into / "tree.tar").write_bytes(data)
    with tarfile.open(into / "tree.tar") as tf:
        tf.extractall(into / "tree", filter="data")
    return into / "tree"


def _one(tree: Path, run: Path, out: Path) -> tuple[float, float, dict]:
    p = subprocess.run([sys.executable, "-c", _ONE, str(run), str(out)], cwd=tree, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(tree)), timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"write_reports failed in {tree}: {p.stderr[-2000:]}")
    wall, cpu = map(float, p.stdout.strip().splitlines()[-1].split())
    report = json.loads((out / "report.json").read_text())
    report.pop("generated_at", None)
    return wall, cpu, report


def _against(rev: str, run: Path, work: Path, rounds: int) -> int:
    old_tree = _export(rev, work)
    load = os.getloadavg()[0]
    res: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
    reports: dict[str, dict] = {}
    for r in range(rounds):
        for name, tree in (("old", old_tree), ("new", ROOT)):
            out = work / f"{name}-{r}"
            wall, cpu, reports[name] = _one(tree, run, out)
            shutil.rmtree(out, ignore_errors=True)
            res[name].append((wall, cpu))
            print(f"round {r + 1} {name}: write_reports wall {wall:.2f} s, cpu {cpu:.2f} s", flush=True)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in res.items()}
    for k, (w, c) in med.items():
        print(f"median {k}: wall {w:.2f} s, cpu {c:.2f} s")
    print(f"ratio new/old: wall {med['new'][0] / med['old'][0]:.2f}, cpu {med['new'][1] / med['old'][1]:.2f}")
    print(f"load average (1 min) at the start {load:.1f}, at the end {os.getloadavg()[0]:.1f}; cores {os.cpu_count()}")
    same = reports["old"] == reports["new"]
    print("report.json identical but for generated_at: " + ("yes" if same else "NO"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
