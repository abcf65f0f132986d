"""The sections of report.json, each made from the run record: machine, images, probes, workload,
sources, verdict, and what the run's prompts are (for redaction). Rendering is for the views."""
from __future__ import annotations

import json
import os
import re
import shlex
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from stress.record.derived import Windows
from stress.fields import GPU_STATIC
from stress.record import derived
from stress.record.fold import FAILED_PROBE, RunRecord, num, to_int, to_str
from stress.report.redact import prompt_digest, prompt_placeholder
from stress.stats import rnd, summary

PROBE_PHASES = ("baseline", "during", "cycle", "after", "after-exit")


def _machine(env: dict, rec: RunRecord) -> dict:
    osd = env.get("os") if isinstance(env.get("os"), dict) else {}
    dist = osd.get("distribution") if isinstance(osd.get("distribution"), dict) else {}
    gpu_env = env.get("gpu") if isinstance(env.get("gpu"), dict) else {}
    display = env.get("display") if isinstance(env.get("display"), dict) else {}
    env_vars = env.get("env_vars") if isinstance(env.get("env_vars"), dict) else {}
    libs = env.get("libraries") if isinstance(env.get("libraries"), dict) else {}
    cpu = env.get("cpu") if isinstance(env.get("cpu"), dict) else {}
    mem = env.get("memory") if isinstance(env.get("memory"), dict) else {}
    py = env.get("python") if isinstance(env.get("python"), dict) else {}

    def pick(d: dict, *keys: str) -> Any:
        for k in keys:
            if d.get(k) not in (None, "", {}):
                return d[k]
        return None

    statics = [rec.gpu_static[k] for k in sorted(rec.gpu_static, key=lambda x: (str(type(x)), x))]
    env_gpus = gpu_env.get("gpus") if isinstance(gpu_env.get("gpus"), list) else []
    gpus = []
    for i, g in enumerate(statics or env_gpus):
        if not isinstance(g, dict):
            continue
        other = env_gpus[i] if i < len(env_gpus) and isinstance(env_gpus[i], dict) else {}
        idx = to_int(pick(g, "gpu", "index"))
        idx = idx if idx is not None else i
        name = pick(g, "name") or pick(other, "name") or "unknown GPU"
        uuid = pick(g, "uuid") or pick(other, "uuid")
        info = {"index": idx, "name": name, "uuid": uuid,
                "nvidia_smi_l": f"GPU {idx}: {name}" + (f" (UUID: {uuid})" if uuid else "")}
        for k in GPU_STATIC:      # the names the sampler writes (stress.fields), and nothing else
            if k in ("gpu", "name", "uuid"):
                continue
            val = pick(g, k) if pick(g, k) is not None else pick(other, k)
            if val is not None:
                info[k] = val
        gpus.append(info)
    first_static = statics[0] if statics else {}
    driver = pick(first_static, "driver") or pick(gpu_env, "driver", "driver_version")
    cuda = pick(first_static, "cuda_driver") or pick(gpu_env, "cuda_driver", "cuda_driver_version", "cuda")
    flavor = pick(gpu_env, "kernel_module", "driver_flavor", "module_type", "open_kernel_module")
    if isinstance(flavor, bool):
        flavor = "open" if flavor else "proprietary"
    release = pick(osd, "release")
    uname = None
    if osd.get("system"):
        # the host name means nothing to a maintainer and a short one would survive free-text masking
        uname = " ".join(str(x) for x in (osd.get("system"), "<host>", release, osd.get("version"),
                                          osd.get("machine")) if x)
        if osd.get("system") == "Linux":
            uname += " GNU/Linux"
    session_type = pick(display, "session_type", "type") or env_vars.get("XDG_SESSION_TYPE")
    server = pick(display, "server", "display_server", "x_server")
    if server is None and session_type:
        server = {"x11": "Xorg", "wayland": "Wayland"}.get(str(session_type).lower())
    desktop = pick(display, "desktop", "desktop_environment", "current_desktop") or env_vars.get("XDG_CURRENT_DESKTOP")
    compositor = pick(display, "compositor", "window_manager")
    if isinstance(compositor, dict):
        compositor = pick(compositor, "name")
    if isinstance(server, dict):
        server = " ".join(str(x) for x in (server.get("name"), server.get("version")) if x) or None
    return {
        "os": pick(dist, "pretty_name") or (" ".join(str(x) for x in (osd.get("system"), release) if x) or None),
        "kernel": to_str(release),
        "kernel_uname": uname,
        "kernel_stable": (not re.search(r"-rc\d", str(release))) if release else None,
        "driver": to_str(driver),
        "driver_flavor": to_str(flavor),
        "cuda_driver": to_str(cuda),
        "gpus": gpus,
        "display_server": to_str(server),
        "session_type": to_str(session_type),
        "desktop": to_str(desktop),
        "compositor": to_str(compositor),
        "cpu": to_str(pick(cpu, "model")),
        "ram_total": to_int(pick(mem, "total")),
        "python": to_str(pick(py, "version")),
        "libraries": {str(k): to_str(v) for k, v in libs.items()},
    }


