"""Decode probe on real image files made with Pillow (no display needed)."""
from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest
from PIL import Image

from stress.journal import Journal, RunDir
from stress.probes import decode
from stress.probes.common import ProbeContext
from stress.probes.config import ProbesConfig
from stress.probes.phases import run_phase


def save_output(rd: RunDir, index: int, size=(320, 256), fmt="jpg", seed=None) -> dict:
    """Save an image as the runner does and return its record (hashes as recorded at save time)."""
    rng = np.random.default_rng(index if seed is None else seed)
    # Smooth content with some noise: compresses like a photograph, not like static.
    yy, xx = np.mgrid[0:size[1], 0:size[0]]
    base = np.stack([xx * 255 // size[0], yy * 255 // size[1], (xx + yy) % 256], axis=-1)
    arr = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    rel = f"outputs/{index:05d}-s{index}-{size[0]}x{size[1]}.{fmt}"
    Image.fromarray(arr).save(rd.root / rel, **({"quality": 92} if fmt == "jpg" else {}))
    data = (rd.root / rel).read_bytes()
    with Image.open(rd.root / rel) as img:
        px = hashlib.sha256(img.convert("RGB").tobytes()).hexdigest()
    return {"index": index, "path": rel, "outcome": "ok", "width": size[0], "height": size[1],
            "sha256": hashlib.sha256(data).hexdigest(), "pixel_sha256": px, "bytes": len(data)}


@pytest.fixture
def rd(tmp_path) -> RunDir:
    return RunDir(tmp_path / "run").create()


def probe(rd: RunDir, images: list[dict], **kw) -> dict:
    ctx = ProbeContext(phase="after", visit=0, rep=0, config=ProbesConfig(**kw), run_dir=rd.root,
                       images=images, session="none", kind="decode", started=time.monotonic())
    return decode.probe(ctx)


def test_clean_outputs_decode_and_are_timed(rd):
    images = [save_output(rd, 0), save_output(rd, 1, fmt="png"), save_output(rd, 2, size=(848, 1152))]
    res = probe(rd, images)
    m = res["metrics"]
    assert res["status"] == "ok", res["reason"]
    assert m["images"] == 3 and m["references"] == 2 and m["problem_count"] == 0
    assert m["megapixels"] == pytest.approx((320 * 256 * 2 + 848 * 1152) / 1e6, abs=1e-3)
    assert m["s_per_mp"] > 0 and m["ref_s_per_mp"] > 0 and m["thumb_s_median"] > 0
    # The reference set is made once and reused, with its own recorded hashes.
    refs = decode.ensure_reference(rd.root)
    assert [r["path"] for r in refs] == ["probes/reference/reference-1152x1536.jpg",
                                         "probes/reference/reference-1024x1024.png"]
    before = (rd.root / refs[0]["path"]).stat().st_mtime_ns
    probe(rd, images)
    assert (rd.root / refs[0]["path"]).stat().st_mtime_ns == before


def test_flipped_bytes_are_caught(rd):
    images = [save_output(rd, i) for i in range(3)]
    path = rd.root / images[1]["path"]
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 8] = bytes(b ^ 0xFF for b in data[mid:mid + 8])  # inside the entropy-coded scan
    path.write_bytes(bytes(data))
    res = probe(rd, images)
    assert res["status"] == "fail"
    assert res["metrics"]["problem_count"] == 1
    (p,) = res["metrics"]["problems"]
    assert p["path"] == images[1]["path"]
    assert "file sha256 differs" in p["problem"]
    # JPEG decoders often decode damaged scan data without an error: the pixel hash still says so.
    assert "decoded pixels differ" in p["problem"] or "cannot decode" in p["problem"]
    assert res["reason"].startswith(f"1 of 5 images failed: {images[1]['path']}: file sha256 differs")


def test_damaged_header_cannot_be_decoded(rd):
    rec = save_output(rd, 0, fmt="png")
    path = rd.root / rec["path"]
    data = bytearray(path.read_bytes())
    data[16:24] = b"\x00" * 8  # IHDR width and height
    path.write_bytes(bytes(data))
    res = probe(rd, [rec])
    assert res["status"] == "fail"
    assert "cannot decode" in res["metrics"]["problems"][0]["problem"]


def test_pixel_hash_mismatch_with_intact_file(rd):
    rec = save_output(rd, 0, fmt="png")
    # The file is as saved, but the pixels recorded at save time were different ones.
    rec["pixel_sha256"] = hashlib.sha256(b"other pixels").hexdigest()
    res = probe(rd, [rec])
    (p,) = res["metrics"]["problems"]
    assert p["problem"] == "decoded pixels differ from the pixel_sha256 recorded when it was saved"


def test_replaced_file_and_wrong_size(rd):
    rec = save_output(rd, 0, size=(320, 256), fmt="png")
    other = save_output(rd, 1, size=(256, 256), fmt="png")
    (rd.root / rec["path"]).write_bytes((rd.root / other["path"]).read_bytes())
    res = probe(rd, [rec])
    problem = res["metrics"]["problems"][0]["problem"]
    assert "file sha256 differs" in problem and "decoded as 256x256, recorded as 320x256" in problem
    assert "decoded pixels differ" in problem


def test_missing_file_and_failed_images_are_skipped(rd):
    ok = save_output(rd, 0)
    gone = dict(save_output(rd, 1), path="outputs/never-written.jpg")
    crashed = {"index": 2, "outcome": "crash", "path": None}
    res = probe(rd, [ok, gone, crashed])
    assert res["metrics"]["images"] == 2
    assert res["metrics"]["problems"] == [{"path": "outputs/never-written.jpg", "problem": "file is missing"}]


def test_decode_limit_takes_the_newest(rd):
    images = [save_output(rd, i, size=(64, 64)) for i in range(5)]
    (rd.root / images[0]["path"]).write_bytes(b"not an image")  # the oldest one is damaged
    limited = probe(rd, images, decode_limit=2)
    assert limited["status"] == "ok"
    assert limited["metrics"]["images"] == 2 and limited["metrics"]["outputs_total"] == 5
    everything = probe(rd, images, decode_limit=0)
    assert everything["status"] == "fail" and everything["metrics"]["images"] == 5


def test_decode_runs_in_a_child_without_a_display(rd, monkeypatch):
    for var in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    images = [save_output(rd, 0), save_output(rd, 1)]
    (rd.root / images[1]["path"]).write_bytes(b"\xff\xd8\xff garbage")
    with Journal(rd.journal, fsync=False) as j:
        events = run_phase("after", ProbesConfig(kinds=["decode"], repetitions=2), rd, j, images, visit=3)
    assert [(e["phase"], e["visit"], e["kind"], e["rep"], e["status"]) for e in events] == [
        ("after", 3, "decode", 0, "fail"), ("after", 3, "decode", 1, "fail")]
    assert "cannot decode" in events[0]["reason"]
    assert events[0]["metrics"]["ref_s_per_mp"] > 0
