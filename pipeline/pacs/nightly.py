"""One PACS study through the nightly run: retrieve into a work folder, (denoise: the folder pipeline),
store the derived series back, verify them by query, record the study as done (:class:`NightlyStudy`).

Work folder of a study (``[pacs] work_dir``/<StudyInstanceUID>/)::

    input/<NNN>/<SOPInstanceUID>.dcm   the retrieved series (renamed into place only when complete)
    retrieve.json                      what was retrieved, left out, and how long it took
    output/<StudyInstanceUID>/         DenoiseStudy's output folder (derived series and QA reports)

The record of each study (``<output_dir>/pacs_studies/<StudyInstanceUID>.json``) outlives the work
folder: a study recorded ``done`` (or ``skipped``: nothing in it to denoise) is not fetched again.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import pydicom
from pydicom.dataset import Dataset

from pipeline.atomic import atomic_directory, write_json
from pipeline.dicom.selection import SelectionRules
from pipeline.dicom.uids import path_safe_uid, uuid_uid
from pipeline.errors import InputError, describe, no_space
from pipeline.pacs.client import PacsClient, SeriesInfo
from pipeline.pacs.config import DateQuery, PacsConfig, StudyRequest
from pipeline.pacs.connect import connect
from pipeline.pacs.errors import PacsError
from pipeline.pacs.retry import with_retries
from pipeline.provenance import read_provenance

log = logging.getLogger(__name__)
T = TypeVar("T")
RECORDS = "pacs_studies"
DONE_STATES = ("done", "skipped")  # not fetched again


def folder_name(uid: str) -> str:
    """A UID as a folder name: itself where it is one, else a UID derived from it."""
    try:
        return path_safe_uid(uid, "StudyInstanceUID")
    except ValueError:
        return uuid_uid("ct-denoise pacs", uid)


@dataclass
class StudyRecord:
    """What happened to one PACS study (``status``: done, skipped or failed), kept across nights."""

    study_uid: str
    status: str
    attempt: str
    pacs: str
    reason: str = ""
    stage: str = ""                      # where it failed: query, retrieve, denoise, store, verify
    retrieve_seconds: float | None = None
    denoise_seconds: float | None = None
    store_seconds: float | None = None
    instances_retrieved: int = 0
    instances_stored: int = 0            # sent this run (a rerun sends only what the PACS lacks)
    verified_instances: int = 0          # derived instances the PACS was seen to hold
    derived_series: list[str] = field(default_factory=list)
    not_retrieved: list[dict[str, str]] = field(default_factory=list)  # series_uid, reason
    report_folder: str = ""              # name of the study's report folder in the output folder
    finished: str = ""


def record_path(output_dir: Path, study_uid: str) -> Path:
    return Path(output_dir) / RECORDS / f"{folder_name(study_uid)}.json"


def read_record(output_dir: Path, study_uid: str) -> StudyRecord | None:
    try:
        data = json.loads(record_path(output_dir, study_uid).read_text())
        return StudyRecord(**{k: v for k, v in data.items() if k in StudyRecord.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return None


def write_record(output_dir: Path, record: StudyRecord) -> None:
    record.finished = dt.datetime.now().isoformat(timespec="seconds")
    write_json(record_path(output_dir, record.study_uid), asdict(record))


def retrying(config: PacsConfig, what: str, op: Callable[[], T]) -> T:
    """``op()`` with the retries and back-off of ``config`` (see :func:`.retry.with_retries`)."""
    return with_retries(op, what, config.retries, config.backoff_seconds)


def query_studies(config: PacsConfig, query: DateQuery | StudyRequest) -> tuple[list[str], list[tuple[str, str]]]:
    """The StudyInstanceUIDs of the CT studies the PACS lists for ``query`` (a date query: sorted; studies
    asked for by name: in the order asked), and the query's one-line errors as (study UID or '', reason):
    a failed query, a study UID or an accession number the PACS has no CT study for."""
    try:
        with connect(config) as client:
            if isinstance(query, DateQuery):
                found = retrying(config, "study query", lambda: client.find_studies(query.dicom_range))
                uids = sorted({s.study_uid for s in found if query.matches(s.study_date, s.study_time)})
                errors: list[tuple[str, str]] = []
            elif query.accession_number:
                found = retrying(config, "study query by accession number",
                                 lambda: client.find_studies(accession_number=query.accession_number))
                uids = sorted({s.study_uid for s in found if s.study_uid})
                errors = [] if uids else [("", f"{config.describe()}: no CT study with accession number "
                                               f"{query.accession_number}")]
            else:
                uids, errors = [], []
                for uid in query.study_uids:
                    found = retrying(config, f"study {uid}: query", lambda u=uid: client.find_studies(study_uid=u))
                    if any(s.study_uid == uid for s in found):
                        uids.append(uid)
                    else:
                        errors.append((uid, f"{config.describe()}: no CT study with this StudyInstanceUID"))
                        log.error("study %s: not found in the PACS (no CT study with this StudyInstanceUID)", uid)
    except PacsError as exc:
        log.error("query of CT studies (%s) failed: %s", query.label(), exc)
        return [], [("", str(exc))]
    if isinstance(query, StudyRequest) and query.accession_number and not uids:
        log.error("%s: no CT study with the accession number asked for", config.describe())
    log.info("%s: %d CT studies for %s", config.describe(), len(uids), query.label())
    return uids, errors


def _header(info_sop_class: str, modality: str, image_type: tuple[str, ...], derivation: str,
            rules: SelectionRules) -> Dataset:
    """A header holding only what the query answered, for the folder pipeline's own file rules (the
    attributes a query does not give are set so that they pass)."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = info_sop_class, "1.2", modality
    ds.Rows = ds.Columns = rules.min_matrix
    if image_type:
        ds.ImageType = list(image_type)
    if derivation:
        ds.DerivationDescription = derivation
    return ds


