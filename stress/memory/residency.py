"""Which weights are on the GPU when: residency events on a trace's timeline (used by
:mod:`stress.memory.pipeline`; the offload modes are described in docs/plan.md)."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch

from stress.memory.memtrace import Timeline




class Residency:
    """Which weights are on the GPU when, as events on the timeline (see module docstring).

    ``mode``: ``resident`` (everything on the GPU for the session), ``model`` (``cpu_offload``: one
    model at a time) or ``sequential`` (``sequential_offload``: each module's own weights while its
    forward runs, through :meth:`sequential_hooks`). ``pinned``: models on the GPU in every mode
    (diffusers' ``_exclude_from_cpu_offload``: the SD 1.x safety checker). ``never``: models that
    never go to the GPU (the text encoders with ``precomputed_embeds``)."""

    def __init__(self, timeline: Timeline, sizes: dict[str, list[int]], offload: bool | str,
                 pinned: frozenset = frozenset(), never: frozenset = frozenset()):
        self.tl = timeline
        self.sizes = sizes                          # "base.unet" -> per-tensor bytes
        self.mode = offload if isinstance(offload, str) else ("model" if offload else "resident")
        self.offload = self.mode != "resident"
        self.pinned, self.never = pinned, never
        self.resident: dict[str, list[int]] = {}    # name -> timeline keys

    def continue_on(self, timeline: Timeline) -> "Residency":
        """The same residency state, recording on a forked timeline."""
        r = Residency(timeline, self.sizes, self.mode, self.pinned, self.never)
        r.resident = {k: list(v) for k, v in self.resident.items()}
        return r

    def load_all(self, names: list[str]) -> None:
        for n in names:
            if n in self.never:
                continue
            if n in self.pinned or not self.offload:
                self._load(n)

    def _load(self, name: str) -> None:
        self.resident[name] = [self.tl.alloc(b, weight=True) for b in self.sizes[name]]

    def _unload(self, name: str) -> None:
        for k in self.resident.pop(name, []):
            self.tl.free(k)

    def use(self, name: str) -> None:
        """``name`` is about to run."""
        if name in self.resident or name in self.never or self.mode == "sequential":
            return
        if self.mode == "model":
            for other in list(self.resident):
                if other not in self.pinned:
                    self._unload(other)
        self._load(name)

    def swap_dtype(self, name: str, new_sizes: list[int]) -> Callable[[], None]:
        """``module.to(dtype)``: each tensor gets a new copy, then the old one is freed; returns the
        undo (the pipeline casts the VAE back after decoding)."""
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
                back.append(self.tl.alloc(old_sizes[i], weight=True))
                self.tl.free(k)
            self.resident[name] = back
        return undo

    def finish_image(self) -> None:
        """diffusers' ``maybe_free_model_hooks`` offloads every model after each pipeline call."""
        if self.mode == "model":
            for n in list(self.resident):
                if n not in self.pinned:
                    self._unload(n)

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
