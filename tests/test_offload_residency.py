"""Model CPU offload as it really runs: the worker's pipelines with diffusers' enable_model_cpu_offload
and accelerate's own hooks, against what the planner's Residency says moves to and from the GPU.

There is no GPU here, so the hooks' execution device is the CPU, where accelerate's own test "is the
previous model on the device?" is always false. The stand-in tracks the logical device instead: a
model is "on the GPU" from its hook's pre_forward until its hook's offload() (called by the next
model's pre_forward, as accelerate does) or until its pipeline's maybe_free_model_hooks (which runs
enable_model_cpu_offload again, moving every model of that pipeline to the CPU). Which hook fires when,
and which model it offloads, is accelerate's and diffusers' real code on the worker's real call order."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

def _worker_stage(planner_stage: str) -> str:
    if planner_stage.startswith("text_encode"):
        return "text_encode"
    if planner_stage.startswith("base:"):
        return "base"
    if planner_stage.startswith("refiner:"):
        return "refiner"
    return planner_stage


def _worker_moves(tmp_path: Path, cache: Path, refiner: bool) -> tuple[list, list]:
    """(moves per image [(image, stage, event, model)], resident at each image's end)."""
    import accelerate.hooks as H
    import diffusers.pipelines.pipeline_utils as PU

    from test_workload_engine import job, scenario, session

    on_gpu: set[int] = set()
    names: dict[int, str] = {}
    where = ["load"]
    moves: list[tuple[str, str, str]] = []

    def pre_forward(self, module, *a, **k):  # noqa: ANN001, ANN202
        prev = self.prev_module_hook
        if prev is not None and id(prev.model) in on_gpu:
            on_gpu.discard(id(prev.model))
            moves.append((where[0], "offload", names[id(prev.model)]))
        if id(module) not in on_gpu:
            on_gpu.add(id(module))
            moves.append((where[0], "load", names[id(module)]))
        return real_pre(self, module, *a, **k)

    def offload(self):  # noqa: ANN001, ANN202
        if id(self.model) in on_gpu:
            on_gpu.discard(id(self.model))
            moves.append((where[0], "offload", names[id(self.model)]))
        return real_offload(self)

    def enable(self, gpu_id=None, device=None):  # noqa: ANN001, ANN202
        for m in self.components.values():      # its self.to("cpu"): every model of this pipeline
            if isinstance(m, torch.nn.Module) and id(m) in on_gpu:
                on_gpu.discard(id(m))
                moves.append((where[0], "offload", names[id(m)]))
        return real_enable(self, device="cpu")

    real_pre, real_offload = H.CpuOffload.pre_forward, H.UserCpuOffloadHook.offload
    real_enable = PU.DiffusionPipeline.enable_model_cpu_offload
    H.CpuOffload.pre_forward, H.UserCpuOffloadHook.offload = pre_forward, offload
    PU.DiffusionPipeline.enable_model_cpu_offload = enable
    try:
        model = {"base": "builtin:tiny-sdxl", "refiner": "builtin:tiny-sdxl-refiner" if refiner else None}
        s, _rec = session(scenario(resolutions=["64x64"], model=model), tmp_path, cache)
        s.load()
        for role, m in (("base", s.base), ("refiner", s.refiner)):
            if m is None:
                continue
            for cname, comp in m.pipe.components.items():
                if isinstance(comp, torch.nn.Module):
                    names.setdefault(id(comp), f"{role}.{cname}")
            m.pipe.enable_model_cpu_offload(device="cpu")   # the worker does this on CUDA
        moves.clear()
        real_report = s._report

        def report(stage, *a, **k):  # noqa: ANN001, ANN202
            where[0] = stage
            return real_report(stage, *a, **k)

        s._report = report
        per_image, ends = [], []
        for i in range(2):
            moves.clear()
            s.generate(job(i, 100 + i, 64, 64))
            per_image.append(list(moves))
            ends.append(sorted(names[x] for x in on_gpu))
        s.close()
        return per_image, ends
    finally:
        H.CpuOffload.pre_forward, H.UserCpuOffloadHook.offload = real_pre, real_offload
        PU.DiffusionPipeline.enable_model_cpu_offload = real_enable


def _planner_moves(refiner: bool) -> tuple[list, list]:
    from stress.memory.architectures import load_architecture
    from stress.memory.pipeline import PipelineTracer, TraceSettings

    b = load_architecture("builtin:tiny-sdxl")
    r = load_architecture("builtin:tiny-sdxl-refiner") if refiner else None
    tr = PipelineTracer(b, r, TraceSettings(dtype="fp32", cpu_offload=True)).trace(64, 64)
    first = [(_worker_stage(st), ev, n) for part, st, ev, n in tr.residency if part in ("prefix", "image")]
    second = [(_worker_stage(st), ev, n) for part, st, ev, n in tr.residency if part == "steady"]

    def resident_after(moves: list) -> list[str]:
        on: set[str] = set()
        for _st, ev, n in moves:
            (on.add if ev == "load" else on.discard)(n)
        return sorted(on)

    assert not [m for m in first if m[0] == "load"]     # nothing is on the GPU at start-up with offload
    end1 = resident_after(first)
    on = set(end1)
    for _st, ev, n in second:
        (on.add if ev == "load" else on.discard)(n)
    return [first, second], [end1, sorted(on)]


@pytest.mark.parametrize("refiner", [True, False], ids=["base+refiner", "base"])
def test_planner_moves_the_models_accelerate_moves(tmp_path, model_cache, refiner):
    """Per image and worker stage, the same models loaded and offloaded, and the same left on the GPU.
    What this pins down (the planner had 'one model at a time'): the refiner's text encoder, run before
    the base pipeline, stays on the GPU through the base UNet of the first image; the VAE that decoded
    an image stays through the next image's UNets (the worker decodes outside the pipeline call, so no
    maybe_free_model_hooks follows it)."""
    worker, worker_ends = _worker_moves(tmp_path, model_cache, refiner)
    planner, planner_ends = _planner_moves(refiner)
    for i in range(2):
        assert Counter(worker[i]) == Counter(planner[i]), (i, worker[i], planner[i])
    assert worker_ends == planner_ends
    if refiner:
        assert ("text_encode", "load", "refiner.text_encoder_2") in worker[0]
        assert ("refiner", "offload", "refiner.text_encoder_2") in worker[0]   # by the refiner's UNet
        assert worker_ends[0] == ["refiner.vae"]
        assert ("refiner", "offload", "refiner.vae") in worker[1]              # the refiner call's end
    else:
        assert worker_ends[0] == ["base.vae"] and ("base", "offload", "base.vae") in worker[1]


def test_residency_follows_the_chain_not_one_model_at_a_time():
    from stress.memory.memtrace import Timeline
    from stress.memory.residency import Residency

    tl = Timeline()
    sizes = {"a.te": [10], "a.te2": [20], "a.unet": [100], "a.vae": [5], "b.te2": [20], "b.unet": [50],
             "b.vae": [5]}
    r = Residency(tl, sizes, "model", chains={"a": ["a.te", "a.te2", "a.unet", "a.vae"],
                                              "b": ["b.te2", "b.unet", "b.vae"]})
    for n in ("a.te", "a.te2", "b.te2", "a.unet"):
        r.use(n)
    assert set(r.resident) == {"a.unet", "b.te2"} and tl.weights_live == 120
    r.finish_pipeline("a")
    assert set(r.resident) == {"b.te2"}
    r.use("b.unet")
    assert set(r.resident) == {"b.unet"}
    keys = list(r.keys["b.unet"])
    r.finish_pipeline("b")
    r.use("b.unet")          # back on the GPU under the same keys: one image's events can follow another's
    assert r.resident["b.unet"] == keys and tl.weights_live == 50
    r.use("a.te")            # first in its chain: nothing before it to offload
    assert set(r.resident) == {"b.unet", "a.te"}
    assert [m[1:] for m in r.log[:3]] == [("load", "a.te"), ("offload", "a.te"), ("load", "a.te2")]


def test_measured_stage_peaks_keep_the_steady_image_in_its_own_stages():
    """plan --compare's per-stage replay: the steady image's events belong to its own stages, not to
    the first image's last one (the decode would otherwise carry the next image's UNets)."""
    from stress.memory.architectures import load_architecture
    from stress.memory.measured import stage_peaks
    from stress.memory.overhead import OverheadModel
    from stress.memory.pipeline import PipelineTracer, TraceSettings

    b, r = load_architecture("builtin:tiny-sdxl"), load_architecture("builtin:tiny-sdxl-refiner")
    tr = PipelineTracer(b, r, TraceSettings(dtype="fp32", cpu_offload=True)).trace(64, 64)
    assert tr.steady is not None and tr.steady.stages
    ov = OverheadModel()
    sp = stage_peaks(tr, ov)
    for stage, traced in (("base", "base:denoise"), ("refiner", "refiner:denoise"), ("vae_decode", "vae_decode")):
        live = max(t.stage_peaks.get(traced, 0) for t in (tr.image, tr.steady))
        got = sp[stage]["peak_allocated"] - ov.cublas_workspace
        assert live <= got <= live * 1.05 + (1 << 20), (stage, got, live)


def test_a_session_of_resolutions_leaves_no_weights_behind():
    """The session replay strings one image of each resolution after another; each image's events
    must end with the weights where the next one expects them. The fp16 VAE's upcast put its weights
    back under new keys, which the next resolution's trace (made from the prefix) never freed: one
    leaked VAE copy per resolution change in the session figures (every SDXL fp16 plan)."""
    from stress.memory.architectures import load_architecture
    from stress.memory.overhead import CachingAllocatorModel
    from stress.memory.pipeline import PipelineTracer, TraceSettings

    b, r = load_architecture("builtin:tiny-sdxl"), load_architecture("builtin:tiny-sdxl-refiner")
    for offload in (False, True):
        tracer = PipelineTracer(b, r, TraceSettings(dtype="fp16", cpu_offload=offload))
        assert tracer.upcast_vae is not None            # the SDXL fp16 decode upcasts the VAE
        t1, t2 = tracer.trace(64, 64), tracer.trace(64, 96)
        alloc = CachingAllocatorModel(None)
        alloc.replay(t1.prefix.events + t1.rest_events())
        after_first = alloc.allocated
        alloc.replay(t2.later_events())
        assert alloc.allocated == after_first, (offload, alloc.allocated - after_first)
