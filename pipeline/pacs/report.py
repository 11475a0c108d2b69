"""The reports of a nightly PACS run: ``summary.csv``, ``failures.csv`` and ``skipped.csv`` as for a
folder archive (:mod:`pipeline.archive_report`), with per study what the PACS stages did.

``summary.csv`` adds to the archive columns: pacs_status (done, skipped: nothing to denoise, failed),
stage (where it failed), retrieve_seconds, denoise_seconds, store_seconds, instances_retrieved,
instances_stored (sent by this run: a rerun sends only what the PACS lacks), verified_instances
(derived instances the PACS was seen to hold after storing), finished.
``skipped.csv`` lists the series not retrieved (other modality, localizers, dose reports, this tool's
own output), with the reason; files the folder pipeline left out are in each study's ``skipped.csv``.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline.archive_report import FAILURES_HEADER, SKIPPED_HEADER, SUMMARY_HEADER, study_summary
from pipeline.atomic import write_csv, write_text
from pipeline.pacs.nightly import StudyRecord

PACS_COLUMNS = ["pacs_status", "stage", "retrieve_seconds", "denoise_seconds", "store_seconds",
                "instances_retrieved", "instances_stored", "verified_instances", "finished"]


def _seconds(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def _empty_row(uid: str, status: str) -> list:
    """The archive columns of a study with no report folder: no series, no scores."""
    return [uid, status, 0, 0, 0, 0, 0] + [""] * (len(SUMMARY_HEADER) - 7)


def write_pacs_report(output_dir: Path, study_uids: Iterable[str], records: dict[str, StudyRecord | None],
                      pacs: str, query_errors: Iterable[tuple[str, str]] = ()) -> int:
    """Write the three CSVs for the studies a run's query returned; returns the number of failures
    (each query error counts as one: a failed query, a study asked for that the PACS does not have)."""
    summary, failures, skipped = [], [], []
    failures.extend([uid, "", pacs, reason] for uid, reason in query_errors)
    for uid in sorted(study_uids):
        rec = records.get(uid)
        if rec is None:
            summary.append(_empty_row(uid, "missing") + ["missing", "", "", "", "", 0, 0, 0, ""])
            failures.append([uid, "", pacs, "no record: the study task did not complete"])
            continue
        if rec.report_folder:
            row, failed = study_summary(output_dir, rec.report_folder)
            row[0] = uid
            failures.extend([uid, *f[1:]] for f in failed)
        else:
            row = _empty_row(uid, "failed" if rec.status == "failed" else "skipped")
        if rec.status == "failed":
            row[1] = "failed"
            failures.append([uid, "", rec.stage, rec.reason])
        row += [rec.status, rec.stage, _seconds(rec.retrieve_seconds), _seconds(rec.denoise_seconds),
                _seconds(rec.store_seconds), rec.instances_retrieved, rec.instances_stored, rec.verified_instances,
                rec.finished]
        summary.append(row)
        skipped.extend([uid, f"series {s['series_uid']} (not retrieved)", s["reason"]] for s in rec.not_retrieved)
    write_csv(output_dir / "summary.csv", SUMMARY_HEADER + PACS_COLUMNS, summary)
    write_csv(output_dir / "failures.csv", FAILURES_HEADER, failures)
    write_csv(output_dir / "skipped.csv", SKIPPED_HEADER, skipped)
    return len(failures)


@dataclass(frozen=True)
class RunTotals:
    """A run's studies by outcome (done, skipped, failed by this run; earlier: recorded done or skipped
    by an earlier run, not fetched again; missing: no record) and the instances this run moved."""

    outcomes: dict[str, int]
    retrieved: int
    stored: int


def run_totals(records: dict[str, StudyRecord | None], attempt: str) -> RunTotals:
    outcomes = {k: 0 for k in ("done", "skipped", "failed", "earlier", "missing")}
    for rec in records.values():
        if rec is None:
            outcomes["missing"] += 1
        elif rec.attempt != attempt and rec.status != "failed":
            outcomes["earlier"] += 1
        else:
            outcomes[rec.status] += 1
    this_run = [r for r in records.values() if r is not None and r.attempt == attempt]
    return RunTotals(outcomes, sum(r.instances_retrieved for r in this_run), sum(r.instances_stored for r in this_run))


def run_summary(totals: RunTotals, studies: int, query_errors: int, label: str, seconds: float) -> str:
    """The night's last line (what a cron mail shows first when it is read bottom-up)."""
    c = totals.outcomes
    return (f"PACS run ({label}): {studies} studies: {c['done']} done, {c['skipped']} skipped, "
            f"{c['failed'] + c['missing']} failed, {c['earlier']} done by an earlier run; {query_errors} query "
            f"error(s); instances retrieved {totals.retrieved}, stored {totals.stored}; {seconds:.0f} s")


def write_metrics(path: Path, totals: RunTotals, failures: int, seconds: float) -> None:
    """The run in the Prometheus text format, for node_exporter's textfile collector."""
    lines = ["# HELP ct_denoise_pacs_studies Studies of the last PACS run by outcome.",
             "# TYPE ct_denoise_pacs_studies gauge"]
    lines += [f'ct_denoise_pacs_studies{{outcome="{k}"}} {v}' for k, v in sorted(totals.outcomes.items())]
    for name, value, text in (
            ("failures", failures, "Lines of failures.csv of the last PACS run."),
            ("instances_retrieved", totals.retrieved, "Instances retrieved by the run."),
            ("instances_stored", totals.stored, "Derived instances sent by the run."),
            ("run_seconds", round(seconds, 1), "Wall seconds of the last PACS run."),
            ("last_run_timestamp_seconds", round(time.time()), "When the last PACS run ended (Unix time).")):
        lines += [f"# HELP ct_denoise_pacs_{name} {text}", f"# TYPE ct_denoise_pacs_{name} gauge",
                  f"ct_denoise_pacs_{name} {value}"]
    write_text(path, "\n".join(lines) + "\n")
