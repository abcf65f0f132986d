"""Hostile scenario files: one located line each, exit 2, bounded time and memory (issue 19).

300 seeded cases from tests/fuzz_yaml.py through the real loader; benchmarks/fuzz_scenarios.py runs
thousands through the CLI and measures time and memory per file (docs/scenarios.md)."""
from __future__ import annotations

import re
import resource
import time
from pathlib import Path

import pytest

from stress.errors import ScenarioError
from stress.scenario import load_scenarios
from tests.conftest import run_cli
from tests.fuzz_yaml import Case, cases

# Problems that have no line to point at: the whole file is the problem.
_NO_LINE = re.compile(r"the file is empty|a scenario file may be at most|more problems not shown|cycle detected|"
                      r"no such file|is a directory|is a FIFO|is a character device")
_LOCATED = re.compile(r"^(?P<file>.*?)(?::(?P<line>\d+))?: (?P<rest>\S.*)$")


def _check_lines(lines: list[str], folder: Path, kind: str) -> None:
    assert lines, kind
    for text in lines:
        assert "\n" not in text and "Traceback" not in text, (kind, text)
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text), (kind, text)   # printed escaped
        m = _LOCATED.match(text)
        assert m, (kind, text)
        f = Path(m.group("file"))
        assert f.parent == folder or str(f).startswith(str(folder)), (kind, text)
        if m.group("line") is None:
            assert _NO_LINE.search(text), f"{kind}: no line in {text!r}"
        else:
            n = int(m.group("line"))
            target = f if f.is_file() else None
            if target is not None:
                assert 1 <= n <= target.read_bytes().count(b"\n") + 1, (kind, text)


def test_three_hundred_hostile_files_fail_with_one_located_line_each(tmp_path):
    slowest, outcomes = 0.0, {"ok": 0, "bad": 0}
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i, case in enumerate(cases(seed=19, n=300)):
        folder = tmp_path / f"c{i}"
        path = case.write(folder)
        t0 = time.perf_counter()
        try:
            load_scenarios(path)
            outcomes["ok"] += 1
        except ScenarioError as exc:
            outcomes["bad"] += 1
            _check_lines(exc.lines(), folder, f"case {i} ({case.kind})")
        slowest = max(slowest, time.perf_counter() - t0)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    assert outcomes["bad"] > 200, outcomes       # the generator makes hostile files, not valid ones
    assert slowest < 3.0, slowest
    assert grown_mb < 300, grown_mb


@pytest.mark.parametrize("body,expect", [
    (b"name: x\nd: " + b"[" * 600 + b"]" * 600 + b"\n", r"case\.yaml:2: nested deeper than 32 levels"),
    (b"name: x\nl: &a [*a]\n", r"case\.yaml:2: alias \*a refers to the node it is in"),
    (b"name: x\n? [a, b]\n: 1\n", r"case\.yaml:2: not valid YAML: found unhashable key"),
    (b"name: x\nsteps: !!python/object/apply:os.system ['true']\n", r"case\.yaml:2: YAML tag '!!python/object/apply:os.system'"),
    (b"name: caf\xe9\n", r"case\.yaml:1: not UTF-8 text \(byte 0xe9"),
    (b"name: x\nsteps: 3\x1b[2J\n", r"case\.yaml:2: control character U\+001B at column 9"),
    (b"", r"case\.yaml: the file is empty"),
    (b"name: x\nextends: ''\n", r"case\.yaml:2: extends: an empty file name"),
    (b"name: x\nextends: /dev/zero\n", r"case\.yaml:2: extends: /dev/zero: is a character device"),
    (b"name: x\nsession: {idle_after: 1e308}\n", r"case\.yaml:2: session\.idle_after: .*less than or equal to 86400"),
    (b"name: x\nprobes: {timeout: 1e308}\n", r"case\.yaml:2: probes\.timeout: .*less than or equal to 3600"),
    (b"name: x\nsession: {idle_after: .inf}\n", r"case\.yaml:2: session\.idle_after: must be a finite number"),
    (b"name: x\nprompt: {tokens: 0}\n", r"case\.yaml:2: prompt\.tokens: .*greater than or equal to 1"),
    (b"name: x\nmatrix:\n" + b"".join(b"  k%d: [1, 2, 3, 4]\n" % i for i in range(20)),
     r"case\.yaml:2: matrix: expands into more than 256 runs"),
])
def test_each_reported_failure_is_one_line_exit_2(tmp_path, body, expect):
    path = Case("x", body).write(tmp_path)
    t0 = time.perf_counter()
    proc = run_cli("validate", str(path), timeout=60)
    assert time.perf_counter() - t0 < 20
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and re.search(expect, line), line


def test_alias_bomb_fails_in_milliseconds(tmp_path):
    lines = ["name: bomb", "a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = Case("bomb", ("\n".join(lines) + "\nresolutions: *a9\n").encode()).write(tmp_path)
    assert path.stat().st_size < 600
    t0 = time.perf_counter()
    with pytest.raises(ScenarioError) as info:
        load_scenarios(path)
    assert time.perf_counter() - t0 < 0.5
    assert "more than 20000 values after expanding aliases" in info.value.lines()[0]


def test_extends_a_fifo_does_not_hang(tmp_path):
    import os

    os.mkfifo(tmp_path / "fifo")
    path = Case("fifo", b"name: x\nextends: fifo\n").write(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(ScenarioError) as info:
        load_scenarios(path)
    assert time.perf_counter() - t0 < 1
    assert re.search(r"case\.yaml:2: extends: .*fifo: is a FIFO, expected a \.yaml file", info.value.lines()[0])


def test_file_name_with_escape_bytes_is_printed_escaped(tmp_path):
    path = tmp_path / "evil\x1b[31m\x07.yaml"
    path.write_bytes(b"name: x\nsteps: -1\n")
    proc = run_cli("validate", str(path), timeout=60)
    assert proc.returncode == 2
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr
    assert "evil\\x1b[31m\\x07.yaml:2: steps:" in proc.stderr


def test_a_file_over_the_size_cap_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "big.yaml"
    with open(path, "wb") as fh:
        fh.write(b"name: x\n")
        fh.truncate(10 * 1024 * 1024)
    with pytest.raises(ScenarioError) as info:
        load_scenarios(path)
    assert "a scenario file may be at most 1024 KiB" in info.value.lines()[0]


def test_nul_bytes_in_names_are_one_escaped_line(tmp_path):
    with pytest.raises(ScenarioError) as info:
        load_scenarios(tmp_path / "a\x00b.yaml")
    [line] = info.value.lines()
    assert "a\\x00b.yaml: the file name contains a NUL byte" in line and "\x00" not in line
    path = Case("x", b'name: x\nextends: "base\\0\\e.yaml"\n').write(tmp_path)
    with pytest.raises(ScenarioError) as info:
        load_scenarios(path)
    [line] = info.value.lines()
    assert "case.yaml:2: extends:" in line and "base\\x00\\x1b.yaml" in line and "NUL byte" in line
