"""The archive-level report of a nightly run: one summary row per study and every failure.

``summary.csv``: study_uid, status (ok / partial / failed / missing), series_denoised, series_skipped
(series of which every file was left out by the selection rules: localizers, dose reports, other
modalities, ...), series_failed, slices, files_skipped, autoencoder_psnr_db, best_filter,
best_filter_psnr_db, seconds, noise_estimate_hu (each series' estimated noise).
``failures.csv``: study_uid, series_uid, path, reason (inputs that could not be processed).
``skipped.csv``: study_uid, path, reason (files left out by the selection rules that no study's
report lists: not DICOM, not a CT image object, every file of a study a localizer, ...; what a
denoised study left out is in its own ``skipped.csv``).
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path

from pipeline.atomic import write_csv
from pipeline.dicom.discovery import Skipped
from pipeline.qa.series import FILTERS
from pipeline.study_run import study_output_folder

SUMMARY_HEADER = ["study_uid", "status", "series_denoised", "series_skipped", "series_failed", "slices",
                  "files_skipped", "autoencoder_psnr_db", "best_filter", "best_filter_psnr_db", "seconds",
                  "noise_estimate_hu"]
FAILURES_HEADER = ["study_uid", "series_uid", "path", "reason"]
SKIPPED_HEADER = ["study_uid", "path", "reason"]


def study_folders(study_paths: dict[str, list[Path]]) -> dict[str, Path]:
    """Study UID -> the deepest folder holding all of its files (what its DenoiseStudy scans)."""
    return {uid: Path(os.path.commonpath([str(p.parent) for p in paths])) for uid, paths in study_paths.items()}


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _weighted_psnr(rows: list[dict[str, str]], method: str) -> float | None:
    picked = [(float(r["mean_psnr_db"]), int(r["slices"])) for r in rows if r["method"] == method]
    total = sum(n for _, n in picked)
    return sum(p * n for p, n in picked) / total if total else None


def noise_column(qa: list[dict[str, str]]) -> str:
    """Each denoised series' estimated noise (HU, pipeline.inference.noise_level) from a study's qa_report.csv
    rows, in report order: ``12.3; 45.1``."""
    seen: dict[str, str] = {}
    for r in qa:
        if r.get("noise_estimate_hu"):
            seen.setdefault(r["series_uid"], r["noise_estimate_hu"])
    return "; ".join(f"{float(v):.1f}" for v in seen.values())


def study_summary(output_dir: Path, uid: str) -> tuple[list, list[list]]:
    """The summary row (``SUMMARY_HEADER``) of one study output folder and its failures
    (``FAILURES_HEADER`` rows); status ``missing`` when the folder has no provenance.json."""
    folder = study_output_folder(output_dir, uid)
    prov_path = folder / "provenance.json"
    if not prov_path.exists():
        missing = [[uid, "", "", "no output: the study task did not complete"]]
        return [uid, "missing", 0, 0, 0, 0, 0, "", "", "", "", ""], missing
    prov = json.loads(prov_path.read_text())
    left_out = _rows(folder / "skipped.csv")
    failed = [r for r in left_out if r.get("status") == "failed"]
    failures = [[uid, r["series_uid"], r["path"], r["reason"]] for r in failed]
    if prov.get("status") == "failed" and not failed:
        failures.append([uid, "", "", "no series of the study could be denoised"])
    qa = _rows(folder / "qa_report.csv")
    model = _weighted_psnr(qa, "autoencoder")
    filters = {m: v for m in FILTERS if (v := _weighted_psnr(qa, m)) is not None}
    best = max(filters, key=filters.get) if filters else ""
    failed_series = {r["series_uid"] for r in failed}
    denoised = {s["source_series_uid"] for s in prov.get("series", [])}
    skipped_series = {r["series_uid"] for r in left_out
                      if r.get("status") == "skipped" and r["series_uid"] and r["series_uid"] not in denoised}
    row = [uid, prov.get("status", "ok"), len(prov.get("series", [])), len(skipped_series - failed_series),
           len(failed_series), sum(int(s["slices"]) for s in prov.get("series", [])),
           sum(1 for r in left_out if r.get("status") == "skipped"),
           f"{model:.3f}" if model is not None else "", best, f"{filters[best]:.3f}" if best else "",
           prov.get("seconds", ""), noise_column(qa)]
    return row, failures


def write_archive_report(output_dir: Path, study_uids: Iterable[str], unattributed: Iterable[Skipped]) -> int:
    """Write ``summary.csv``, ``failures.csv`` and ``skipped.csv`` in ``output_dir``; returns the number
    of failures (failed inputs, failed or missing studies)."""
    summary, failures, skipped = [], [], []
    for s in unattributed:
        if s.status == "failed":
            failures.append(["", s.series_uid, s.path, s.reason])
        else:
            skipped.append([s.study_uid, s.path, s.reason])
    for uid in sorted(study_uids):
        row, failed = study_summary(output_dir, uid)
        summary.append(row)
        failures.extend(failed)
    write_csv(output_dir / "summary.csv", SUMMARY_HEADER, summary)
    write_csv(output_dir / "failures.csv", FAILURES_HEADER, failures)
    write_csv(output_dir / "skipped.csv", SKIPPED_HEADER, skipped)
    return len(failures)
