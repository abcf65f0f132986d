"""Xid fingerprints: a run's driver events reduced to a signature and matched to public reports."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from stress import samplers
from stress.hw import kernel_log, nvml
from stress.hw.config import MonitorsConfig
from stress.hw.fingerprint import fingerprint, load_signatures
from stress.hw.xid import ACTIONS, DESCRIPTIONS
from stress.journal import Journal, read_journal

try:
    import fake_nvml
except ImportError:  # tests/ imported as a package
    from tests import fake_nvml

SAMPLES = json.loads((Path(__file__).parent / "data" / "kernel_log_samples.json").read_text())["samples"]


def line_of(pattern_id: str) -> str:
    return next(s["line"] for s in SAMPLES if s["expect"] == pattern_id and s["fmt"] == "journal")


def xid(code: int, source: str = "kernel-log", t: float = 0.0, **kw) -> dict:
    return {"ev": "xid", "xid": code, "source": source, "t": t, **kw}


def kmsg(cls: str, t: float = 0.0) -> dict:
    return {"ev": "kmsg", "line": "...", "cls": cls, "t": t}


def test_shipped_signatures_name_known_steps_and_public_links() -> None:
    sigs = load_signatures()
    assert len(sigs) >= 10
    for s in sigs:
        assert s["link"].startswith("https://github.com/")
        for step in s["sequence"]:
            if step.startswith("xid:"):
                code = int(step[4:])
                assert code in DESCRIPTIONS and code in ACTIONS, step   # meaning and action for every code
            else:
                assert kernel_log.pattern(step) is not None, step


def test_repeats_collapse_and_steps_carry_meaning_and_action() -> None:
    evs = [xid(62, t=1), xid(45, t=2), xid(45, t=3, suppressed=4), {"ev": "nvml", "t": 3.5},
           xid(119, t=4), kmsg("nvkms-lost-notification", t=5), kmsg("nvidia-drm-flip-timeout", t=6)]
    fp = fingerprint(evs)
    assert fp["signature"] == "xid:62 > xid:45 > xid:119 > nvkms-lost-notification > nvidia-drm-flip-timeout"
    assert [s["count"] for s in fp["steps"]] == [1, 6, 1, 1, 1]          # 1 + 1 + 4 suppressed
    assert fp["steps"][1]["first_t"] == 2 and fp["steps"][1]["last_t"] == 3
    gsp = fp["steps"][2]
    assert gsp["meaning"] == "GSP RPC Timeout" and gsp["category"] == "gsp" and gsp["action"].startswith("RESET_GPU")
    flip = fp["steps"][4]
    assert flip["kind"] == "kernel-log" and flip["class"] == "display-engine" and "flip" in flip["meaning"]
    assert [x["xid"] for x in fp["xids"]] == [45, 62, 119] and fp["xids"][0]["count"] == 6
    # the flip timeout alone is a known public sequence; the longer ones need steps this run lacks
    assert fp["status"] == "matches" and fp["best"]["link"].endswith("/issues/815") and not fp["best"]["exact"]
    assert "contains the sequence reported in https://github.com/NVIDIA/open-gpu-kernel-modules/issues/815" \
        in fp["summary"]


def test_the_longest_known_sequence_wins_with_other_steps_in_between() -> None:
    evs = [xid(62), xid(13), xid(45), kmsg("nvkms-idle-timeout"), xid(119), xid(154)]
    fp = fingerprint(evs)
    assert fp["best"]["link"].endswith("/issues/1045") and fp["best"]["sequence"] == \
        ["xid:62", "xid:45", "xid:119", "xid:154"]
    exact = fingerprint([xid(62), xid(45), xid(119), xid(154)])
    assert exact["best"]["exact"] and "is the sequence reported in" in exact["summary"]


def test_out_of_order_is_new_and_nothing_is_none() -> None:
    fp = fingerprint([xid(154), xid(119), xid(45), xid(62)])
    assert fp["status"] == "new" and fp["best"] is None and "new" in fp["summary"]
    assert fingerprint([{"ev": "nvml", "t": 1}])["status"] == "none"


def test_an_xid_seen_by_both_sources_counts_once() -> None:
    evs = [xid(79, source="nvml-event"), xid(79, source="kernel-log")]
    assert fingerprint(evs)["steps"][0]["count"] == 1
    only_nvml = fingerprint([xid(31, source="nvml-event"), xid(43, source="nvml-event")])
    assert only_nvml["signature"] == "xid:31 > xid:43"       # no kernel log here: NVML's Xids are used


def test_a_broken_signature_table_names_the_entry(tmp_path: Path) -> None:
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"signatures": [{"sequence": ["xid:31", "no-such-line"], "link": "l", "title": "t"}]}))
    with pytest.raises(ValueError, match=r"signatures\[0\]: step 'no-such-line' is neither"):
        load_signatures(p)


def test_fingerprint_of_real_lines_through_the_monitors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real recorded lines, followed from a real pipe by the Monitors into a real journal: the Xids
    of both sources, the classified NVKMS lines, then the fingerprint of that journal."""
    fake = fake_nvml.FakeNvml()
    monkeypatch.setattr(nvml, "_load_pynvml", lambda: fake)
    lines = [
        # https://github.com/NVIDIA/open-gpu-kernel-modules/issues/1028 (as in tests/test_hw_kernel_log.py)
        "Mar 01 12:41:30.104598 desk kernel: NVRM: Xid (PCI:0000:01:00): 62, pid=1532, name=Xorg, 0000(0000) "
        "00000000 00000000",
        line_of("nvkms-channel-query-failed"),
        line_of("nvkms-lost-notification"),
        line_of("nvkms-lost-notification"),
        line_of("nvidia-drm-flip-timeout"),
    ]
    log = tmp_path / "k.log"
    log.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv(kernel_log.STAND_IN_ENV, f"cat '{log}'; exec sleep 60")
    jpath = tmp_path / "journal.jsonl"
    journal = Journal(jpath)
    mon = samplers.Monitors(MonitorsConfig(interval=0.05, host=False), journal)
    mon.start()
    fake.push_xid(0, 62)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and sum(e["ev"] in ("kmsg", "xid") for e in read_journal(jpath).events) < 7:
        time.sleep(0.02)
    mon.stop()
    journal.close()
    fp = fingerprint(read_journal(jpath).events)
    assert fp["signature"] == ("xid:62 > nvkms-channel-query-failed > nvkms-lost-notification > "
                               "nvidia-drm-flip-timeout")
    assert fp["steps"][2]["count"] == 2
    assert fp["best"]["exact"] is False and fp["best"]["link"].endswith("/issues/1045")
    assert fp["best"]["sequence"] == ["nvkms-channel-query-failed", "nvkms-lost-notification",
                                      "nvidia-drm-flip-timeout"]
