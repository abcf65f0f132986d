"""What a trace of tensors cannot see: the caching allocator, the CUDA context, library workspaces.

Three parts, each small and documented (docs/plan.md has the sources):

1. :class:`CachingAllocatorModel` replays a trace's allocation sequence through a model of PyTorch's
   CUDA caching allocator (``c10/cuda/CUDACachingAllocator.cpp``, default settings): request sizes
   rounded up to 512 B; requests up to 1 MiB served from 2 MiB segments ("small pool"), requests up
   to 10 MiB from 20 MiB segments, larger ones from segments rounded up to 2 MiB; best-fit search
   among cached free blocks of the pool; a block is split when the rest is >= 512 B (small pool)
   or > 1 MiB (large pool); freed blocks merge with free neighbours of the same segment; segments
   are kept (cached) and only released, all unused ones at once, when a new segment would not fit
   (then the request is retried once; failing again is the OOM). Its peaks are what
   ``torch.cuda.max_memory_allocated()`` / ``max_memory_reserved()`` report. Not modelled:
   ``expandable_segments``, ``max_split_size_mb``, ``roundup_power2_divisions``, several streams.
2. cuBLAS keeps one workspace per (handle, stream), allocated through the caching allocator on the
   first matmul and never freed: 4096 KiB x 2 + 16 KiB x 8 (8.125 MiB), 32 MiB on Hopper/Blackwell
   (``CUBLAS_WORKSPACE_CONFIG`` default in ATen's CublasHandlePool.cpp), plus a 1 MiB cuBLASLt
   workspace (``CUBLASLT_WORKSPACE_SIZE`` default). Added to the replay as one permanent allocation.
3. cuDNN's convolution workspace: transient, allocated through the caching allocator around each
   convolution, its size chosen at run time from cuDNN's plans, so it cannot be derived from shapes.
   PyTorch tries the plans in order and moves on to the next one when a workspace allocation runs
   out of memory (``try_plans`` in ATen's cudnn/Conv_v8.cpp), so a big workspace on a big GPU is
   opportunistic: it raises the peak a big GPU shows, not the memory a run needs. Modelled as a
   transient allocation of ``conv_workspace_factor`` x the convolution's input after every
   convolution (an estimate; in ``predicted_peak``), and a small fixed minimum (in ``required``).
4. Outside the allocator: the CUDA context (driver state, lazily loaded kernels of CUDA, cuBLAS and
   cuDNN): an estimate. Both estimates are labelled in every report and can be overridden.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Iterable

MiB = 1 << 20
GiB = 1 << 30

K_MIN_BLOCK = 512
K_SMALL_SIZE = 1 * MiB
K_SMALL_BUFFER = 2 * MiB
K_LARGE_BUFFER = 20 * MiB
K_MIN_LARGE_ALLOC = 10 * MiB
K_ROUND_LARGE = 2 * MiB


def round_size(n: int) -> int:
    """The caching allocator's request rounding (``round_size``)."""
    return K_MIN_BLOCK if n < K_MIN_BLOCK else K_MIN_BLOCK * ((n + K_MIN_BLOCK - 1) // K_MIN_BLOCK)


def segment_size(n: int) -> int:
    """Size of the segment ``cudaMalloc``'d for a rounded request that no cached block fits."""
    if n <= K_SMALL_SIZE:
        return K_SMALL_BUFFER
    if n < K_MIN_LARGE_ALLOC:
        return K_LARGE_BUFFER
    return K_ROUND_LARGE * ((n + K_ROUND_LARGE - 1) // K_ROUND_LARGE)


class _Block:
    __slots__ = ("addr", "size", "small", "allocated", "prev", "next")

    def __init__(self, addr: int, size: int, small: bool):
        self.addr, self.size, self.small = addr, size, small
        self.allocated = False
        self.prev: _Block | None = None
        self.next: _Block | None = None


@dataclass
class ReplayResult:
    peak_allocated: int
    peak_reserved: int
    segments: int
    oom: bool = False
    oom_event: int | None = None         # index of the event that failed
    oom_request: int = 0                 # bytes requested when it failed
    reserved_at_oom: int = 0


class CachingAllocatorModel:
    """A replay model of the CUDA caching allocator (see the module docstring)."""

    def __init__(self, capacity: int | None = None):
        self.capacity = capacity
        self._free: dict[bool, list[tuple[int, int]]] = {True: [], False: []}   # (size, addr) sorted
        self._by_addr: dict[int, _Block] = {}
        self._live: dict[int, _Block] = {}
        self._next_addr = 0
        self.reserved = 0
        self.allocated = 0
        self.peak_reserved = 0
        self.peak_allocated = 0
        self.segments = 0
        self.oom = False
        self.oom_event: int | None = None
        self.oom_request = 0
        self.reserved_at_oom = 0
        self._event = 0

    # ---- free lists ----
    def _insert_free(self, b: _Block) -> None:
        bisect.insort(self._free[b.small], (b.size, b.addr))
        self._by_addr[b.addr] = b

    def _remove_free(self, b: _Block) -> None:
        lst = self._free[b.small]
        i = bisect.bisect_left(lst, (b.size, b.addr))
        if i < len(lst) and lst[i] == (b.size, b.addr):
            lst.pop(i)

    def _best_fit(self, small: bool, size: int) -> _Block | None:
        lst = self._free[small]
        i = bisect.bisect_left(lst, (size, -1))
        if i == len(lst):
            return None
        _, addr = lst.pop(i)
        return self._by_addr[addr]

    # ---- segments ----
    def _new_segment(self, small: bool, size: int) -> _Block | None:
        seg = segment_size(size)
        if self.capacity is not None and self.reserved + seg > self.capacity:
            self._release_cached()
            if self.reserved + seg > self.capacity:
                return None
        b = _Block(self._next_addr, seg, small)
        self._next_addr += seg
        self.reserved += seg
        self.segments += 1
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        return b

    def _release_cached(self) -> None:
        """``release_cached_blocks``: give back every segment that is entirely free."""
        for small in (True, False):
            keep = []
            for size, addr in self._free[small]:
                b = self._by_addr[addr]
                if b.prev is None and b.next is None:
                    self.reserved -= b.size
                    self.segments -= 1
                    del self._by_addr[addr]
                else:
                    keep.append((size, addr))
            self._free[small] = keep

    # ---- the allocator API ----
    def clone(self, capacity: int | None) -> "CachingAllocatorModel":
        """A copy of this allocator's state (blocks, free lists, peaks) that goes on with ``capacity``.
        Exact when no segment was refused or released so far, i.e. ``peak_reserved <= capacity``:
        the allocator then did the same with either capacity (the planner replays the session's
        prefix once and continues every bisection step from it)."""
        c = CachingAllocatorModel.__new__(CachingAllocatorModel)
        c.__dict__.update(self.__dict__)
        c.capacity = capacity
        new: dict[int, _Block] = {}
        for b in self._by_addr.values():
            nb = _Block(b.addr, b.size, b.small)
            nb.allocated = b.allocated
            new[id(b)] = nb
        for b in self._by_addr.values():
            nb = new[id(b)]
            nb.prev = new.get(id(b.prev)) if b.prev is not None else None
            nb.next = new.get(id(b.next)) if b.next is not None else None
        c._by_addr = {addr: new[id(b)] for addr, b in self._by_addr.items()}
        c._live = {k: new[id(b)] for k, b in self._live.items()}
        c._free = {True: list(self._free[True]), False: list(self._free[False])}
        return c

    def malloc(self, key: int, nbytes: int) -> bool:
        """Allocate ``nbytes`` for ``key``; False when it would not fit in ``capacity``."""
        self._event += 1
        size = K_MIN_BLOCK if nbytes < K_MIN_BLOCK else K_MIN_BLOCK * ((nbytes + K_MIN_BLOCK - 1) // K_MIN_BLOCK)
        small = size <= K_SMALL_SIZE
        lst = self._free[small]
        i = bisect.bisect_left(lst, (size, -1))
        block = self._by_addr[lst.pop(i)[1]] if i < len(lst) else None
        if block is None:
            block = self._new_segment(small, size)
            if block is None:
                if not self.oom:
                    self.oom, self.oom_event, self.oom_request = True, self._event - 1, nbytes
                    self.reserved_at_oom = self.reserved
                # Go on as if it had fitted, so later figures stay meaningful.
                cap, self.capacity = self.capacity, None
                block = self._new_segment(small, size)
                self.capacity = cap
                assert block is not None
        remaining = block.size - size
        if (small and remaining >= K_MIN_BLOCK) or (not small and remaining > K_SMALL_SIZE):
            rest = _Block(block.addr + size, remaining, small)
            rest.prev, rest.next = block, block.next
            if block.next is not None:
                block.next.prev = rest
            block.next = rest
            block.size = size
            self._insert_free(rest)
        block.allocated = True
        self._by_addr[block.addr] = block
        self._live[key] = block
        self.allocated += block.size
        if self.allocated > self.peak_allocated:
            self.peak_allocated = self.allocated
        return not (self.oom and self.oom_event == self._event - 1)

    def free(self, key: int) -> None:
        self._event += 1
        block = self._live.pop(key, None)
        if block is None:
            return
        block.allocated = False
        self.allocated -= block.size
        # Merge with free neighbours in the same segment.
        for nb in (block.prev, block.next):
            if nb is not None and not nb.allocated:
                self._remove_free(nb)
                del self._by_addr[nb.addr]
                if nb is block.prev:
                    nb.size += block.size
                    nb.next = block.next
                    if block.next is not None:
                        block.next.prev = nb
                    del self._by_addr[block.addr]
                    block = nb
                else:
                    block.size += nb.size
                    block.next = nb.next
                    if nb.next is not None:
                        nb.next.prev = block
                self._by_addr[block.addr] = block
        self._insert_free(block)

    def replay(self, events: Iterable[tuple[int, int]], *, stop_at_oom: bool = False) -> ReplayResult:
        """Replay ``events``; ``stop_at_oom``: return at the first OOM (the peaks are then partial;
        for the bisection in :func:`stress.memory.predict.minimum_capacity`, which needs only ``oom``)."""
        malloc, free = self.malloc, self.free
        for key, nbytes in events:
            if nbytes > 0:
                if not malloc(key, nbytes) and stop_at_oom:
                    break
            else:
                free(key)
        return self.result()

    def result(self) -> ReplayResult:
        return ReplayResult(self.peak_allocated, self.peak_reserved, self.segments, self.oom,
                            self.oom_event, self.oom_request, self.reserved_at_oom)


# --------------------------------------------------------------------------------------------
# Fixed overheads


CUBLAS_WORKSPACE_DEFAULT = 4096 * 1024 * 2 + 16 * 1024 * 8     # ":4096:2:16:8"
CUBLAS_WORKSPACE_HOPPER = 4096 * 8 * 1024                      # 32 MiB on sm90 / sm100 / sm120
CUBLASLT_WORKSPACE = 1024 * 1024


@dataclass
class OverheadModel:
    """The parts of device memory the trace of tensors cannot see; ``cuda_context`` and the cuDNN
    workspace are estimates (docs/plan.md gives the evidence)."""

    cuda_context: int = 512 * MiB           # estimate: bare context 274-426 MiB measured, plus the
                                            # lazily loaded cuBLAS/cuDNN kernels
    conv_workspace_factor: float = 1.0      # estimate: cuDNN workspace per convolution, x its input
    cudnn_min_workspace: int = 64 * MiB     # what the fallback plans need when memory is short
    cublas_workspace: int = CUBLAS_WORKSPACE_HOPPER + CUBLASLT_WORKSPACE
    compute_capability: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def for_gpu(cls, compute_capability: tuple[int, int] | None = None, *, context_bytes: int | None = None,
                conv_workspace_factor: float | None = None, cudnn_benchmark: bool = False) -> "OverheadModel":
        m = cls(compute_capability=compute_capability)
        if compute_capability is not None and compute_capability[0] not in (9, 10, 12):
            m.cublas_workspace = CUBLAS_WORKSPACE_DEFAULT + CUBLASLT_WORKSPACE
        if cudnn_benchmark:
            # Benchmark mode times every algorithm that fits and keeps the fastest, whatever its workspace.
            m.conv_workspace_factor = 2.0
            m.notes.append("cudnn_benchmark: conv workspace estimate doubled (2 x the input of each convolution)")
        if context_bytes is not None:
            m.cuda_context = context_bytes
        if conv_workspace_factor is not None:
            m.conv_workspace_factor = conv_workspace_factor
        return m

    def as_dict(self) -> dict:
        return {"cuda_context": self.cuda_context, "cuda_context_is_estimate": True,
                "conv_workspace_factor": self.conv_workspace_factor, "conv_workspace_is_estimate": True,
                "cudnn_min_workspace": self.cudnn_min_workspace,
                "cublas_workspace": self.cublas_workspace,
                "compute_capability": list(self.compute_capability) if self.compute_capability else None,
                "notes": list(self.notes)}
