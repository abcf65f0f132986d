"""ticket.md: paste-ready answers to NVIDIA's driver bug template, made from report.json.

The headings follow the fields of NVIDIA's "Report a functional bug" form (github.com/NVIDIA/
open-gpu-kernel-modules) and the NVIDIA Linux forum's bug-report checklist: driver version, operating
system, kernel release (``uname -a``), GPU (as ``nvidia-smi -L`` prints it), display server and desktop,
description, steps to reproduce, bug incidence (Once / Sometimes / Always), nvidia-bug-report.log.gz,
more info. Plain and short: facts a maintainer can check, the rest is in the attached bundle.
"""
from __future__ import annotations

from stress.report.html import fmt, fmt_rel, key_metrics

# Every heading ticket.md writes, in order (tests check each one is there).
FIELDS = (
    "NVIDIA driver version",
    "Operating system and version",
    "Kernel release",
    "Hardware: GPU",
    "Display server / desktop environment",
    "Describe the bug",
    "To reproduce",
    "Bug incidence",
    "nvidia-bug-report.log.gz",
    "More info",
)
def incidence(report: dict) -> tuple[str, str]:
    """``(word, why)`` as the judge gave it (``stress.analysis.incidence``, in the verdict's details).
    A run that did not reproduce claims no incidence: its line says so and names the verdict."""
    v = report.get("verdict") or {}
    inc = (v.get("details") or {}).get("incidence") if isinstance(v.get("details"), dict) else None
    if inc:
        return inc["word"], inc["why"]
    return "Not observed", f"the verdict is {v.get('verdict') or 'missing'}: this run does not show the bug"


def _scenario_lines(report: dict) -> list[str]:
    sc = report.get("scenario") or {}
    if not sc:
        return ["- the resolved scenario is missing from the run directory"]
    model = sc.get("model") or {}
    ref = sc.get("refiner") or {}
    prompt = sc.get("prompt") or {}
    digest = prompt.get("digest") or {}
    tokens = None
    for i in report.get("images") or []:
        if i.get("prompt_tokens"):
            tokens = i["prompt_tokens"]
            break
    tokens = tokens or digest.get("tokens") or prompt.get("tokens")
    res = sc.get("resolutions") or []
    res_text = ", ".join(f"{r[0]}x{r[1]}" if isinstance(r, (list, tuple)) else str(r) for r in res)
    lines = [
        f"- workload `{sc.get('workload', 'sdxl')}`: base `{model.get('base')}`"
        + (f" + refiner `{model.get('refiner')}` (switch {ref.get('switch')})" if model.get("refiner") else "")
        + f", {model.get('dtype')}, device {model.get('device')}",
        f"- {sc.get('images')} images, batch {sc.get('batch_size')}, resolutions {res_text}",
        f"- sampler `{(sc.get('sampler') or {}).get('name')}`, {sc.get('steps')} steps, CFG {sc.get('cfg')}"
        + (f", refiner steps {ref.get('steps') or sc.get('steps')}" if model.get("refiner") else ""),
        f"- prompt: {tokens} tokens" + (f" (sha256 {digest['sha256'][:12]})" if digest.get("sha256") else "")
        + ", seeds locked per image",
    ]
    sess = sc.get("session") or {}
    if sess.get("restart_worker_every") or sess.get("reload_models_every"):
        lines.append(f"- worker restarted every {sess.get('restart_worker_every') or '–'} images, models "
                     f"reloaded every {sess.get('reload_models_every') or '–'} images")
    else:
        lines.append("- one long-lived worker process holding its CUDA context, as SD.Next does")
    return lines


def _facts(report: dict) -> list[str]:
    """The few observations that matter most, one line each."""
    out = []
    for x in [x for x in report.get("xid_events") or [] if not x.get("duplicate")][:5]:
        out.append(f"- Xid {x.get('xid')} ({x.get('description') or x.get('category') or 'unlisted'}) on GPU "
                   f"{x.get('gpu')} at {x.get('time')} ({fmt_rel(x.get('t_rel'))} into the run)")
    for c in ((report.get("monitors") or {}).get("display_processes") or [])[:5]:
        out.append(f"- {c['name']} {c['change']} at {fmt_rel(c['t'])}"
                   + (f" (pid {c['old_pid']} → {c['new_pid']})" if c.get("old_pid") and c.get("new_pid") else ""))
    for m in key_metrics(report):
        if m["changed"]:
            out.append(f"- {m['label']}: {m['baseline']} at baseline → {m['after_exit'] if m['after_exit'] != '–' else m['last']}"
                       f" ({m['delta']}; peak {m['peak']})")
        if len(out) >= 12:
            break
    return out


