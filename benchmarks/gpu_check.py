"""One command that checks the suite on an NVIDIA machine: ``make gpu-check`` (docs/gpu-validation.md).

    python benchmarks/gpu_check.py [--dry-run] [--out docs/gpu-validation.md] [--json PATH] [--budget-s 480]

Steps, each recorded (with its time, or why it was skipped) in one JSON and a Markdown table:

1. ``gpu-stress doctor --json``;
2. the sampler with the real NVML (``benchmarks/bench_sampler.py --real-nvml``: time per tick, events);
3. ``gpu-stress run`` against a bare diffusers loop on the same pipelines (SDXL base + refiner,
   full-size random weights), interleaved run / bare / run / bare, as the ratio of seconds per image;
4. predicted against measured peaks for >= 8 configurations (dtype, attention, VAE slicing/tiling,
   model and sequential offload, batch 2, SD 1.5 img2img at 3 sizes, the new pipeline settings):
   on a GPU, ``max_memory_allocated`` / ``max_memory_reserved`` / NVML used from the real pipeline
   replica the planner traces (:class:`stress.memory.pipeline.PipelineTracer` on ``cuda``), next to
   the meta-device prediction of the same; |error| per row.

``--dry-run`` (no GPU): the same steps on the CPU with the tiny models; step 2 with the scripted NVML
of stress/selftest/fake_nvml.py; step 4 measures real CPU allocations (torch.profiler) instead of CUDA's
counters. tests/test_gpu_check.py runs it. A dry run never writes GPU figures: the Markdown it
writes says which machine and mode produced it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GiB = 1 << 30


def _py(*args: str, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout)


def step_doctor() -> dict:
    p = _py("-m", "stress", "doctor", "--json", timeout=120)
    try:
        data = json.loads(p.stdout)
    except ValueError:
        data = None
    return {"rc": p.returncode, "json": data is not None, "keys": sorted(data)[:20] if isinstance(data, dict) else []}


def step_sampler(dry: bool, seconds: float) -> dict:
    args = ["benchmarks/bench_sampler.py", "--seconds", str(seconds), "--interval", "0.5", "--json"]
    if not dry:
        args.append("--real-nvml")
    env = {} if not dry else {"STRESS_NVML_MODULE": "tests.fake_nvml"}
    p = _py(*args, timeout=seconds + 120, env=env)
    if p.returncode != 0:
        return {"rc": p.returncode, "error": p.stderr.strip().splitlines()[-1:] or [""]}
    start = p.stdout.find("{")
    data = json.loads(p.stdout[start:]) if start >= 0 else {}
    return {"rc": 0, "nvml": "scripted (stress/selftest/fake_nvml.py)" if dry else "real", **data}


def _scenario_yaml(dry: bool, images: int) -> str:
    if dry:
        model = "base: builtin:tiny-sdxl\n  refiner: builtin:tiny-sdxl-refiner\n  dtype: fp32"
        res, steps = "128x128", 4
    else:
        model = "base: builtin:sdxl\n  refiner: builtin:sdxl-refiner\n  dtype: fp16"
        res, steps = "1024x1024", 20
    return (f"name: gpu-check-overhead\nmodel:\n  {model}\nsteps: {steps}\nimages: {images}\n"
            f"resolutions: [{res}]\nseeds: 1\nprobes:\n  enabled: false\n")


def _bare_loop(dry: bool, images: int) -> float:
    """Seconds per image of the same pipelines called directly (no harness, no journal)."""
    code = f"""
import time, torch
from stress.workload.models import build_builtin_pipeline
from stress.workload.pipelines import step_plan
dry = {dry!r}
if dry:
    torch.set_num_threads(1)   # as the worker under STRESS_CPU_THREADS=1
