"""Nothing identifying leaves the machine: every file of the reports and of the extracted bundle is
searched for the user name, host name, home path, prompt, GPU serial and UUID of a synthetic run."""
from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from stress.report import write_reports
from stress.report.redact import Redactor, prompt_placeholder
from synth_journal import HOME, HOST, MACHINE_ID, NEGATIVE, PROMPT, SERIAL, UUID, USER, Synth, make_run

SENTINELS = {"user name": USER, "host name": HOST, "home path": HOME, "prompt": "PROMPTSENTINEL",
             "negative prompt": "NEGSENTINEL", "serial": SERIAL, "uuid": UUID[4:16],
             "secret token": "SENTINELSECRET", "machine id": MACHINE_ID}


def _all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def _contents(p: Path) -> bytes:
    data = p.read_bytes()
    if p.suffix == ".gz":
        data = gzip.decompress(data)
    return data


def _leaks(files: list[Path]) -> list[str]:
    found = []
    for p in files:
        data = _contents(p)
        for what, s in SENTINELS.items():
            for form in {s.encode(), s.encode("utf-16-be")}:
                if form in data:
                    found.append(f"{what} in {p}")
    return found


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("redact")
    run = make_run(root / "artifacts", Synth(images=6, screenshots=2))
    # the prompt also sits in the worker log, the image parameters (EXIF + JPEG comment) and argv
    out = root / "reports"
    res = write_reports(run, out)
    extracted = root / "extracted"
    with tarfile.open(res["bundle"]) as tar:
        tar.extractall(extracted, filter="data")
    return run, out, extracted, res


def test_sentinels_are_really_in_the_run_dir(written):
    """The leak test below can only fail if the sentinels are there to leak."""
    run, *_ = written
    raw = b"".join(_contents(p) for p in _all_files(run))
    for what, s in SENTINELS.items():
        assert s.encode() in raw or s.encode("utf-16-be") in raw, what
    jpg = next((run / "outputs").iterdir()).read_bytes()
    assert "PROMPTSENTINEL".encode("utf-16-be") in jpg and b"PROMPTSENTINEL" in jpg


def test_no_leak_in_reports_or_bundle(written):
    _, out, extracted, res = written
    files = _all_files(out) + _all_files(extracted)
    assert len(files) > 10
    assert _leaks(files) == []
    # the raw tar stream too (member names, headers: no account names)
    raw_tar = gzip.decompress(res["bundle"].read_bytes())
    assert not any(s.encode() in raw_tar for s in SENTINELS.values())
    with tarfile.open(res["bundle"]) as tar:
        assert all(m.uname == "" and m.gname == "" and m.uid == 0 for m in tar.getmembers())


def test_thumbnails_only_on_request_and_carry_no_parameters(written, tmp_path):
    run, _, default_extracted, _ = written
    assert not list(default_extracted.rglob("thumbnails/*"))     # they show what was generated: opt-in
    res = write_reports(run, tmp_path / "with-thumbs", include_thumbnails=True)
    extracted = tmp_path / "x"
    with tarfile.open(res["bundle"]) as tar:
        tar.extractall(extracted, filter="data")
    thumbs = list(extracted.rglob("thumbnails/*.jpg"))
    assert len(thumbs) == 5           # 6 images, one ran out of memory
    for p in thumbs:
        with Image.open(p) as im:
            assert max(im.size) <= 128
            assert not im.getexif() and "comment" not in im.info and "exif" not in im.info


def test_screenshots_left_out_by_default_and_in_on_request(written, tmp_path):
    run, _, extracted, _ = written
    assert not list(extracted.rglob("probes/*"))
    res = write_reports(run, tmp_path / "with", include_screenshots=True)
    with tarfile.open(res["bundle"]) as tar:
        names = [m.name for m in tar.getmembers()]
    assert sum("/probes/after-screenshot-" in n for n in names) == 2


def test_include_prompts_keeps_them(written, tmp_path):
    run, *_ = written
    res = write_reports(run, tmp_path / "p", include_prompts=True, bundle=False)
    report = json.loads(res["report_json"].read_text())
    assert report["scenario"]["prompt"]["text"] == PROMPT
    assert report["redaction"]["prompts_included"] is True
    assert USER not in res["report_json"].read_text()       # the rest stays masked


def test_redactor_rules():
    r = Redactor(users=["alice"], hosts=["box.example.org"], homes=["/home/alice"], serials=["0324A99"],
                 prompts=[PROMPT])
    assert r.text("/home/alice/models/x.safetensors") == "~/models/x.safetensors"
    assert r.text("alice@box: cd /home/bob/x") == "<user>@<host>: cd /home/<user>/x"
    assert r.text("malice and alice_b stay") == "malice and alice_b stay"          # whole names only
    assert r.text("serial 0324A99 ok") == "serial <serial> ok"
    assert r.text(f"GPU 0: RTX (UUID: {UUID})") == "GPU 0: RTX (UUID: GPU-<uuid>)"
    assert r.text("token hf_abcdefghijklmnopqrstuvwxyz123") == "token <redacted>"
    assert r.text(f"prompt was: {PROMPT}!") == f"prompt was: {prompt_placeholder(PROMPT)}!"
    obj = r.obj({"host": {"hostname": "vm", "user": "root"}, "serial": 12345678, "HF_TOKEN": "x",
                 "prompt": "a cat", "cmd": ["/home/alice/.venv/bin/python"], "n": [1, 2.5, None]})
    assert obj == {"host": {"hostname": "<host>", "user": "<user>"}, "serial": "<serial>", "HF_TOKEN": "<redacted>",
                   "prompt": prompt_placeholder("a cat"), "cmd": ["~/.venv/bin/python"], "n": [1, 2.5, None]}


