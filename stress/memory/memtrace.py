"""Follow every tensor storage an operation creates, and when its last reference dies.

:class:`StorageTracker` is a ``TorchDispatchMode``: it sees each ATen operation after autograd and
decompositions, records the storage of every tensor the operation returns the first time it sees
it (``nbytes``), and registers a ``weakref.finalize`` on that storage, which fires when the storage
itself is destroyed (PyTorch keeps a storage's Python object alive as long as the C++ storage lives,
so the finalizer marks the real free, not the loss of one Python reference). Views share their base's
storage and cost nothing; in-place operations return an already-known storage.

The same tracker works on real tensors (how the tests check it against PyTorch's own allocation
records on the CPU) and on ``FakeTensorMode`` tensors, which carry shapes, dtypes and strides but
no memory: that is how the planner walks full-size SDXL at 2048x2048 on a laptop.

Why not ``torch.distributed._tools.mem_tracker.MemTracker``: it answers a training question (params,
grads, optimizer state, activations per module) and is a private API; an inference plan needs one
thing, the ordered alloc/free sequence (for the caching-allocator model in
:mod:`stress.memory.overhead`), labelled with the pipeline stage and the module that was running.
It uses the same two building blocks (a dispatch mode and storage weak references).

What a dispatch mode cannot see: scratch memory allocated inside a kernel (cuDNN/cuBLAS workspaces,
on the CPU oneDNN buffers), the CUDA context, and the caching allocator's rounding and caching. Those
are modelled in :mod:`stress.memory.overhead`.
"""
from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

# Ops that create no storage of their own; skipping them saves time on every view.
_SKIP = {torch.ops.prim.device.default}
_CONV = torch.ops.aten.convolution.default

# Keys of allocations the tracker cannot see (weights): negative, unique across timelines, so that
# the events of several timelines (a session's prefix and its images) can be replayed together.
_SYNTHETIC_KEYS = itertools.count(-1, -1)


@dataclass
class Timeline:
    """The ordered allocation events of a trace.

    ``events`` holds ``(key, nbytes)``: ``nbytes > 0`` allocates storage ``key``, ``nbytes < 0``
    frees it. Weights and other allocations the tracker cannot see are added with :meth:`alloc`.
    """

    events: list[tuple[int, int]] = field(default_factory=list)
    stages: list[tuple[int, str]] = field(default_factory=list)   # (index of first event, stage)
    live: int = 0
    peak: int = 0
    peak_stage: str = ""
    peak_module: str = ""
    peak_weights: int = 0                 # weight bytes resident at the peak
    stage_peaks: dict[str, int] = field(default_factory=dict)
    stage_peak_modules: dict[str, str] = field(default_factory=dict)
    stage_peak_weights: dict[str, int] = field(default_factory=dict)
    weights_live: int = 0
    flops: dict[str, int] = field(default_factory=dict)       # per stage, counted by the tracker
    workspace_keys: set[int] = field(default_factory=set)     # transient conv workspaces (estimates)
    workspace_peak: int = 0               # live bytes + the workspace of the conv running, at worst
    _sizes: dict[int, int] = field(default_factory=dict)
    _weight_keys: set[int] = field(default_factory=set)
    stage: str = ""
    module: str = ""

    def fork(self) -> "Timeline":
        """A new timeline that starts where this one is: same live allocations, no events."""
        t = Timeline(live=self.live, peak=self.live, weights_live=self.weights_live,
                     peak_weights=self.weights_live, stage=self.stage, workspace_peak=self.live)
        t._sizes = dict(self._sizes)
        t._weight_keys = set(self._weight_keys)
        return t

    def mark(self, stage: str) -> None:
        """Start a named stage; later events belong to it."""
        self.stage = stage
        self.stages.append((len(self.events), stage))
        if stage not in self.stage_peaks:
            self.stage_peaks[stage] = self.live
            self.stage_peak_weights[stage] = self.weights_live
            self.stage_peak_modules[stage] = ""

    def _note(self) -> None:
        if self.live > self.stage_peaks.get(self.stage, -1):
            self.stage_peaks[self.stage] = self.live
            self.stage_peak_modules[self.stage] = self.module
            self.stage_peak_weights[self.stage] = self.weights_live
        if self.live > self.peak:
            self.peak, self.peak_stage, self.peak_module = self.live, self.stage, self.module
            self.peak_weights = self.weights_live

    def record_alloc(self, key: int, nbytes: int) -> None:
        self._sizes[key] = nbytes
        self.events.append((key, nbytes))
        self.live += nbytes
        self._note()

    def record_free(self, key: int) -> None:
        nbytes = self._sizes.pop(key, None)
        if nbytes is None:
            return
        self.events.append((key, -nbytes))
        self.live -= nbytes
        if key in self._weight_keys:
            self._weight_keys.discard(key)
            self.weights_live -= nbytes

    def alloc(self, nbytes: int, *, weight: bool = False, key: int | None = None) -> int:
        """An allocation the tracker cannot see (weights, workspaces); returns its key for :meth:`free`.
        ``key``: one given before (a model's weights coming back to the GPU) instead of a new one."""
        if key is None:
            key = next(_SYNTHETIC_KEYS)
        if weight:
            self._weight_keys.add(key)
            self.weights_live += int(nbytes)
        self.record_alloc(key, int(nbytes))
        return key

    def free(self, key: int) -> None:
        self.record_free(key)

    def transient_workspace(self, nbytes: int) -> None:
        """A kernel's scratch buffer, allocated and freed around one op (cuDNN's convolution
        workspace). In the event list for the allocator replay, but not in ``live`` or ``peak``:
        it is an estimate, and PyTorch falls back to a plan with less workspace when it does not fit."""
        if nbytes <= 0:
            return
        key = next(_SYNTHETIC_KEYS)
        self.workspace_keys.add(key)
        self.events.append((key, nbytes))
        self.events.append((key, -nbytes))
        self.workspace_peak = max(self.workspace_peak, self.live + nbytes)

    def events_without_workspace(self) -> list[tuple[int, int]]:
        ws = self.workspace_keys
        return [e for e in self.events if e[0] not in ws] if ws else list(self.events)


