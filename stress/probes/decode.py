"""Decode probe: open the run's images as an image viewer would and check every pixel.

Each image is read, fully decoded and converted to RGB (as a viewer shows it), and thumbnailed (as
a file manager would). The file bytes are checked against ``sha256`` and the decoded pixels against
``pixel_sha256``, both recorded when the image was saved. A fixed set of reference images, made once
per run under ``probes/reference/``, is decoded by every probe too: it gives the baseline (before
any output exists) something to time, and the same files are timed in every phase.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import statistics
import time
from pathlib import Path

from PIL import Image

from stress.probes.common import ProbeContext, first_line, pixel_sha256, result, make_pattern

REFERENCE_DIR = "probes/reference"
# Sizes as the workload makes them: the largest SDXL resolution as JPEG, a square PNG.
_REFERENCES = (("reference-1152x1536.jpg", 1152, 1536, "JPEG"), ("reference-1024x1024.png", 1024, 1024, "PNG"))
MAX_LISTED_PROBLEMS = 20


def _encoded_references() -> list[tuple[str, int, int, bytes]]:
    out = []
    for seed, (name, w, h, fmt) in enumerate(_REFERENCES):
        buf = io.BytesIO()
        Image.fromarray(make_pattern(w, h, seed=seed)).save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
        out.append((name, w, h, buf.getvalue()))
    return out


def ensure_reference(run_dir: Path) -> list[dict]:
    """The reference images' records, making the files once per run (atomically).

    Every probe child encodes the references in memory, whether or not the files exist: the work a
    process did before it decodes changes how fast it decodes (measured here: a child that had just
    made the references decoded 1.5x faster than one that had not), and the baseline child is the one
    that makes them. Doing the same work in every phase keeps the phases comparable."""
    encoded = _encoded_references()
    ref_dir = run_dir / REFERENCE_DIR
    manifest = ref_dir / "reference.json"
    try:
        records = json.loads(manifest.read_text(encoding="utf-8"))
        if all((run_dir / r["path"]).is_file() for r in records):
            return records
    except (OSError, ValueError, KeyError, TypeError):
        pass
    ref_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for name, w, h, data in encoded:
        path = ref_dir / name
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        with Image.open(io.BytesIO(data)) as saved:
            px = pixel_sha256(saved)
        records.append({"path": str(path.relative_to(run_dir)), "sha256": hashlib.sha256(data).hexdigest(),
                        "pixel_sha256": px, "width": w, "height": h, "outcome": "ok", "reference": True})
    tmp = manifest.with_name(f".reference.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(records, indent=2), encoding="utf-8")
    os.replace(tmp, manifest)
    return records


def check_image(run_dir: Path, rec: dict, thumb: int) -> dict:
    """Read, decode, hash and thumbnail one image; ``problem`` says what is wrong, if anything."""
    rel = rec.get("path") or ""
    out: dict = {"path": rel}
    problems: list[str] = []
    t = time.perf_counter()
    try:
        data = (run_dir / rel).read_bytes()
    except FileNotFoundError:
        out["problem"] = "file is missing"
        return out
    except OSError as exc:
        out["problem"] = f"cannot read: {exc.strerror or exc}"
        return out
    out["read_s"] = round(time.perf_counter() - t, 6)
    if rec.get("sha256") and hashlib.sha256(data).hexdigest() != rec["sha256"]:
        problems.append("file sha256 differs from the one recorded when it was saved")
    try:
        t = time.perf_counter()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = img.convert("RGB")
        raw = rgb.tobytes()
        out["decode_s"] = round(time.perf_counter() - t, 6)
        w, h = rgb.size
        out["mp"] = round(w * h / 1e6, 4)
        if rec.get("width") and rec.get("height") and (w, h) != (rec["width"], rec["height"]):
            problems.append(f"decoded as {w}x{h}, recorded as {rec['width']}x{rec['height']}")
        if rec.get("pixel_sha256") and hashlib.sha256(raw).hexdigest() != rec["pixel_sha256"]:
            problems.append("decoded pixels differ from the pixel_sha256 recorded when it was saved")
        t = time.perf_counter()
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (thumb, thumb))  # what a thumbnailer does: JPEG scaled decode
            img.thumbnail((thumb, thumb))
        out["thumb_s"] = round(time.perf_counter() - t, 6)
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... on corrupt data
        problems.append(f"cannot decode: {first_line(exc) or type(exc).__name__}")
    if problems:
        out["problem"] = "; ".join(problems)
    return out


def _per_mp(items: list[dict]) -> float | None:
    mp = sum(i.get("mp", 0) for i in items if "decode_s" in i)
    return round(sum(i["decode_s"] for i in items if "decode_s" in i) / mp, 6) if mp else None


def probe(ctx: ProbeContext) -> dict:
    cfg = ctx.config
    t0 = time.perf_counter()
    refs = ensure_reference(ctx.run_dir)
    outputs = sorted((r for r in ctx.images if r.get("outcome", "ok") == "ok" and r.get("path")),
                     key=lambda r: r.get("index", 0))
    total_outputs = len(outputs)
    if cfg.decode_limit:
        outputs = outputs[-cfg.decode_limit:]
    for r in refs:  # untimed warm-up, the same in every phase
        check_image(ctx.run_dir, r, cfg.thumbnail_size)
    checked_refs = [check_image(ctx.run_dir, r, cfg.thumbnail_size) for r in refs]
    checked: list[dict] = []
    skipped = 0
    for i, rec in enumerate(reversed(outputs)):  # newest first: the most recent damage matters most
        if ctx.remaining(margin=1.0) <= 0:
            skipped = len(outputs) - i
            break
        checked.append(check_image(ctx.run_dir, rec, cfg.thumbnail_size))
    wall = time.perf_counter() - t0
    bad = [c for c in checked_refs + checked if "problem" in c]
    thumbs = [c["thumb_s"] for c in checked_refs + checked if "thumb_s" in c]
    metrics = {
        "images": len(checked), "outputs_total": total_outputs, "references": len(checked_refs),
        "skipped": skipped, "megapixels": round(sum(c.get("mp", 0) for c in checked), 3),
        "s_per_mp": _per_mp(checked), "ref_s_per_mp": _per_mp(checked_refs),
        "thumb_s_median": round(statistics.median(thumbs), 6) if thumbs else None,
        "problem_count": len(bad),
        "problems": [{"path": c["path"], "problem": c["problem"]} for c in bad[:MAX_LISTED_PROBLEMS]],
    }
    if bad:
        first = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        return result("fail", wall, f"{len(bad)} of {len(checked) + len(checked_refs)} images failed: "
                      f"{first['path']}: {first['problem']}{more}", **metrics)
    if skipped:
        return result("timeout", wall, f"decoded {len(checked)} of {len(outputs)} outputs before the "
                      f"{cfg.timeout:g} s limit", **metrics)
    return result("ok", wall, None, **metrics)

