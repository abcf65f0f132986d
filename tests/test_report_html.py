"""report.html: parses, is self-contained, carries its charts, says when data is missing."""
from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import pytest
from PIL import Image

from stress.report import write_reports
from stress.report.charts import gpu_memory_chart, probe_load_chart, render_charts
from stress.report.build import build_report
from stress.report.html import fmt, key_metrics, render_html
from synth_journal import Synth, make_run, truncate_journal


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict] = []
        self.ids: set[str] = set()
        self.external: list[str] = []
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a)
        for k in ("src", "href"):
            if a.get(k) and not a[k].startswith(("data:", "#")):
                self.external.append(f"{tag} {k}={a[k][:60]}")
        if tag in ("script", "link", "iframe", "object"):
            self.external.append(tag)
        if tag not in ("img", "br", "meta", "input", "hr"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> _Page:
    p = _Page()
    p.feed(html)
    p.close()
    return p


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("html")
    run = make_run(root, Synth(images=8))
    res = write_reports(run, root / "out", bundle=False)
    return res["report_html"].read_text(encoding="utf-8"), res


def test_html_parses_and_is_self_contained(page):
    html, _ = page
    p = parse(html)
    assert p.external == []
    assert "http://" not in html and "https://" not in html.replace("https://json-schema.org", "")
    assert {"verdict", "reasons", "summary", "attach", "changes", "xid", "probes", "charts", "workload"} <= p.ids
    assert p.stack == []          # every element closed


def test_html_carries_every_chart_as_png(page):
    html, _ = page
    imgs = parse(html).imgs
    assert len(imgs) == 6
    for img in imgs:
        assert img["src"].startswith("data:image/png;base64,")
        data = base64.b64decode(img["src"].split(",", 1)[1])
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 100
            # a drawn chart has many colours; a blank one has one or two
            assert len(im.convert("RGB").getcolors(maxcolors=1_000_000) or []) > 20


def test_summary_says_what_ran_on_what(page):
    html, _ = page
    text = " ".join(parse(html).text)
    for needle in ("reproduced", "GPU 0: NVIDIA GeForce RTX 4090 (UUID: GPU-<uuid>)", "580.95.05",
                   "Ubuntu 24.04.1 LTS", "6.8.0-49-generic", "Xorg", "gnome-shell", "gpu-stress run",
                   "Xid", "Display Engine error", "restarted", "What to attach", "report.html"):
        assert needle in text, needle


def test_key_metrics_flag_the_changes(page):
    _, res = page
    import json

    report = json.loads(res["report_json"].read_text())
    rows = {r["key"]: r for r in key_metrics(report)}
    assert rows["display[Xorg].rss"]["changed"] and rows["display[Xorg].rss"]["delta"] == "+400 MiB"
    assert rows["bar1_used"]["changed"]
    assert not rows["display[gnome-shell].threads"]["changed"]


def test_no_nvml_charts_say_so(tmp_path):
    run = make_run(tmp_path, Synth(images=3, nvml=False))
    report = build_report(run).report
    chart = gpu_memory_chart(report)
    assert chart.empty and "no NVML" in chart.alt
    charts, warnings = render_charts(report)
    assert warnings == []
    assert [c.empty for c in charts] == [True, False, True, False, False, False]
    html = render_html(report, charts)
    assert html.count("(no data)") == 2
    assert "no NVIDIA GPU recorded" in html


def test_probe_latency_and_host_load_share_one_time_axis(page, tmp_path):
    import json

    _, res = page
    report = json.loads(res["report_json"].read_text())
    chart = probe_load_chart(report)
    assert not chart.empty and chart.id == "probe-load" and "host load" in chart.alt
    # repeat rounds, failed visits and the phase loads the verdict compared draw marks of their own
    marked = json.loads(json.dumps(report))
    marked["probes"]["visits"][-1]["repeat"] = 1
    marked["verdict"].setdefault("details", {})["context"] = {"device": "cuda", "load": {"baseline": 0.5,
                                                                                          "after": 4.0}}
    assert probe_load_chart(marked).png != chart.png
    # without host samples it says so in the picture; without probes it is a message
    no_host = json.loads(json.dumps(report))
    no_host["timeline"]["series"] = [s for s in no_host["timeline"]["series"] if s["key"] != "host.load1"]
    assert not probe_load_chart(no_host).empty and probe_load_chart(no_host).png != chart.png
    no_probes = dict(report, probes={"total": 0, "rows": [], "compare": [], "visits": []})
    assert probe_load_chart(no_probes).empty
    # a journal with CPU pressure samples: the second axis is what the host rule compared
    pressured = json.loads(json.dumps(marked))
    pressured["verdict"]["details"]["context"]["cpu_pressure"] = {"baseline": 0.02, "after": 0.64}
    chart_p = probe_load_chart(pressured)
    assert "CPU pressure" in chart_p.title and "CPU pressure" in chart_p.alt and "load" not in chart_p.title
    assert chart_p.png not in (chart.png, probe_load_chart(marked).png)
    html = parse(res["report_html"].read_text())
    assert "chart-probe-load" in html.ids


def test_truncated_run_page_names_what_is_missing(tmp_path):
    run = make_run(tmp_path, Synth(images=5, finish=False))
    truncate_journal(run, 0.9)
    res = write_reports(run, tmp_path / "out", bundle=False)
    text = " ".join(parse(res["report_html"].read_text()).text)
    assert "incomplete" in text and "did not end normally" in text and "journal ends without run_end" in text


def test_fmt():
    assert fmt(None) == "–"
    assert fmt(3 * 1024 ** 3, "bytes") == "3.00 GiB"
    assert fmt(-400 * 1024 ** 2, "bytes", signed=True) == "−400 MiB"
    assert fmt(0.0123, "s") == "12.3 ms" and fmt(7322, "s") == "2h02m"
    assert fmt(7.0, "count", signed=True) == "+7"


def test_html_escapes_journal_text(tmp_path):
    from stress.journal import Journal

    j = Journal(tmp_path / "journal.jsonl", fsync=False)
    j.append("run_start", t=1.0, run_id="x")
    j.append("verdict", t=2.0, verdict="error", reasons=["<script>alert(1)</script>"], exit_code=12)
    j.close()
    html = render_html(build_report(tmp_path).report, [])
    assert "<script>alert" not in html and "&lt;script&gt;" in html
