"""The text tables (stress/tables.py, drawn by rich): plain ASCII off a terminal or with NO_COLOR,
a bold ruled header on one; never a cell folded or cut."""
from __future__ import annotations

import io

from stress.tables import styled, table_lines

ROWS = [["20261201-100000-demo-abcd", "550.54.14", "30.5"], ["x2", "-", "1.25"]]


def test_plain_form_keeps_every_cell_whole_and_aligns_numbers():
    lines = table_lines(["run", "driver", "img/min"], ROWS, right={2}, style=False)
    assert lines == [
        "run                        driver     img/min",
        "-------------------------- ---------- -------",
        "20261201-100000-demo-abcd  550.54.14     30.5",
        "x2                         -             1.25",
    ]
    assert all(x.isascii() for x in lines)


def test_terminal_form_has_a_bold_header_and_the_same_cells():
    lines = table_lines(["run", "driver", "img/min"], ROWS * 40, right={2}, style=True)
    assert "\x1b[1m" in lines[0] and set(lines[1]) == {"─"}
    assert lines[2] == "20261201-100000-demo-abcd  550.54.14     30.5"   # wider than a terminal: not folded
    assert len(lines) == 2 + 80


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_form_only_on_a_terminal_without_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert styled(_Tty()) and not styled(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not styled(_Tty())
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert not styled(_Tty())


def test_bench_table_through_rich():
    from stress.memory.bench import PresetResult, RunMetrics, render

    runs = [RunMetrics("r", "finished", 4, 0, 12.0, 0.25, 3 << 30, "allocated")]
    text = render([PresetResult("default", {}, runs), PresetResult("fp16", {}, [])])
    lines = text.splitlines()
    assert lines[1].split() == ["preset", "images", "ok", "images/min", "speed", "s/step", "peak", "GiB", "memory"]
    assert lines[3].split() == ["default", "4/4", "12.00", "1.00x", "0.250", "3.00", "allocated"]
    assert lines[4].split() == ["fp16", "0/0", "-", "-", "-", "-", "-"]
