"""Text tables for people (``plan``, ``history``, ``compare``, ``bench``), drawn by rich.

On a terminal (``sys.stdout`` a TTY, no ``NO_COLOR``, ``TERM`` not ``dumb``) the header is bold and
ruled with a line. Either way a table has its natural width: no cell is folded or cut (run ids and
driver versions are copied from it into the next command; a terminal narrower than the table wraps
its lines). Otherwise (a pipe, a file, CI, ``NO_COLOR``) it is plain ASCII at its natural width:
a header, a rule of ``-``, one line per row, columns two spaces apart, no trailing spaces, no escape
codes, so that it greps and diffs. ``--json`` outputs never come here.
"""
from __future__ import annotations

import io
import os
import sys
from typing import Iterable, Sequence, TextIO

from rich import box
from rich.console import Console
from rich.table import Table

# a header rule of "-" under each column and nothing else: the plain form
ASCII_HEAD = box.Box("    \n    \n -  \n    \n    \n    \n    \n    \n", ascii=True)


def styled(stream: TextIO | None = None) -> bool:
    """Whether output to ``stream`` (default ``sys.stdout``) gets the terminal form."""
    stream = sys.stdout if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):   # closed or not a real stream
        tty = False
    return tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def table_lines(headers: Sequence[str], rows: Iterable[Sequence[object]], *, right: Iterable[int] = (),
                style: bool | None = None) -> list[str]:
    """The table's lines. ``right``: the indices of right-aligned (numeric) columns; ``style``:
    the terminal form (default: :func:`styled`)."""
    style = styled() if style is None else style
    right = set(right)
    t = Table(box=box.SIMPLE_HEAD if style else ASCII_HEAD, show_edge=False, pad_edge=False,
              padding=(0, 1, 0, 0), header_style="bold" if style else "", collapse_padding=True)
    for i, h in enumerate(headers):
        t.add_column(str(h), justify="right" if i in right else "left",
                     no_wrap=True)
    for r in rows:
        t.add_row(*(str(c) for c in r))
    buf = io.StringIO()
    Console(file=buf, width=100_000, force_terminal=style, no_color=not style,
            color_system="standard" if style else None, highlight=False, emoji=False, markup=False,
            legacy_windows=False, soft_wrap=False).print(t)
    return [line.rstrip() for line in buf.getvalue().rstrip("\n").split("\n")]


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], **kw) -> str:
    return "\n".join(table_lines(headers, rows, **kw))
