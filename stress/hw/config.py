"""The ``monitors:`` section of a scenario. Owned by the hw package."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MonitorsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    interval: float = Field(0.5, ge=0.05, le=60, description="seconds between samples")
    nvml: bool = True
    kernel_log: bool = True
    host: bool = True
    allocator: bool = True
