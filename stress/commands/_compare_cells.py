"""``gpu-stress compare --cells RUNS...``: the cells of a matrix side by side (stress.cells judges,
this renders the terminal view; ``--html`` writes stress.report.cells_html's page)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from stress.errors import ExitCode, StressError


def _runs_of(ref: str, db: Path) -> list:
    from stress.commands.compare import resolve
    from stress.history import summarize_run

    path = Path(ref)
    if path.is_dir() and not (path / "journal.jsonl").exists():
        found = sorted(p.parent for p in path.glob("*/journal.jsonl"))
        if not found:
            raise StressError(f"{ref}: a folder with no run directory in it (no */journal.jsonl)")
        reports = path.resolve().parent / "reports"
        return [summarize_run(p, reports / p.name if (reports / p.name).exists() else None) for p in found]
    return resolve(ref, db)[1]


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v * 1000:.1f} ms" if v < 10 else f"{v:.2f} s"


def _p(p: float | None) -> str:
    return "-" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _incidence(inc: dict) -> str:
    if not inc["conclusive"]:
        return "no conclusive run"
    lo, hi = inc["ci95"]
    return f"{inc['reproduced']}/{inc['conclusive']} reproduced ({inc['rate']:.0%}, 95% CI {lo:.0%}-{hi:.0%})"


def render(result: dict) -> str:
    out = [f"matrix: {', '.join(result['matrix'])}  ({len(result['cells'])} cells)",
           f"reference: {result['reference']}", ""]
    for c in result["cells"]:
        head = f"{'[reference] ' if c['reference'] else ''}{c['cell']}: {c['runs']} run(s)"
        if c["invalid"]:
            head += f", {c['invalid']} INVALID (not pooled)"
        out.append(head)
        vs = c["vs_reference"]
        inc = f"    incidence: {_incidence(c['incidence'])}"
        if "incidence" in vs:
            cmp = vs["incidence"]
            if cmp.get("difference") is not None:
                inc += (f"; vs reference {cmp['difference'] * 100:+.0f} points, Fisher p={_p(cmp['p'])}, "
                        f"q={_p(cmp.get('q'))}" + (" SIGNIFICANT" if cmp.get("significant") else ""))
            else:
                inc += f"; vs reference: {cmp.get('note')}"
        out.append(inc)
        for reason in c["invalid_reasons"][:3]:
            out.append(f"    invalid run: {reason}")
        for key, lat in c["latency"].items():
            line = f"    {key} latency: median {_ms(lat['median'])} (n={lat['n']})"
            cmp = vs.get(f"latency:{key}")
            if cmp is not None:
                if cmp.get("ratio") is not None:
                    line += f"; {cmp['ratio']:.2f}x the reference's {_ms(cmp['reference_median'])}"
                if cmp.get("p") is not None:
                    line += f", Mann-Whitney p={_p(cmp['p'])}, q={_p(cmp.get('q'))}"
                    line += " SIGNIFICANT" if cmp.get("significant") else ""
                elif cmp.get("note"):
                    line += f" ({cmp['note']})"
            out.append(line)
    out.append("")
    diff = result["differing"]
    out.append(f"differ significantly from the reference (alpha={result['alpha']}, Benjamini-Hochberg over "
               f"{result['tests']} tests): {'; '.join(diff) if diff else 'none'}")
    return "\n".join(out)


def cells_command(args: argparse.Namespace, db: Path) -> int:
    from stress.cells import compare_cells
    from stress.history import parse_filter

    for ref in args.cells:           # every filter's syntax first: one error, before any lookup
        if "=" in ref and not Path(ref).is_dir():
            parse_filter(ref)
    runs: dict[str, object] = {}
    for ref in args.cells:
        for r in _runs_of(ref, db):
            runs.setdefault(r.run_id, r)
    result = compare_cells(list(runs.values()), reference=args.reference, alpha=args.alpha)
    if args.html:
        from stress.report.cells_html import render_html

        try:
            Path(args.html).write_text(render_html(result), encoding="utf-8")
        except OSError as exc:
            raise StressError(f"{args.html}: cannot be written ({exc.strerror or exc})") from None
    print(json.dumps(result, indent=2, default=str) if args.json else render(result))
    return int(ExitCode.OK)
