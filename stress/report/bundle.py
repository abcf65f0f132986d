"""The bundle attached to a ticket: ``<run-id>.tar.gz`` with the reports, the redacted journal, the resolved
scenario, the environment, output thumbnails and a ``MANIFEST.sha256`` (``sha256sum -c`` format).

Everything that goes in is redacted (stress.report.redact). Output images go in as small thumbnails
re-encoded from pixels only, so the generation parameters (and the prompt) embedded in the originals
stay behind; desktop screenshots (``probes/``) only with ``include_screenshots``.

The bundle stays under a size cap (25 MB by default). When it would be larger, in this order: the
thumbnails are dropped, the journal copy's sampler ticks are thinned (change-only keys carried into
the ticks kept, so the copy still reads correctly), screenshots are dropped, logs are cut shorter, and
last the nvidia-bug-report (which also sits next to the bundle) is left out. Each step is a warning.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from stress.fields import DISPLAY_EVENT_KEYS, HOST, NVML_CHANGE_ONLY
from stress.report.gzsegments import STORED, GzipSegments
from stress.report.redact import Redactor

BUNDLE_CAP_BYTES = 25 * 1000 * 1000
THUMB_PX = 128
LOG_TAIL_BYTES = 256 * 1024
NVIDIA_BUG_REPORT_TIMEOUT_S = 300.0
_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".webp")
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"\x89PNG", b"\xff\xd8\xff")   # gzip, PNG, JPEG: stored in the bundle
_SAMPLE_RE = re.compile(rb'"ev":\s*"(nvml|host)"')
# Change-only sampler keys (the field table's): a thinned tick's values are carried into the next kept one.
_NVML_CHANGE_ONLY = NVML_CHANGE_ONLY
_HOST_CHANGE_ONLY = frozenset(k for k, f in HOST.items() if f.carry)
_GPU_RE = re.compile(rb'"gpu":(\d+)')


@dataclass
class Member:
    name: str            # path inside the bundle, below <run-id>/
    data: bytes
    what: str            # one line for README.txt
    group: str           # report | journal | run | thumbnail | screenshot | log | nvidia


@dataclass
class BundleResult:
    path: Path
    size: int
    members: list[str]
    warnings: list[str] = field(default_factory=list)
    journal_thinned: int = 1      # 1: every sample kept; k: one sample tick in k kept


# ---- pieces --------------------------------------------------------------------------------------


def thumbnail(path: Path, px: int = THUMB_PX) -> bytes | None:
    """A small JPEG of ``path`` made from its pixels only: no EXIF, no comment, no text chunks."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft("RGB", (px * 2, px * 2))    # JPEG: decode at 1/2..1/8 scale, much faster
            im = im.convert("RGB")
            im.thumbnail((px, px))
            clean = Image.new("RGB", im.size)
            clean.paste(im)
    except Exception:  # noqa: BLE001 - a damaged output image is skipped, not fatal
        return None
    buf = io.BytesIO()
    clean.save(buf, "JPEG", quality=70)
    return buf.getvalue()


def redact_journal(raw: bytes, redactor: Redactor) -> bytes:
    """The journal's text with every line redacted (a torn last line included)."""
    text = raw.decode("utf-8", "replace")
    return redactor.json_text(text).encode("utf-8")