def select_series(client: PacsClient, config: PacsConfig, study_uid: str,
                  rules: SelectionRules) -> tuple[list[tuple[SeriesInfo, int]], list[dict[str, str]]]:
    """The series worth retrieving, with their instance counts, and those left out with the reason.
    Decided from what the PACS answers (modality, SOP class, image type); where it does not say,
    the series is retrieved and the folder pipeline decides."""
    wanted, left_out = [], []
    for series in retrying(config, f"study {study_uid}: series query", lambda: client.find_series(study_uid)):
        if series.modality and series.modality.upper() != "CT":
            left_out.append({"series_uid": series.series_uid, "reason": f"modality {series.modality} is not CT"})
            continue
        instances = retrying(config, f"series {series.series_uid}: instance query",
                              lambda s=series: client.find_instances(study_uid, s.series_uid))
        reasons = [rules.file_skip_reason(_header(i.sop_class_uid, "CT", i.image_type, i.derivation, rules))
                   for i in instances if i.sop_class_uid]
        if instances and len(reasons) == len(instances) and all(reasons):
            left_out.append({"series_uid": series.series_uid, "reason": reasons[0]})
            continue
        wanted.append((series, len(instances)))
    return wanted, left_out


def retrieve_study(client: PacsClient, config: PacsConfig, study_uid: str, work: Path,
                   rules: SelectionRules) -> dict:
    """Retrieve the study's selected series into ``work/input`` (whole or not at all) and write
    ``work/retrieve.json``; returns its content. Nothing is fetched when ``input`` already exists
    (an earlier run retrieved it and failed later)."""
    summary_path = work / "retrieve.json"
    if (work / "input").is_dir() and summary_path.exists():
        log.info("study %s: retrieved by an earlier run, reused", study_uid)
        return json.loads(summary_path.read_text())
    shutil.rmtree(work / "input", ignore_errors=True)
    started = time.perf_counter()
    wanted, left_out = select_series(client, config, study_uid, rules)
    files = 0
    with atomic_directory(work / "input") as tmp:
        for k, (series, expected) in enumerate(wanted):
            folder = tmp / f"{k:03d}"

            def fetch(series: SeriesInfo = series, folder: Path = folder, expected: int = expected) -> int:
                shutil.rmtree(folder, ignore_errors=True)  # a retry starts the series afresh
                folder.mkdir()
                got = client.retrieve_series(study_uid, series.series_uid, folder)
                if got < expected:
                    raise PacsError(f"{config.describe()}: series {series.series_uid}: retrieved {got} of "
                                    f"{expected} instances", transient=True)
                return got

            files += retrying(config, f"series {series.series_uid}: retrieve", fetch)
    summary = {"study_uid": study_uid, "seconds": round(time.perf_counter() - started, 3), "instances": files,
               "series": [s.series_uid for s, _ in wanted], "not_retrieved": left_out}
    write_json(summary_path, summary)
    log.info("study %s: retrieved %d instances of %d series in %.1f s (%d series left out)", study_uid, files,
             len(wanted), summary["seconds"], len(left_out))
    return summary


