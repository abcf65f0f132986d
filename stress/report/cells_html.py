"""The HTML page of ``gpu-stress compare --cells --html FILE``: a table of the cells and one inline SVG
chart per metric across cells (incidence with its Wilson interval; each probe latency's median with
its quartiles). Renders stress.cells' result; judges nothing. Self-contained: no script, no link out."""
from __future__ import annotations

from html import escape

W, ROW, LEFT, RIGHT, TOP = 760, 26, 300, 30, 30
REF, SIG, PLAIN = "#1565c0", "#c62828", "#546e7a"


def _label(text: str, limit: int = 44) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _color(cell: dict, key: str) -> str:
    if cell["reference"]:
        return REF
    return SIG if key in cell["differs"] else PLAIN


def _chart(title: str, rows: list[tuple[dict, float | None, float | None, float | None]], key: str,
           unit: str, scale: float, top: float | None = None) -> str:
    """One horizontal dot-and-whisker chart: a row per cell (value, low, high) on a shared axis from 0
    to ``top`` (default: a little above the largest value)."""
    top = top or max([x for _, v, lo, hi in rows for x in (v, lo, hi) if x is not None] or [1.0]) * 1.05 or 1.0
    h = TOP + ROW * len(rows) + 40
    span = W - LEFT - RIGHT

    def x(v: float) -> float:
        return LEFT + span * (v / top)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" role="img" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
             f'<text x="{LEFT}" y="18" font-size="13" font-weight="bold">{escape(title)}</text>']
    for i, (cell, v, lo, hi) in enumerate(rows):
        y = TOP + ROW * i + ROW / 2
        col = _color(cell, key)
        parts.append(f'<text x="{LEFT - 8}" y="{y + 4:.1f}" font-size="11" text-anchor="end">'
                     f'{escape(_label(cell["cell"]))}</text>')
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eceff1"/>')
        if v is None:
            parts.append(f'<text x="{LEFT + 4}" y="{y + 4:.1f}" font-size="11" fill="#90a4ae">no data</text>')
            continue
        if lo is not None and hi is not None:
            parts.append(f'<line x1="{x(lo):.1f}" x2="{x(hi):.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{col}" '
                         f'stroke-width="2"/>')
        parts.append(f'<circle cx="{x(v):.1f}" cy="{y:.1f}" r="5" fill="{col}"/>')
        parts.append(f'<text x="{x(v) + 8:.1f}" y="{y - 6:.1f}" font-size="10">{v * scale:.3g} {unit}</text>')
    base = TOP + ROW * len(rows) + 4
    parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{base}" y2="{base}" stroke="#90a4ae"/>')
    for frac in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<text x="{x(top * frac):.1f}" y="{base + 14}" font-size="10" text-anchor="middle">'
                     f'{top * frac * scale:.3g}</text>')
    parts.append(f'<text x="{W - RIGHT}" y="{base + 26}" font-size="10" text-anchor="end">{escape(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def charts(result: dict) -> list[str]:
    """One SVG per metric: incidence first, then each probe latency."""
    cells = result["cells"]
    out = [_chart("incidence of 'reproduced' (95% Wilson interval)",
                  [(c, c["incidence"]["rate"], *(c["incidence"]["ci95"] or (None, None))) for c in cells],
                  "incidence", "%", 100.0, top=1.0)]
    for metric in result["metrics"][1:]:
        rows = [(c, c["latency"].get(metric, {}).get("median"), c["latency"].get(metric, {}).get("q1"),
                 c["latency"].get(metric, {}).get("q3")) for c in cells]
        out.append(_chart(f"{metric} probe latency: median and quartiles", rows, f"latency:{metric}", "ms", 1000.0))
    return out


def _row(c: dict) -> str:
    inc = c["incidence"]
    rate = (f"{inc['reproduced']}/{inc['conclusive']} ({inc['rate']:.0%}, {inc['ci95'][0]:.0%}-{inc['ci95'][1]:.0%})"
            if inc["conclusive"] else "no conclusive run")
    differs = ", ".join(c["differs"]) or ("reference" if c["reference"] else "no")
    return (f"<tr><td>{escape(c['cell'])}</td><td>{c['runs']}</td><td>{c['invalid']}</td><td>{escape(rate)}</td>"
            f"<td>{escape(differs)}</td></tr>")


def render_html(result: dict) -> str:
    title = f"Matrix comparison: {', '.join(result['matrix'])}"
    invalid = [r for c in result["cells"] for r in c["invalid_reasons"]]
    return "".join([
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{escape(title)}</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:"
        "collapse}}td,th{border:1px solid #cfd8dc;padding:4px 8px;font-size:13px}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>Reference cell: <b>{escape(result['reference'])}</b>. Significance: alpha={result['alpha']}, "
        f"Benjamini-Hochberg over {result['tests']} tests (incidence: Fisher's exact test; latency: two-sided "
        "Mann-Whitney U on the pooled per-probe samples). Invalid runs (a setting not in effect) are not pooled.</p>",
        "<table><tr><th>cell</th><th>runs</th><th>invalid</th><th>incidence (95% CI)</th>"
        "<th>differs from the reference</th></tr>", *(_row(c) for c in result["cells"]), "</table>",
        *(f"<p class='invalid'>invalid run: {escape(r)}</p>" for r in invalid[:10]),
        *(f"<div class='chart'>{svg}</div>" for svg in charts(result)),
        "</body></html>"])
