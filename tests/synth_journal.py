"""Realistic synthetic run directories for the report tests and benchmark.

A run directory as the runner leaves it (docs/journal.md): ``journal.jsonl`` written through the real
:class:`stress.journal.Journal`, ``scenario.resolved.json`` from the real :class:`Scenario` model,
``environment.json`` shaped as :func:`stress.environment.collect` makes it, ``run.json`` from the
real :func:`stress.rundata.build_run_json`, a few output JPGs that carry their generation parameters
(with the prompt) in EXIF and a JPEG comment as SD.Next writes them, a kept probe screenshot and a
worker log.

Samples follow the samplers' compact keys (stress/hw/nvml.py, stress/hw/host.py): ``nvml`` with
``mu``/``b1u``/``cg``/``tc``/``pw``/..., change-only keys (``mt``, ``prc``, ``gp``, ``cp``) written only
when they change, and ``host`` with ``mu``/``su``/``ld``/``wk``/``ds``.

Identifying strings are sentinels, so a test can grep every produced file for them. Usable as a
script: ``python tests/synth_journal.py OUT_DIR --images 500 --seconds-per-image 57.6``.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stress.journal import Journal, RunDir, write_json_atomic  # noqa: E402

USER = "zelda_sentinel"
HOST = "rig-sentinel-7"
MACHINE_ID = "m-5e471ne1aaaa0007"   # as stress.hw.machine_id writes it (a salted hash of /etc/machine-id)
HOME = f"/home/{USER}"
SERIAL = "1324021234567"
UUID = "GPU-3f2a9c4e-1b2d-4e5f-8a9b-0c1d2e3f4a5b"
PROMPT_SENTINEL = "PROMPTSENTINEL"
PROMPT = ("masterpiece, best quality, a lighthouse on a cliff at dusk, " + PROMPT_SENTINEL
          + " volumetric light, (intricate details:1.2), " + ", ".join(f"detail{i}" for i in range(60)))
NEGATIVE = "lowres, blurry, NEGSENTINEL watermark"
GiB = 1024 ** 3
MiB = 1024 ** 2


@dataclass
class Synth:
    """What kind of run to fabricate. Defaults: a small finished run that reproduced the problem."""

    images: int = 6
    seconds_per_image: float = 4.0
    rate_hz: float = 2.0
    gpus: int = 1
    nvml: bool = True
    host: bool = True
    reproduce: bool = True
    finish: bool = True                 # verdict + run_end (False: the machine froze mid-workload)
    torn_tail: bool = False             # a half-written last line
    outputs: int | None = None          # output JPGs to write (default: all images, at most 8)
    output_size: tuple[int, int] | None = (96, 128)   # None: the image's own resolution (slow)
    noisy_outputs: bool = False         # incompressible pixels (for size-cap tests)
    reuse_outputs: bool = False         # encode one JPG per resolution and copy it (fast, for the benchmark)
    probe_reps: int = 3
    during_every: int = 2
    failed_images: tuple[int, ...] = (3,)   # these images run out of memory
    start: float = 1_790_000_000.0
    seed: int = 7
    resolutions: tuple[tuple[int, int], ...] = ((1152, 1536), (848, 1152), (1024, 1024))
    screenshots: int = 1                # probe screenshots kept in probes/
    run_id: str = "20260922-143000-sdnext-regression-5e1f"
    extra: dict = field(default_factory=dict)


def scenario_dict(s: Synth) -> dict:
    from stress.scenario import Scenario

    sc = Scenario.model_validate({
        "name": "sdnext-regression", "description": "SD.Next session as reported",
        "model": {"base": "builtin:tiny-sdxl", "refiner": "builtin:tiny-sdxl-refiner", "dtype": "fp16"},
        "steps": 38, "cfg": 6.8, "images": s.images,
        "resolutions": [f"{w}x{h}" for w, h in s.resolutions],
        "seeds": {"base": 1234, "increment": 1},
        "prompt": {"text": PROMPT}, "negative_prompt": {"text": NEGATIVE},
        "probes": {"repetitions": s.probe_reps, "during_every": s.during_every},
        "monitors": {"interval": 1.0 / s.rate_hz, "nvml": s.nvml, "host": s.host},
    })
    return sc.model_dump(mode="json")


def environment_dict(s: Synth) -> dict:
    gpus = [{"index": i, "name": "NVIDIA GeForce RTX 4090", "uuid": UUID[:-1] + str(i), "serial": SERIAL + str(i),
             "vbios": "95.02.18.80.87", "bus_id": f"00000000:0{i + 1}:00.0", "persistence_mode": 0,
             "memory_total": 24 * GiB, "bar1_total": 256 * MiB, "xid_events": True, "lost": None}
            for i in range(s.gpus)] if s.nvml else []
    return {
        "os": {"system": "Linux", "release": "6.8.0-49-generic",
               "version": "#49-Ubuntu SMP PREEMPT_DYNAMIC Mon Nov  4 02:06:24 UTC 2024", "machine": "x86_64",
               "distribution": {"pretty_name": "Ubuntu 24.04.1 LTS", "id": "ubuntu", "version_id": "24.04"}},
        "cpu": {"model": "AMD Ryzen 9 7950X 16-Core Processor", "logical_cores": 32, "physical_cores": 16},
        "memory": {"total": 64 * GiB, "available": 50 * GiB, "swap_total": 8 * GiB},
        "python": {"version": "3.11.7", "implementation": "CPython", "executable": f"{HOME}/gpu-stress/.venv/bin/python"},
        "libraries": {"torch": "2.13.0+cu128", "diffusers": "0.42.0", "transformers": "5.0.0", "nvidia-ml-py": "13.580.82"},
        "gpu": ({"available": True, "reason": None, "driver": "580.95.05", "cuda_driver": "13.0",
                 "nvml_version": "13.580.95.05", "gpus": gpus} if s.nvml else
                {"available": False, "reason": "NVML library not found (libnvidia-ml.so.1): the NVIDIA driver is "
                 "not installed", "driver": None, "cuda_driver": None, "nvml_version": None, "gpus": []}),
        "display": {"type": "x11", "display": ":0", "wayland_display": None, "xdg_session_type": "x11",
                    "desktop": "ubuntu:GNOME", "compositor": "gnome-shell", "display_server": "Xorg", "xwayland": False},
        "host": {"hostname": HOST, "user": USER, "home": HOME, "machine_id": MACHINE_ID},
        "stress_git": {"commit": "0" * 40, "dirty": False},
        "env_vars": {"DISPLAY": ":0", "XDG_SESSION_TYPE": "x11", "XDG_CURRENT_DESKTOP": "ubuntu:GNOME",
                     "HF_TOKEN": "hf_SENTINELSECRETTOKEN0123456789abcdef"},
    }


def _parameters(index: int, seed: int, w: int, h: int) -> str:
    return (f"{PROMPT}\nNegative prompt: {NEGATIVE}\nSteps: 38, Sampler: DPM++ 2M Karras, CFG scale: 6.8, "
            f"Seed: {seed}, Size: {w}x{h}, Model: sd_xl_base_1.0, Refiner: sd_xl_refiner_1.0, "
            f"Index: {index}, User: {USER}@{HOST}")


def write_output(path: Path, index: int, seed: int, size: tuple[int, int], param_size: tuple[int, int],
                 noisy: bool) -> bytes:
    """A JPG with SD.Next-style parameters in EXIF UserComment and a JPEG comment."""
    from PIL import Image

    w, h = size
    rng = random.Random(seed)
    if noisy:
        im = Image.frombytes("RGB", (w, h), rng.randbytes(w * h * 3))
    else:
        im = Image.linear_gradient("L").resize((w, h)).convert("RGB")
        im.paste((rng.randrange(256), rng.randrange(256), rng.randrange(256)), (w // 4, h // 4, w // 2, h // 2))
    exif = Image.Exif()
    params = _parameters(index, seed, *param_size)
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + params.encode("utf-16-be")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=92 if not noisy else 95, exif=exif, comment=params.encode())
    data = buf.getvalue()
    path.write_bytes(data)
    return data


class _Clock:
    """Emits sampler ticks up to each event's time, so the journal is in time order like a real one."""

    def __init__(self, j: Journal, s: Synth, rng: random.Random):
        self.j, self.s, self.rng = j, s, rng
        self.interval = 1.0 / s.rate_hz
        self.next_tick = s.start + 0.05
        self.state = "idle"          # idle | load | busy | after | exited
        self.leak = 0.0              # 0..1: how far the desktop's resources have degraded
        self.prc = 0
        self.sent: dict = {}
        self.xorg_pid, self.shell_pid = 1500, 1800
        self.worker_pid: int | None = None
        self.tick = 0

    def until(self, t: float) -> None:
        while self.next_tick < t:
            self._sample(self.next_tick)
            self.next_tick += self.interval

    def _changed(self, key: str, value) -> bool:
        if self.sent.get(key) == value:
            return False
        self.sent[key] = value
        return True

    def _sample(self, t: float) -> None:
        s, r = self.s, self.rng
        busy = self.state == "busy"
        self.tick += 1
        worker_mem = {"idle": 0, "load": 6 * GiB, "busy": int((17 + 3 * r.random()) * GiB), "after": 14 * GiB,
                      "exited": 0}[self.state]
        desk = int((0.9 + (0.7 * self.leak if s.reproduce else 0.0)) * GiB)
        if s.nvml:
            for g in range(s.gpus):
                ev = {"gpu": g, "mu": desk + (worker_mem if g == 0 else 0) + r.randrange(8 * MiB),
                      "mf": 24 * GiB - desk - worker_mem,
                      "b1u": int((12 + (180 * self.leak if s.reproduce else 0)) * MiB),
                      "ug": (95 + r.randrange(6)) if busy else r.randrange(4),
                      "um": (60 + r.randrange(20)) if busy else r.randrange(3),
                      "cg": (2520 + r.randrange(-45, 46)) if busy else 210,
                      "cm": 10501 if busy or self.state == "load" else 405,
                      "thr": 4 if busy else 1,
                      "tc": int(70 + 8 * r.random()) if busy else 38 + r.randrange(3),
                      "pw": round((400 + 40 * r.random()) if busy else (24 + 4 * r.random()), 1),
                      "ps": 0 if busy else 8}
                for k, v in (("mt", 24 * GiB), ("b1t", 256 * MiB), ("pl", 450.0), ("pg", 4), ("pwd", 16),
                             ("da", 1), ("prc", self.prc), ("rr", [0, 0, 0, 0]), ("rp", [0, 0, 0])):
                    if self.tick % 20 == 1 or k == "prc":
                        if self._changed(f"{g}.{k}", v):
                            ev[k] = v
                if g == 0:
                    gp = [[self.xorg_pid, "Xorg", int((310 + 250 * self.leak) * MiB) if s.reproduce else 310 * MiB],
                          [self.shell_pid, "gnome-shell", 180 * MiB]]
                    cp = [[self.worker_pid, "python3", worker_mem]] if worker_mem and self.worker_pid else []
                    if self._changed("gp", gp):
                        ev["gp"] = gp
                    if self._changed("cp", cp):
                        ev["cp"] = cp
                self.j.append("nvml", t=t, **ev)
        if s.host:
            ev = {"ma": 40 * GiB, "mu": int((9 + (14 if busy else 0)) * GiB) + r.randrange(64 * MiB),
                  "su": int(1.5 * GiB * self.leak) if s.reproduce else 0,
                  "ld": [round(3.5 if busy else 0.4, 2), 2.0, 1.0]}
            if self.tick == 1:
                ev.update(mt=64 * GiB, st=8 * GiB)
            if self.worker_pid and self.state in ("load", "busy", "after"):
                ev["wk"] = [{"p": self.worker_pid, "n": 3, "r": int(11 * GiB + r.randrange(256 * MiB)),
                             "c": 101.5 if busy else 2.0, "t": 48}]
            else:
                ev["wk"] = []
            ev["ds"] = [{"p": self.xorg_pid, "nm": "Xorg", "r": int((220 + 400 * self.leak) * MiB), "c": 3.0,
                         "t": 12, "fd": 90 + int(300 * self.leak)},
                        {"p": self.shell_pid, "nm": "gnome-shell", "r": int((480 + 300 * self.leak) * MiB),
                         "c": 6.5, "t": 24, "fd": 140}]
            self.j.append("host", t=t, **ev)


