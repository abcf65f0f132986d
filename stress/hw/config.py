"""The ``monitors:`` section of a scenario. Owned by the hw package (docs/monitors.md)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MonitorsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    interval: float = Field(0.5, ge=0.05, le=60, description="seconds between samples")
    nvml: bool = True
    kernel_log: bool = True
    host: bool = True
    allocator: bool = True
    xid_events: bool = Field(True, description="wait on NVML Xid events in a thread of their own")
    gpus: list[int] | None = Field(None, description="GPU indices to sample; default: all")
    gpu_processes: bool = Field(True, description="record graphics/compute processes and their GPU memory")
    slow_interval: float = Field(10.0, ge=0.05, le=3600, description=(
        "seconds between reads of slow-changing fields (PCIe replay counter, retired pages, "
        "remapped rows, display mode, power limit)"))
    rescan_interval: float = Field(10.0, ge=0.5, le=3600, description=(
        "seconds between searches for display-server/compositor processes and worker children"))
    kernel_log_source: Literal["auto", "journalctl", "kmsg", "dmesg"] = Field("auto", description=(
        "auto tries journalctl, /dev/kmsg, then dmesg, and takes the first one readable"))
    kmsg_rate: float = Field(20.0, gt=0, le=10000, description=(
        "kernel-log lines (and Xids) per second recorded at most, after a burst of 200; "
        "the rest are counted, so a flood from a broken driver cannot fill the disk"))
