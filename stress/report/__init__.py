"""Reports for driver tickets: report.json (the one source), report.html, ticket.md and a bundle.

The runner calls :func:`write_reports` at the end of every run; ``gpu-stress report RUN_DIR`` calls it
for any run directory, including one left by a crash or a power loss. Format: docs/report-format.md.
"""
from __future__ import annotations

import gc
import os
import shutil
import tempfile
from pathlib import Path

from stress.errors import StressError
from stress.background import Background, can_fork
from stress.report.bundle import BUNDLE_CAP_BYTES, NVIDIA_BUG_REPORT_TIMEOUT_S, capture_nvidia_bug_report, \
    prepared_journal, redact_gzip_text, write_bundle
from stress.report.build import build_report, dumps_report, run_redactor
from stress.report.schema import SCHEMA_VERSION, report_json_schema, validate_report

__all__ = ["write_reports", "build_report", "report_json_schema", "validate_report", "SCHEMA_VERSION",
           "BUNDLE_CAP_BYTES"]


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:  # a full disk: no temp file left behind, one line for the user
        try:
            tmp.unlink()
        except OSError:
            pass
        raise StressError(f"{path.parent}: cannot write {path.name} there ({exc.strerror or exc}); "
                          "give --out DIR on a disk with space") from None


def _fallback_html(run_id: str, error: str) -> str:
    import html

    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>stress report {html.escape(run_id)}</title>"
            f"</head><body><h1>Report for {html.escape(run_id)}</h1><p>The page could not be rendered "
            f"({html.escape(error)}). report.json next to this file has every figure.</p></body></html>\n")