def _image_records(run: RunRecord, t0: float, include_prompts: bool) -> list[dict]:
    out = []
    for idx in sorted(set(run.images) | set(run.image_starts)):
        rec = run.images.get(idx)
        start = run.image_starts.get(idx)
        if rec is None:
            rec = {"index": idx, "seed": start.get("seed"), "width": start.get("width"),
                   "height": start.get("height"), "worker": start.get("worker"), "outcome": "incomplete",
                   "error": "started but never finished (the run stopped or the machine froze during it)"}
            t_end = None
        else:
            t_end = rec.get("finished_at", rec.get("t"))
        r: dict[str, Any] = {}
        for k, v in rec.items():
            if k in ("ev", "t", "finished_at", "scheduler", "path", "prompt", "negative_prompt", "timings"):
                continue
            if isinstance(v, (str, int, float, bool)) or v is None:
                r[k] = v
        r["index"] = idx
        r["outcome"] = str(rec.get("outcome") or "unknown")
        for k in ("seed", "width", "height", "steps", "refiner_steps"):
            r[k] = to_int(rec.get(k))
        r["cfg"] = num(rec.get("cfg"))
        t_start = start["t"] if start else None
        r["t_start"] = rnd(t_start - t0, 2) if t_start is not None else None
        r["t_end"] = rnd(t_end - t0, 2) if isinstance(t_end, (int, float)) else None
        r["wall_s"] = rnd(t_end - t_start, 3) if isinstance(t_end, (int, float)) and t_start is not None else None
        timings = {}
        if isinstance(rec.get("timings"), dict):
            timings = {str(k): rnd(v, 4) for k, v in rec["timings"].items() if num(v) is not None}
        for k, v in run.stages.get(idx, {}).items():
            timings.setdefault(k, rnd(v, 4))
        r["timings"] = timings
        path = rec.get("path") or rec.get("file")
        r["file"] = os.path.basename(str(path)) if path else None
        r["alloc"] = {k: rnd(v) for k, v in run.alloc_by_image.get(idx, {}).items()}
        text = rec.get("prompt")
        if isinstance(text, str) and text:
            r["prompt"] = text if include_prompts else prompt_digest(text, to_int(rec.get("prompt_tokens")))
        else:
            r["prompt"] = None
        out.append(r)
    return out