def derived_instances(study_folder: Path) -> dict[tuple[str, str], dict[str, Path]]:
    """(StudyInstanceUID, SeriesInstanceUID) of each derived series -> its SOPInstanceUID -> file."""
    series: dict[tuple[str, str], dict[str, Path]] = {}
    for path in sorted(study_folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[
            "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
        series.setdefault((str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)), {})[str(ds.SOPInstanceUID)] = path
    return series


def store_study(client: PacsClient, config: PacsConfig, study_folder: Path) -> tuple[int, int, float]:
    """Store the derived series of a DenoiseStudy output folder, sending only the instances the PACS
    does not hold yet (a half-stored series is completed, never duplicated), then verify by query
    that it holds every one. Returns (instances sent, instances verified, seconds)."""
    started = time.perf_counter()
    sent = verified = 0
    for (study_uid, series_uid), files in derived_instances(study_folder).items():
        def held(s: str = series_uid, st: str = study_uid) -> set[str]:
            return {i.sop_uid for i in client.find_instances(st, s)}

        present = retrying(config, f"derived series {series_uid}: query", held)
        missing = [files[uid] for uid in sorted(set(files) - present)]
        if missing:
            retrying(config, f"derived series {series_uid}: store", lambda m=missing: client.store(m))
            sent += len(missing)
        present = retrying(config, f"derived series {series_uid}: verify", held)
        lacking = set(files) - present
        if lacking:
            raise PacsError(f"{config.describe()}: after storing, the PACS holds {len(files) - len(lacking)} of "
                            f"{len(files)} instances of derived series {series_uid}")
        verified += len(files)
    return sent, verified, time.perf_counter() - started


def publish_reports(study_folder: Path, output_dir: Path) -> Path:
    """Copy a study's reports (QA CSVs, panels, provenance; no DICOM file) to ``output_dir/<name>``,
    replacing an earlier copy; the derived DICOM files stay in the PACS only."""
    final = Path(output_dir) / study_folder.name
    if final.exists():
        shutil.rmtree(final)
    with atomic_directory(final) as tmp:
        for path in study_folder.rglob("*"):
            if path.is_file() and path.suffix.lower() != ".dcm":
                target = tmp / path.relative_to(study_folder)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    return final


def clean_work(work: Path, config: PacsConfig, succeeded: bool) -> None:
    """Remove a study's work folder (retrieved and derived files) as ``[pacs] keep_work`` says, so
    patient data does not accumulate on the processing host."""
    keep = config.keep_work == "always" or (config.keep_work == "on_failure" and not succeeded)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)