dev = "cpu" if dry else "cuda"
dt = torch.float32 if dry else torch.float16
base = build_builtin_pipeline("builtin:tiny-sdxl" if dry else "builtin:sdxl", device=dev, dtype=dt)
ref = build_builtin_pipeline("builtin:tiny-sdxl-refiner" if dry else "builtin:sdxl-refiner", device=dev, dtype=dt)
w = 128 if dry else 1024
steps = 4 if dry else 20
plan = step_plan(steps, steps, 0.8, "sdnext", True)   # the step counts the harness's worker runs
base.set_progress_bar_config(disable=True)
ref.set_progress_bar_config(disable=True)
t0 = time.perf_counter()
for i in range({images}):
    g = torch.Generator("cpu").manual_seed(i)
    lat = base(prompt="a lighthouse", width=w, height=w, num_inference_steps=plan.base_num_inference_steps,
               denoising_end=plan.denoising_end, guidance_scale=6.8, output_type="latent", generator=g).images
    ref(prompt="a lighthouse", image=lat, num_inference_steps=plan.refiner_num_inference_steps,
        denoising_start=plan.denoising_start, guidance_scale=6.8, generator=g, output_type="pil")
    if dev == "cuda":
        torch.cuda.synchronize()
print((time.perf_counter() - t0) / {images})
"""
    p = _py("-c", code, timeout=900, env={"STRESS_CPU_THREADS": "1"} if dry else {})
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip().splitlines()[-1])
    return float(p.stdout.strip().splitlines()[-1])


def _harness_run(dry: bool, images: int, tmp: Path) -> float:
    sc = tmp / "overhead.yaml"
    sc.write_text(_scenario_yaml(dry, images), encoding="utf-8")
    out = tmp / "artifacts"
    p = _py("-m", "stress", "run", str(sc), "--no-report", "--no-history", "--out", str(out), timeout=1800,
            env={"STRESS_CPU_THREADS": "1"} if dry else {})
    if p.returncode not in (0, 10, 11):
        raise RuntimeError(f"run exited {p.returncode}: {p.stderr.strip().splitlines()[-1:]}")
    run_dir = sorted(out.iterdir())[-1]
    data = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    imgs = [im for im in data.get("images", []) if im.get("outcome") == "ok"]
    return sum(sum(im["timings"][s] for s in ("text_encode", "base", "refiner", "vae_decode", "save")) for im in imgs) / max(len(imgs), 1)


def step_overhead(dry: bool, images: int, rounds: int) -> dict:
    runs, bares = [], []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as t:
        for _ in range(rounds):
            runs.append(_harness_run(dry, images, Path(t)))
            bares.append(_bare_loop(dry, images))
    r, b = min(runs), min(bares)
    return {"harness_s_per_image": runs, "bare_s_per_image": bares, "ratio_best": round(r / b, 3) if b else None}


# ---- 4. predicted against measured --------------------------------------------------------------

def configurations(dry: bool) -> list[dict]:
    sdxl, sd15 = ("builtin:tiny-sdxl", "builtin:tiny-sd15") if dry else ("builtin:sdxl", "builtin:sd15")
    big = 128 if dry else 1024
    sizes = (96, 128, 160) if dry else (512, 768, 1024)
    half = "fp32" if dry else "fp16"
    rows = [
        dict(name=f"sdxl {half} sdpa", base=sdxl, dtype=half, res=(big, big)),
        dict(name="sdxl bf16 sdpa", base=sdxl, dtype="bf16", res=(big, big)),
        dict(name="sdxl fp32 sdpa", base=sdxl, dtype="fp32", res=(big, big)),
        dict(name=f"sdxl {half} math", base=sdxl, dtype=half, res=(big, big), attention="math"),
        dict(name=f"sdxl {half} vae slicing batch 2", base=sdxl, dtype=half, res=(big, big), vae_slicing=True, batch=2),
        dict(name=f"sdxl {half} vae tiling", base=sdxl, dtype=half, res=(384, 384) if dry else (1536, 1536),
             vae_tiling=True),   # the tiny VAE tiles above 256 px
        dict(name=f"sdxl {half} model offload", base=sdxl, dtype=half, res=(big, big), cpu_offload=True),
        dict(name=f"sdxl {half} sequential offload", base=sdxl, dtype=half, res=(big, big), sequential_offload=True),
    ] + [dict(name=f"sd15 {half} img2img {s}", base=sd15, dtype=half, res=(s, s), img2img=True) for s in sizes]
    rows.append(dict(name=f"sd15 {half} txt2img + safety checker + tiny vae", base=sd15, dtype=half,
                     res=(sizes[0], sizes[0]), safety=True, vae="tiny"))
    seen: set[str] = set()
    return [r for r in rows if not (r["name"] in seen or seen.add(r["name"]))]   # dry: fp32 twice


def _measure_one(cfg: dict, device: str) -> dict:
    import torch

    from stress.memory.architectures import load_architecture, with_scenario_components
    from stress.memory.memtrace import tensor_peak
    from stress.memory.pipeline import PipelineTracer, TraceSettings

    arch = with_scenario_components(load_architecture(cfg["base"]), cfg.get("vae", "default"), cfg.get("safety", False))
    kw = {k: cfg[k] for k in ("attention", "vae_slicing", "vae_tiling", "cpu_offload", "sequential_offload",
                              "img2img", "batch") if k in cfg}
    settings = TraceSettings(dtype=cfg["dtype"], base_chunks=1, **kw)
    predicted = tensor_peak(PipelineTracer(arch, None, settings).trace(*cfg["res"]).events)
    real = PipelineTracer(arch, None, settings, device=device)
    out: dict = {"name": cfg["name"], "predicted": predicted}
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        real.trace(*cfg["res"])
        torch.cuda.synchronize()
        out["max_memory_allocated"] = torch.cuda.max_memory_allocated() - base
        out["max_memory_reserved"] = torch.cuda.max_memory_reserved()
        try:
            import pynvml

            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
            out["nvml_used"] = int(pynvml.nvmlDeviceGetMemoryInfo(h).used)
        except Exception as exc:  # noqa: BLE001 - recorded, not fatal
            out["nvml_used"] = f"unavailable: {type(exc).__name__}"
        measured = out["max_memory_allocated"]
    else:
        from torch.profiler import ProfilerActivity, profile

        torch.set_num_threads(1)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            real.trace(*cfg["res"])
        live = peak = 0
        for e in sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                        key=lambda e: e.start_ns()):
            live += e.nbytes()
            peak = max(peak, live)
        out["cpu_allocated_peak"] = peak
        measured = peak
    out["measured"] = measured
    out["error_pct"] = round(100.0 * (predicted - measured) / measured, 2) if measured else None
    return out


def sdpa_backends_for_vae_attention() -> dict:
    """Which SDPA kernels accept the VAE mid-block attention at ~2 MP (one head of 512 channels,
    176 x 176 = 30,976 positions, fp16 and fp32): the question behind the img2img gap (docs/plan.md)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    out = {}
    for dt in (torch.float16, torch.float32):
        q = torch.zeros(1, 1, 30976, 512, device="cuda", dtype=dt)
        for be in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION):
            try:
                with sdpa_kernel([be]):
                    torch.nn.functional.scaled_dot_product_attention(q, q, q)
                out[f"{str(dt)[6:]} {be.name}"] = "ok"
            except RuntimeError as exc:
                out[f"{str(dt)[6:]} {be.name}"] = f"refused: {str(exc).splitlines()[0][:120]}"
        del q
    return out


