"""Comparing the cells of a matrix: per cell the incidence and the probe latencies, each against a
reference cell. Pure: run summaries in (stress.history.RunSummary, from run directories or history
rows), a result dict out; ``gpu-stress compare --cells`` and its HTML view only render it.

A cell is the set of runs of one expanded scenario (``name[key=value,...]``: the scenario name a
matrix gives each combination). Runs whose verdict is ``invalid`` (the cell's condition was not read
back in effect, stress.validity) are counted but never pooled: they are no data point of any cell.

Per cell: the incidence of ``reproduced`` among its conclusive runs with a 95 % Wilson interval, and
per probe latency metric (``phase:kind``) the median of the pooled per-probe samples. Against the
reference: incidence by Fisher's exact test, latencies by a two-sided Mann-Whitney U; all tests of
the comparison are corrected together (Benjamini-Hochberg), and a cell differs significantly when
one of its adjusted p-values is below ``alpha``.
"""
from __future__ import annotations

import re
import statistics
from typing import Any

from stress.stats import benjamini_hochberg, fisher_exact, incidence, mann_whitney, median

LATENCY_PREFIX = "probe_latency_s:"
UNITS = {"latency": "s"}
_CELL = re.compile(r"^(?P<base>.*?)\[(?P<cell>.*)\]$", re.S)
MIN_SAMPLES = 3


def cell_of(scenario: str | None) -> tuple[str, str]:
    """``wa[A=1,B=x]`` -> (``wa``, ``A=1,B=x``); a scenario that is no matrix cell is its own cell."""
    name = scenario or "?"
    m = _CELL.match(name)
    return (m.group("base"), m.group("cell")) if m else (name, name)


def _pick_reference(cells: list[str], reference: str | None) -> str:
    if reference is None:
        return cells[0]
    if reference in cells:
        return reference
    hits = [c for c in cells if reference in c]
    if len(hits) == 1:
        return hits[0]
    from stress.errors import StressError

    if not hits:
        raise StressError(f"--reference {reference!r}: no cell matches; the cells are: {'; '.join(cells)}")
    raise StressError(f"--reference {reference!r} matches {len(hits)} cells ({'; '.join(hits[:3])}); give more of it")


def compare_cells(runs: list, *, reference: str | None = None, alpha: float = 0.05) -> dict:
    """The comparison of the cells the ``runs`` (RunSummary) fall in; see the module docstring."""
    order: list[str] = []
    by_cell: dict[str, list] = {}
    bases = {cell_of(r.scenario)[0] for r in runs}
    for r in sorted(runs, key=lambda r: (r.started_at or 0.0, r.run_id)):
        base, cell = cell_of(r.scenario)
        if len(bases) > 1:          # runs of several matrices: a cell is named with its matrix
            cell = r.scenario or "?"
        if cell not in by_cell:
            order.append(cell)
            by_cell[cell] = []
        by_cell[cell].append(r)
    if not order:
        from stress.errors import StressError

        raise StressError("no runs to compare")
    ref = _pick_reference(order, reference)
    metrics = sorted({k for r in runs for k in r.samples if k.startswith(LATENCY_PREFIX)})
    cells = []
    for cell in order:
        rs = by_cell[cell]
        valid = [r for r in rs if r.verdict != "invalid"]
        lat = {}
        for key in metrics:
            pooled = [float(x) for r in valid for x in r.samples.get(key, [])]
            q = statistics.quantiles(pooled, n=4) if len(pooled) >= 2 else [None, None, None]
            lat[key[len(LATENCY_PREFIX):]] = {"n": len(pooled), "median": median(pooled), "q1": q[0], "q3": q[2],
                                              "_samples": pooled}
        cells.append({"cell": cell, "runs": len(rs), "run_ids": [r.run_id for r in rs],
                      "invalid": len(rs) - len(valid),
                      "invalid_reasons": [x for r in rs if r.verdict == "invalid" for x in r.reasons
                                            if x.startswith("invalid:")][:6],
                      "verdicts": {v: [r.verdict for r in rs].count(v) for v in sorted({str(r.verdict) for r in rs})},
                      "incidence": incidence([r.verdict for r in valid]), "latency": lat,
                      "reference": cell == ref})
    base_cell = next(c for c in cells if c["reference"])
    tests: list[tuple[dict, str]] = []     # (the comparison dict, its kind), in one BH family
    for c in cells:
        c["vs_reference"] = {}
        if c["reference"]:
            continue
        a, b = base_cell["incidence"], c["incidence"]
        inc_cmp: dict[str, Any] = {"metric": "incidence", "p": None, "difference": None}
        if a["conclusive"] and b["conclusive"]:
            inc_cmp["difference"] = b["rate"] - a["rate"]
            inc_cmp["p"] = fisher_exact(b["reproduced"], b["conclusive"], a["reproduced"], a["conclusive"])
        else:
            inc_cmp["note"] = "no conclusive run on one side"
        c["vs_reference"]["incidence"] = inc_cmp
        tests.append((inc_cmp, "incidence"))
        for key, cur in c["latency"].items():
            ref_l = base_cell["latency"][key]
            cmp: dict[str, Any] = {"metric": key, "unit": "s", "n": cur["n"], "n_reference": ref_l["n"],
                                   "median": cur["median"], "reference_median": ref_l["median"],
                                   "ratio": None, "p": None}
            if cur["median"] is not None and ref_l["median"]:
                cmp["ratio"] = cur["median"] / ref_l["median"]
            if cur["n"] >= MIN_SAMPLES and ref_l["n"] >= MIN_SAMPLES:
                cmp["p"] = mann_whitney(cur["_samples"], ref_l["_samples"])
            else:
                cmp["note"] = f"too few samples to test (n={cur['n']}/{ref_l['n']}, need {MIN_SAMPLES} a side)"
            c["vs_reference"][f"latency:{key}"] = cmp
            tests.append((cmp, "latency"))
    for (cmp, _kind), q in zip(tests, benjamini_hochberg([t[0]["p"] for t in tests])):
        cmp["q"] = q
        cmp["significant"] = q is not None and q < alpha
    for c in cells:
        c["differs"] = [k for k, v in c["vs_reference"].items() if v.get("significant")]
        for v in c["latency"].values():
            v.pop("_samples", None)
    return {"alpha": alpha, "correction": "benjamini-hochberg", "matrix": sorted(bases), "reference": ref,
            "metrics": ["incidence"] + [m[len(LATENCY_PREFIX):] for m in metrics], "cells": cells,
            "tests": len(tests), "differing": [c["cell"] for c in cells if c["differs"]]}
