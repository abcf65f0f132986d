"""The ``probes:`` section of a scenario. Owned by the probes package."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Phase = Literal["baseline", "during", "after", "after-exit"]
ProbeKind = Literal["screenshot", "decode", "display", "viewer"]


class ProbesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    phases: list[Phase] = Field(default_factory=lambda: ["baseline", "during", "after", "after-exit"])
    kinds: list[ProbeKind] = Field(default_factory=lambda: ["screenshot", "decode", "display"])
    repetitions: int = Field(5, ge=1, le=1000, description="probes of each kind per phase visit")
    during_every: int = Field(2, ge=1, description="run the 'during' phase every K images")
    timeout: float = Field(20.0, gt=0, description="seconds before one probe is recorded as a timeout")
    keep_screenshots: Literal["none", "failed", "all"] = "failed"
    viewer_command: list[str] | None = Field(None, description="external viewer, e.g. ['feh', '{path}']")
    slowdown_ratio: float = Field(1.5, gt=1.0, description="median ratio after/baseline that counts as a slowdown")
    alpha: float = Field(0.01, gt=0, lt=1, description="significance level of the Mann-Whitney U test")
