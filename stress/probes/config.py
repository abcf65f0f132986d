"""The ``probes:`` section of a scenario. Owned by the probes package (docs/probes.md)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Phase = Literal["baseline", "during", "cycle", "after", "after-exit"]   # cycle: after a desktop cycle (stress.cycles)
ProbeKind = Literal["screenshot", "decode", "display", "display-wayland", "viewer"]


class ProbesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    phases: list[Phase] = Field(default_factory=lambda: ["baseline", "during", "after", "after-exit"])
    kinds: list[ProbeKind] = Field(default_factory=lambda: ["screenshot", "decode", "display"])
    repetitions: int = Field(5, ge=1, le=1000, description="probes of each kind per phase visit")
    during_every: int = Field(2, ge=1, le=1_000_000, description="run the 'during' phase every K images")
    timeout: float = Field(20.0, gt=0, le=3600, description="seconds before one probe is recorded as a timeout (at most 3600)")
    keep_screenshots: Literal["none", "failed", "all"] = "failed"
    viewer_command: list[str] | None = Field(None, description="external viewer, e.g. ['feh', '{path}']")
    slowdown_ratio: float = Field(1.5, gt=1.0, le=1000, description="median ratio after/baseline that counts as a slowdown")
    alpha: float = Field(0.01, gt=0, lt=1, description="significance level of the Mann-Whitney U test")
    repeat_borderline: int = Field(1, ge=0, le=10, description=(
        "after a phase whose latency is borderline against baseline (a large ratio, not significant), "
        "repeat that phase's borderline probe kinds up to N more times before the verdict; 0: never"))
    # ---- added with the probes themselves ----
    display: str | None = Field(None, description=(
        "X display to probe, e.g. ':0' (default: $DISPLAY, or the Wayland session of $WAYLAND_DISPLAY)"))
    screenshot_backend: Literal["auto", "x11", "grim", "portal", "weston", "kwin"] = Field("auto", description=(
        "auto: mss on X11; on Wayland by compositor: grim (wlroots), weston-screenshooter (weston), "
        "KWin's ScreenShot2 (kwin_wayland), else the xdg-desktop-portal Screenshot call"))
    display_image: Literal["pattern", "latest-output"] = Field("pattern", description=(
        "what the display round trip shows: a generated test pattern, or the newest output image"))
    display_size: int = Field(256, ge=16, le=4096, description="side of the round trip's window in pixels")
    display_wait: float = Field(5.0, gt=0, le=3600, description=(
        "seconds the round trip waits for its window to appear correctly on screen"))
    pixel_tolerance: int = Field(2, ge=0, le=255, description=(
        "per-channel difference still counted as equal (raise to ~8 on 16-bit displays)"))
    mismatch_threshold: float = Field(0.0, ge=0, lt=1, description=(
        "share of differing pixels above which a round trip counts as a mismatch"))
    flat_tolerance: int = Field(3, ge=0, le=255, description=(
        "a frame whose every channel spans at most this many levels is a single flat colour"))
    decode_limit: int = Field(64, ge=0, le=1_000_000, description="decode at most the N newest outputs per probe; 0: all")
    thumbnail_size: int = Field(256, ge=16, le=4096, description="thumbnail side the decode probe makes")

    @model_validator(mode="after")
    def _consistent(self) -> "ProbesConfig":
        if "viewer" in self.kinds:
            if not self.viewer_command:
                raise ValueError("probe kind 'viewer' needs viewer_command, e.g. ['feh', '{path}']")
            if not any("{path}" in part for part in self.viewer_command):
                raise ValueError("viewer_command must contain '{path}' where the image file goes "
                                 f"(got {self.viewer_command})")
        if self.display_wait >= self.timeout:
            raise ValueError(f"display_wait ({self.display_wait:g} s) must be shorter than timeout "
                             f"({self.timeout:g} s) so that a slow window is a mismatch, not a timeout")
        if self.phases and "baseline" not in self.phases:
            raise ValueError("phases must include 'baseline': every other phase is compared against it")
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"kinds lists a probe kind twice (got {self.kinds})")
        return self
