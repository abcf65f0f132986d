"""The one event vocabulary of the journals: every kind, who writes it, and its keys.

``stress.journal.Journal`` refuses a kind that is not listed here, so a new event is added here (and in
docs/journal.md, which a test compares with this table) before anything can write it; the fold
(``stress.record``) reads the same names. ``JOURNAL_FORMAT`` is written into the first event of each
journal (``run_start.format`` / ``soak_start.format``); readers of a newer format than they know say so.
"""
from __future__ import annotations

from dataclasses import dataclass

JOURNAL_FORMAT = 2          # 2: run_start carries `format`; the vocabulary is checked on write


@dataclass(frozen=True)
class Kind:
    writer: str
    keys: tuple[str, ...]   # the keys it carries besides the envelope (`ev`, `t`); readers ignore others


def _k(writer: str, keys: str) -> Kind:
    return Kind(writer, tuple(keys.split()))


# A run's journal (artifacts/<run-id>/journal.jsonl).
RUN: dict[str, Kind] = {
    "run_start": _k("runner", "format run_id scenario scenario_sha256 argv stress_version pid resumed base_dir"),
    "environment": _k("runner", "env"),
    "plan": _k("runner", "images batches resolutions steps refiner"),
    "phase": _k("runner", "phase state"),
    "worker_start": _k("runner", "worker pid reason"),
    "worker_ready": _k("runner", "worker pid load_s device dtype models torch cuda cpu_threads cpu_threads_reason "
                                  "omp_wait_policy"),
    "worker_exit": _k("runner", "worker pid returncode signal reason stderr_tail"),
    "image_start": _k("runner", "index seed width height worker"),
    "stage": _k("worker", "index stage s"),
    "progress": _k("runner", "worker index stage step total"),
    "alloc": _k("worker", "index at allocated reserved peak_allocated peak_reserved num_alloc_retries num_ooms "
                          "inactive_split free total rss peak_rss"),
    "image": _k("runner", "index outcome error seed width height steps refiner_steps cfg timings file"),
    "source": _k("samplers", "src status reason fields gpu gpus driver via tried session"),
    "gpu_static": _k("samplers", "gpu name uuid serial vbios bus_id driver cuda_driver persistence_mode memory_total "
                                 "bar1_total pcie_max_gen pcie_max_width power_default_limit_w nvml_version "
                                 "rebar_active pci_bar_sizes"),
    "nvml": _k("samplers", "gpu"),
    "host": _k("samplers", "ma mu su mt st ld wk ds dsgone dsnew ctxgone"),
    "xid": _k("samplers", "gpu xid category description source raw bus pid name suppressed"),
    "kmsg": _k("samplers", "line suppressed cut cls"),
    "monitors_summary": _k("runner", "ticks skipped overhead_cpu_s cpu_pct max_late_s events gpus_lost xid kmsg"),
    "preflight": _k("runner", "status reason gpu resolutions"),
    "resume": _k("runner", "previous_end torn_tail done in_flight"),
    "load_failed": _k("runner", "worker error traceback"),
    "models_reloaded": _k("runner", "worker s ok error"),
    "probe": _k("probes", "phase kind rep visit status latency_s metrics reason repeat"),
    "probe_repeat": _k("probes", "phase visit repeat of kinds"),
    "verdict": _k("runner", "verdict reasons exit_code details"),
    "run_end": _k("runner", "status images_ok images_skipped images_failed wall_s"),
    "signal_deferred": _k("runner", "signal"),
    "warning": _k("runner", "message"),
    "journal_low_space": _k("journal", "reserve_released note shed_ticks unwritten"),
    "evidence_boot": _k("evidence", "boot_id resumed"),
    "previous_boot": _k("evidence", "boot_id current_boot_id items"),
    "capture": _k("evidence", "trigger dir items wall_s"),
    "witness": _k("evidence", "status address reason"),
    "experiment": _k("runner", "cell env settings"),
    "env_readback": _k("runner", "target pid worker phase visit kind status expected found wrong reason"),
    "setting": _k("runner", "name gpu action wanted before after unit readback command status reason changed"),
    "cycle": _k("runner", "index do at state off_s seconds status method readback reason s"),
}

# A soak's ledger (<state-dir>/soak.jsonl).
LEDGER: dict[str, Kind] = {
    "soak_start": _k("soak", "format soak_id pid boot_id"),
    "config": _k("soak", "changes"),
    "iteration_start": _k("soak", "iteration attempt scenario folder resume_run"),
    "iteration_end": _k("soak", "iteration attempt scenario run_id run_dir report_dir verdict reasons exit_code "
                                "status started_at ended_at wall_s images_ok images_failed adopted"),
    "iteration_interrupted": _k("soak", "iteration attempt scenario run_id run_dir reason cause harness rebooted "
                                        "again"),
    "thinned": _k("soak", "run_dir freed_bytes"),
    "warning": _k("soak", "message"),
    "soak_end": _k("soak", "status exit_code message"),
}

# What the worker may send up its pipe to be journalled (the supervisor relays these kinds only).
FROM_WORKER = frozenset({"stage", "alloc"})
