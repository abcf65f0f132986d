"""The plan's speed-ups change no figure: memoised meta kernels, the prefix replayed once, no-op
init while building (docs/benchmarks.md has the times)."""
from __future__ import annotations

import random

import torch

from stress.memory.architectures import load_architecture
from stress.memory.memtrace import META_OUTPUTS
from stress.memory.overhead import MiB, CachingAllocatorModel, OverheadModel
from stress.memory.pipeline import PipelineTracer, TraceSettings, build_module
from stress.memory.predict import Replayer, _replay


def _trace(settings: TraceSettings, res=(256, 320)):
    b, r = load_archs()
    return PipelineTracer(b, r, settings).trace(*res)


def load_archs():
    return load_architecture("builtin:tiny-sdxl"), load_architecture("builtin:tiny-sdxl-refiner")


def test_memoised_meta_kernels_give_the_same_trace():
    s = TraceSettings(dtype="fp16", base_chunks=2, refiner_chunks=2, vae_tiling=False)
    META_OUTPUTS.enabled = False
    try:
        plain = _trace(s)
    finally:
        META_OUTPUTS.enabled = True
    hits = META_OUTPUTS.hits
    fast = _trace(s)
    assert META_OUTPUTS.hits > hits, "the cache was never used"
    assert [n for _, n in plain.events] == [n for _, n in fast.events]
    assert plain.peak == fast.peak and plain.peak_stage == fast.peak_stage
    assert {k: v.flops for k, v in plain.stages.items()} == {k: v.flops for k, v in fast.stages.items()}


def test_a_view_without_alias_annotation_is_not_memoised():
    """``_unsafe_view`` shares its input's storage although its schema says nothing: a memoised
    copy would count a new storage."""
    x = torch.empty(4, 6, device="meta")
    for _ in range(2):
        y = META_OUTPUTS.run(torch.ops.aten._unsafe_view.default, (x, [6, 4]), {})
        assert y.untyped_storage()._cdata == x.untyped_storage()._cdata


def test_no_init_build_has_the_same_parameters():
    comp = load_architecture("builtin:tiny-sdxl").components["unet"]
    m = build_module(comp)
    assert all(p.device.type == "meta" for p in m.parameters())
    assert torch.nn.init.kaiming_uniform_.__module__ == "torch.nn.init"   # restored after the build
    assert sum(p.numel() for p in m.parameters()) > 0


_FRESH_ORDER = r"""
import sys, tempfile
from pathlib import Path
import torch
assert "diffusers.models.modeling_utils" not in sys.modules     # the order that broke: first import here
from stress.memory.architectures import load_architecture
from stress.memory.networks import build_module
build_module(load_architecture("builtin:tiny-sdxl").components["unet"])
from diffusers.models.modeling_utils import TORCH_INIT_FUNCTIONS
assert TORCH_INIT_FUNCTIONS["normal_"] is torch.nn.init.normal_, TORCH_INIT_FUNCTIONS["normal_"]
from stress.workload.models import load_model
cache = Path(tempfile.mkdtemp())
common = dict(base_dir=Path("."), cache_dir=cache, device="cpu", dtype=torch.float32)
load_model("builtin:tiny-sdxl", "sdxl", role="base", **common)      # from_pretrained restores diffusers' table
assert torch.nn.init.normal_.__module__ == "torch.nn.init", torch.nn.init.normal_
ref = load_model("builtin:tiny-sdxl-refiner", "sdxl-refiner", role="refiner", **common).pipe   # built now
bad = [n for n, p in ref.unet.named_parameters() if not torch.isfinite(p).all() or p.abs().max() > 100]
assert not bad, bad[:5]
print("ok")
"""