def step_peaks(dry: bool, only: int | None = None) -> dict:
    device = "cpu" if dry else "cuda"
    rows = []
    for cfg in configurations(dry)[:only]:
        try:
            rows.append(_measure_one(cfg, device))
        except Exception as exc:  # noqa: BLE001 - an OOM or a failure is a row, not the end
            rows.append({"name": cfg["name"], "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
    extra = {}
    if not dry:
        try:
            extra["sdpa_vae_2mp"] = sdpa_backends_for_vae_attention()
        except Exception as exc:  # noqa: BLE001
            extra["sdpa_vae_2mp"] = f"{type(exc).__name__}: {exc}"
    return {"device": device, "rows": rows, **extra,
            "measured_as": "torch.cuda.max_memory_allocated" if not dry else "real CPU allocations (torch.profiler)"}


def markdown(result: dict) -> str:
    mode = "dry run on the CPU (tiny models): NOT a GPU figure" if result["dry_run"] else "on an NVIDIA GPU"
    lines = [f"## gpu-check result: {mode}", "",
             f"machine: {result['machine']}; started {result['started']}; {result['seconds']:.0f} s", ""]
    d = result["steps"].get("doctor", {})
    lines.append(f"- doctor --json: exit {d.get('rc')}, JSON {'yes' if d.get('json') else 'no'}")
    s = result["steps"].get("sampler", {})
    lines.append(f"- sampler ({s.get('nvml', '?')} NVML): " + json.dumps({k: v for k, v in s.items() if k != 'nvml'})[:300])
    o = result["steps"].get("overhead", {})
    lines.append(f"- gpu-stress run / bare diffusers loop, s per image: ratio {o.get('ratio_best')} "
                 f"(run {o.get('harness_s_per_image')}, bare {o.get('bare_s_per_image')})")
    p = result["steps"].get("peaks", {})
    lines += ["", f"Peaks ({p.get('measured_as')}), MiB:", "",
              "| configuration | predicted | measured | error | reserved | NVML used |", "|---|---:|---:|---:|---:|---:|"]
    for r in p.get("rows", []):
        if "error" in r and "measured" not in r:
            lines.append(f"| {r['name']} | - | - | {r['error']} | - | - |")
            continue
        mib = lambda v: f"{v / (1 << 20):.1f}" if isinstance(v, int) else str(v or "-")  # noqa: E731
        lines.append(f"| {r['name']} | {mib(r['predicted'])} | {mib(r['measured'])} | {r['error_pct']:+.2f}% | "
                     f"{mib(r.get('max_memory_reserved'))} | {mib(r.get('nvml_used'))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="no GPU: the same steps on the CPU with the tiny models")
    ap.add_argument("--json", default=None, help="where the JSON goes (default: next to --out)")
    ap.add_argument("--out", default=None, help="Markdown file to append the result to (default: print it)")
    ap.add_argument("--skip", action="append", default=[], choices=["doctor", "sampler", "overhead", "peaks"])
    ap.add_argument("--sampler-seconds", type=float, default=None)
    ap.add_argument("--only", type=int, default=None, metavar="N", help="measure only the first N configurations")
    a = ap.parse_args(argv)
    dry = a.dry_run
    if not dry:
        import torch

        if not torch.cuda.is_available():
            print("gpu-check: torch sees no CUDA device; use --dry-run on a machine without a GPU", file=sys.stderr)
            return 3
    t0 = time.time()
    result: dict = {"dry_run": dry, "machine": platform.node() + " " + platform.machine(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)), "steps": {}}
    steps = [("doctor", step_doctor),
             ("sampler", lambda: step_sampler(dry, a.sampler_seconds or (3.0 if dry else 30.0))),
             ("overhead", lambda: step_overhead(dry, 1 if dry else 3, 1 if dry else 2)),
             ("peaks", lambda: step_peaks(dry, a.only))]
    for name, fn in steps:
        if name in a.skip:
            result["steps"][name] = {"skipped": "--skip"}
            continue
        s0 = time.time()
        try:
            result["steps"][name] = fn()
        except Exception as exc:  # noqa: BLE001 - one failed step is recorded, the others still run
            result["steps"][name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        result["steps"][name]["seconds"] = round(time.time() - s0, 1)
    result["seconds"] = time.time() - t0
    md = markdown(result)
    if a.out:
        out = Path(a.out)
        json_path = Path(a.json) if a.json else out.with_suffix(".json")
        json_path.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
        with out.open("a", encoding="utf-8") as fh:
            fh.write("\n" + md)
    else:
        if a.json:
            Path(a.json).write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
        print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
