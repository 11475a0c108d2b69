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

from collections.abc import Iterable
from pathlib import Path

from pipeline.archive_report import FAILURES_HEADER, SKIPPED_HEADER, SUMMARY_HEADER, study_summary
from pipeline.atomic import write_csv
from pipeline.pacs.nightly import StudyRecord

PACS_COLUMNS = ["pacs_status", "stage", "retrieve_seconds", "denoise_seconds", "store_seconds",
                "instances_retrieved", "instances_stored", "verified_instances", "finished"]


def _seconds(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def write_pacs_report(output_dir: Path, study_uids: Iterable[str], records: dict[str, StudyRecord | None],
                      pacs: str, query_error: str = "") -> int:
    """Write the three CSVs for the studies a run's query returned; returns the number of failures
    (a failed query counts as one)."""
    summary, failures, skipped = [], [], []
    if query_error:
        failures.append(["", "", pacs, query_error])
    for uid in sorted(study_uids):
        rec = records.get(uid)
        if rec is None:
            summary.append([uid, "missing", 0, 0, 0, 0, 0, "", "", "", "", "", "", "", "", "", 0, 0, 0, ""])
            failures.append([uid, "", pacs, "no record: the study task did not complete"])
            continue
        if rec.report_folder:
            row, failed = study_summary(output_dir, rec.report_folder)
            row[0] = uid
            failures.extend([uid, *f[1:]] for f in failed)
        else:
            row = [uid, "failed" if rec.status == "failed" else "skipped", 0, 0, 0, 0, 0, "", "", "", ""]
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
