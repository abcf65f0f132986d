"""What a trace gives: per image, the allocation sequences (prefix, image, the steady image under model
offload) and the facts of each stage (made by :mod:`stress.memory.pipeline`, read by
:mod:`stress.memory.predict` and :mod:`stress.memory.measured`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from stress.memory.memtrace import Timeline


@dataclass
class AttentionCall:
    module: str
    kind: str          # "self" or "cross"
    batch: int
    heads: int
    queries: int
    keys: int


@dataclass
class StageInfo:
    name: str
    component: str               # the network that runs in this stage
    flops: int = 0               # as traced (the whole stage as run once)
    evaluations: int = 1         # network forwards in the trace
    attention: list[AttentionCall] = field(default_factory=list)
    peak: int = 0                # live bytes at the stage's peak (weights included)
    weights_at_peak: int = 0
    peak_module: str = ""


@dataclass
class ImageTrace:
    """One image (one batch) at one resolution, after the session's prefix (loading the weights,
    encoding the prompts once): the allocation sequences of both and the facts of each stage. With
    model offload also ``steady``: the next image, which starts with what this one left on the GPU
    (the decoding VAE) and with no text encoder there, as every later image of a session does."""

    width: int
    height: int
    batch: int
    prefix: Timeline           # load + text encoding: once a session, shared by every resolution
    image: Timeline            # the first image; starts where the prefix ended
    stages: dict[str, StageInfo]
    seconds: float
    leaked: int = 0            # bytes the image left allocated (0 unless the tracer missed a free)
    steady: Timeline | None = None   # model offload: the image after it; starts where ``image`` ended
    # (part, stage, "load" | "offload", model): what moved to and from the GPU, in order; part is
    # "prefix", "image" or "steady"
    residency: list[tuple[str, str, str, str]] = field(default_factory=list)

    def _top(self) -> Timeline:
        top = self.prefix
        for t in (self.image, self.steady):
            if t is not None and t.peak >= top.peak:
                top = t
        return top

    @property
    def peak(self) -> int:
        return self._top().peak

    @property
    def peak_stage(self) -> str:
        return self._top().peak_stage

    @property
    def peak_module(self) -> str:
        return self._top().peak_module

    @property
    def peak_weights(self) -> int:
        return self._top().peak_weights

    def rest_events(self, workspace: bool = True) -> list[tuple[int, int]]:
        """The events after the prefix: the image, then the steady one (model offload)."""
        parts = [self.image] + ([self.steady] if self.steady is not None else [])
        return [e for t in parts for e in (t.events if workspace else t.events_without_workspace())]

    def later_events(self, workspace: bool = True) -> list[tuple[int, int]]:
        """An image of this resolution later in a session, after any other image: the steady one
        where there is one (it follows any image's end state), else the image itself."""
        t = self.steady if self.steady is not None else self.image
        return list(t.events) if workspace else t.events_without_workspace()

    @property
    def events(self) -> list[tuple[int, int]]:
        """Every allocation event, the estimated transient conv workspaces included."""
        return self.prefix.events + self.rest_events()

    @property
    def events_without_workspace(self) -> list[tuple[int, int]]:
        return self.prefix.events_without_workspace() + self.rest_events(workspace=False)