def test_generic_account_names_are_not_replaced_in_free_text():
    r = Redactor(users=["root"], hosts=["vm"], homes=["/root"])
    assert r.text("mounted the root filesystem on vm0") == "mounted the root filesystem on vm0"
    assert r.text("/root/stress/.venv") == "~/stress/.venv"
    assert r.obj({"user": "root", "hostname": "vm"}) == {"user": "<user>", "hostname": "<host>"}


def test_json_text_redacts_journal_lines_without_parsing():
    r = Redactor(users=[USER], hosts=[HOST], homes=[HOME], serials=[SERIAL], prompts=[NEGATIVE])
    line = json.dumps({"ev": "image", "prompt": 'say "hi"\nPROMPTSENTINEL', "negative_prompt": NEGATIVE,
                       "serial": SERIAL, "path": f"{HOME}/out.jpg", "hostname": "other-name", "x": 1},
                      ensure_ascii=False)
    out = r.json_text(line + "\n" + line[:40])          # plus a torn line
    first = json.loads(out.split("\n")[0])
    assert first["prompt"].startswith("<prompt sha256:") and first["negative_prompt"].startswith("<prompt sha256:")
    assert first["serial"] == "<serial>" and first["path"] == "~/out.jpg" and first["hostname"] == "<host>"
    assert "PROMPTSENTINEL" not in out and "NEGSENTINEL" not in out and SERIAL not in out


def test_thumbnail_is_made_from_pixels_only(tmp_path):
    from stress.report.bundle import thumbnail
    from synth_journal import write_output

    src = tmp_path / "big.jpg"
    write_output(src, 0, 1, (640, 480), (640, 480), noisy=False)
    data = thumbnail(src)
    assert data is not None and b"PROMPTSENTINEL" not in data
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (128, 96)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    assert thumbnail(tmp_path / "broken.jpg") is None


def test_journal_text_gets_the_keyed_rules_too():
    r = Redactor(users=["alice"], hosts=["box"], homes=["/root"])
    line = ('{"ev":"environment","env":{"host":{"home":"/root","user":"alice"},"gpu":{"gpus":[{"uuid":"GPU-1234-abcd"}]},'
            '"env_vars":{"HF_TOKEN":"hf_secretvalue","LOGNAME":"alice"}}}')
    out = r.json_text(line)
    assert "/root" not in out and "GPU-1234" not in out and "hf_secretvalue" not in out and "alice" not in out
    assert json.loads(out)["env"]["host"]["home"] == "~"


def test_json_text_with_covering_needles_equals_every_line_redacted():
    """json_text looks for fewer, shorter, lower-cased needles than the rules test for (a superset of
    the lines); the text must be exactly what running the rules on every line gives. Seeded random
    lines built from the rules' own keys, the run's literals in other cases, and filler."""
    import random

    from stress.report import redact as R

    r = Redactor(users=[USER], hosts=[HOST], homes=[HOME], serials=[SERIAL], prompts=[PROMPT, NEGATIVE],
                 machine_ids=[MACHINE_ID])
    keys = [p.strip('"') for p, _ in (*R._JSON_PROMPT_RES, *R._JSON_SERIAL_RES, *R._JSON_USER_RES,
                                      *R._JSON_UUID_RES, *R._JSON_HOME_RES)]
    words = [*keys, *(k.upper() for k in keys), "HF_TOKEN", "my_Secret", "Cookie", "authz", USER, USER.upper(),
             HOST, HOME, SERIAL, MACHINE_ID, UUID, "hf_abcdefghijklmnopqrstuvwxyz123", PROMPT[:30], PROMPT, NEGATIVE,
             "/home/bob/x", "/Users/carol", "MIG-1234", "nm", "Xorg", "python3", "t", "mu", "12", "0.5"]
    rng = random.Random(11)
    lines = []
    for _ in range(600):
        fields = {rng.choice(words): rng.choice([rng.choice(words), rng.randrange(10**15), None, [rng.choice(words)]])
                  for _ in range(rng.randrange(1, 5))}
        lines.append(json.dumps({"ev": rng.choice(["nvml", "host", "image", "environment"]), **fields},
                                ensure_ascii=rng.random() < 0.5))
    text = "\n".join(lines)
    assert r.json_text(text) == "\n".join(r.text(r._json_line(line)) for line in lines)
    needles = R.covering_needles(["ab", "xaby", "Prompt", "prompt_2", "z" * 100, "", "Q"])
    assert needles == ["q", "ab", "prompt", "z" * 40]   # shorter needles cover longer ones; long ones cut


def test_run_redactor_is_the_reports_redactor(tmp_path):
    """The bundle's journal copy starts with run_redactor (a fold without the sampler ticks) before the
    report's own fold: it must mask exactly what the report's redactor masks, including a prompt on a
    line that begins like a sampler tick but is not one, and a torn last line."""
    from stress.report.build import build_report, run_redactor

    run = make_run(tmp_path / "artifacts", Synth(images=3))
    with open(run / "journal.jsonl", "a") as fh:
        fh.write('{"ev":"nvml","ev":"image","t":99.0,"index":77,"prompt":"DUPLICATE-KEY PROMPT SENTINEL"}\n')
        fh.write('{"ev":"host","t":100.0,"load1":0.5')     # torn
    light, full = run_redactor(run), build_report(run).redactor
    for attr in ("users", "hosts", "homes", "serials", "machine_ids", "prompts", "include_prompts", "enabled"):
        assert getattr(light, attr) == getattr(full, attr), attr
    assert "DUPLICATE-KEY PROMPT SENTINEL" in light.prompts and light.users
    assert any(SERIAL in s for s in light.serials)
    assert run_redactor(run, include_prompts=True).include_prompts