def _probes(rec: RunRecord, t0: float) -> dict:
    rows: dict[tuple[str, str], dict] = {}
    visits: dict[tuple[str, int, str, int], dict] = {}
    for ev in rec.probes:
        phase, kind, status = str(ev.get("phase")), str(ev.get("kind")), str(ev.get("status"))
        lat, reason, t = num(ev.get("latency_s")), to_str(ev.get("reason")), ev["t"]
        vi, rp = ev.get("visit"), ev.get("repeat")
        vkey = (phase, vi if type(vi) is int else to_int(vi) or 0, kind, rp if type(rp) is int else to_int(rp) or 0)
        visit = visits.get(vkey)
        if visit is None:
            visit = visits[vkey] = {"t": [], "lat": [], "failed": 0}
        visit["t"].append(t)
        if status == "ok" and lat is not None:
            visit["lat"].append(lat)
        if status in FAILED_PROBE:
            visit["failed"] += 1
        row = rows.get((phase, kind))
        if row is None:
            row = rows[(phase, kind)] = {"phase": phase, "kind": kind, "n": 0, "statuses": Counter(),
                                         "lat": [], "reasons": Counter(), "first_failure_t": None}
        row["n"] += 1
        row["statuses"][status] += 1
        if status == "ok" and lat is not None:
            row["lat"].append(lat)
        if status in FAILED_PROBE:
            row["reasons"][(reason or status)[:200]] += 1
            if row["first_failure_t"] is None:
                row["first_failure_t"] = rnd(t - t0, 2)
    order = {p: i for i, p in enumerate(PROBE_PHASES)}
    out_rows = []
    for (phase, kind), row in sorted(rows.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][0], kv[0][1])):
        out_rows.append({"phase": phase, "kind": kind, "n": row["n"], "statuses": dict(row["statuses"]),
                         "failures": sum(row["statuses"].get(s, 0) for s in FAILED_PROBE),
                         "latency": summary(row["lat"]), "latencies": [rnd(x, 5) for x in row["lat"]],
                         "reasons": dict(row["reasons"].most_common(10)),
                         "first_failure_t": row["first_failure_t"]})
    compare = []
    kinds = sorted({k for (_, k) in rows})
    for kind in kinds:
        def p50(phase: str) -> float | None:
            row = rows.get((phase, kind))
            return summary(row["lat"])["p50"] if row else None

        def fails(phase: str) -> int:
            row = rows.get((phase, kind))
            return sum(row["statuses"].get(s, 0) for s in FAILED_PROBE) if row else 0

        b, a, ae = p50("baseline"), p50("after"), p50("after-exit")
        compare.append({"kind": kind, "baseline_p50": b, "after_p50": a, "after_exit_p50": ae,
                        "ratio_after": rnd(a / b, 3) if a is not None and b else None,
                        "ratio_after_exit": rnd(ae / b, 3) if ae is not None and b else None,
                        "baseline_failures": fails("baseline"), "after_failures": fails("after"),
                        "after_exit_failures": fails("after-exit")})
    out_visits = [{"phase": ph, "visit": vi, "kind": kind, "repeat": rep, "t": rnd(min(g["t"]) - t0, 2),
                   "t_end": rnd(max(g["t"]) - t0, 2), "n": len(g["t"]), "failed": g["failed"],
                   "median_s": rnd(statistics.median(g["lat"]), 5) if g["lat"] else None}
                  for (ph, vi, kind, rep), g in visits.items()]
    out_visits.sort(key=lambda v: (v["t"], v["kind"]))
    return {"total": len(rec.probes), "rows": out_rows, "compare": compare, "visits": out_visits}