_NO_KEY = object()
_PLAIN = (int, float, bool, str, torch.dtype, torch.device, torch.memory_format, torch.layout)


def _tensor_sig(t: torch.Tensor) -> tuple:
    return (tuple(t.shape), t.stride(), t.dtype, t.storage_offset(), t.layout)


class MetaOutputCache:
    """Meta kernels, memoised: the outputs' shapes, dtypes and strides of a functional op depend only
    on its inputs' and its other arguments, so the second call with the same signature builds empty
    meta tensors with the recorded layout instead of running the kernel again. Many ATen meta kernels
    are Python (``torch._refs`` decompositions: ``native_layer_norm``, ``native_group_norm``, most
    elementwise ops with type promotion) and were the largest part of a full-size trace; a UNet runs
    the same block with the same shapes dozens of times. Only ops whose schema has no aliasing and no
    mutation (outputs are new storages, never views of or writes to an input), only when every tensor
    argument is on the meta device, only tensor (or tuple-of-tensor) results: everything else runs the
    real kernel. The tracker sees the same storages either way: one new storage per output."""

    def __init__(self) -> None:
        self.enabled = True          # tests switch it off to check that it changes nothing
        self._outputs: dict[tuple, Any] = {}
        self._functional: dict[Any, bool] = {}
        self.hits = self.misses = 0

    def _is_functional(self, func: Any) -> bool:
        ok = self._functional.get(func)
        if ok is None:
            schema = func._schema
            ok = (not any(a.alias_info is not None for a in schema.arguments)
                  and not any(r.alias_info is not None for r in schema.returns)
                  and len(schema.returns) >= 1
                  and all(str(r.type) == "Tensor" for r in schema.returns))
            self._functional[func] = ok
        return ok

    @staticmethod
    def _leaf(v: Any) -> Any:
        """A hashable stand-in for one argument, or ``_NO_KEY`` when there is none."""
        if isinstance(v, torch.Tensor):
            return _tensor_sig(v) if v.device.type == "meta" else _NO_KEY
        if v is None or isinstance(v, _PLAIN):
            return (type(v), v)
        if isinstance(v, (list, tuple)):
            sub = tuple(MetaOutputCache._leaf(x) for x in v)
            return _NO_KEY if any(x is _NO_KEY for x in sub) else sub
        return _NO_KEY

    def _key(self, func: Any, args: tuple, kwargs: dict) -> tuple | None:
        parts: list[Any] = [func]
        for v in args:
            parts.append(self._leaf(v))
        for k in sorted(kwargs):
            parts.append(k)
            parts.append(self._leaf(kwargs[k]))
        if any(p is _NO_KEY for p in parts):
            return None
        return tuple(parts)

    def run(self, func: Any, args: tuple, kwargs: dict) -> Any:
        if not self.enabled or not self._is_functional(func):
            return func(*args, **kwargs)
        key = self._key(func, args, kwargs)
        if key is None:
            return func(*args, **kwargs)
        layout = self._outputs.get(key)
        if layout is not None:
            self.hits += 1
            outs = tuple(torch.empty_strided(shape, stride, dtype=dtype, device="meta")
                         for shape, stride, dtype in layout)
            return outs[0] if len(outs) == 1 else outs
        out = func(*args, **kwargs)
        single = isinstance(out, torch.Tensor)
        outs = (out,) if single else out
        if (isinstance(outs, tuple) and all(isinstance(o, torch.Tensor) and o.device.type == "meta"
                                            and o.storage_offset() == 0 for o in outs)
                and len(outs) == len(func._schema.returns)):
            self.misses += 1
            layout = tuple((tuple(o.shape), o.stride(), o.dtype) for o in outs)
            inputs = {t.untyped_storage()._cdata for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
            if any(o.untyped_storage()._cdata in inputs for o in outs):
                # No alias annotation but the input's storage (``_unsafe_view``): never memoised.
                self._functional[func] = False
                return out
            same = all(torch.empty_strided(sh, st, dtype=dt, device="meta").untyped_storage().nbytes()
                       == o.untyped_storage().nbytes() for (sh, st, dt), o in zip(layout, outs))
            if same:      # a kernel whose output storage is larger than its shape is never memoised
                self._outputs[key] = layout
        return out


META_OUTPUTS = MetaOutputCache()


class StorageTracker(TorchDispatchMode):
    """Records storage allocations and frees of every op into a :class:`Timeline` (see module doc)."""

    def __init__(self, timeline: Timeline | None = None, existing: Iterable[torch.Tensor] = (),
                 *, count_flops: bool = False, conv_workspace: float = 0.0):
        super().__init__()
        # cuDNN workspace estimate per convolution, as a multiple of its input's bytes (0: none).
        self.conv_workspace = conv_workspace
        self.timeline = timeline if timeline is not None else Timeline()
        self._finalizers: dict[int, weakref.finalize] = {}
        # FLOPs with torch.utils.flop_counter's formulas, counted here rather than by stacking a
        # FlopCounterMode: one Python dispatch layer less on every op (the trace's main cost).
        self._flop_formulas = _flop_formulas() if count_flops else {}
        # Storages that exist before the trace (weights): views of them (``weight.t()`` in every
        # linear layer) must not count as new memory.
        self._existing: set[int] = set()
        self.ignore(existing)

    def ignore(self, tensors: Iterable[torch.Tensor]) -> None:
        """Never count these tensors' storages (they were allocated before, e.g. weights)."""
        for t in tensors:
            self._existing.add(t.untyped_storage()._cdata)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        out = META_OUTPUTS.run(func, args, kwargs)
        if func in _SKIP:
            return out
        if self._flop_formulas:
            formula = self._flop_formulas.get(func._overloadpacket)
            if formula is not None:
                fl = self.timeline.flops
                fl[self.timeline.stage] = fl.get(self.timeline.stage, 0) + int(formula(*args, **kwargs, out_val=out))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t)
        if self.conv_workspace and func is _CONV and isinstance(args[0], torch.Tensor):
            x = args[0]
            self.timeline.transient_workspace(int(self.conv_workspace * x.numel() * x.element_size()))
        return out

    def _track(self, t: torch.Tensor) -> None:
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse / nested tensors: none in SD pipelines
            return
        key = st._cdata
        if key in self._existing:
            return
        nbytes = st.nbytes()
        known = self.timeline._sizes.get(key)
        if known is not None:
            if nbytes > known:  # resize_ / out= grew the storage: count the growth
                self.timeline.record_free(key)
                self.timeline.record_alloc(key, nbytes)
            return
        if nbytes == 0:
            return
        self.timeline.record_alloc(key, nbytes)
        self._finalizers[key] = weakref.finalize(st, self._freed, key)

    def _freed(self, key: int) -> None:
        self._finalizers.pop(key, None)
        self.timeline.record_free(key)

    def detach_all(self) -> None:
        """Stop following the storages still alive (their finalizers would record frees later)."""
        for fin in list(self._finalizers.values()):
            fin.detach()
        self._finalizers.clear()


