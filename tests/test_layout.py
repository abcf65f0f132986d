"""The code layout keeps its promises: modules of one concern (at most 600 lines), no import cycle
among the package's modules, and a supervisor side that never imports torch."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "stress"
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def test_no_module_over_600_lines():
    long = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long


def test_no_import_cycle_at_module_level():
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:   # top level: what loads with the module
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stress"):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("stress")}
        graph[name] = {d for d in deps if d in mods and d != name}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(u: str, stack: list[str]) -> None:
        state[u] = 1
        stack.append(u)
        for v in graph[u]:
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v):] + [v])
            elif not state.get(v):
                visit(v, stack)
        stack.pop()
        state[u] = 2

    for m in graph:
        if not state.get(m):
            visit(m, [])
    assert not cycles, [" -> ".join(c) for c in cycles]


def test_supervisor_side_never_imports_torch():
    """The CLI, the runner, the record, the judge and the reports load without torch (a crashed worker
    must leave a supervisor that can still write the record)."""
    code = ("import sys\n"
            "import stress.cli, stress.runner, stress.record, stress.analysis, stress.report, stress.history\n"
            "import stress.soak, stress.samplers, stress.probes.phases\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
