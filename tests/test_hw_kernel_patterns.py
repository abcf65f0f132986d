"""The kernel-log classification table (stress/hw/kernel_patterns.json) on real lines from public
reports (tests/data/kernel_log_samples.json keeps the link next to every line)."""
from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest

from stress.hw import kernel_log
from stress.hw.kernel_log import (
    FILTER,
    PATTERNS,
    KernelLogFollower,
    classify_line,
    load_patterns,
    split_line,
)

SAMPLES = json.loads((Path(__file__).parent / "data" / "kernel_log_samples.json").read_text())["samples"]


def message(sample: dict) -> str:
    if sample["fmt"] == "bare":
        return sample["line"]
    msg, _ = split_line(sample["line"], sample["fmt"])
    return msg


@pytest.mark.parametrize("sample", SAMPLES, ids=[f"{i}-{s['expect']}" for i, s in enumerate(SAMPLES)])
def test_every_recorded_line_gets_its_class(sample: dict) -> None:
    assert re.match(r"https://github\.com/[\w.-]+/[\w.-]+/(issues|pull)/\d+$", sample["source"])
    msg = message(sample)
    got = classify_line(msg)
    assert (got.id if got else None) == sample["expect"], msg
    if sample["expect"] is not None:
        assert FILTER.search(msg), "a classified line must also pass the follower's filter"
        assert got.meaning and got.cls and got.severity in ("error", "warning")


def test_every_table_entry_has_a_real_sample() -> None:
    sampled = {s["expect"] for s in SAMPLES}
    assert [p.id for p in PATTERNS if p.id not in sampled] == []
    assert len({p.id for p in PATTERNS}) == len(PATTERNS)


def test_xid_lines_are_left_to_the_xid_table() -> None:
    xid_line = next(s for s in SAMPLES if "Xid (" in s["line"])
    msg = message(xid_line)
    assert FILTER.search(msg) and classify_line(msg) is None


def test_first_match_wins_so_the_specific_entry_comes_first() -> None:
    no_mem = next(s for s in SAMPLES if s["expect"] == "nvrm-no-memory")
    # the same line also matches the generic assertion entry, which comes later in the table
    assert pattern_ids_matching(message(no_mem))[:2] == ["nvrm-no-memory", "nvrm-assert-failed"]


def pattern_ids_matching(msg: str) -> list[str]:
    return [p.id for p in PATTERNS if p.regex.search(msg)]


@pytest.mark.parametrize("entry,error", [
    ({"id": "x", "driver": "d", "class": "c", "severity": "error", "pattern": "(", "meaning": "m"},
     "pattern does not compile"),
    ({"id": "x", "driver": "d", "class": "c", "severity": "fatal", "pattern": "a", "meaning": "m"},
     "severity must be error or warning"),
    ({"id": "x", "driver": "d", "class": "c", "severity": "error", "pattern": "a"}, "missing meaning"),
])
def test_a_broken_table_names_the_entry(tmp_path: Path, entry: dict, error: str) -> None:
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"patterns": [entry]}))
    with pytest.raises(ValueError, match=re.escape(f"{p}: patterns[0]: {error}")):
        load_patterns(p)


def test_recorded_lines_through_the_follower_and_the_stand_in(tmp_path: Path, monkeypatch) -> None:
    """The journal-format samples, as journalctl would print them, followed from a real subprocess
    named by STRESS_KERNEL_LOG_COMMAND: every error line reaches on_line and classifies."""
    journal_samples = [s for s in SAMPLES if s["fmt"] == "journal"]
    log = tmp_path / "k.log"
    log.write_text("\n".join(s["line"] for s in journal_samples) + "\n")
    monkeypatch.setenv(kernel_log.STAND_IN_ENV, f"cat '{log}'")
    src, attempts = kernel_log.probe()
    assert src is not None and src.via == "stand-in" and attempts[0].ok
    seen: list[str] = []
    done = threading.Event()
    f = KernelLogFollower.open(src, on_line=lambda raw, msg: seen.append(msg), on_end=lambda r: done.set())
    f.start()
    assert done.wait(5)
    assert f.stop(2.0)
    got = [(c.id if (c := classify_line(m)) else None) for m in seen]
    # every line the filter keeps arrives, in order, and gets its class (None: Xid or benign lines)
    assert got == [s["expect"] for s in journal_samples if FILTER.search(message(s))]
    assert sum(g is not None for g in got) == sum(s["expect"] is not None for s in journal_samples)
