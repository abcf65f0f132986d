"""The workload engine end to end on the real diffusers pipelines with the tiny built-in models."""
from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from stress.errors import EnvironmentProblem, StressError
from stress.scenario import Scenario
from stress.workload import alloc, models
from stress.workload.engine import WorkloadSession
from stress.workload.schedulers import make_scheduler

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def scenario(**over) -> Scenario:
    data = {"name": "t", "model": {"base": "builtin:tiny-sdxl", "refiner": "builtin:tiny-sdxl-refiner"},
            "prompt": "a lighthouse on a rocky cliff, golden hour lighting, masterpiece",
            "negative_prompt": "dark, grey"}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    return Scenario.model_validate(data)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def __call__(self, ev: str, fields: dict) -> None:
        json.dumps(fields)  # everything the engine emits must be JSON
        self.events.append((ev, fields))

    def of(self, ev: str) -> list[dict]:
        return [f for e, f in self.events if e == ev]


def session(sc: Scenario, run_dir: Path, cache: Path, base_dir: Path = Path(".")) -> tuple[WorkloadSession, Recorder]:
    rec = Recorder()
    s = WorkloadSession(sc, run_dir, rec, base_dir=base_dir, cache_dir=cache)
    return s, rec


def job(index: int, seed: int, w: int, h: int) -> dict:
    return {"images": [{"index": index, "seed": seed}], "width": w, "height": h}


def expected_steps(sched_config: dict, n: int, switch: float, part: str) -> int:
    """Steps that run on each side of the switch, from the scheduler's own timesteps."""
    s = make_scheduler("dpmpp_2m_karras", sched_config)
    s.set_timesteps(n)
    cutoff = int(round(1000 - switch * 1000))
    ts = s.timesteps.tolist()
    return sum(t >= cutoff for t in ts) if part == "base" else sum(t < cutoff for t in ts)


# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def main_run(model_cache, tmp_path_factory):
    """One default-shaped image: tiny SDXL base + refiner, 38 steps, CFG 6.8, 256x256, sdnext split."""
    sc = scenario(resolutions=["256x256"])
    run_dir = tmp_path_factory.mktemp("run")
    s, rec = session(sc, run_dir, model_cache)
    info = s.load()
    t0 = time.perf_counter()
    records = s.generate(job(3, 1234, 256, 256))
    wall = time.perf_counter() - t0
    print(f"\n38-step 256x256 base+refiner image: {wall:.2f} s on the CPU ({torch.get_num_threads()} thread); "
          f"stages {records[0]['timings']}")
    yield s, rec, info, records, run_dir
    s.close()


def test_load_reports_device_dtype_and_models(main_run):
    s, rec, info, _r, _d = main_run
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["models"]["base"]["pipeline"] == "StableDiffusionXLPipeline"
    assert info["models"]["refiner"]["pipeline"] == "StableDiffusionXLImg2ImgPipeline"
    assert set(info["models"]["base"]["params"]) == {"unet", "vae", "text_encoder", "text_encoder_2"}
    assert set(info["models"]["refiner"]["params"]) == {"unet", "vae", "text_encoder_2"}
    n = len(s.base.pipe.tokenizer(s.prompt, add_special_tokens=False)["input_ids"])
    assert info["prompt"]["tokens"] == n == 13  # "rocky" is two tokens in the synthetic vocabulary
    json.dumps(info)
    load_alloc = rec.of("alloc")[0]
    assert load_alloc["at"] == "load" and load_alloc["rss"] > 0 and load_alloc["peak_rss"] >= load_alloc["rss"]


