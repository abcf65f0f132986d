"""``stress plan``: allocator model, prompt accounting against the worker's encoder, the CLI, preflight."""
from __future__ import annotations

import json
import os
import resource
from pathlib import Path

import pytest

from stress.memory.overhead import MiB, CachingAllocatorModel, round_size, segment_size
from stress.scenario import Scenario

from conftest import ROOT, run_cli

TESTS = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------
# The caching-allocator model, rule by rule (c10/cuda/CUDACachingAllocator.cpp, default settings)


def test_rounding_and_segment_sizes():
    assert round_size(1) == 512 and round_size(513) == 1024 and round_size(1 << 20) == 1 << 20
    assert segment_size(512) == 2 * MiB and segment_size(1 * MiB) == 2 * MiB     # small pool
    assert segment_size(1 * MiB + 512) == 20 * MiB and segment_size(10 * MiB - 512) == 20 * MiB
    assert segment_size(10 * MiB) == 10 * MiB and segment_size(30 * MiB + 1) == 32 * MiB


def test_small_requests_share_a_segment_and_large_ones_split():
    a = CachingAllocatorModel()
    a.malloc(1, 100)                 # 512 B from a new 2 MiB segment
    a.malloc(2, 1 * MiB)             # the rest of that segment still fits 1 MiB
    assert (a.allocated, a.reserved) == (512 + MiB, 2 * MiB)
    a.malloc(3, 5 * MiB)             # large pool: a 20 MiB segment, split (15 MiB left > 1 MiB)
    a.malloc(4, 12 * MiB)            # served from the 15 MiB remainder, no new segment
    assert a.reserved == 22 * MiB and a.segments == 2
    a.free(3)
    a.free(4)                        # both blocks merge back into one free 20 MiB block
    a.malloc(5, 20 * MiB)
    assert a.reserved == 22 * MiB and a.peak_allocated == 512 + MiB + 20 * MiB


def test_a_freed_block_too_small_for_the_next_request_stays_cached():
    a = CachingAllocatorModel()
    a.malloc(1, 12 * MiB)
    a.malloc(2, 12 * MiB)
    a.free(1)
    a.malloc(3, 14 * MiB)            # cannot use the cached 12 MiB block: a new segment
    assert a.reserved == 38 * MiB and a.allocated == 26 * MiB and a.peak_reserved == 38 * MiB


def test_cached_segments_are_released_before_an_oom():
    a = CachingAllocatorModel(capacity=25 * MiB)
    a.malloc(1, 12 * MiB)
    a.free(1)                        # 12 MiB segment cached, nothing allocated
    assert a.malloc(2, 24 * MiB)     # does not fit next to the cache; fits once it is released
    assert not a.oom and a.reserved == 24 * MiB
    assert not a.malloc(3, 2 * MiB)  # now it really does not fit
    assert a.oom and a.oom_request == 2 * MiB


# ---------------------------------------------------------------------------------------------
# Accounting


def _scenario(**kw) -> Scenario:
    base = {"name": "t", "model": {"base": "builtin:tiny-sdxl", "refiner": "builtin:tiny-sdxl-refiner"},
            "steps": 10, "images": 3, "resolutions": ["256x256", "256x320"], "seeds": 1}
    base.update(kw)
    return Scenario.model_validate(base)


