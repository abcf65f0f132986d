"""Soaks: run scenarios again and again (a night, N times), survive anything, remember everything.

Design (docs/soak.md has the user's view):

- Each iteration is one full ``run`` of one scenario, executed by a child process
  (``python -m stress.soak --state DIR --slot K --out FOLDER``) that calls
  :func:`stress.runner.run_scenario`. A child process, not a call in this process, so that a
  supervisor that dies, hangs or leaks (e.g. an NVML call stuck in a broken driver) costs one
  iteration, not the soak; the child is in a session of its own and gets SIGTERM when the soak dies
  (PR_SET_PDEATHSIG), so a killed soak never leaves a run going on behind its back.
- The scenarios are resolved once, when the soak is created, and frozen in ``soak.json``: every
  iteration runs the same experiment even if the YAML file is edited in the meantime.
- ``soak.jsonl`` (written with :class:`stress.journal.Journal`: append-only, fsync'd) is the soak's
  record of truth; ``summary.json`` and the JUnit file are derived from it after every iteration.
- An iteration is *done* once its run has finished (a ``run_end`` other than ``interrupted``).
  Every other ending of an attempt (the soak killed with SIGKILL, a reboot, Ctrl-C, a supervisor
  that died) is recorded as an interruption, and the iteration is run again: by default from scratch
  in a fresh run directory (``--interrupted rerun``: a run cut by a reboot or a restarted worker is no
  longer one long session, which is the very thing under test), or continued with
  ``run --resume`` semantics (``--interrupted resume``). A run that finished but whose soak died
  before recording it is adopted, never redone.
- A lock file (``flock``, inherited by the child) keeps two soaks off one state directory, and makes a
  restarted soak wait for the previous soak's child to finish writing its record.
- Bounded disk: the last ``--keep`` run directories (and the first reproduction) are kept whole; the
  others are thinned to their journal, run.json and logs (``outputs/`` and ``probes/`` deleted; the
  report lives in ``reports/<run-id>/``). Below ``--min-free-disk`` the soak stops cleanly
  (exit 13, SOAK_HARNESS), between iterations or by interrupting the current one.
"""
from __future__ import annotations

from stress.soak.ledger import SoakState, classify_run, find_run_dir, replay
from stress.soak.loop import Soak, SoakResult
from stress.soak.state import (FINISHED_STATUSES, ITERATIONS_DIR, JOURNAL_FILE, LOCK_FILE, STATE_FILE, SUMMARY_FILE,
                               SoakHarnessError, boot_id, default_state_dir, free_bytes, prepare_state, read_config,
                               scenario_entries)

__all__ = ["FINISHED_STATUSES", "ITERATIONS_DIR", "JOURNAL_FILE", "LOCK_FILE", "STATE_FILE", "SUMMARY_FILE", "Soak",
           "SoakHarnessError", "SoakResult", "SoakState", "boot_id", "classify_run", "default_state_dir",
           "find_run_dir", "free_bytes", "prepare_state", "read_config", "replay", "scenario_entries"]