def test_record_fields_and_sdnext_step_semantics(main_run):
    s, _rec, _info, records, run_dir = main_run
    (r,) = records
    assert (r["index"], r["seed"], r["width"], r["height"], r["cfg"]) == (3, 1234, 256, 256, 6.8)
    assert r["outcome"] == "ok" and r["sampler"] == "dpmpp_2m_karras"
    # SD.Next's arithmetic: the base is asked for int(38 // 0.8 + 1) = 48 steps and stops at 0.8;
    # the refiner for int(38 // 0.2 // 2 + 1) = 96 and starts at 0.8. What ran is counted.
    assert r["base_num_inference_steps"] == 48 and r["refiner_num_inference_steps"] == 96
    cfg = s._model_sched_config["base"]
    assert r["steps"] == expected_steps(cfg, 48, 0.8, "base")
    assert r["refiner_steps"] == expected_steps(s._model_sched_config["refiner"], 96, 0.8, "refiner")
    # Karras sigmas crowd the low-noise end, so fewer than 38 of the 48 land before the switch.
    assert 0 < r["steps"] < 48 and 0 < r["refiner_steps"] < 96
    sched = r["scheduler"]
    assert sched["_class_name"] == "DPMSolverMultistepScheduler" and sched["use_karras_sigmas"] is True
    assert sched["timestep_spacing"] == "linspace" and sched["final_sigmas_type"] == "zero"
    assert r["prompt_tokens"] == 13 and r["prompt_chunks"] == 1
    assert r["negative_tokens"] == 3 and r["text_encode_cached"] is False
    assert set(r["timings"]) == {"text_encode", "base", "refiner", "vae_decode", "save"}
    assert all(v >= 0 for v in r["timings"].values()) and r["timings"]["base"] > 0
    json.dumps(records)


def test_output_file_hashes_and_a1111_parameters(main_run):
    _s, _rec, _info, (r,), run_dir = main_run
    assert r["path"] == "outputs/00003-s1234-256x256.jpg"
    data = (run_dir / r["path"]).read_bytes()
    assert r["bytes"] == len(data) and r["sha256"] == hashlib.sha256(data).hexdigest()
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and im.size == (256, 256)
        assert r["pixel_sha256"] == hashlib.sha256(im.convert("RGB").tobytes()).hexdigest()
        text = im.info["comment"].decode("utf-8")
        pixels = torch.tensor(list(im.convert("L").getdata()), dtype=torch.float32)
    assert text.startswith("a lighthouse on a rocky cliff, golden hour lighting, masterpiece\nNegative prompt: dark, grey\n")
    assert ("Steps: 38, Sampler: DPM++ 2M Karras, CFG scale: 6.8, Seed: 1234, Size: 256x256, "
            "Model: builtin:tiny-sdxl, Refiner: builtin:tiny-sdxl-refiner, Refiner switch: 0.8") in text
    assert pixels.std() > 1  # random weights give noise, not a flat (NaN -> black) image
    assert not list(run_dir.glob("outputs/.*"))  # no temporary files left behind


def test_stage_and_alloc_events(main_run):
    _s, rec, _info, _r, _d = main_run
    stages = rec.of("stage")
    assert [e["stage"] for e in stages] == ["text_encode", "base", "refiner", "vae_decode", "save"]
    assert all(e["index"] == 3 and e["s"] >= 0 for e in stages)
    assert stages[1]["steps"] > 0 and stages[0]["cached"] is False
    at = [e["at"] for e in rec.of("alloc")]
    assert at == ["load", "stage:text_encode", "stage:base", "stage:refiner", "stage:vae_decode", "stage:save", "image"]
    img = rec.of("alloc")[-1]
    assert img["index"] == 3
    stage_peaks = [e["peak_rss"] for e in rec.of("alloc")[1:-1]]
    assert img["peak_rss"] >= max(stage_peaks)


def test_second_image_uses_cached_embeddings(main_run):
    s, rec, _info, (first,), _d = main_run
    (r,) = s.generate(job(4, 1235, 64, 64))
    assert r["text_encode_cached"] is True and r["timings"]["text_encode"] == 0.0
    assert r["prompt_chunks"] == first["prompt_chunks"] and r["prompt_tokens"] == first["prompt_tokens"]
    assert [e for e in rec.of("stage") if e["index"] == 4][0]["cached"] is True