def render_ticket(report: dict, *, bundle_name: str | None = None) -> str:
    """ticket.md as a string."""
    m = report.get("machine") or {}
    v = report.get("verdict") or {}
    run = report.get("run") or {}
    w = report.get("workload") or {}
    comp = report.get("completeness") or {}
    lines: list[str] = [
        f"<!-- gpu-stress ticket for run {report.get('run_id')} ({report.get('generator')}). Paste into NVIDIA's "
        "driver bug form (github.com/NVIDIA/open-gpu-kernel-modules or forums.developer.nvidia.com, Linux). "
        "User name, host name, home paths, GPU UUIDs/serials and prompts are masked. -->",
        "",
        f"**Summary:** {v.get('verdict', 'unknown')}: "
        + (((v.get("reasons") or [""])[0] + " (details below)") if v.get("source") == "derived"
           else ("; ".join(v.get("reasons") or []) or "no reasons recorded")),
        "",
        "### NVIDIA driver version",
        f"{m.get('driver') or 'unknown'}" + (f" (CUDA {m['cuda_driver']})" if m.get("cuda_driver") else "")
        + f"; kernel modules: {m.get('driver_flavor') or 'unknown (see `cat /proc/driver/nvidia/version`)'}",
        "",
        "### Operating system and version",
        m.get("os") or "unknown",
        "",
        "### Kernel release",
        f"`{m.get('kernel_uname') or m.get('kernel') or 'unknown'}`",
    ]
    if m.get("kernel_stable") is True:
        lines.append("- [x] I am running on a stable kernel release.")
    elif m.get("kernel_stable") is False:
        lines.append("- [ ] This is a release-candidate kernel; NVIDIA does not take reports on those.")
    gpus = [g.get("nvidia_smi_l") for g in m.get("gpus") or []]
    lines += ["", "### Hardware: GPU", "```", *(gpus or ["no NVIDIA GPU recorded (NVML unavailable)"]), "```"]
    display = m.get("display_server") or "unknown display server"
    if not m.get("display_server") and m.get("session_type") in ("none", "tty"):
        display = f"no graphical session found (session type: {m['session_type']})"
    elif m.get("session_type"):
        display += f" ({m['session_type']} session)"
    if m.get("desktop"):
        display += f", desktop {m['desktop']}"
    if m.get("compositor"):
        display += f", compositor {m['compositor']}"
    lines += ["", "### Display server / desktop environment", display]

    planned = w.get("images_planned") if w.get("images_planned") is not None else w.get("images_started")
    lines += ["", "### Describe the bug",
              f"After a long diffusion workload on the GPU ({w.get('images_ok', 0)} of {planned} images generated, "
              f"{w.get('images_failed', 0)} failed"
              + (f", {w['images_unfinished']} never finished" if w.get("images_unfinished") else "")
              + f", {fmt(w.get('wall_s'), 's')}, "
              f"{w.get('unet_evaluations', 0):,} UNet evaluations), the desktop was probed the same way as before "
              f"the workload. Result: **{v.get('verdict', 'unknown')}**."]
    if v.get("source") != "derived":      # a derived verdict's reasons are the "did not end normally" list
        for reason in v.get("reasons") or []:
            lines.append(f"- {reason}")
    lines += _experiment_lines(report.get("experiment"))
    facts = _facts(report)
    if facts:
        lines += ["", "Observed:", *facts]
    if comp.get("missing"):
        lines += ["", "The run did not end normally:", *[f"- {x}" for x in comp["missing"][:6]]]

    lines += ["", "### To reproduce",
              "1. Install gpu-stress (Python; `make setup` in its repository).",
              f"2. Run: `{run.get('command') or 'gpu-stress run SCENARIO.yaml'}` with the attached "
              "`scenario.resolved.json` (it fixes every setting below).",
              "3. Scenario:", *["   " + x for x in _scenario_lines(report)],
              "4. It takes desktop probes (screenshot, image decode, display queries) before, during and after the "
              "workload and compares them."]

    label, why = incidence(report)
    lines += ["", "### Bug incidence", f"**{label}** ({why})"]

    attached = report.get("attachments") or []
    nbr = next((a for a in attached if a.get("name", "").startswith("nvidia-bug-report")), None)
    lines += ["", "### nvidia-bug-report.log.gz"]
    if nbr and nbr.get("included"):
        lines.append(f"Attached: `{nbr['name']}` ({nbr.get('what', 'captured right after the run')}).")
    else:
        lines.append("Not captured by this run: run `sudo nvidia-bug-report.sh` right after reproducing and attach "
                     "nvidia-bug-report.log.gz (or rerun the report with `--nvidia-bug-report`).")

    lines += ["", "### More info",
              "Expected: screenshots, image viewing and compositing keep working after the workload ends, as they did "
              "before it.",
              "", "Attached:"]
    included = [a for a in attached if a.get("included", True)]
    if included:
        lines += [f"- `{a['name']}`: {a['what']}" for a in included]
    else:
        lines.append(f"- `{bundle_name or 'the bundle'}`: report.html, report.json, journal, scenario, environment")
    lines += ["", evidence_section(report).rstrip("\n")]
    lines.append("")
    return "\n".join(lines)


