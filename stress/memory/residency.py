"""Which weights are on the GPU when: residency events on a trace's timeline (used by
:mod:`stress.memory.pipeline`; the offload modes are described in docs/plan.md)."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch

from stress.memory.memtrace import Timeline




class Residency:
    """Which weights are on the GPU when, as events on the timeline (see module docstring).

    ``mode``: ``resident`` (everything on the GPU for the session), ``model`` (``cpu_offload``:
    diffusers' ``enable_model_cpu_offload``, followed hook by hook, see :meth:`use`) or ``sequential``
    (``sequential_offload``: each module's own weights while its forward runs, through
    :meth:`sequential_hooks`). ``pinned``: models on the GPU in every mode (diffusers'
    ``_exclude_from_cpu_offload``: the SD 1.x safety checker). ``never``: models that never go to the
    GPU (the text encoders with ``precomputed_embeds``). ``chains``: per pipeline, its models in the
    order of its ``model_cpu_offload_seq`` (only those it has). ``keys``: each model's timeline keys,
    shared by every trace of a tracer, so that one image's events can follow another's in a replay
    (a model left on the GPU by one image is the same allocation in the next)."""

    def __init__(self, timeline: Timeline, sizes: dict[str, list[int]], offload: bool | str,
                 pinned: frozenset = frozenset(), never: frozenset = frozenset(),
                 chains: dict[str, list[str]] | None = None, keys: dict[str, list[int]] | None = None):
        self.tl = timeline
        self.sizes = sizes                          # "base.unet" -> per-tensor bytes
        self.mode = offload if isinstance(offload, str) else ("model" if offload else "resident")
        self.offload = self.mode != "resident"
        self.pinned, self.never = pinned, never
        self.chains = chains or {}
        self.prev = {b: a for chain in self.chains.values() for a, b in zip(chain, chain[1:])}
        self.keys = keys if keys is not None else {}
        self.resident: dict[str, list[int]] = {}    # name -> timeline keys
        self.log: list[tuple[str, str, str]] = []   # (stage, "load" | "offload", name), in order

    def continue_on(self, timeline: Timeline) -> "Residency":
        """The same residency state, recording on a forked timeline."""
        r = Residency(timeline, self.sizes, self.mode, self.pinned, self.never, self.chains, self.keys)
        r.resident = {k: list(v) for k, v in self.resident.items()}
        return r

    def load_all(self, names: list[str]) -> None:
        for n in names:
            if n in self.never:
                continue
            if n in self.pinned or not self.offload:
                self._load(n)

    def _load(self, name: str) -> None:
        keys = self.keys.get(name)
        if keys is None:
            keys = self.keys[name] = [self.tl.alloc(b, weight=True) for b in self.sizes[name]]
        else:
            for k, b in zip(keys, self.sizes[name], strict=True):
                self.tl.alloc(b, weight=True, key=k)
        self.resident[name] = list(keys)
        self.log.append((self.tl.stage, "load", name))

    def _unload(self, name: str) -> None:
        for k in self.resident.pop(name, []):
            self.tl.free(k)
        self.log.append((self.tl.stage, "offload", name))

    def use(self, name: str) -> None:
        """``name`` is about to run. With model offload, as accelerate's ``CpuOffload.pre_forward``
        does for the hooks ``enable_model_cpu_offload`` chains: the model *before* ``name`` in its
        pipeline's ``model_cpu_offload_seq`` goes back to the CPU if it is on the GPU, then ``name``
        comes to the GPU. Nothing else moves: a model that ran out of the chain's order, or another
        pipeline's model, stays until :meth:`finish_pipeline` (the worker's refiner text encoder, run
        before the base pipeline, stays through the base UNet; the VAE that decoded the last image
        stays through the next one's UNets)."""
        if name in self.never or self.mode == "sequential":
            return
        if self.mode == "model":
            prev = self.prev.get(name)
            if prev is not None and prev in self.resident and prev not in self.pinned:
                self._unload(prev)
        if name not in self.resident:
            self._load(name)

    def finish_pipeline(self, prefix: str) -> None:
        """The end of a pipeline call: diffusers' ``maybe_free_model_hooks`` runs
        ``enable_model_cpu_offload`` again, which moves every model of *that* pipeline to the CPU."""
        if self.mode != "model":
            return
        for n in list(self.resident):
            if n.startswith(prefix + ".") and n not in self.pinned:
                self._unload(n)

    def swap_dtype(self, name: str, new_sizes: list[int]) -> Callable[[], None]:
        """``module.to(dtype)``: each tensor gets a new copy, then the old one is freed; returns the
        undo (the pipeline casts the VAE back after decoding), which puts the model back under its
        own keys."""
        old_keys = self.resident.get(name, [])
        old_sizes = self.sizes[name]
        new_keys = []
        for i, b in enumerate(new_sizes):
            new_keys.append(self.tl.alloc(b, weight=True))
            if i < len(old_keys):
                self.tl.free(old_keys[i])
        self.resident[name] = new_keys

        def undo() -> None:
            back = []
            for i, k in enumerate(self.resident.get(name, [])):
                back.append(self.tl.alloc(old_sizes[i], weight=True,
                                          key=old_keys[i] if i < len(old_keys) else None))
                self.tl.free(k)
            self.resident[name] = back
        return undo

    @contextlib.contextmanager
    def sequential_hooks(self, roots: list[torch.nn.Module]) -> Iterator[None]:
        """accelerate's ``AlignDevicesHook`` as ``enable_sequential_cpu_offload`` installs it: a module
        with parameters of its own gets them on the GPU before its forward and loses them after
        (``place_submodules=False``: only its direct parameters); buffers stay where they are."""
        if self.mode != "sequential":
            yield
            return
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        ids = {id(m) for r in roots for m in r.modules()}
        held: dict[int, list[list[int]]] = {}

        def pre(mod, args):  # noqa: ANN001, ANN202
            if id(mod) in ids and mod._parameters:
                keys = [self.tl.alloc(p.numel() * p.element_size(), weight=True)
                        for p in mod._parameters.values() if p is not None]
                held.setdefault(id(mod), []).append(keys)

        def post(mod, args, out):  # noqa: ANN001, ANN202
            stack = held.get(id(mod))
            if stack:
                for k in stack.pop():
                    self.tl.free(k)

        handles = [register_module_forward_pre_hook(pre), register_module_forward_hook(post)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