def test_prompt_chunks_match_the_workers_encoder():
    """Chunk counts from the plan's arithmetic and the synthetic tokenizer, against what the worker's
    PromptEncoder (SD.Next through compel) actually produces on the tiny SDXL pipeline."""
    from stress.memory.accounting import count_prompts
    from stress.memory.architectures import load_architecture
    from stress.workload.models import build_builtin_pipeline
    from stress.workload.prompts import PromptEncoder, resolve_prompt_text

    pipe = build_builtin_pipeline("builtin:tiny-sdxl")
    enc = PromptEncoder(pipe, "sdxl")
    arch = load_architecture("builtin:tiny-sdxl")
    cases = [
        ({"tokens": 200, "seed": 1, "breaks_every": 80}, {"tokens": 160, "seed": 2, "breaks_every": 70}),
        ({"tokens": 2400, "seed": 1}, {"tokens": 120, "seed": 2}),
        ({"text": "a (red:1.3) lighthouse BREAK on a cliff, [stormy] sea " * 9}, {"text": "blurry BREAK lowres"}),
        ({"tokens": 75}, {"text": ""}),
    ]
    for prompt, negative in cases:
        sc = _scenario(prompt=prompt, negative_prompt=negative)
        counted = count_prompts(sc, arch, None)
        text = resolve_prompt_text(sc.prompt, Path("."), pipe.tokenizer)
        neg = resolve_prompt_text(sc.negative_prompt, Path("."), pipe.tokenizer)
        real = enc.encode(text, neg)
        assert counted["prompt"].chunks == real.prompt_chunks, prompt
        assert counted["negative"].chunks == real.negative_chunks, negative
        assert counted["prompt"].tokens == real.prompt_tokens
        assert counted["padded_chunks"] * 77 == real.prompt_embeds.shape[1] == real.negative_prompt_embeds.shape[1]


def test_img2img_steps_follow_diffusers():
    from stress.memory.accounting import img2img_steps_run

    assert img2img_steps_run(30, 0.6) == 18 and img2img_steps_run(38, 0.6) == 23 and img2img_steps_run(10, 1.0) == 10


def test_plan_accounting_and_memory_for_a_tiny_session():
    from stress.memory import make_plan, preflight, render_text
    from stress.memory.gpu import GpuMemory
    from stress.plan import base_steps_run, refiner_steps_run

    sc = _scenario(prompt={"tokens": 300}, negative_prompt={"tokens": 10})
    plan = make_plan(sc, gpu=GpuMemory(8 << 30, "--gpu-memory"))
    acc = plan["accounting"]
    assert acc["base_steps_per_image"] == base_steps_run(sc) and acc["refiner_steps_per_image"] == refiner_steps_run(sc)
    assert acc["unet_evaluations"] == 3 * (base_steps_run(sc) + refiner_steps_run(sc)) * 2
    keys = plan["prompts"]["cross_attention_keys"]
    assert plan["prompts"]["padded_chunks"] >= 4 and keys == 77 * plan["prompts"]["padded_chunks"]
    rows = {(r["width"], r["height"]): r for r in acc["per_resolution"]}
    assert rows[(256, 320)]["latent"] == [4, 40, 32] and rows[(256, 256)]["images"] == 2
    att = rows[(256, 256)]["unet"]["base"]["attention_per_evaluation"]
    assert att["cross_calls"] == att["self_calls"] > 0 and att["cross_qk"] % keys == 0   # keys = 77 x chunks
    mem = {(r["width"], r["height"]): r for r in plan["memory"]["resolutions"]}
    for r in mem.values():
        assert r["weights"] + r["activations"] == r["tensor_peak"]
        assert r["peak_allocated"] >= r["tensor_peak"] and r["peak_reserved"] >= r["peak_allocated"]
        assert r["predicted_peak"] >= r["required"] and r["fits"] is True and r["leaked"] == 0
    assert mem[(256, 320)]["tensor_peak"] > mem[(256, 256)]["tensor_peak"]
    assert plan["memory"]["session"]["predicted_peak"] >= max(r["predicted_peak"] for r in mem.values())
    text = render_text(plan)
    assert "256x320" in text and "predicted peak" in text and "fits" in text
    json.dumps(plan)   # JSON-able as is

    small = preflight(sc, 600 << 20)   # below the CUDA context estimate alone: nothing fits
    assert set(small) == {(256, 256), (256, 320)} and not any(v["fits"] for v in small.values())
    big = preflight(sc, 64 << 30)
    assert all(v["fits"] for v in big.values())
    assert big[(256, 320)]["predicted_peak"] == mem[(256, 320)]["predicted_peak"]