# ==== Evidence section (issue 13; rendered from the run directory's evidence/ and environment.json) ====
def _action_rows(steps: list[dict]) -> list[str]:
    """The fingerprint's table rows, then what each Xid's action rests on: the buckets' wording, NVIDIA's
    notes and this suite's (labelled as ours), and the sources, numbered; an action without a source says
    it is unverified (its text starts so) and one missing from the table says that."""
    rows, sources, buckets, notes = [], [], {}, []
    for s in steps:
        src = s.get("action_source")
        ref = ""
        if isinstance(src, dict) and src.get("url"):
            key = (src.get("url"), src.get("where"))
            if key not in sources:
                sources.append(key)
            ref = f" [{sources.index(key) + 1}]"
        if s.get("kind") == "kernel-log":
            action = "—"
        elif s.get("action"):
            action = str(s["action"]) + ref
        else:
            action = "not in stress/hw/xid_catalog.json"
        rows.append(f"| `{s.get('step')}` | {s.get('count')} | {s.get('meaning') or ''} | {action} |")
        buckets.update(s.get("action_buckets") or {})
        for who, key in (("NVIDIA", "nvidia_note"), ("this suite's note, not NVIDIA's", "desktop_note")):
            if s.get(key) and (s["step"], who) not in [(n[0], n[1]) for n in notes]:
                notes.append((s["step"], who, s[key]))
    if buckets:
        rows += ["", "Resolution buckets (NVIDIA's Xid catalog, Guidance Classes): "
                 + "; ".join(f"`{b}`: {g}" for b, g in buckets.items()) + "."]
    if notes:
        rows += [""] + [f"- `{step}` ({who}): {text}" for step, who, text in notes]
    if sources:
        rows += ["", "Sources:"] + [f"- [{i}] {_source_title(steps, url, where)}: {where}, {url}"
                                    for i, (url, where) in enumerate(sources, 1)]
    return rows


def _source_title(steps: list[dict], url: str, where: str) -> str:
    for s in steps:
        src = s.get("action_source") or {}
        if src.get("url") == url and src.get("where") == where:
            return str(src.get("title") or url)
    return url