def thin_journal(raw: bytes, keep_every: int) -> bytes:
    """Keep one sampler tick (``nvml`` per GPU, ``host``) in ``keep_every``; all other events stay.

    Change-only keys of a dropped tick are carried into the next tick kept, so a reader that carries
    values forward still sees every change.
    """
    if keep_every <= 1:
        return raw
    out: list[bytes] = [json.dumps({"ev": "bundle_note", "t": 0, "note": f"sampler ticks (nvml, host) thinned "
                                    f"to 1 in {keep_every} to fit the bundle size cap"}).encode()]
    counters: dict[tuple[bytes, bytes], int] = {}
    pending: dict[tuple[bytes, bytes], dict] = {}
    for line in raw.split(b"\n"):
        km = _SAMPLE_RE.search(line, 0, 60)      # the journal writes "ev" first
        if km is None:
            out.append(line)
            continue
        kind = km.group(1)
        m = _GPU_RE.search(line[:80])
        key = (kind, m.group(1) if m else b"")
        n = counters.get(key, 0)
        counters[key] = n + 1
        change_only = _NVML_CHANGE_ONLY if kind == b"nvml" else _HOST_CHANGE_ONLY
        try:
            ev = json.loads(line)
        except ValueError:
            out.append(line)     # a torn line is copied as it is
            continue
        if n % keep_every:
            carry = pending.setdefault(key, {})
            carry.update({k: v for k, v in ev.items() if k in change_only})
            if kind == b"host":    # a display process went away or took another's place: never lose it
                for k in DISPLAY_EVENT_KEYS:
                    if isinstance(ev.get(k), list):
                        carry.setdefault(k, []).extend(ev[k])
            continue
        carry = pending.pop(key, None)
        if carry:
            for k, v in carry.items():
                ev.setdefault(k, v)
            line = json.dumps(ev, separators=(",", ":"), ensure_ascii=False).encode()
        out.append(line)
    return b"\n".join(out)


def _tail(path: Path, limit: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - limit))
        data = fh.read()
    if size > limit:
        data = f"[... first {size - limit} bytes left out ...]\n".encode() + data.split(b"\n", 1)[-1]
    return data


def capture_nvidia_bug_report(dest_dir: Path, *, timeout: float = NVIDIA_BUG_REPORT_TIMEOUT_S) -> tuple[Path | None, str | None]:
    """Run ``nvidia-bug-report.sh --safe-mode`` into ``dest_dir``; ``(file, None)`` or ``(None, why not)``.

    --safe-mode skips the parts that can hang on a wedged GPU. The script is killed (with everything
    it started) after ``timeout`` seconds.
    """
    exe = shutil.which("nvidia-bug-report.sh")
    if not exe:
        return None, ("nvidia-bug-report.sh not found (it comes with the NVIDIA driver); not attached: run it "
                      "yourself after reproducing")
    dest_dir.mkdir(parents=True, exist_ok=True)
    base = dest_dir / "nvidia-bug-report.log"
    cmd = [exe, "--safe-mode", "--output-file", str(base)]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                cwd=dest_dir, start_new_session=True)
    except OSError as exc:
        return None, f"nvidia-bug-report.sh could not be started: {exc.strerror or exc}"
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.communicate()
        return None, f"nvidia-bug-report.sh did not finish within {timeout:.0f} s and was stopped; not attached"
    for candidate in (Path(str(base) + ".gz"), base):
        if candidate.is_file() and candidate.stat().st_size > 0:
            if candidate.suffix != ".gz":       # an older script that wrote plain text
                gz = Path(str(base) + ".gz")
                gz.write_bytes(gzip.compress(candidate.read_bytes(), mtime=0))
                candidate.unlink()
                candidate = gz
            return candidate, None
    tail = (err or b"").decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    hint = " (it needs root: run `sudo nvidia-bug-report.sh`)" if os.geteuid() != 0 else ""
    return None, f"nvidia-bug-report.sh exited with status {proc.returncode} and wrote nothing{hint}: {tail[0][:200]}"


def redact_gzip_text(data: bytes, redactor: Redactor) -> bytes:
    """A gzip'd text file (nvidia-bug-report.log.gz), redacted and compressed again."""
    text = gzip.decompress(data).decode("utf-8", "replace")
    return gzip.compress(redactor.text_lines(text).encode("utf-8"), compresslevel=6, mtime=0)


# ---- the bundle ------------------------------------------------------------------------------------


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n >= 10e6 else f"{n / 1e6:.2g} MB"