def test_offload_moves_models_as_accelerates_chained_hooks_do():
    """Model offload as enable_model_cpu_offload really runs the worker's session
    (tests/test_offload_residency.py holds the moves to accelerate's own hooks): in the first image
    the refiner's text encoder, run before the base pipeline, is still on the GPU in the base UNet;
    in every later image the VAE that decoded the one before is."""
    from stress.memory import make_plan

    on = make_plan(_scenario(optimizations={"cpu_offload": True}))
    off = make_plan(_scenario())
    w_on = {r["stage"]: r["weights"] for r in on["memory"]["resolutions"][0]["stages"]}
    comp = {role: {k: v["bytes"] for k, v in m["components"].items()} for role, m in on["models"].items()}
    first = comp["base"]["unet"] + comp["refiner"]["text_encoder_2"]
    later = comp["base"]["unet"] + comp["refiner"]["vae"]
    assert w_on["base:denoise"] == max(first, later)
    assert w_on["refiner:denoise"] == comp["refiner"]["unet"] + comp["refiner"]["vae"]   # the steady image
    assert off["memory"]["resolutions"][0]["weights"] > on["memory"]["resolutions"][0]["weights"]


# ---------------------------------------------------------------------------------------------
# The command line


def test_parse_size():
    from stress.errors import StressError
    from stress.memory.gpu import parse_size

    assert parse_size("24GiB") == 24 << 30 and parse_size("24G") == 24 << 30 and parse_size("24GB") == 24 * 10**9
    assert parse_size("12000MiB") == 12000 << 20 and parse_size("8G") == 8 << 30
    assert parse_size("8589934592") == 8 << 30      # a bare number is bytes, as everywhere (stress.units)
    for bad in ("abc", "12 parsecs", "0GiB", "", "24"):   # 24 bytes: too small, "write 24GiB"
        with pytest.raises(StressError):
            parse_size(bad)