def write_reports(run_dir: os.PathLike | str, out_dir: os.PathLike | str, *, include_prompts: bool = False,
                  include_screenshots: bool = False, bundle: bool = True, nvidia_bug_report: bool = False,
                  include_thumbnails: bool = False, bundle_cap_bytes: int = BUNDLE_CAP_BYTES,
                  nvidia_bug_report_timeout: float = NVIDIA_BUG_REPORT_TIMEOUT_S) -> dict:
    """Write report.json, report.html, ticket.md and (by default) ``<run-id>.tar.gz`` into ``out_dir``.

    Returns ``{"report_json", "report_html", "ticket_md", "bundle" (Path or None), "warnings": [str]}``.
    Never raises on a partial or damaged run directory (what is missing is in the report); raises
    :class:`StressError` (one line) when ``run_dir`` has no journal or ``out_dir`` cannot be written.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    # The bundle's redacted, compressed journal copy (a third of the work on a long run) is made in a
    # second process while report.json and the charts are made here. It starts first, with the redactor
    # the report will make (run_redactor, from the journal without its sampler ticks): the second core
    # is not left idle during the report's fold, and the fork copies a small heap, not the record.
    journal_job: list[Background] = []
    if bundle and can_fork():
        journal_job.append(Background(lambda: prepared_journal(
            run_dir, run_redactor(run_dir, include_prompts=include_prompts))))
    # The charts' imports (matplotlib: 0.3 s) are made now, beside the journal copy, not after the
    # report when this process would make them alone; a failing import is reported where it is used.
    try:
        import stress.report.charts  # noqa: F401
    except Exception:  # noqa: BLE001 - report.html falls back to a page without charts, with the reason
        pass

    # The record holds every sampler tick as read (hundreds of thousands of dicts and lists, none in a
    # cycle): with the cyclic GC on, each of its full collections while the report is made would walk
    # them all again (0.6 s on an 8-hour journal). It runs again when the report is written.
    gc_was = gc.isenabled()
    gc.disable()
    try:
        return _write_reports(run_dir, out_dir, journal_job, include_prompts=include_prompts,
                              include_screenshots=include_screenshots, bundle=bundle,
                              nvidia_bug_report=nvidia_bug_report, include_thumbnails=include_thumbnails,
                              bundle_cap_bytes=bundle_cap_bytes, nvidia_bug_report_timeout=nvidia_bug_report_timeout)
    finally:
        for job in journal_job:
            job.cancel()
        if gc_was:
            gc.enable()


def _write_reports(run_dir: Path, out_dir: Path, journal_job: list, *, include_prompts: bool,
                   include_screenshots: bool, bundle: bool, nvidia_bug_report: bool, include_thumbnails: bool,
                   bundle_cap_bytes: int, nvidia_bug_report_timeout: float) -> dict:
    built = build_report(run_dir, include_prompts=include_prompts)
    report, redactor = built.report, built.redactor
    warnings = list(built.warnings)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StressError(f"{out_dir}: cannot write the report there ({exc.strerror or exc})") from None
    run_id = report["run_id"]
    bundle_name = f"{run_id}.tar.gz"

    # nvidia-bug-report first: what it gives decides what the ticket says is attached.
    nbr_path: Path | None = None
    nbr_note: str | None = None
    if nvidia_bug_report:
        tmp = Path(tempfile.mkdtemp(prefix="stress-nbr-"))
        try:
            raw, why = capture_nvidia_bug_report(tmp, timeout=nvidia_bug_report_timeout)
            if raw is None:
                warnings.append(why or "nvidia-bug-report.sh gave nothing")
                nbr_note = why
            else:
                nbr_path = out_dir / "nvidia-bug-report.log.gz"
                try:
                    nbr_path.write_bytes(redact_gzip_text(raw.read_bytes(), redactor))
                except (OSError, EOFError, ValueError) as exc:
                    # not gzip after all: it cannot be redacted, so it is not attached
                    warnings.append(f"nvidia-bug-report output could not be read ({exc}); not attached")
                    nbr_path = None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    attachments = []
    if bundle:
        attachments.append({"name": bundle_name, "what": "the bundle: report.html, report.json, ticket.md, journal, "
                            "scenario, environment, logs, " + ("thumbnails, " if include_thumbnails else "")
                            + "MANIFEST.sha256", "included": True})
    attachments.append({"name": "report.html", "what": "this report as one page (charts inline)", "included": True})
    if nvidia_bug_report:
        attachments.append({"name": "nvidia-bug-report.log.gz",
                            "what": "nvidia-bug-report.sh --safe-mode, run right after the workload (redacted)"
                            if nbr_path else f"not captured: {nbr_note}", "included": nbr_path is not None})
    report["attachments"] = attachments
    report["warnings"] = warnings
    try:
        validate_report(report)
    except Exception as exc:  # noqa: BLE001 - a schema slip is a bug to report, not a reason to lose the run
        warnings.append(f"report.json does not match its schema: {str(exc).splitlines()[0]}")

    json_path = out_dir / "report.json"
    _write_text(json_path, dumps_report(report))

    html_path = out_dir / "report.html"
    try:
        from stress.report.charts import render_charts
        from stress.report.html import render_html

        charts, chart_warnings = render_charts(report)
        warnings.extend(chart_warnings)
        _write_text(html_path, render_html(report, charts))
    except Exception as exc:  # noqa: BLE001
        warnings.append(f"report.html could not be rendered ({type(exc).__name__}: {exc}); wrote a minimal fallback")
        _write_text(html_path, _fallback_html(run_id, f"{type(exc).__name__}: {exc}"))

    ticket_path = out_dir / "ticket.md"
    try:
        from stress.report.ticket import render_ticket

        _write_text(ticket_path, render_ticket(report, bundle_name=bundle_name if bundle else None))
    except Exception as exc:  # noqa: BLE001
        warnings.append(f"ticket.md could not be rendered ({type(exc).__name__}: {exc}); wrote a minimal fallback")
        _write_text(ticket_path, f"# {run_id}\n\nticket.md could not be rendered ({exc}); see report.json.\n")

    bundle_path: Path | None = None
    if bundle:
        try:
            res = write_bundle(run_dir, out_dir / bundle_name,
                               {"report.json": json_path, "report.html": html_path, "ticket.md": ticket_path},
                               report, redactor, include_screenshots=include_screenshots,
                               nvidia_bug_report=nbr_path, include_thumbnails=include_thumbnails,
                               cap_bytes=bundle_cap_bytes,
                               extra_notes=[w for w in warnings],
                               prepared=journal_job[0].result() if journal_job else None)
            bundle_path = res.path
            warnings.extend(res.warnings)
        except OSError as exc:
            warnings.append(f"bundle not written: {exc.strerror or exc}")
    return {"report_json": json_path, "report_html": html_path, "ticket_md": ticket_path, "bundle": bundle_path,
            "warnings": warnings}