def _flash_cpu_flop(q_shape: Any, k_shape: Any, v_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(q_shape, k_shape, v_shape)


def _flop_formulas() -> dict:
    from torch.utils.flop_counter import flop_registry, shape_wrapper

    formulas = dict(flop_registry)
    # The CPU flash kernel has no formula of its own; it computes what CUDA's flash kernel does.
    formulas[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = shape_wrapper(_flash_cpu_flop)
    return formulas


class ModuleLabels:
    """Keeps ``timeline.module`` at the qualified name of the innermost module running, so a peak
    can be attributed ("vae.decoder.up_blocks.3.resnets.0")."""

    def __init__(self, timeline: Timeline, roots: Iterable[tuple[str, torch.nn.Module]]):
        self.timeline = timeline
        self.names: dict[int, str] = {}
        for prefix, root in roots:
            for name, mod in root.named_modules():
                self.names[id(mod)] = f"{prefix}.{name}" if name else prefix
        self._stack: list[str] = []
        self._handles: list[Any] = []

    def __enter__(self) -> "ModuleLabels":
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        def pre(mod, args):  # noqa: ANN001, ANN202
            name = self.names.get(id(mod))
            if name is not None:
                self._stack.append(name)
                self.timeline.module = name

        def post(mod, args, out):  # noqa: ANN001, ANN202
            if id(mod) in self.names and self._stack:
                self._stack.pop()
                self.timeline.module = self._stack[-1] if self._stack else ""

        self._handles = [register_module_forward_pre_hook(pre), register_module_forward_hook(post)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._stack.clear()
        self.timeline.module = ""


def tensor_peak(events: Iterable[tuple[int, int]]) -> int:
    """Peak of the bytes held by traced tensors alone (weights and other synthetic allocations,
    which have negative keys, left out), counted from zero at the first event."""
    live = peak = 0
    for key, nbytes in events:
        if key >= 0:
            live += nbytes
            if live > peak:
                peak = live
    return peak




def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views counted once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        st = t.untyped_storage()
        seen[st._cdata] = st.nbytes()
    return sum(seen.values())