def _workload(rec: RunRecord, images: list[dict], scenario: dict | None, win: Windows, t0: float) -> dict:
    sc = scenario or {}
    plan = rec.plan or {}
    refiner_on = bool((sc.get("model") or {}).get("refiner")) if isinstance(sc.get("model"), dict) else bool(
        plan.get("refiner"))
    default_steps = to_int(plan.get("base_steps_per_image")) or to_int(sc.get("steps"))
    default_ref = to_int(plan.get("refiner_steps_per_image"))
    if default_ref is None:
        default_ref = (to_int((sc.get("refiner") or {}).get("steps")) or to_int(sc.get("steps")) or 0) if refiner_on else 0
    default_cfg = num(sc.get("cfg"))
    outcomes: Counter = Counter(r["outcome"] for r in images)
    ok = [r for r in images if r["outcome"] == "ok"]
    latent = 0
    unet = 0
    res: Counter = Counter()
    for r in ok:
        w, h = r.get("width") or 0, r.get("height") or 0
        latent += (w // 8) * (h // 8)
        steps = r.get("steps") if r.get("steps") is not None else (default_steps or 0)
        ref = r.get("refiner_steps") if r.get("refiner_steps") is not None else default_ref
        cfg = r.get("cfg") if r.get("cfg") is not None else default_cfg
        unet += (steps + (ref or 0)) * (2 if (cfg or 0) > 1 else 1)
    for r in images:
        if r.get("width") and r.get("height"):
            res[f"{r['width']}x{r['height']}"] += 1
    wall = derived.wall_seconds(rec)
    wl = [s for s in win.spans if s["phase"] == "workload"]
    workload_s = None
    if wl:
        workload_s = sum(((s["end"] if s["end"] is not None else (rec.last_t or s["start"])) - s["start"]) for s in wl)
    per_image = list(derived.image_seconds(rec).values())
    counts = derived.counts(rec)
    stage_s: dict[str, float] = {}
    for r in images:
        for k, v in r["timings"].items():
            if v is not None:
                stage_s[k] = rnd(stage_s.get(k, 0.0) + v, 3)
    scheduler = next((rec.images[i].get("scheduler") for i in sorted(rec.images)
                      if isinstance(rec.images[i].get("scheduler"), dict)), None)
    planned = counts.planned if counts.planned is not None else to_int(sc.get("images"))
    return {"images_planned": planned, "images_started": len(images), "images_ok": counts.ok,
            "images_failed": counts.failed, "images_skipped": counts.skipped, "images_unfinished": counts.unfinished,
            "outcomes": dict(outcomes), "latent_positions": int(latent), "unet_evaluations": int(unet),
            "wall_s": rnd(wall, 2), "workload_s": rnd(workload_s, 2),
            "images_per_min": derived.images_per_min(rec), "busy_s": rnd(derived.busy_seconds(rec), 2),
            "image_s": summary(per_image), "stage_s": stage_s, "resolutions": dict(res), "scheduler": scheduler}


def _source_states(events: list[dict], t0: float) -> dict[tuple[str, int | None], dict]:
    """Per (source, GPU): the last available/unavailable word, unsupported fields, the history."""
    out: dict[tuple[str, int | None], dict] = {}
    for ev in events:
        src = str(ev.get("src"))
        gpu = ev.get("gpu") if type(ev.get("gpu")) is int else None
        st = out.setdefault((src, gpu), {"status": "available", "reason": None, "unsupported": {}, "info": {},
                                         "history": []})
        status = str(ev.get("status") or "unknown")
        reason = to_str(ev.get("reason"))
        st["history"].append({"t": rnd(ev["t"] - t0, 2), "status": status, "reason": reason})
        if status == "unsupported-fields":
            fields = ev.get("fields")
            if isinstance(fields, dict):
                st["unsupported"].update({str(k): str(v) for k, v in fields.items()})
            elif isinstance(fields, list):
                st["unsupported"].update({str(k): "unsupported" for k in fields})
            continue
        st["status"], st["reason"], st["t_rel"] = status, reason, ev["t"] - t0
        st["info"].update({k: v for k, v in ev.items() if k not in ("ev", "t", "src", "status", "reason", "gpu")
                           and v is not None})
    return out


def _verdict(rec: RunRecord, missing: list[str]) -> dict:
    v = rec.verdict
    if v is None:
        reasons = missing[:5] or ["the journal has no verdict event"]
        return {"verdict": "incomplete", "reasons": reasons, "exit_code": None, "source": "derived",
                "details": None}
    reasons = v.get("reasons")
    if not isinstance(reasons, list):
        reasons = [reasons] if reasons else []
    reasons = [r if isinstance(r, str) else (r.get("message") if isinstance(r, dict) and r.get("message")
                                             else json.dumps(r, default=str)) for r in reasons]
    return {"verdict": str(v.get("verdict") or "unknown"), "reasons": reasons, "exit_code": to_int(v.get("exit_code")),
            "source": "journal", "details": v.get("details")}


def _prompts_in_outputs(run_dir: Path, limit: int = 3) -> list[str]:
    """Prompts embedded in output images (A1111 'parameters'), so they can be masked elsewhere too."""
    outputs = run_dir / "outputs"
    if not outputs.is_dir():
        return []
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return []
    found: list[str] = []
    files = sorted(p for p in outputs.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    for p in files[:limit]:
        try:
            with Image.open(p) as im:
                texts = [im.info.get("parameters"), im.info.get("comment")]
                exif = im.getexif()
                texts.append(exif.get_ifd(0x8769).get(0x9286) if exif else None)
        except Exception:  # noqa: BLE001 - a damaged output is not a reason to stop the report
            continue
        for raw in texts:
            if isinstance(raw, bytes):
                raw = _decode_user_comment(raw)
            if isinstance(raw, str) and raw.strip():
                prompt, neg = _split_parameters(raw)
                for x in (raw, prompt, neg):
                    if x and x not in found:
                        found.append(x)
    return found


def _decode_user_comment(raw: bytes) -> str:
    head, body = raw[:8], raw[8:]
    if head.startswith(b"UNICODE"):
        for enc in ("utf-16-be", "utf-16-le"):
            try:
                return body.decode(enc)
            except UnicodeDecodeError:
                continue
    return body.decode("utf-8", "replace") if head.startswith(b"ASCII") else raw.decode("utf-8", "replace")


def _split_parameters(text: str) -> tuple[str, str | None]:
    """A1111 'parameters': prompt, then 'Negative prompt: ...', then a 'Steps: ...' line."""
    lines = text.split("\n")
    prompt, neg, where = [], [], "p"
    for line in lines:
        if line.startswith("Negative prompt:"):
            where = "n"
            neg.append(line[len("Negative prompt:"):].strip())
        elif re.match(r"^Steps: \d+", line):
            break
        else:
            (prompt if where == "p" else neg).append(line)
    return "\n".join(prompt).strip(), ("\n".join(neg).strip() or None)


def _scenario_prompts(scenario: dict | None, base_dir: str | None) -> list[str]:
    out = []
    for key in ("prompt", "negative_prompt"):
        spec = (scenario or {}).get(key)
        if isinstance(spec, str):
            out.append(spec)
        elif isinstance(spec, dict):
            if isinstance(spec.get("text"), str):
                out.append(spec["text"])
            if isinstance(spec.get("file"), str):
                p = Path(spec["file"]).expanduser()
                if not p.is_absolute() and base_dir:
                    p = Path(base_dir) / p
                try:
                    out.append(p.read_text(encoding="utf-8").strip())
                except (OSError, UnicodeDecodeError):
                    pass
    return [p for p in out if p]


def _redacted_scenario(scenario: dict | None, include_prompts: bool) -> dict | None:
    if not isinstance(scenario, dict):
        return None
    sc = json.loads(json.dumps(scenario, default=str))
    if include_prompts:
        return sc
    for key in ("prompt", "negative_prompt"):
        spec = sc.get(key)
        if isinstance(spec, dict) and isinstance(spec.get("text"), str) and spec["text"]:
            spec["digest"] = prompt_digest(spec["text"])
            spec["text"] = prompt_placeholder(spec["text"])
        elif isinstance(spec, str) and spec:
            sc[key] = prompt_placeholder(spec)
    return sc


def _command(argv: list[str]) -> str | None:
    """The command line as a user would retype it: ``gpu-stress run ...`` rather than a venv path."""
    if not argv:
        return None
    args = list(argv)
    first = os.path.basename(args[0])
    if first.startswith("python") and len(args) > 2 and args[1] == "-m":
        args = ["gpu-stress" if args[2] == "stress" else f"python -m {args[2]}"] + args[3:]
    elif first in ("gpu-stress", "__main__.py", "stress") or args[0].endswith("stress/__main__.py"):
        args = ["gpu-stress"] + args[1:]
    return shlex.join(args)


def experiment(rec, t0: float) -> dict | None:
    """What the run (a matrix cell) asked for and what was read back, for report.json; the judgement
    (valid or not) is the verdict's ``details.validity`` (stress.validity)."""
    exp = rec.experiment
    if exp is None and not rec.env_readbacks and not rec.settings:
        return None
    exp = exp or {}
    keep = ("target", "pid", "worker", "phase", "visit", "kind", "status", "expected", "found", "wrong", "reason")
    sets = ("name", "gpu", "action", "wanted", "before", "after", "unit", "readback", "command", "status", "reason")
    return {"cell": exp.get("cell") or {}, "env": exp.get("env") or {}, "settings_asked": exp.get("settings") or [],
            "env_readbacks": [dict({k: rb.get(k) for k in keep}, t=round(rb["t"] - t0, 2)) for rb in rec.env_readbacks],
            "settings": [dict({k: s.get(k) for k in sets}, t=round(s["t"] - t0, 2)) for s in rec.settings]}