def make_run(root: Path, s: Synth | None = None, **overrides) -> Path:
    """Write a run directory under ``root`` and return its path."""
    s = s or Synth()
    for k, v in overrides.items():
        setattr(s, k, v)
    rng = random.Random(s.seed)
    rd = RunDir(Path(root) / s.run_id).create()
    scenario = scenario_dict(s)
    env = environment_dict(s)
    write_json_atomic(rd.scenario, scenario)
    write_json_atomic(rd.environment, env)
    j = Journal(rd.journal, fsync=False)
    clock = _Clock(j, s, rng)
    t = s.start

    def at(dt: float) -> float:
        nonlocal t
        t += dt
        clock.until(t)
        return t

    j.append("run_start", t=t, run_id=s.run_id, scenario="sdnext-regression", scenario_sha256="ab" * 32,
             argv=[f"{HOME}/gpu-stress/.venv/bin/python", "-m", "stress", "run",
                   f"{HOME}/gpu-stress/scenarios/sdnext-regression.yaml"],
             stress_version="0.1.0", pid=4100, resumed=False, base_dir=f"{HOME}/gpu-stress/scenarios")
    j.append("environment", t=t, env=env)
    j.append("plan", t=t, images=s.images, batches=s.images, resolutions=[f"{w}x{h}" for w, h in s.resolutions],
             base_steps_per_image=38, refiner_steps_per_image=7, unet_evaluations=s.images * 45 * 2,
             latent_positions=0, steps=38, refiner=True)
    if s.nvml:
        for g in range(s.gpus):
            gi = env["gpu"]["gpus"][g]
            j.append("gpu_static", t=t, gpu=g, name=gi["name"], uuid=gi["uuid"], serial=gi["serial"],
                     vbios=gi["vbios"], bus_id=gi["bus_id"], persistence_mode=0, memory_total=24 * GiB,
                     bar1_total=256 * MiB, pcie_max_gen=4, pcie_max_width=16, power_default_limit_w=450.0,
                     driver="580.95.05", cuda_driver="13.0", nvml_version="13.580.95.05")
        j.append("source", t=t, src="nvml", status="available", reason=None, gpus=list(range(s.gpus)),
                 driver="580.95.05", cuda_driver="13.0")
        j.append("source", t=t, src="nvml", status="unsupported-fields", reason=None, gpu=0,
                 fields={"retired_pages": "not supported"})
        j.append("source", t=t, src="nvml-events", status="available", reason=None, gpus=list(range(s.gpus)))
    else:
        j.append("source", t=t, src="nvml", status="unavailable",
                 reason="NVML library not found (libnvidia-ml.so.1): the NVIDIA driver is not installed")
        j.append("source", t=t, src="nvml-events", status="unavailable",
                 reason="NVML unavailable: NVML library not found")
    if s.host:
        j.append("source", t=t, src="host", status="available", reason=None, session=env["display"])
    j.append("source", t=t, src="kernel-log", status="available", reason=None, via="journalctl")

    def probes(phase: str, visit: int = 0, slow: float = 1.0, fail_every: int = 0) -> None:
        for kind, base in (("screenshot", 0.045), ("decode", 0.12), ("display", 0.02)):
            for rep in range(s.probe_reps):
                lat = base * slow * math.exp(rng.gauss(0, 0.15))
                tt = at(lat + 0.2)
                failed = fail_every and kind != "decode" and rep % fail_every == 0
                if failed:
                    j.append("probe", t=tt, phase=phase, visit=visit, kind=kind, rep=rep,
                             status="timeout" if kind == "screenshot" else "fail", latency_s=None,
                             metrics={"shot": f"probes/{phase}-{kind}-{rep}.png"},
                             reason="screenshot took longer than 20s" if kind == "screenshot"
                             else f"XGetImage failed: BadMatch on {HOST}:0")
                else:
                    j.append("probe", t=tt, phase=phase, visit=visit, kind=kind, rep=rep, status="ok",
                             latency_s=round(lat, 5), metrics={"w": 3840, "h": 2160}, reason=None)

    j.append("phase", t=at(0.5), phase="baseline", state="start")
    probes("baseline")
    j.append("phase", t=at(0.2), phase="baseline", state="end")
    j.append("phase", t=at(0.1), phase="workload", state="start")
    clock.worker_pid = 4242
    j.append("worker_start", t=at(0.1), worker=0, pid=4242, reason="start")
    clock.state = "load"
    j.append("worker_ready", t=at(min(20.0, s.seconds_per_image * 2)), worker=0, pid=4242, load_s=19.7,
             device="cuda:0", dtype="fp16", models={"base": "builtin:tiny-sdxl"}, torch="2.13.0+cu128", cuda="12.8")
    clock.state = "busy"
    (rd.outputs).mkdir(exist_ok=True)
    n_out = s.outputs if s.outputs is not None else min(s.images, 8)
    stop_at = s.images if s.finish else max(1, int(s.images * 0.6))
    encoded: dict[tuple[int, int], bytes] = {}
    fractions = {"text_encode": 0.02, "base": 0.74, "refiner": 0.17, "vae_decode": 0.06, "save": 0.01}
    for i in range(stop_at):
        w, h = s.resolutions[i % len(s.resolutions)]
        seed = 1234 + i
        j.append("image_start", t=at(0.05), index=i, seed=seed, width=w, height=h, worker=0)
        clock.leak = min(1.0, (i + 1) / max(1, s.images))
        if not s.finish and i == stop_at - 1:
            at(s.seconds_per_image * 0.4)      # the machine froze in the middle of this image
            break
        timings = {}
        outcome = "oom" if i in s.failed_images else "ok"
        for stage, frac in fractions.items():
            if outcome == "oom" and stage == "vae_decode":
                break
            dur = round(s.seconds_per_image * frac * math.exp(rng.gauss(0, 0.05)), 4)
            tt = at(dur)
            timings[stage] = dur
            j.append("stage", t=tt, worker=0, index=i, stage=stage, s=dur)
            if stage in ("base", "refiner"):
                j.append("alloc", t=tt, worker=0, index=i, at=f"stage:{stage}", allocated=int(7.1 * GiB),
                         reserved=int((9 + 2 * clock.leak) * GiB), peak_allocated=int(13.9 * GiB),
                         peak_reserved=int(15.2 * GiB), num_alloc_retries=i // 50, num_ooms=0,
                         inactive_split=int(300 * MiB * clock.leak), free=int(3 * GiB), total=24 * GiB)
        rec = {"index": i, "seed": seed, "width": w, "height": h, "steps": 38, "refiner_steps": 7,
               "base_num_inference_steps": 48, "refiner_num_inference_steps": 18, "cfg": 6.8,
               "sampler": "dpmpp_2m_karras", "prompt_tokens": 2400, "prompt_chunks": 32, "negative_tokens": 12,
               "timings": timings, "outcome": outcome, "worker": 0,
               "scheduler": {"_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": True,
                             "solver_order": 2, "algorithm_type": "dpmsolver++"}}
        if outcome == "ok":
            name = f"{i:05d}-s{seed}-{w}x{h}.jpg"
            path = rd.outputs / name
            if i < n_out:
                if s.reuse_outputs and (w, h) in encoded:
                    data = encoded[(w, h)]
                    path.write_bytes(data)
                else:
                    data = encoded[(w, h)] = write_output(path, i, seed, s.output_size or (w, h), (w, h),
                                                          s.noisy_outputs)
                rec.update(path=f"outputs/{name}", sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
            else:
                rec.update(path=f"outputs/{name}", sha256=hashlib.sha256(name.encode()).hexdigest(), bytes=0)
        else:
            rec.update(error="OutOfMemoryError: CUDA out of memory. Tried to allocate 2.25 GiB", path=None,
                       sha256=None)
        j.append("image", t=at(0.05), **rec)
        if (i + 1) % s.during_every == 0 and i + 1 < s.images:
            probes("during", visit=(i + 1) // s.during_every - 1, slow=1.0 + clock.leak if s.reproduce else 1.0)
    if s.finish:
        j.append("phase", t=at(0.1), phase="workload", state="end")
        clock.state = "after"
        j.append("phase", t=at(2.0), phase="after", state="start")
        if s.reproduce:
            raw = f"NVRM: Xid (PCI:0000:01:00): 56, pid=1500, name=Xorg, CMDre 00000000 00000084 {HOST}"
            j.append("xid", t=at(0.3), gpu=0, xid=56, category="display-engine", description="Display Engine error",
                     source="nvml-event", raw="nvml eventType=0x8 eventData=56")
            j.append("kmsg", t=at(0.05), line=f"[12345.678] {raw}")
            j.append("xid", t=at(0.01), gpu=0, xid=56, category="display-engine", description="Display Engine error",
                     source="kernel-log", raw=raw, bus="0000:01:00", pid=1500, name="Xorg")
        probes("after", slow=3.0 if s.reproduce else 1.0, fail_every=2 if s.reproduce else 0)
        j.append("phase", t=at(0.2), phase="after", state="end")
        j.append("worker_exit", t=at(1.0), worker=0, pid=4242, returncode=0, signal=None, reason="requested",
                 stderr_tail="")
        clock.state = "exited"
        clock.worker_pid = None
        if s.reproduce:
            clock.shell_pid = 2900          # the compositor restarted after the worker left
        j.append("phase", t=at(3.0), phase="after-exit", state="start")
        probes("after-exit", slow=2.5 if s.reproduce else 1.0, fail_every=3 if s.reproduce else 0)
        j.append("phase", t=at(0.2), phase="after-exit", state="end")
        ok = sum(1 for i in range(s.images) if i not in s.failed_images)
        if s.reproduce:
            verdict = {"verdict": "reproduced", "exit_code": 10,
                       "reasons": ["screenshot: 2/3 probes failed after the workload (0/3 at baseline)",
                                   "display: median latency 3.1x baseline (p=0.004)"],
                       "details": {"screenshot": {"baseline_fail": 0, "after_fail": 2}}}
        else:
            verdict = {"verdict": "not-reproduced", "exit_code": 0, "reasons": ["no probe regressed"],
                       "details": {}}
        j.append("verdict", t=at(0.1), **verdict)
        j.append("run_end", t=at(0.01), status="finished", images_ok=ok, images_failed=s.images - ok,
                 wall_s=round(t - s.start, 3))
    j.close()
    if s.torn_tail:
        with open(rd.journal, "ab") as fh:
            fh.write(b'{"ev":"nvml","t":' + str(t + 0.5).encode() + b',"gpu":0,"mu":2')
    if s.finish:
        from stress.rundata import build_run_json

        write_json_atomic(rd.run_json, build_run_json(rd.root))
    for k in range(s.screenshots):
        from PIL import Image

        im = Image.new("RGB", (64, 40), (30, 30, 30))
        from PIL import PngImagePlugin

        meta = PngImagePlugin.PngInfo()
        meta.add_text("Title", f"{USER}@{HOST}: desktop")
        im.save(rd.probes / f"after-screenshot-{k}.png", pnginfo=meta)
    (rd.logs / "worker-0.log").write_text(
        f"loading {HOME}/models/sd_xl_base_1.0.safetensors\nprompt: {PROMPT}\n"
        f"torch.OutOfMemoryError: CUDA out of memory (GPU 0; {UUID})\n", encoding="utf-8")
    return rd.root


def truncate_journal(run_dir: Path, fraction: float) -> None:
    """Cut the journal at ``fraction`` of its bytes, in the middle of a line (a power loss)."""
    p = Path(run_dir) / "journal.jsonl"
    data = p.read_bytes()
    cut = int(len(data) * fraction)
    while cut < len(data) and data[cut:cut + 1] in (b"\n", b"{"):
        cut += 1        # land inside a line, never on its boundary
    p.write_bytes(data[:cut])
    (Path(run_dir) / "run.json").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--seconds-per-image", type=float, default=4.0)
    ap.add_argument("--rate-hz", type=float, default=2.0)
    ap.add_argument("--no-nvml", action="store_true")
    ap.add_argument("--unfinished", action="store_true")
    args = ap.parse_args(argv)
    path = make_run(args.out, Synth(images=args.images, seconds_per_image=args.seconds_per_image,
                                    rate_hz=args.rate_hz, nvml=not args.no_nvml, finish=not args.unfinished))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