def test_cli_plan_json_and_bad_input(tmp_path):
    sc = tmp_path / "s.yaml"
    sc.write_text("name: s\nmodel: {base: builtin:tiny-sdxl}\nsteps: 4\nimages: 2\nresolutions: [256x256]\n"
                  "prompt: {tokens: 100}\n", encoding="utf-8")
    r = run_cli("plan", str(sc), "--json", "--gpu-memory", "600MiB", "--fail-if-not-fits", "--quiet")
    assert r.returncode == 12, r.stderr            # 600 MiB: below the context estimate + model
    plan = json.loads(r.stdout)
    assert plan["memory"]["gpu"]["source"] == "--gpu-memory"
    assert plan["memory"]["resolutions"][0]["fits"] is False
    assert plan["accounting"]["unet_evaluations"] == 2 * 4 * 2
    r = run_cli("plan", str(sc), "--gpu-memory", "lots")
    assert r.returncode == 2 and r.stderr.strip().startswith("error: 'lots' is not a GPU memory size")
    assert "Traceback" not in r.stderr
    r = run_cli("plan", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_plan_into_a_pipe_closed_early_is_not_an_error(tmp_path):
    """`gpu-stress plan ... | head`: the plan leaves with os._exit once its output is flushed
    (stress.cli.entry); a reader gone before then is not a failure and prints no traceback."""
    import os
    import subprocess
    import sys

    sc = tmp_path / "s.yaml"
    sc.write_text("name: s\nmodel: {base: builtin:tiny-sdxl}\nsteps: 2\nimages: 1\nresolutions: [256x256]\n"
                  "prompt: {tokens: 20}\n", encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    p = subprocess.Popen([sys.executable, "-m", "stress", "plan", str(sc), "--json", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdout.close()                      # the reader is gone before the plan writes anything
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert b"Traceback" not in err and b"Exception ignored" not in err


def test_gpu_memory_is_asked_from_nvml_in_a_subprocess(monkeypatch):
    """fake_nvml stands in for the driver: a 24 GiB GPU of which other processes use ~900 MiB."""
    from stress.memory.gpu import detect_gpu, resolve_gpu_memory

    monkeypatch.setenv("STRESS_NVML_MODULE", "fake_nvml")
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{TESTS}")
    gpu = detect_gpu()
    assert gpu.source == "nvml" and gpu.name == "NVIDIA GeForce RTX 4090"
    assert gpu.total == 24 << 30 and 0 < gpu.used_by_others < 2 << 30
    assert gpu.available == gpu.total - gpu.used_by_others
    assert resolve_gpu_memory("10GiB").available == 10 << 30     # the option wins, NVML is not asked
    monkeypatch.setenv("FAKE_NVML_GPUS", "0")
    none = detect_gpu()
    assert none.available is None and none.source.startswith("no GPU detected")


def test_without_a_gpu_the_plan_says_how_to_give_one():
    from stress.memory import make_plan, render_text
    from stress.memory.gpu import GpuMemory

    sc = Scenario.model_validate({"name": "t", "workload": "sd15-img2img", "model": {"base": "builtin:tiny-sd15"},
                                  "steps": 4, "resolutions": ["256x256"]})
    plan = make_plan(sc, gpu=GpuMemory(None, "no GPU detected (NVML: driver not loaded)"))
    assert plan["memory"]["resolutions"][0]["fits"] is None
    assert "no GPU detected; use --gpu-memory" in render_text(plan)


@pytest.mark.slow
def test_sdnext_regression_plan_runs_within_a_minute():
    """The issue's acceptance check: full-size SDXL base + refiner in fp16, five resolutions."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = run_cli("plan", "scenarios/sdnext-regression.yaml", "--gpu-memory", "24GiB", "--quiet", timeout=300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr      # --quiet: no progress, no library warnings (torchvision...)
    assert cpu < 60, f"planning took {cpu:.0f} s of CPU"
    out = r.stdout
    for res in ("1152x1536", "1024x1024", "1152x1152", "848x1152", "1024x1536"):
        assert res in out
    from stress.plan import base_steps_run, refiner_steps_run
    from stress.scenario import load_scenario

    sc = load_scenario(ROOT / "scenarios/sdnext-regression.yaml")
    assert f"{base_steps_run(sc)} base + {refiner_steps_run(sc)} refiner steps" in out
    assert "prompt   2400 tokens -> 33 chunks" in out   # compel splits at sentence ends: 33, not 32
    assert "vae_decode" in out and "fp16" in out


def test_compare_puts_a_runs_journal_next_to_the_prediction(tmp_path):
    """A CUDA run's journal, written here through the real Journal (this machine has no GPU): its
    allocator peaks are the plan's own x 1.05, so the table must say -4.8% everywhere."""
    from stress.journal import Journal
    from stress.memory import make_plan
    from stress.memory.measured import compare_text, measured_from_run

    sc = _scenario(images=2, resolutions=["256x256"])
    plan = make_plan(sc)
    row = plan["memory"]["resolutions"][0]
    with Journal(tmp_path / "journal.jsonl", fsync=False) as j:
        j.append("nvml", gpu=0, mu=900 << 20)                        # the desktop, before the worker
        j.append("worker_start", worker=0, pid=1, reason="start")
        j.append("worker_ready", worker=0, pid=1, device="cuda", load_s=1.0)
        j.append("alloc", index=None, at="load", allocated=sum(m["bytes"] for m in plan["models"].values()))
        for i in range(2):
            j.append("image_start", index=i, seed=1, width=256, height=256)
            for stage, pk in row["allocator_stages"].items():
                if stage == "load":
                    continue
                j.append("alloc", index=i, at=f"stage:{stage}", peak_allocated=round(pk["peak_allocated"] * 1.05),
                         peak_reserved=round(pk["peak_reserved"] * 1.05))
            j.append("alloc", index=i, at="image", peak_allocated=round(row["peak_allocated"] * 1.05),
                     peak_reserved=round(row["peak_reserved"] * 1.05))
            j.append("nvml", gpu=0, mu=(900 << 20) + round(plan["memory"]["session"]["predicted_peak"] * 1.05))
    measured = measured_from_run(tmp_path)
    assert measured["resolutions"][(256, 256)]["images"] == 2 and measured["device"] == "cuda"
    text = compare_text(plan, measured)
    assert text.count("-4.8%") >= 4 and "vae_decode" in text and "above the baseline" in text


def test_builtin_architectures_match_the_published_configurations():
    """The worker's full-size built-ins against the planner's tables of the published configs
    (Stability-AI/generative-models sd_xl_base.yaml / sd_xl_refiner.yaml, v1-inference.yaml) and
    the parameter counts of the released checkpoints (SDXL UNet 2,567,463,684; SD 1.5 UNet
    859,520,964; CLIP ViT-L text 123,060,480; OpenCLIP bigG text 694,659,840; VAE 83,653,863)."""
    from stress.memory.architectures import _FALLBACK, _from_configs, load_architecture
    from stress.memory.pipeline import build_module

    published = {("builtin:sdxl", "unet"): 2_567_463_684, ("builtin:sd15", "unet"): 859_520_964,
                 ("builtin:sdxl", "text_encoder"): 123_060_480, ("builtin:sdxl", "text_encoder_2"): 694_659_840,
                 ("builtin:sdxl", "vae"): 83_653_863}
    for name in ("builtin:sdxl", "builtin:sdxl-refiner", "builtin:sd15"):
        worker = load_architecture(name)
        table = _from_configs(name, "published", _FALLBACK[name])
        assert worker.origin.startswith("stress.workload.models") and set(worker.components) == set(table.components)
        for comp in worker.components:
            n = sum(p.numel() for p in build_module(worker.components[comp]).parameters())
            assert n == sum(p.numel() for p in build_module(table.components[comp]).parameters()), (name, comp)
            assert published.get((name, comp), n) == n, (name, comp)
    assert load_architecture("builtin:sdxl").time_ids() == 6
    assert load_architecture("builtin:sdxl-refiner").time_ids() == 5


def test_architectures_from_a_diffusers_folder_and_a_single_file(tmp_path):
    import json as _json
    import struct

    from stress.memory.architectures import load_architecture
    from stress.workload.models import ensure_builtin

    folder, _ = ensure_builtin("builtin:sdxl-refiner", tmp_path / "cache")   # configs + tokenizers, no weights
    arch = load_architecture(str(folder))
    assert arch.kind == "sdxl-refiner" and arch.origin.endswith("config.json")
    assert arch.components["unet"].config["block_out_channels"] == [384, 768, 1536, 1536]

    def checkpoint(name: str, keys: list[str]) -> Path:
        header = _json.dumps({k: {"dtype": "F16", "shape": [0], "data_offsets": [0, 0]} for k in keys}).encode()
        p = tmp_path / name
        p.write_bytes(struct.pack("<Q", len(header)) + header)
        return p

    base = checkpoint("base.safetensors", ["conditioner.embedders.0.transformer.text_model.x",
                                           "conditioner.embedders.1.model.transformer.resblocks.0.x"])
    refiner = checkpoint("refiner.safetensors", ["conditioner.embedders.0.model.transformer.resblocks.0.x"])
    sd15 = checkpoint("sd15.safetensors", ["cond_stage_model.transformer.text_model.x"])
    assert load_architecture(str(base)).kind == "sdxl"
    assert load_architecture(str(refiner)).kind == "sdxl-refiner"
    assert load_architecture(str(sd15)).kind == "sd"
    from stress.errors import StressError

    with pytest.raises(StressError, match="cannot tell"):
        load_architecture(str(checkpoint("other.safetensors", ["model.diffusion_model.x"])))