def _redacted_json_file(path: Path, redactor: Redactor) -> bytes | None:
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        obj = json.loads(raw)
    except ValueError:
        return redactor.json_text(raw).encode("utf-8")
    return (json.dumps(redactor.obj(obj), indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8")


def _contained(root: Path, path: Path) -> str | None:
    """None when ``path`` is a regular file inside ``root`` (after following links); else why it is left out.

    A bundle goes to public tickets: a link out of the run directory (``logs/x.log -> /etc/shadow``) is
    never followed."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return "a broken or looping link" if path.is_symlink() else "unreadable"
    if real != root and root not in real.parents:
        return "a link out of the run directory"
    if not real.is_file():
        return "not a regular file"
    return None


def _folder_inside(root: Path, folder: Path, skipped: list[str]) -> bool:
    """``folder`` exists and is a folder of the run directory itself (not a link to elsewhere)."""
    if not os.path.lexists(folder):
        return False
    try:
        real = folder.resolve(strict=True)
    except (OSError, RuntimeError):
        real = None
    if real is None or (real != root and root not in real.parents):
        skipped.append(f"{folder.name}/: left out of the bundle: a link out of the run directory")
        return False
    return real.is_dir()


def _read_inside(root: Path, path: Path, skipped: list[str]) -> bytes | None:
    """The bytes of ``path`` if it is a regular file inside ``root``; otherwise None and a note."""
    why = _contained(root, path)
    if why is None:
        try:
            fd = os.open(path.resolve(), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            why = f"unreadable ({exc.strerror})"
        else:
            with os.fdopen(fd, "rb") as fh:
                if not os.path.samestat(os.fstat(fh.fileno()), os.stat(path)):
                    why = "changed while it was read"
                else:
                    return fh.read()
    skipped.append(f"{path.relative_to(root) if root in path.parents else path.name}: left out of the bundle: {why}")
    return None


def journal_copy(root: Path, redactor: Redactor, skipped: list[str]) -> bytes:
    """The run's journal, redacted line by line (b"" when it is not there or is not a file inside)."""
    journal = root / "journal.jsonl"
    raw_journal = _read_inside(root, journal, skipped) if os.path.lexists(journal) else None
    return redact_journal(raw_journal, redactor) if raw_journal is not None else b""


def journal_member(journal_text: bytes) -> bytes:
    return gzip.compress(journal_text, compresslevel=3, mtime=0)   # 3: 3x faster than 6, 14% larger


_RUN_FILES = (("scenario.resolved.json", "the scenario as run, every default filled in"),
              ("environment.json", "OS, kernel, driver, GPUs, libraries, display session"),
              ("run.json", "summary of the run derived from the journal"))


def run_file_members(root: Path, redactor: Redactor, skipped: list[str]) -> list[Member]:
    """The run directory's JSON files, redacted (the scenario as run, the environment, run.json)."""
    out = []
    for name, what in _RUN_FILES:
        if not os.path.lexists(root / name) or _read_inside(root, root / name, skipped) is None:
            continue
        data = _redacted_json_file(root / name, redactor)
        if data is not None:
            out.append(Member(name, data, what, "run"))
    return out


def prepared_journal(run_dir: Path, redactor: Redactor) -> dict:
    """What the bundle needs of the run directory's own files, made ahead (``stress.background`` runs it
    beside the charts): the compressed redacted journal copy, its uncompressed size and what was left
    out, and the redacted run files. The redacted journal text itself is made again only if the bundle
    must thin it to fit its cap."""
    skipped: list[str] = []
    root = run_dir.resolve()
    text = journal_copy(root, redactor, skipped)
    run_skipped: list[str] = []
    run_files = run_file_members(root, redactor, run_skipped)
    return {"gz": journal_member(text), "size": len(text), "skipped": skipped,
            "run_files": run_files, "run_skipped": run_skipped}


def collect_members(run_dir: Path, report_files: dict[str, Path], report: dict, redactor: Redactor, *,
                    include_screenshots: bool, nvidia_bug_report: Path | None,
                    include_thumbnails: bool = False, journal: bytes | None = None,
                    run_files: tuple[list[Member], list[str]] | None = None,
                    ) -> tuple[list[Member], bytes, list[str]]:
    """Everything the bundle may hold, and the redacted journal (kept apart: it may be thinned later);
    ``journal``: that journal text when it was made already (then nothing is read for it here);
    ``run_files``: :func:`run_file_members` and what it left out, when they were made already."""
    members: list[Member] = []
    warnings: list[str] = []
    root = run_dir.resolve()
    skipped: list[str] = []     # links out of the run directory, and other files not read: README notes
    for name, path in report_files.items():
        if path and path.is_file():
            members.append(Member(name, path.read_bytes(), {"report.json": "the report's data (schema in "
                                  "docs/report-format.md)", "report.html": "the report, self-contained",
                                  "ticket.md": "text for the driver bug form"}.get(name, name), "report"))
    journal_text = journal_copy(root, redactor, skipped) if journal is None else journal
    if run_files is None:
        members += run_file_members(root, redactor, skipped)
    else:
        members += run_files[0]
        skipped += run_files[1]
    images = [i for i in report.get("images") or [] if i.get("sha256") and i.get("file")]
    if images:
        lines = "".join(f"{i['sha256']}  outputs/{i['file']}\n" for i in images)
        members.append(Member("outputs.sha256", lines.encode(), "sha256 of every output image (sha256sum format, "
                              "as recorded when each image was saved)", "run"))
    outputs = root / "outputs"
    # Thumbnails show what was generated, which hashed prompts hide: opt-in, like screenshots.
    if include_thumbnails and _folder_inside(root, outputs, skipped):
        for p in sorted(outputs.iterdir()):
            if p.suffix.lower() in _IMAGE_EXT and (p.is_file() or p.is_symlink()):
                if _contained(root, p) is not None:
                    skipped.append(f"outputs/{p.name}: left out of the bundle: {_contained(root, p)}")
                    continue
                thumb = thumbnail(p)
                if thumb is not None:
                    members.append(Member(f"thumbnails/{p.stem}.jpg", thumb, f"{THUMB_PX}px thumbnails of the "
                                          "outputs (pixels only, no embedded parameters)", "thumbnail"))
    probes = root / "probes"
    if include_screenshots and _folder_inside(root, probes, skipped):
        found = []
        for top, dirs, files in os.walk(probes, followlinks=False):   # links to folders are not entered
            for d in dirs:
                if os.path.islink(os.path.join(top, d)):
                    skipped.append(f"{Path(top, d).relative_to(root)}: left out of the bundle: a link to a folder")
            found += [Path(top, f) for f in files]
        for p in sorted(found):
            data = _read_inside(root, p, skipped)
            if data is not None:
                members.append(Member(f"probes/{p.relative_to(probes).as_posix()}", data,
                                      "desktop screenshots kept by the probes (included on request)", "screenshot"))
    logs = root / "logs"
    if _folder_inside(root, logs, skipped):
        for p in sorted(logs.glob("*.log")):
            why = _contained(root, p)
            if why is not None:
                skipped.append(f"logs/{p.name}: left out of the bundle: {why}")
                continue
            try:
                text = _tail(p, LOG_TAIL_BYTES).decode("utf-8", "replace")
            except OSError:
                continue
            members.append(Member(f"logs/{p.name}", redactor.text_lines(text).encode("utf-8"),
                                  "worker and probe logs (last 256 KiB of each, redacted)", "log"))
    evidence = root / "evidence"      # captured at the first failure, the previous boot (stress.evidence)
    if evidence.is_dir() and _folder_inside(root, evidence, skipped):
        for p in sorted(x for x in evidence.rglob("*") if x.is_file() or x.is_symlink()):
            rel = p.relative_to(root).as_posix()
            why = _contained(root, p)
            if why is not None:
                skipped.append(f"{rel}: left out of the bundle: {why}")
                continue
            if p.suffix.lower() in _IMAGE_EXT:
                if include_screenshots:
                    data = _read_inside(root, p, skipped)
                    if data is not None:
                        members.append(Member(rel, data, "screenshot taken at the first failure (on request)",
                                              "screenshot"))
                continue
            if p.suffix == ".gz":     # nvidia-bug-report.log.gz captured at the failure
                try:
                    members.append(Member(rel, redact_gzip_text(p.read_bytes(), redactor),
                                          "nvidia-bug-report.sh output at the first failure (redacted)", "nvidia"))
                except (OSError, EOFError, ValueError) as exc:
                    skipped.append(f"{rel}: left out of the bundle: {exc}")
                continue
            try:
                text = _tail(p, LOG_TAIL_BYTES).decode("utf-8", "replace")
            except OSError:
                continue
            members.append(Member(rel, redactor.text_lines(text).encode("utf-8"),
                                  "evidence: kernel log, compositor log, fingerprint, previous boot (redacted)", "log"))
    if nvidia_bug_report is not None and nvidia_bug_report.is_file():
        members.append(Member("nvidia-bug-report.log.gz", nvidia_bug_report.read_bytes(),
                              "nvidia-bug-report.sh --safe-mode output, captured after the run (redacted)", "nvidia"))
    warnings.extend(skipped)
    return members, journal_text, warnings


def _readme(run_id: str, members: list[Member], notes: list[str]) -> bytes:
    lines = [f"gpu-stress bundle for run {run_id}", "",
             "Check it with: sha256sum -c MANIFEST.sha256 (inside this folder).",
             "User name, host name, home paths, GPU UUIDs/serials and prompts are masked.", "", "Contents:"]
    seen: dict[str, str] = {}
    for m in members:
        top = m.name.split("/")[0] + ("/" if "/" in m.name else "")
        seen.setdefault(top, m.what)
    lines += [f"  {k:28s} {v}" for k, v in seen.items()]
    if notes:
        lines += ["", "Notes:"] + [f"  - {n}" for n in notes]
    return ("\n".join(lines) + "\n").encode()


def _write_tar(path: Path, run_id: str, members: list[Member], mtime: float) -> int:
    manifest = "".join(f"{hashlib.sha256(m.data).hexdigest()}  {m.name}\n" for m in members).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        return _write_tar_to(tmp, path, run_id, members, manifest, mtime)
    except BaseException:   # a full disk: never leave the partial temp file behind
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def _write_tar_to(tmp: Path, path: Path, run_id: str, members: list[Member], manifest: bytes, mtime: float) -> int:
    # gzip's header carries no file name; the tar headers carry no user or group names (see below).
    # What is compressed already goes in stored (stress.report.gzsegments), not deflated again.
    with open(tmp, "wb") as raw, GzipSegments(raw, level=6, mtime=int(mtime)) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({"/".join(m.name.split("/")[:i]) for m in members for i in range(1, m.name.count("/") + 1)})
        for d in [""] + dirs:
            info = tarfile.TarInfo(f"{run_id}/{d}".rstrip("/"))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(mtime)
            tar.addfile(info)
        for m in members + [Member("MANIFEST.sha256", manifest, "", "manifest")]:
            info = tarfile.TarInfo(f"{run_id}/{m.name}")
            info.size, info.mode, info.mtime = len(m.data), 0o644, int(mtime)
            info.uname = info.gname = ""        # never the local account names
            gz.level(STORED if m.data.startswith(_COMPRESSED_MAGIC) else 6)
            tar.addfile(info, io.BytesIO(m.data))
            gz.level(6)
    os.replace(tmp, path)
    return path.stat().st_size


def write_bundle(run_dir: Path, out_path: Path, report_files: dict[str, Path], report: dict, redactor: Redactor, *,
                 include_screenshots: bool = False, nvidia_bug_report: Path | None = None,
                 include_thumbnails: bool = False, cap_bytes: int = BUNDLE_CAP_BYTES, extra_notes: list[str] | None = None,
                 prepared: dict | None = None) -> BundleResult:
    """Write the bundle at ``out_path``, shrinking it under ``cap_bytes`` as described in the module doc;
    ``prepared``: :func:`prepared_journal`'s result when it was made ahead."""
    run_id = report.get("run_id") or run_dir.name
    members, journal_text, warnings = collect_members(
        run_dir, report_files, report, redactor, include_screenshots=include_screenshots,
        nvidia_bug_report=nvidia_bug_report, include_thumbnails=include_thumbnails,
        journal=b"" if prepared is not None else None,
        run_files=(prepared["run_files"], prepared["run_skipped"]) if prepared and "run_files" in prepared else None)
    if prepared is not None:
        warnings = list(prepared["skipped"]) + warnings
    notes = list(extra_notes or []) + warnings     # what was left out (links out of the run directory)
    mtime = report.get("generated_at") or time.time()
    keep_every = 1
    journal_gz = 0
    written_names: list[list[str]] = [[]]

    def build() -> int:
        nonlocal journal_gz, journal_text, prepared
        if prepared is not None and keep_every == 1:
            gz = prepared["gz"]
        else:
            if prepared is not None:      # thinning needs the text: made again, once
                journal_text = journal_copy(run_dir.resolve(), redactor, [])
                prepared = None
            jdata = thin_journal(journal_text, keep_every) if keep_every > 1 else journal_text
            gz = journal_member(jdata)
        jm = Member("journal.jsonl.gz", gz, "the run's journal (events, one JSON object per line; redacted)", "journal")
        journal_gz = len(jm.data)
        all_members = members + [jm]
        all_members.insert(0, Member("README.txt", _readme(run_id, all_members, notes), "this file", "readme"))
        written_names[0] = [m.name for m in all_members] + ["MANIFEST.sha256"]   # the tar's files, in order
        return _write_tar(out_path, run_id, all_members, mtime)

    size = build()
    steps: list[tuple[str, Callable[[], bool]]] = []

    def drop(group: str, message: str) -> Callable[[], bool]:
        def step() -> bool:
            nonlocal members
            if not any(m.group == group for m in members):
                return False
            members = [m for m in members if m.group != group]
            warnings.append(message)
            notes.append(message)
            return True
        return step

    def thin() -> bool:
        nonlocal keep_every
        if keep_every >= 64 or not (journal_text or (prepared and prepared["size"])):
            return False
        # Aim at the cap in one go: the journal shrinks about in proportion to the ticks it keeps.
        over = size - cap_bytes
        if over >= journal_gz * 0.9:
            factor = 64
        else:
            factor = 2 ** math.ceil(math.log2(1.15 * journal_gz / (journal_gz - over)))
        keep_every = min(64, keep_every * max(2, factor))
        msg = f"bundle over {_mb(cap_bytes)}: the journal copy keeps 1 sampler tick in {keep_every}"
        warnings[:] = [w for w in warnings if "journal copy keeps" not in w] + [msg]
        notes[:] = [n for n in notes if "journal copy keeps" not in n] + [msg]
        return True

    def shorten_logs() -> bool:
        logs = [m for m in members if m.group == "log" and len(m.data) > 16 * 1024]
        if not logs:
            return False
        for m in logs:
            m.data = b"[... cut to fit the bundle size cap ...]\n" + m.data[-16 * 1024:]
        msg = "bundle over the size cap: logs cut to their last 16 KiB"
        warnings.append(msg)
        notes.append(msg)
        return True

    steps = [("thumbnails", drop("thumbnail", "bundle over the size cap: output thumbnails left out")),
             ("journal", thin), ("journal", thin), ("journal", thin),
             ("screenshots", drop("screenshot", "bundle over the size cap: probe screenshots left out")),
             ("logs", shorten_logs),
             ("nvidia", drop("nvidia", "bundle over the size cap: nvidia-bug-report.log.gz left out of the bundle; "
                                       "attach the copy next to it separately"))]
    for _, step in steps:
        if size <= cap_bytes:
            break
        if step():
            size = build()
    if size > cap_bytes:
        warnings.append(f"bundle is {_mb(size)}, still over the {_mb(cap_bytes)} cap after every reduction")
    return BundleResult(out_path, size, written_names[0], warnings, keep_every)