def evidence_section(report: dict) -> str:
    """Markdown from report.json's ``evidence``: the driver-event fingerprint (meaning and NVIDIA's action
    per Xid, the matching public report or "new"), what was captured at the first failure, the previous
    boot's records, and the facts of NVIDIA's template, each filled or named as missing with the command
    that gets it. report.json is redacted already; this only renders it."""
    ev = report.get("evidence") or {}

    r = str
    lines = ["#### Driver events"]
    fp = ev.get("fingerprint")
    if fp is None:
        lines.append("Not computed (a report from before the fingerprint existed).")
    else:
        lines.append(r(fp.get("summary") or ""))
        steps = fp.get("steps") or []
        if steps:
            lines += ["", "| step | count | meaning | NVIDIA's recommended action |", "|---|---:|---|---|"]
            lines += _action_rows(steps)
    cap = ev.get("capture")
    lines += ["", "#### Captured at the first failure"]
    if cap is None:
        lines.append("Nothing: no driver error or desktop probe failure was seen during the run.")
    else:
        trig = cap.get("trigger") or {}
        what = trig.get("cls") or (f"Xid {trig['xid']}" if trig.get("xid") is not None else None) \
            or f"{trig.get('probe')} probe {trig.get('status')}"
        lines.append(f"Trigger: {r(str(what))}. Saved in the run directory under `evidence/failure/`:")
        for name, item in (cap.get("items") or {}).items():
            if name == "compositor_logs" and isinstance(item.get("processes"), dict):
                for proc, sub in item["processes"].items():
                    lines.append(f"- compositor log ({r(proc)}): " + (f"`{sub.get('file')}`" if sub.get("ok")
                                                                       else f"none ({r(str(sub.get('reason')))})"))
                continue
            lines.append(f"- {name.replace('_', ' ')}: " + (f"`{item.get('file')}`" if item.get("ok")
                                                            else f"none ({r(str(item.get('reason')))})"))
    prev = ev.get("previous_boot")
    if prev is not None:
        k, p = (prev.get("items") or {}).get("kernel_log") or {}, (prev.get("items") or {}).get("pstore") or {}
        lines += ["", "#### The boot the run died in",
                  "- kernel log: " + (f"`evidence/previous-boot/{k.get('file')}` ({k.get('gpu_lines')} GPU lines)"
                                      if k.get("ok") else f"missing ({r(str(k.get('reason')))}); {r(str(k.get('fix')))}"),
                  "- pstore: " + (f"{len(p.get('files') or [])} entries in `evidence/previous-boot/pstore/`"
                                  if p.get("ok") else f"none ({r(str(p.get('reason')))})")]
    facts = ev.get("template_facts")
    lines += ["", "#### Driver configuration"]
    if facts is None:
        lines.append("Not recorded (a run from before this was collected).")
    else:
        def val(key: str) -> str | None:
            v = facts.get(key)
            return None if not isinstance(v, dict) or v.get("value") is None else v["value"]

        for label, key in (("Kernel command line", "kernel_cmdline"), ("nvidia-drm modeset", "nvidia_drm_modeset"),
                           ("nvidia-drm fbdev", "nvidia_drm_fbdev"),
                           ("PreserveVideoMemoryAllocations", "preserve_video_memory_allocations")):
            if val(key) is not None:
                lines.append(f"- {label}: `{r(str(val(key)))}`")
        if val("displays"):
            lines.append("- displays: " + "; ".join(
                f"{d.get('name')} {d.get('width')}x{d.get('height')}"
                + (f" @ {d['refresh_hz']:g} Hz" if d.get("refresh_hz") else " (no refresh rate reported)")
                for d in val("displays")))
        if val("nvidia_smi_L"):
            lines.append("- nvidia-smi -L: " + "; ".join(f"`{r(x)}`" for x in val("nvidia_smi_L")))
        svcs = facts.get("suspend_services") or {}
        known = {k: v["value"] for k, v in svcs.items() if isinstance(v, dict) and v.get("value")}
        if known:
            lines.append("- suspend services: " + ", ".join(f"{k} {v.get('enabled') or '?'}/{v.get('active') or '?'}"
                                                            for k, v in known.items()))
        params = val("nvidia_params")
        if isinstance(params, dict) and params:
            lines.append("- NVIDIA module parameters: " + ", ".join(f"`{k}={r(str(v))}`" for k, v in sorted(params.items())))
        missing = ev.get("template_missing") or []
        if missing:
            lines += ["", "Missing here (run these on the affected machine and paste the output):"]
            lines += [f"- {m['fact']}: {r(str(m['why']))}: `{m['command']}`" for m in missing]
    lines.append("")
    return "\n".join(lines)


def _experiment_lines(exp: dict | None) -> list[str]:
    """The cell's condition and what was read back from each process (report.json's ``experiment``)."""
    if not exp:
        return []
    shown = lambda v: "unset" if v is None else str(v)  # noqa: E731
    out = ["", "Experiment (this run is one cell of a matrix; docs/experiments.md):"]
    if exp.get("cell"):
        out.append("- cell: " + ", ".join(f"`{k}={shown(v)}`" for k, v in exp["cell"].items()))
    rbs = exp.get("env_readbacks") or []
    probes = [rb for rb in rbs if rb.get("target") == "probes"]
    for rb in rbs:           # every worker; probe children only where they differ (they are many)
        if rb.get("target") != "worker" and rb.get("status") == "ok":
            continue
        who = f"worker {rb.get('worker')}" if rb.get("target") == "worker" else \
            f"{rb.get('kind')} probe child ({rb.get('phase')})"
        found = ", ".join(f"`{k}={shown((rb.get('found') or {}).get(k))}`" for k in rb.get("expected") or {})
        out.append(f"- {who}, pid {rb.get('pid')}: {rb.get('status')}; read back from /proc: {found or '-'}")
    if probes:
        ok = sum(rb.get("status") == "ok" for rb in probes)
        out.append(f"- probe children: {ok} of {len(probes)} read back as asked")
    for s in exp.get("settings") or []:
        out.append(f"- setting {s.get('name')} on GPU {s.get('gpu')} ({s.get('action')}): {s.get('status')}; "
                   f"read back {shown(s.get('after'))}{' ' + s['unit'] if s.get('unit') else ''} through {s.get('readback')}")
    return out
