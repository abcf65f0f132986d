"""Sizes, parsed and printed in one way: ``5GiB``, ``500MB`` (decimal, as disk vendors write it),
``10G`` / ``10GiB`` (binary, as ``df -h`` prints), and a bare number is bytes, everywhere."""
from __future__ import annotations

import re

from stress.errors import StressError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)(b?)\s*$", re.I)


def parse_size(text: str | int, *, what: str = "size", minimum: int = 0) -> int:
    """``5GiB``, ``500MB``, ``10G`` (binary), ``123`` (bytes) -> bytes; below ``minimum`` is refused."""
    if isinstance(text, bool):
        raise StressError(f"{text!r} is not a {what} like 5GiB, 500MB or 10G")
    if isinstance(text, int):
        value = text
    else:
        m = _SIZE.match(str(text))
        if not m:
            raise StressError(f"{text!r} is not a {what} like 5GiB, 500MB or 10G")
        num, unit, i, b = m.groups()
        power = "kmgtp".find(unit.lower()) + 1 if unit else 0
        base = 1000 if (unit and b and not i) else 1024
        value = int(float(num) * base ** power)
    if value < minimum:
        raise StressError(f"{text!r} is {value} bytes, less than the {format_size(minimum)} a {what} needs here "
                          "(a bare number is bytes: write e.g. 24GiB)")
    return value


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
