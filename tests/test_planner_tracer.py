"""The memory tracer against PyTorch's own record of real allocations (CPU, tiny models).

The planner traces networks on the meta device (shapes only). Here the same pipeline code runs on
real CPU tensors with random weights under ``torch.profiler(profile_memory=True)``, whose raw
``[memory]`` events are every allocation and free the c10 CPU allocator made: an independent record.
The meta trace's tensor peak must match the measured peak; the only allowed difference is scratch
memory allocated inside kernels (oneDNN reorders, group-norm statistics: a few tens of KiB here),
which no dispatch-level tracer can see and which the overhead model covers on a GPU.
"""
from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from stress.memory.architectures import load_architecture
from stress.memory.memtrace import StorageTracker, Timeline, tensor_peak
from stress.memory.pipeline import PipelineTracer, TraceSettings, apply_attention, build_module, materialize

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _measured_peak(fn) -> int:
    """Peak of live bytes the CPU allocator reported while ``fn`` ran, from zero at its start."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def _close(predicted: int, measured: int) -> bool:
    # Kernel-internal scratch (invisible to the tracer) is tens of KiB on these models.
    return measured - 128 * 1024 <= predicted <= measured


def test_unet_forward_trace_matches_measured_allocations():
    """Per attention backend; math builds the (heads x queries x keys) score matrix, sliced builds it
    half the heads at a time, SDPA never: the traced peaks must order that way, and each must match."""
    from stress.memory.pipeline import _SdpaAsOnGpu

    arch = load_architecture("builtin:tiny-sdxl")
    comp = arch.components["unet"]

    def run(unet: torch.nn.Module, device: str) -> None:
        with torch.no_grad(), torch.device(device):
            x = torch.randn(2, 4, 96, 96)
            cond = torch.randn(2, 77 * 2, arch.cross_attention_width())
            out = unet(x, torch.full((), 500.0), encoder_hidden_states=cond,
                       added_cond_kwargs={"text_embeds": torch.randn(2, arch.pooled_width()),
                                          "time_ids": torch.randn(2, arch.time_ids())}, return_dict=False)[0]
            del out, x, cond

    peaks = {}
    for attention in ("sdpa", "math", "sliced"):
        real = materialize(build_module(comp), torch.float32, "cpu")
        apply_attention(real, comp, attention)
        measured = _measured_peak(lambda real=real: run(real, "cpu"))
        meta = materialize(build_module(comp), torch.float32, "meta")
        apply_attention(meta, comp, attention)
        tl = Timeline()
        with _SdpaAsOnGpu(), StorageTracker(tl, list(meta.parameters()) + list(meta.buffers())):
            run(meta, "meta")
        assert tl.live == 0, "every traced tensor must be freed by the end"
        assert _close(tl.peak, measured), (attention, tl.peak, measured)
        peaks[attention] = tl.peak
    assert peaks["math"] > peaks["sliced"] > peaks["sdpa"]


CASES = [
    ("builtin:tiny-sdxl", "builtin:tiny-sdxl-refiner", {}, (256, 320)),
    ("builtin:tiny-sdxl", "builtin:tiny-sdxl-refiner", {"attention": "math"}, (256, 256)),
    ("builtin:tiny-sdxl", None, {"vae_tiling": True}, (384, 320)),            # tiled decode (tiles of 256)
    ("builtin:tiny-sdxl", None, {"vae_slicing": True, "batch": 2}, (256, 256)),
    ("builtin:tiny-sd15", None, {"img2img": True}, (256, 256)),
]


@pytest.mark.parametrize("base,refiner,kw,res", CASES, ids=["sdxl+refiner", "math", "vae-tiling",
                                                            "vae-slicing-batch2", "sd15-img2img"])
def test_pipeline_trace_matches_measured_allocations(base, refiner, kw, res):
    """The whole image (prompt encoding, base and refiner steps, VAE decode) as the planner traces it."""
    b = load_architecture(base)
    r = load_architecture(refiner) if refiner else None
    settings = TraceSettings(dtype="fp32", base_chunks=3, refiner_chunks=3, **kw)
    real = PipelineTracer(b, r, settings, device="cpu")
    meta = PipelineTracer(b, r, settings, device="meta")
    held = {}
    measured = _measured_peak(lambda: held.setdefault("trace", real.trace(*res)))
    traced = meta.trace(*res)
    predicted = tensor_peak(traced.events)
    assert _close(predicted, measured), (predicted, measured)
    # The real run walked the same allocation sequence as the meta trace.
    assert [n for k, n in held["trace"].events] == [n for k, n in traced.events]
    assert traced.leaked == 0


def test_traced_attention_matches_the_architecture():
    """Full-size SDXL base at 1024x1024 (latent 128x128): self-attention at 64x64 (4096 tokens) in
    10 transformer layers and at 32x32 (1024 tokens) in 60; cross-attention to 77 x chunks keys."""
    b = load_architecture("builtin:sdxl")
    meta = PipelineTracer(b, None, TraceSettings(dtype="fp16", base_chunks=32))
    st = meta.trace(1024, 1024).stages["base:denoise"]
    from stress.memory.accounting import attention_totals

    att = attention_totals(st.attention)
    assert att.self_calls == 70 and att.cross_calls == 70
    assert att.self_qk == 10 * 4096 ** 2 + 60 * 1024 ** 2
    assert att.cross_qk == (10 * 4096 + 60 * 1024) * 77 * 32
    assert att.largest["heads"] == 10 and att.largest["queries"] == 4096


def test_flops_match_torch_flop_counter_on_a_real_forward():
    from torch.utils.flop_counter import FlopCounterMode

    from stress.memory.memtrace import _flash_cpu_flop

    arch = load_architecture("builtin:tiny-sdxl")
    comp = arch.components["unet"]
    real = materialize(build_module(comp), torch.float32, "cpu")
    x = torch.randn(2, 4, 32, 32)
    cond = torch.randn(2, 77, arch.cross_attention_width())
    kw = {"text_embeds": torch.randn(2, arch.pooled_width()), "time_ids": torch.randn(2, arch.time_ids())}
    counter = FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _flash_cpu_flop})
    with torch.no_grad(), counter:
        real(x, torch.full((), 1.0), encoder_hidden_states=cond, added_cond_kwargs=kw)
    meta = PipelineTracer(arch, None, TraceSettings(dtype="fp32", cfg=True, base_chunks=1))
    traced = meta.trace(256, 256).stages["base:denoise"].flops
    assert traced == counter.get_total_flops() > 0
