"""The ``monitors:`` section of a scenario. Owned by the hw package (docs/monitors.md)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
    witness: str | None = Field(None, description=(
        "HOST:PORT of a 'gpu-stress witness' on another machine: it receives a heartbeat and the journal, "
        "and records when this host stops responding (also: run --witness)"))
    witness_period: float = Field(1.0, ge=0.05, le=60, description="seconds between heartbeats to the witness")
    capture_at_failure: bool = Field(True, description=(
        "at the first driver error or desktop probe failure, save the kernel-log tail, the compositor's "
        "log and a screenshot attempt into the run directory at once"))
    bug_report_at_failure: bool = Field(False, description=(
        "also run nvidia-bug-report.sh --safe-mode then (non-interactive, with bug_report_timeout); "
        "also: run --bug-report-at-failure"))
    bug_report_timeout: float = Field(300.0, ge=5, le=3600, description="seconds nvidia-bug-report.sh may take")

    @field_validator("witness")
    @classmethod
    def _witness_address(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from stress.witness import parse_address

        try:
            parse_address(v)
        except Exception as exc:  # noqa: BLE001 - StressError -> the validation error's message
            raise ValueError(str(exc)) from None
        return v