def test_oom_propagates_as_is_and_the_session_recovers(main_run):
    s, _rec, _info, _r, _d = main_run
    unet = s.base.pipe.unet
    real = unet.forward

    def out_of_memory(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    unet.forward = out_of_memory
    try:
        with pytest.raises(torch.OutOfMemoryError):
            s.generate(job(5, 1, 64, 64))
    finally:
        unet.forward = real
    (r,) = s.generate(job(5, 1, 64, 64))
    assert r["outcome"] == "ok"


# --------------------------------------------------------------------------------------------


def small(**over) -> Scenario:
    base = dict(steps=12, resolutions=["128x128"])
    base.update(over)
    return scenario(**base)


def test_same_job_in_two_sessions_is_byte_identical_and_seeds_matter(model_cache, tmp_path):
    monkeypatch_threads = pytest.MonkeyPatch()
    monkeypatch_threads.setenv("STRESS_CPU_THREADS", "1")   # same thread count in both sessions
    try:
        _same_job_twice(model_cache, tmp_path)
    finally:
        monkeypatch_threads.undo()


def _same_job_twice(model_cache, tmp_path):
    sc = small(steps=8, resolutions=["96x96"], seeds=[77])
    out = []
    for name in ("a", "b"):
        s, _ = session(sc, tmp_path / name, model_cache)
        s.load()
        out.append(s.generate(job(0, 77, 96, 96))[0])
        if name == "b":
            out.append(s.generate(job(1, 78, 96, 96))[0])
        s.close()
    a, b, other = out
    assert a["sha256"] == b["sha256"] and a["pixel_sha256"] == b["pixel_sha256"]
    assert (tmp_path / "a" / a["path"]).read_bytes() == (tmp_path / "b" / b["path"]).read_bytes()
    assert other["sha256"] != a["sha256"] and other["pixel_sha256"] != a["pixel_sha256"]


def test_diffusers_semantics_splits_one_schedule(model_cache, tmp_path):
    sc = small(steps=38, resolutions=["64x64"], refiner={"semantics": "diffusers", "switch": 0.8})
    s, _ = session(sc, tmp_path, model_cache)
    s.load()
    (r,) = s.generate(job(0, 5, 64, 64))
    assert r["base_num_inference_steps"] == r["refiner_num_inference_steps"] == 38
    assert r["steps"] == expected_steps(s._model_sched_config["base"], 38, 0.8, "base")
    assert r["steps"] + r["refiner_steps"] == 38  # one schedule, cut in two
    assert r["step_semantics"] == "diffusers"
    s.close()


def test_base_only_batch_png_and_optimizations(model_cache, tmp_path):
    sc = small(steps=6, resolutions=["64x64"], model={"refiner": None}, output={"format": "png"},
               optimizations={"attention": "math", "channels_last": True, "vae_tiling": True,
                              "vae_slicing": True, "cpu_offload": True})
    s, rec = session(sc, tmp_path, model_cache)
    info = s.load()
    assert info["optimizations"]["base"]["cpu_offload"] == "ignored"
    assert any("cpu_offload ignored" in n for n in info["notes"])
    records = s.generate({"images": [{"index": 0, "seed": 1}, {"index": 1, "seed": 2}], "width": 64, "height": 64})
    assert [r["index"] for r in records] == [0, 1] and all(r["batch_size"] == 2 for r in records)
    assert all(r["steps"] == 6 and r["refiner_steps"] == 0 and r["refiner_num_inference_steps"] == 0 for r in records)
    assert "refiner" not in records[0]["timings"] or records[0]["timings"]["refiner"] == 0.0
    assert records[0]["sha256"] != records[1]["sha256"]
    with Image.open(tmp_path / records[1]["path"]) as im:
        assert im.format == "PNG" and "Seed: 2, Size: 64x64" in im.info["parameters"]
    assert [e["stage"] for e in rec.of("stage")] == ["text_encode", "base", "vae_decode", "save"]
    assert rec.of("stage")[1]["indices"] == [0, 1]
    assert [e["index"] for e in rec.of("alloc") if e["at"] == "image"] == [0, 1]
    s.close()


def test_generated_2400_token_prompt_end_to_end(model_cache, tmp_path):
    sc = small(steps=4, resolutions=["64x64"], model={"refiner": None},
               prompt={"tokens": 2400, "seed": 9}, negative_prompt="dark")
    s, _ = session(sc, tmp_path, model_cache)
    info = s.load()
    assert info["prompt"]["tokens"] == 2400
    (r,) = s.generate(job(0, 1, 64, 64))
    assert r["prompt_tokens"] == 2400 and r["prompt_chunks"] == 33 and r["negative_chunks"] == 1
    with Image.open(tmp_path / r["path"]) as im:
        text = im.info["comment"].decode("utf-8")
    assert text.split("\n")[0] == s.prompt and r["parameters_truncated"] is False
    s.close()


def test_reload_models_reencodes_and_reproduces(model_cache, tmp_path):
    sc = small(steps=4, resolutions=["64x64"])
    s, _ = session(sc, tmp_path, model_cache)
    s.load()
    (a,) = s.generate(job(0, 3, 64, 64))
    info = s.reload_models()
    assert info["models"]["base"]["how"] == "loaded from the cache"
    (b,) = s.generate(job(0, 3, 64, 64))
    assert b["text_encode_cached"] is False and a["sha256"] == b["sha256"]
    s.close()


# --------------------------------------------------------------------------------------------


def test_img2img_with_test_patterns_and_an_input_folder(model_cache, tmp_path):
    sc = scenario(workload="sd15-img2img", model={"base": "builtin:tiny-sd15", "refiner": None},
                  steps=10, resolutions=["128x96"], img2img={"strength": 0.6})
    s, rec = session(sc, tmp_path / "run", model_cache)
    info = s.load()
    assert info["models"]["base"]["pipeline"] == "StableDiffusionImg2ImgPipeline"
    (r,) = s.generate(job(0, 11, 128, 96))
    assert r["steps"] == 6 and r["refiner_steps"] == 0  # int(10 * 0.6) steps of a 10-step schedule
    assert r["input"] == "test-pattern:0" and r["strength"] == 0.6 and r["workload"] == "sd15-img2img"
    with Image.open(tmp_path / "run" / r["path"]) as im:
        assert im.size == (128, 96) and "Denoising strength: 0.6" in im.info["comment"].decode()
    assert [e["stage"] for e in rec.of("stage")] == ["text_encode", "base", "vae_decode", "save"]
    s.close()

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.new("RGB", (300, 200), (200, 30, 30)).save(inputs / "a.png")
    Image.new("RGB", (50, 80), (30, 30, 200)).save(inputs / "b.jpg")
    (inputs / "notes.txt").write_text("not an image")
    sc = scenario(workload="sd15-img2img", model={"base": "builtin:tiny-sd15", "refiner": None}, steps=4,
                  resolutions=["64x64"], img2img={"inputs": "inputs", "strength": 0.5})
    s, _ = session(sc, tmp_path / "run2", model_cache, base_dir=tmp_path)
    s.load()
    recs = [s.generate(job(i, 1, 64, 64))[0] for i in range(3)]
    assert [r["input"] for r in recs] == ["a.png", "b.jpg", "a.png"]
    assert recs[0]["sha256"] != recs[1]["sha256"]
    s.close()


def test_builtin_cache_is_built_once_and_reused(model_cache, tmp_path):
    folder, built = models.ensure_builtin("builtin:tiny-sd15", model_cache)
    marker = folder / "stress-builtin.json"
    before = marker.stat()
    again, built_again = models.ensure_builtin("builtin:tiny-sd15", model_cache)
    assert again == folder and built_again is False
    loaded = models.load_model("builtin:tiny-sd15", "sd15", role="base", base_dir=tmp_path, cache_dir=model_cache,
                               device="cpu", dtype=torch.float32)
    assert loaded.info["how"] == "loaded from the cache"
    after = marker.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert json.loads(marker.read_text())["digest"] == models.config_digest("builtin:tiny-sd15")
    assert (folder / "model_index.json").exists() and list((folder / "unet").glob("*.safetensors"))
    # A build that loses the race keeps the winner's folder and leaves no temporary folder.
    target = tmp_path / "x"
    assert models._atomic_build(target, lambda p: (p / "stress-builtin.json").write_text("{}")) is True
    assert models._atomic_build(target, lambda p: (p / "stress-builtin.json").write_text("{}")) is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_full_size_configs_are_the_real_architectures():
    counts = {}
    for name in ("builtin:sdxl", "builtin:sdxl-refiner", "builtin:sd15"):
        cfgs = models.builtin_component_configs(name)
        assert cfgs["scheduler"]["_class_name"] in ("EulerDiscreteScheduler", "PNDMScheduler")
        counts[name] = {c: sum(p.numel() for p in models.instantiate_component(cfg).parameters())
                        for c, cfg in cfgs.items() if c != "scheduler"}
    # Parameter counts of the published checkpoints.
    assert counts["builtin:sdxl"] == {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480,
                                      "text_encoder_2": 694_659_840}
    assert counts["builtin:sd15"]["unet"] == 859_520_964
    assert counts["builtin:sdxl-refiner"]["unet"] == 2_259_526_660
    cfg = models.builtin_component_configs("builtin:tiny-sdxl")
    assert cfg["unet"]["addition_embed_type"] == "text_time" and len(cfg["vae"]["block_out_channels"]) == 4
    assert cfg["unet"]["cross_attention_dim"] == cfg["text_encoder"]["hidden_size"] + cfg["text_encoder_2"]["hidden_size"]
    ref = models.builtin_component_configs("builtin:tiny-sdxl-refiner")
    assert "text_encoder" not in ref
    assert ref["unet"]["projection_class_embeddings_input_dim"] == ref["text_encoder_2"]["projection_dim"] + 5 * 8


def test_full_size_config_folder_is_written_without_weights(tmp_path):
    folder, built = models.ensure_builtin("builtin:sd15", tmp_path)
    assert built and (folder / "model_index.json").exists()
    assert json.loads((folder / "unet" / "config.json").read_text())["block_out_channels"] == [320, 640, 1280, 1280]
    assert not list(folder.rglob("*.safetensors"))
    from transformers import CLIPTokenizer

    assert len(CLIPTokenizer.from_pretrained(folder / "tokenizer")) == 49408


# --------------------------------------------------------------------------------------------


def test_bad_sources_fail_with_one_line(model_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    common = dict(base_dir=tmp_path, cache_dir=model_cache, device="cpu", dtype=torch.float32)
    with pytest.raises(EnvironmentProblem, match="checkpoint not found"):
        models.load_model("nope/model", "sdxl", role="base", **common)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EnvironmentProblem, match="no model_index.json"):
        models.load_model("empty", "sdxl", role="base", **common)
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(EnvironmentProblem) as exc:
        models.load_model("broken.safetensors", "sdxl", role="base", **common)
    assert "\n" not in str(exc.value) and "broken.safetensors" in str(exc.value)
    with pytest.raises(StressError, match="is an SDXL refiner, this slot needs an SDXL base model"):
        models.load_model("builtin:tiny-sdxl-refiner", "sdxl", role="base", **common)
    # A refiner folder cannot serve as a base (no text_encoder).
    ref_folder, _ = models.ensure_builtin("builtin:tiny-sdxl-refiner", model_cache)
    with pytest.raises(EnvironmentProblem, match="is an SDXL refiner, this slot needs an SDXL base model; use it as model.refiner"):
        models.load_model(str(ref_folder), "sdxl", role="base", **common)
    # ... while a base model may serve as the refiner (SD.Next allows it).
    base_folder, _ = models.ensure_builtin("builtin:tiny-sdxl", model_cache)
    loaded = models.load_model(str(base_folder), "sdxl-refiner", role="refiner", **common)
    assert loaded.kind == "sdxl" and type(loaded.pipe).__name__ == "StableDiffusionXLImg2ImgPipeline"
    sd15, _ = models.ensure_builtin("builtin:tiny-sd15", model_cache)
    with pytest.raises(EnvironmentProblem, match="is a Stable Diffusion 1.x model, this slot needs an SDXL base"):
        models.load_model(str(sd15), "sdxl", role="base", **common)


def test_real_diffusers_folder_loads_like_a_checkpoint(model_cache, tmp_path):
    folder, _ = models.ensure_builtin("builtin:tiny-sdxl", model_cache)
    sc = small(steps=3, resolutions=["64x64"], model={"base": str(folder), "refiner": None})
    s, _ = session(sc, tmp_path, model_cache)
    info = s.load()
    assert info["models"]["base"]["how"] == "diffusers folder"
    (r,) = s.generate(job(0, 1, 64, 64))
    assert r["outcome"] == "ok"
    with Image.open(tmp_path / r["path"]) as im:
        assert f"Model: {folder.name}," in im.info["comment"].decode()
    s.close()


def test_device_and_dtype_resolution(model_cache, tmp_path):
    if not torch.cuda.is_available():
        s, _ = session(small(model={"device": "cuda"}), tmp_path, model_cache)
        with pytest.raises(EnvironmentProblem, match="sees no CUDA device"):
            s.load()
    s, _ = session(small(steps=2, resolutions=["64x64"], model={"dtype": "fp16", "device": "cpu", "refiner": None}),
                   tmp_path, model_cache)
    info = s.load()
    assert info["dtype"] == "float32" and info["dtype_requested"] == "fp16"
    assert any("fp16 on the CPU runs in fp32" in n for n in info["notes"])
    s.close()
    s, _ = session(small(steps=2, resolutions=["64x64"], model={"dtype": "bf16", "device": "cpu", "refiner": None}),
                   tmp_path / "bf16", model_cache)
    assert s.load()["dtype"] == "bfloat16"
    assert s.generate(job(0, 1, 64, 64))[0]["outcome"] == "ok"
    s.close()


def test_allocator_stats_on_the_cpu():
    stats = alloc.allocator_stats("cpu")
    assert stats["rss"] > 0 and stats["peak_rss"] >= stats["rss"]
    big = torch.ones(64 * 1024 * 1024, dtype=torch.uint8)  # touch 64 MiB
    peak = alloc.allocator_stats("cpu")["peak_rss"]
    del big
    if alloc.reset_peaks("cpu"):
        assert alloc.allocator_stats("cpu")["peak_rss"] < peak
    bad = alloc.allocator_stats("cuda:7" if not torch.cuda.is_available() else "cuda:999")
    assert "error" in bad  # never raises


def test_parameters_of_a_huge_prompt_fit_one_jpeg_comment():
    from stress.workload.pipelines import JPEG_COMMENT_LIMIT, encode_image, fit_parameters
    import numpy as np

    prompt = "a lighthouse on a rocky cliff, " * 4000  # ~124,000 characters
    params = [("Steps", 38), ("Sampler", "DPM++ 2M Karras"), ("Seed", 1)]
    text, truncated = fit_parameters(prompt, "dark", params, JPEG_COMMENT_LIMIT)
    assert truncated and len(text.encode()) <= JPEG_COMMENT_LIMIT
    assert hashlib.sha256(prompt.encode()).hexdigest() in text and text.endswith("Steps: 38, Sampler: DPM++ 2M Karras, Seed: 1")
    data = encode_image(np.zeros((16, 16, 3), np.uint8), "jpg", 92, text)
    with Image.open(io.BytesIO(data)) as im:
        assert im.info["comment"].decode() == text
    assert fit_parameters("short", "", params, JPEG_COMMENT_LIMIT) == ("short\nSteps: 38, Sampler: DPM++ 2M Karras, Seed: 1", False)


def test_stress_cpu_threads(monkeypatch):
    from stress.workload.engine import set_cpu_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("STRESS_CPU_THREADS", "1")
        notes: list[str] = []
        assert set_cpu_threads(notes) == (1, "STRESS_CPU_THREADS") and notes == ["cpu threads: 1 (STRESS_CPU_THREADS)"]
        monkeypatch.setenv("STRESS_CPU_THREADS", "two")
        with pytest.raises(StressError, match="STRESS_CPU_THREADS must be a positive integer"):
            set_cpu_threads([])
    finally:
        torch.set_num_threads(before)


def test_threads_follow_the_free_cores():
    from stress.workload import threads

    assert threads.choose({}, cores=2, load=0.0) == (2, "2 cores in this process's affinity, 1-min load 0.0: 2 free")
    assert threads.choose({}, cores=2, load=1.2)[0] == 1
    assert threads.choose({}, cores=2, load=7.0)[0] == 1          # never fewer than one
    assert threads.choose({}, cores=16, load=3.4)[0] == 13
    assert threads.choose({}, cores=4, load=None)[0] == 4
    assert threads.choose({"STRESS_CPU_THREADS": "3"}, cores=2, load=9.0) == (3, "STRESS_CPU_THREADS")
    with pytest.raises(ValueError, match="positive integer"):
        threads.choose({"STRESS_CPU_THREADS": "0"})
    assert threads.worker_env({}) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert threads.worker_env({"OMP_WAIT_POLICY": "ACTIVE"}) == {}   # the user's choice stands