class NightlyStudy:
    """The sequence of one PACS study and its record. The caller (the Luigi task) runs the folder
    pipeline between :meth:`retrieve` and :meth:`store`, on :attr:`input_dir` into :attr:`denoise_dir`.
    A failure at any stage is recorded (status ``failed``, the stage, a one-line reason), never
    raised: one study never costs the others or the night's reports; the next run retries it."""

    def __init__(self, study_uid: str, output_dir: Path, config: PacsConfig, attempt: str, work_root: Path) -> None:
        self.output_dir, self.config = Path(output_dir), config
        self.work = Path(work_root) / folder_name(study_uid)
        self.record = StudyRecord(study_uid, "failed", attempt, config.describe())

    @property
    def input_dir(self) -> Path:
        return self.work / "input"

    @property
    def denoise_dir(self) -> Path:
        return self.work / "output"

    def retrieve(self, rules: SelectionRules) -> bool:
        """Retrieve the study into :attr:`input_dir`; False when the study is finished already
        (recorded failed, or skipped: nothing to retrieve)."""
        try:
            with connect(self.config) as client:
                fetched = retrieve_study(client, self.config, self.record.study_uid, self.work, rules)
        except Exception as exc:  # noqa: BLE001 - recorded with its stage, see _finish
            self._finish("retrieve", exc)
            return False
        self.record.retrieve_seconds, self.record.instances_retrieved = fetched["seconds"], fetched["instances"]
        self.record.not_retrieved = fetched["not_retrieved"]
        if not fetched["instances"]:
            self.skip("no series to retrieve")
            return False
        return True

    def skip(self, why: str) -> None:
        """Record the study as having nothing to denoise (it is not fetched again)."""
        self.record.status, self.record.reason = "skipped", f"nothing to denoise ({why})"
        log.info("study %s: %s", self.record.study_uid, self.record.reason)
        self._finish()

    def store(self, folders: list[Path]) -> None:
        """After the folder pipeline wrote ``folders`` (its study output folders): publish their
        reports in the output folder, store the derived series in the PACS, verify them, record."""
        record = self.record
        try:
            provenances = [read_provenance(f) for f in folders]
            record.denoise_seconds = sum(float(p.get("seconds", 0)) for p in provenances)
            record.derived_series = [s["derived_series_uid"] for p in provenances for s in p.get("series", [])]
            for folder in folders:
                record.report_folder = publish_reports(folder, self.output_dir).name
            failed = [f for p in provenances for f in p.get("left_out", []) if f.get("status") == "failed"]
            full = [f for f in failed if no_space(f["reason"])]
            if full:  # the study is retried whole, not stored with a series missing
                raise InputError(full[0]["path"], full[0]["reason"])
            if all(p.get("status", "ok") == "failed" for p in provenances):
                first = f" (first {InputError(failed[0]['path'], failed[0]['reason'])})" if failed else ""
                raise InputError(record.study_uid, f"no series of the study could be denoised{first}")
        except Exception as exc:  # noqa: BLE001
            return self._finish("denoise", exc)
        try:
            with connect(self.config) as client:
                for folder in folders:
                    sent, verified, seconds = store_study(client, self.config, folder)
                    record.instances_stored += sent
                    record.verified_instances += verified
                    record.store_seconds = (record.store_seconds or 0.0) + seconds
        except Exception as exc:  # noqa: BLE001
            return self._finish("store", exc)
        record.status = "done"
        return self._finish()

    def _finish(self, stage: str = "", error: Exception | None = None) -> None:
        record = self.record
        full = error is not None and no_space(error)
        if full:  # keeping the study's files would starve the next studies: they go, whatever keep_work says
            shutil.rmtree(self.work, ignore_errors=True)
        if error is not None:  # whatever broke: a known fault in its own words, anything else named
            known = isinstance(error, (PacsError, InputError))
            record.status, record.stage = "failed", stage
            record.reason = str(error) if known else f"unexpected {describe(error)}"
            if full:
                free = shutil.disk_usage(self.work.parent).free / 2**20 if self.work.parent.is_dir() else 0.0
                record.reason = (f"no space left on the work folder's file system ({self.work.parent}: {free:.1f} MiB "
                                 f"free once this study's files were removed) during {stage}: {record.reason}")
            log.error("study %s failed (%s): %s", record.study_uid, stage, record.reason)
        write_record(self.output_dir, record)
        log.info("%s", study_line(record))
        if not full:
            clean_work(self.work, self.config, record.status != "failed")


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


def study_line(record: StudyRecord) -> str:
    """One line per study for the night's log: status (and the failed stage), seconds per stage, instances."""
    status = f"failed at {record.stage}" if record.status == "failed" else record.status
    return (f"study {record.study_uid}: {status}; retrieve {_s(record.retrieve_seconds)}, denoise "
            f"{_s(record.denoise_seconds)}, store {_s(record.store_seconds)}; instances retrieved "
            f"{record.instances_retrieved}, stored {record.instances_stored}, verified {record.verified_instances}")