def test_a_meta_build_first_leaves_no_noop_init_for_later_models(tmp_path):
    """diffusers copies torch.nn.init's functions when diffusers.models.modeling_utils is first
    imported and puts the copy back after every from_pretrained. A meta build that imported it first
    (inside our no-op patch) made every model built later in the process uninitialised memory: a tiny
    refiner built after a plan saved garbage weights and gave black images. Fresh interpreter: the
    order of first imports is the point."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT), "STRESS_CACHE": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", _FRESH_ORDER], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_repair_puts_real_functions_back_into_a_library_table():
    import diffusers.models.modeling_utils as mu

    from stress.memory import networks

    saved = dict(mu.TORCH_INIT_FUNCTIONS)
    try:
        mu.TORCH_INIT_FUNCTIONS["normal_"] = networks._noop_init
        assert networks.repair_init_snapshots() == ["diffusers.models.modeling_utils.TORCH_INIT_FUNCTIONS[normal_]"]
        assert mu.TORCH_INIT_FUNCTIONS["normal_"] is networks._REAL_INIT["normal_"]
        assert networks.repair_init_snapshots() == []
    finally:
        mu.TORCH_INIT_FUNCTIONS.update(saved)


def test_replaying_from_a_cloned_prefix_equals_a_full_replay():
    rng = random.Random(7)
    events, live = [], []
    for i in range(3000):
        if live and rng.random() < 0.45:
            events.append((live.pop(rng.randrange(len(live))), -1))
        else:
            events.append((i, rng.choice([rng.randrange(1, 600_000), rng.randrange(1, 40 * MiB)])))
            live.append(i)
    prefix, rest = events[:1200], events[1200:]
    ov = OverheadModel()
    rp = Replayer(prefix, ov)
    for cap in (None, 300 * MiB, 600 * MiB, 2000 * MiB):
        a = rp.replay(rest, cap)
        b = _replay(prefix + rest, ov, cap)
        assert (a.peak_allocated, a.peak_reserved, a.segments, a.oom) == \
            (b.peak_allocated, b.peak_reserved, b.segments, b.oom), cap
    lo, hi = _replay(events, ov).peak_allocated, _replay(events, ov).peak_reserved
    from stress.memory.predict import minimum_capacity

    assert rp.minimum_capacity(rest, lo, hi) == minimum_capacity(events, ov, lo, hi)


def test_stop_at_oom_reports_the_oom():
    a = CachingAllocatorModel(4 * MiB)
    r = a.replay([(1, 3 * MiB), (2, 3 * MiB), (3, 1)], stop_at_oom=True)
    assert r.oom and r.oom_request == 3 * MiB


def test_cached_synthetic_vocabulary_equals_a_fresh_one(tmp_path, monkeypatch):
    from stress.workload import tokenizer as models   # the vocabulary lives in workload/tokenizer.py

    monkeypatch.setenv("STRESS_CACHE", str(tmp_path))
    fresh = models.synthetic_vocab()
    first = models._cached_synthetic_vocab()      # trains and writes the cache
    assert len(list(tmp_path.glob("synthetic-vocab-*.json"))) == 1
    second = models._cached_synthetic_vocab()     # reads it
    assert first == fresh and second[0] == fresh[0] and [tuple(m) for m in second[1]] == fresh[1]
    next(tmp_path.glob("synthetic-vocab-*.json")).write_text("{broken", encoding="utf-8")
    assert models._cached_synthetic_vocab()[0] == fresh[0]   # a corrupt cache is trained again


def test_a_retargeted_tracer_traces_as_a_fresh_one():
    """make_plan builds the networks while the prompts are counted, then gives the counted chunks to
    the tracer (retarget): its traces are those of a tracer built with them, and a setting the
    networks were built with cannot be changed that way."""
    import dataclasses

    import pytest

    b, r = load_archs()
    counted = TraceSettings(dtype="fp16", base_chunks=3, refiner_chunks=3)
    tracer = PipelineTracer(b, r, dataclasses.replace(counted, base_chunks=1, refiner_chunks=1))
    one_chunk = tracer.trace(256, 320)
    tracer.retarget(counted)
    again = tracer.trace(256, 320)
    fresh = PipelineTracer(b, r, counted).trace(256, 320)
    assert again is not one_chunk and again.peak != one_chunk.peak   # three chunks: more to hold
    assert [n for _, n in again.events] == [n for _, n in fresh.events]
    assert again.peak == fresh.peak
    assert [n for _, n in again.prefix.events] == [n for _, n in fresh.prefix.events]
    tracer.retarget(counted)
    assert tracer.trace(256, 320) is again      # the same settings: the traces are kept
    with pytest.raises(ValueError, match="dtype"):
        tracer.retarget(dataclasses.replace(counted, dtype="fp32"))


def test_the_resolutions_are_shared_by_latent_positions():
    from stress.memory.predict import balanced_half

    sdnext = [(1152, 1536), (1024, 1024), (1152, 1152), (848, 1152), (1024, 1536)]
    theirs = balanced_half(sdnext)
    mine = [r for r in sdnext if r not in theirs]
    area = lambda rs: sum(w * h for w, h in rs)   # noqa: E731
    assert abs(area(mine) - area(theirs)) == 10240 and area(mine) <= area(theirs)
    assert theirs == [r for r in sdnext if r in theirs]          # in the scenario's order
    assert balanced_half([(512, 512)]) == [] and balanced_half([]) == []
    many = [(64 * (i % 7 + 1), 64 * (i % 5 + 1)) for i in range(20)]   # past the exhaustive search
    theirs = balanced_half(many)
    assert 0 < len(theirs) < 20 and abs(area(theirs) - area([r for r in many if r not in theirs])) <= 64 * 448
