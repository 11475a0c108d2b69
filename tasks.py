"""Luigi entry points: a thin layer over ``pipeline/`` and ``models/``.

    luigi --module tasks DenoiseStudy --study-dir STUDY_DIR --output-dir OUT [--local-scheduler]
    luigi --module tasks DenoiseArchive --archive-dir ARCHIVE --output-dir OUT [--workers N]
    luigi --module tasks DenoisePacs (--study-date YYYYMMDD[-YYYYMMDD] | --since-hours N) --output-dir OUT
    luigi --module tasks TrainModel --run-dir runs/NAME [--config models/configs/ct_denoiser.json] [--local-scheduler]

Every default lives in ``luigi.cfg`` (sections ``[denoise]``, ``[selection]``, ``[qa_filters]``, ``[pacs]``).
"""
from __future__ import annotations

import datetime
import json
import logging
import re
import shlex
import socket
from functools import cached_property
from pathlib import Path

import luigi

import models
from models.store import load_model
from models.training.card import export
from models.training.config import load_config
from models.training.train import train
from pipeline.archive import study_folders, write_archive_report
from pipeline.atomic import write_json
from pipeline.codecs import OUTPUT_SYNTAXES
from pipeline.dashboard import write_dashboard
from pipeline.denoise import Denoiser
from pipeline.discovery import skipped_summary
from pipeline.errors import InputError
from pipeline.filters import FilterParams, parse_nlm_h
from pipeline.noise import NOISE_KINDS
from pipeline.pacs.client import connect
from pipeline.pacs.config import (
    KEEP_WORK,
    PROTOCOLS,
    RETRIEVE_METHODS,
    DateQuery,
    PacsConfig,
    date_query,
    load_password,
)
from pipeline.pacs.errors import PacsError
from pipeline.pacs.nightly import (
    DONE_STATES,
    StudyRecord,
    clean_work,
    folder_name,
    publish_reports,
    read_record,
    record_path,
    retrieve_study,
    retrying,
    store_study,
    write_record,
)
from pipeline.pacs.report import write_pacs_report
from pipeline.reader import ScanResult, scan
from pipeline.selection import SelectionRules
from pipeline.settings import Settings
from pipeline.study import process_scan, read_provenance, recorded_attempt, study_output_folder, study_status
from pipeline.window import Window

log = logging.getLogger("pipeline.pacs")
INSTALL_ROOT = Path(models.__file__).resolve().parent.parent
RUN_STARTED = datetime.datetime.now().isoformat(timespec="seconds")  # this luigi process's run


class denoise(luigi.Config):  # noqa: N801 - section name in luigi.cfg
    window_low_hu = luigi.FloatParameter(default=-1000.0, description="HU mapped to 0 for the model")
    window_high_hu = luigi.FloatParameter(default=1000.0, description="HU mapped to 1 for the model")
    qa_sigma = luigi.FloatParameter(default=0.07, description="QA noise std, fraction of the window")
    qa_noise = luigi.ChoiceParameter(default="gaussian", choices=list(NOISE_KINDS))
    qa_lowdose_i0 = luigi.FloatParameter(default=2e4, description="photons per detector bin (lowdose)")
    batch_size = luigi.IntParameter(default=8, description="slices per model batch on a GPU")
    cpu_batch_size = luigi.IntParameter(default=1, description="slices per model batch on the CPU")
    device = luigi.Parameter(default="auto", description="auto, cpu or cuda[:N]")
    strength = luigi.Parameter(default="medium", description="low, medium, high, full, a percentage of the series' noise (60%) or a noise std in HU")
    output_transfer_syntax = luigi.ChoiceParameter(
        default="explicit_le", choices=list(OUTPUT_SYNTAXES),
        description="transfer syntax of the derived series (uncompressed or lossless)")
    amp = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                              description="mixed precision on CUDA")
    model_path = luigi.Parameter(default="models/weights/ct_denoiser.safetensors",
                                 description="weights; a relative path is relative to the install root")
    series_folder = luigi.Parameter(default="{series_uid}")
    file_name = luigi.Parameter(default="{index:05d}_{sop_uid}.dcm")
    series_description_suffix = luigi.Parameter(default="DENOISED")
    series_number_offset = luigi.IntParameter(default=1000)
    progress = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    qa_every = luigi.IntParameter(default=8, description="QA scores every k-th slice of a series (0: no QA)")
    gpu_resource = luigi.Parameter(default="gpu", description="Luigi resource held while denoising; {host}: per host")
    qa_panels = luigi.IntParameter(default=3, description="QA panel images per series (0: none)")
    io_workers = luigi.IntParameter(default=2, description="threads decoding/writing DICOM beside the model")
    chunk_slices = luigi.IntParameter(default=32, description="slices per streamed chunk")
    prefetch_chunks = luigi.IntParameter(default=2, description="chunks read ahead / waiting to be written")


class qa_filters(luigi.Config):  # noqa: N801
    gaussian_ksize = luigi.IntParameter(default=FilterParams.gaussian_ksize)
    gaussian_sigma = luigi.FloatParameter(default=FilterParams.gaussian_sigma)
    average_ksize = luigi.IntParameter(default=FilterParams.average_ksize)
    median_ksize = luigi.IntParameter(default=FilterParams.median_ksize)
    bilateral_d = luigi.IntParameter(default=FilterParams.bilateral_d)
    bilateral_sigma_color = luigi.FloatParameter(default=FilterParams.bilateral_sigma_color)
    bilateral_sigma_space = luigi.FloatParameter(default=FilterParams.bilateral_sigma_space)
    nlm_h = luigi.Parameter(default="auto", description="non-local means' h (unit scale) or auto: told the noise estimate")


class selection(luigi.Config):  # noqa: N801
    sop_classes = luigi.ListParameter(default=list(SelectionRules.sop_classes),
                                      description="SOP Class UIDs denoised (CT, Enhanced CT)")
    skip_image_types = luigi.ListParameter(default=list(SelectionRules.skip_image_types))
    min_matrix = luigi.IntParameter(default=SelectionRules.min_matrix)
    skip_lone_images_unlike_main_stack = luigi.BoolParameter(
        default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    skip_lone_non_axial = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    skip_lone_non_square = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING)


def selection_from_config() -> SelectionRules:
    c = selection()
    return SelectionRules(sop_classes=tuple(c.sop_classes), skip_image_types=tuple(s.upper() for s in c.skip_image_types),
                          min_matrix=c.min_matrix, skip_lone_images_unlike_main_stack=c.skip_lone_images_unlike_main_stack,
                          skip_lone_non_axial=c.skip_lone_non_axial, skip_lone_non_square=c.skip_lone_non_square)


def _log_to_stderr() -> None:
    """Show the pipeline's INFO messages beside Luigi's (Luigi only configures its own loggers)."""
    for name in ("pipeline", "models"):
        logger = logging.getLogger(name)
        if not logger.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(levelname)s: %(name)s: %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)


def gpu_resource_name(template: str, host: str | None = None) -> str:
    """The Luigi resource a DenoiseStudy holds: ``template`` with ``{host}`` replaced by the short
    host name (letters, digits, '-' and '_' only)."""
    short = re.sub(r"[^A-Za-z0-9_-]", "_", (host or socket.gethostname()).split(".")[0])
    return template.replace("{host}", short)


def settings_from_config() -> Settings:
    """Build and validate the run settings from luigi.cfg (fails before any file is read)."""
    c, f = denoise(), qa_filters()
    model_path = Path(c.model_path)
    return Settings(
        window=Window(c.window_low_hu, c.window_high_hu), qa_sigma=c.qa_sigma, qa_noise=c.qa_noise,
        qa_lowdose_i0=c.qa_lowdose_i0, batch_size=c.batch_size, cpu_batch_size=c.cpu_batch_size,
        device=c.device, strength=c.strength, output_transfer_syntax=c.output_transfer_syntax, amp=c.amp,
        model_path=model_path if model_path.is_absolute() else INSTALL_ROOT / model_path,
        filters=FilterParams(**{k: parse_nlm_h(f.nlm_h) if k == "nlm_h" else getattr(f, k)
                                for k in FilterParams.__dataclass_fields__}),
        selection=selection_from_config(),
        series_folder=c.series_folder, file_name=c.file_name,
        series_description_suffix=" " + c.series_description_suffix.strip(),
        series_number_offset=c.series_number_offset, progress=c.progress, qa_every=c.qa_every, qa_panels=c.qa_panels,
        io_workers=c.io_workers, chunk_slices=c.chunk_slices, prefetch_chunks=c.prefetch_chunks)


class DenoiseStudy(luigi.Task):
    """Denoise every CT series of a study folder into ``<output_dir>/<StudyInstanceUID>/``.

    A folder holding several studies gives one output folder per study (all must exist for the
    task to be complete); ``study_uid`` restricts the task to one of them. With
    ``record_failures`` a study whose series all fail is recorded (status ``failed``, retried on
    the next run) instead of failing the task; DenoiseArchive uses this to report every failure."""

    study_dir = luigi.Parameter(description="folder with the study's DICOM files (searched recursively)")
    output_dir = luigi.Parameter(description="where <StudyInstanceUID>/ output folders are created")
    study_uid = luigi.Parameter(default="", description="only this study of the folder (default: all)")
    record_failures = luigi.BoolParameter(default=False, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    # which run this is: a failure recorded by the same run counts as done, one of an earlier run
    # is retried (not part of the task's identity, so hosts sharing a scheduler agree on it)
    attempt = luigi.Parameter(default=RUN_STARTED, significant=False)

    @property
    def resources(self) -> dict[str, int]:
        """One unit of ``[denoise] gpu_resource`` while the model runs. The scheduler enforces the
        count in *its* ``[resources]`` section across every worker attached to it; ``{host}`` in
        the name makes it per host (see README, Several machines)."""
        return {gpu_resource_name(denoise().gpu_resource): 1}

    @cached_property
    def _scan(self) -> ScanResult:
        return scan(Path(self.study_dir), selection_from_config())

    def output(self) -> dict[str, luigi.LocalTarget]:
        return {uid: luigi.LocalTarget(str(study_output_folder(Path(self.output_dir), uid)))
                for uid in self._scan.studies if not self.study_uid or uid == self.study_uid}

    def complete(self) -> bool:
        """All output folders exist and none records a failed attempt of an earlier run."""
        targets = self.output()
        return bool(targets) and all(
            t.exists() and (study_status(Path(t.path)) != "failed" or recorded_attempt(Path(t.path)) == self.attempt)
            for t in targets.values())

    def run(self) -> None:
        _log_to_stderr()
        settings = settings_from_config()
        if not self.output():
            raise InputError(self.study_dir, f"no CT image series found{' for study ' + self.study_uid if self.study_uid else ''}"
                                             f" ({skipped_summary(self._scan.skipped)})")
        denoiser = Denoiser(load_model(settings.model_path), settings.device, settings.batch_size, settings.amp,
                            settings.cpu_batch_size, settings.strength)
        process_scan(self._scan, Path(self.output_dir), settings, denoiser, self.record_failures,
                     self.study_uid or None, attempt=self.attempt)


class ArchiveFailures(RuntimeError):
    """Some inputs of a nightly run could not be processed (listed in failures.csv)."""


class DenoiseArchive(luigi.Task):
    """Nightly run over an archive folder: one DenoiseStudy per study found, then ``summary.csv``,
    ``failures.csv``, ``skipped.csv`` (files left out that no study's report lists, with the reason) and
    the QA dashboard ``index.html`` (with ``qa_gain.png``) in ``output_dir``.
    Any failure (a broken file, a failed series or study) fails this task after the reports are written, so ``luigi`` exits non-zero ([retcode] in
    luigi.cfg) and cron notices; the next run retries failed studies and rewrites the reports."""

    archive_dir = luigi.Parameter(description="archive folder (any depth, any number of studies)")
    output_dir = luigi.Parameter(description="where study folders and the archive reports go")

    @cached_property
    def _scan(self) -> ScanResult:
        return scan(Path(self.archive_dir), selection_from_config())

    def _study_dirs(self) -> dict[str, Path]:
        return study_folders({uid: [f.path for ref in st.series.values() for f in ref.files]
                              for uid, st in self._scan.studies.items()})

    def requires(self) -> list[DenoiseStudy]:
        return [DenoiseStudy(study_dir=str(folder), output_dir=self.output_dir, study_uid=uid, record_failures=True)
                for uid, folder in sorted(self._study_dirs().items())]

    def output(self) -> dict[str, luigi.LocalTarget]:
        out = Path(self.output_dir)
        return {"summary": luigi.LocalTarget(str(out / "summary.csv")),
                "failures": luigi.LocalTarget(str(out / "failures.csv")),
                "skipped": luigi.LocalTarget(str(out / "skipped.csv")),
                "dashboard": luigi.LocalTarget(str(out / "index.html"))}

    def complete(self) -> bool:
        """Reports exist and list no failure (a run with failures is redone next time)."""
        failures = Path(self.output()["failures"].path)
        return (all(t.exists() for t in self.output().values()) and failures.read_text().count("\n") <= 1
                and all(r.complete() for r in self.requires()))

    def run(self) -> None:
        _log_to_stderr()
        # files of no study, or of a study with nothing to denoise (no DenoiseStudy lists them)
        unattributed = [s for s in self._scan.skipped if s.study_uid not in self._scan.studies]
        failures = write_archive_report(Path(self.output_dir), self._scan.studies, unattributed)
        write_dashboard(Path(self.output_dir))
        if failures:
            raise ArchiveFailures(f"{failures} failure(s) in {self.archive_dir}: see {self.output()['failures'].path}")


class pacs(luigi.Config):  # noqa: N801
    protocol = luigi.ChoiceParameter(default="dicomweb", choices=list(PROTOCOLS))
    url = luigi.Parameter(default="", description="DICOMweb root, http(s)://host:port/dicom-web")
    host = luigi.Parameter(default="", description="DIMSE: PACS host")
    port = luigi.IntParameter(default=104, description="DIMSE: PACS port")
    called_aet = luigi.Parameter(default="ORTHANC", description="DIMSE: the PACS's AE title")
    calling_aet = luigi.Parameter(default="DENOISER", description="our AE title")
    retrieve = luigi.ChoiceParameter(default="get", choices=list(RETRIEVE_METHODS),
                                     description="DIMSE: C-GET or C-MOVE")
    move_port = luigi.IntParameter(default=11113, description="DIMSE C-MOVE: port of our storage SCP")
    username = luigi.Parameter(default="")
    password_file = luigi.Parameter(default="", description="file whose first line is the password")
    password_env = luigi.Parameter(default="", description="environment variable holding the password")
    tls = luigi.BoolParameter(default=False, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    tls_ca_file = luigi.Parameter(default="")
    tls_cert_file = luigi.Parameter(default="")
    tls_key_file = luigi.Parameter(default="")
    tls_verify = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    connect_timeout = luigi.FloatParameter(default=10.0)
    timeout = luigi.FloatParameter(default=120.0)
    retries = luigi.IntParameter(default=3)
    backoff_seconds = luigi.FloatParameter(default=5.0)
    store_batch = luigi.IntParameter(default=50)
    store_associations = luigi.IntParameter(default=4, description="DIMSE: C-STORE associations in parallel")
    work_dir = luigi.Parameter(default="", description="work folders (default <output-dir>/work)")
    keep_work = luigi.ChoiceParameter(default="on_failure", choices=list(KEEP_WORK))


def pacs_config_from_config() -> PacsConfig:
    """``[pacs]`` as a validated PacsConfig, the password read from its file or variable."""
    c = pacs()
    fields = {k: getattr(c, k) for k in PacsConfig.__dataclass_fields__ if k != "password"}
    return PacsConfig(**fields, password=load_password(c.password_file, c.password_env))


def work_root(output_dir: str) -> Path:
    return Path(pacs().work_dir or Path(output_dir) / "work")


class PacsStudy(luigi.Task):
    """One PACS study: retrieve it into a work folder, denoise it with DenoiseStudy, store the derived
    series back and verify them, record the outcome in ``<output_dir>/pacs_studies/`` and publish
    its QA reports in ``<output_dir>/<StudyInstanceUID>/``. A failure is recorded, not raised (the
    night's reports list it; the next run retries it)."""

    study_uid = luigi.Parameter()
    output_dir = luigi.Parameter()
    attempt = luigi.Parameter(default=RUN_STARTED, significant=False)

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(record_path(Path(self.output_dir), self.study_uid)))

    def complete(self) -> bool:
        """Recorded done (or nothing to denoise), or recorded failed by this same run."""
        rec = read_record(Path(self.output_dir), self.study_uid)
        return rec is not None and (rec.status in DONE_STATES or rec.attempt == self.attempt)

    def _finish(self, record: StudyRecord, work: Path, config: PacsConfig, stage: str = "",
                error: Exception | None = None) -> None:
        if error is not None:  # whatever broke, one study never costs the others or the night's reports
            known = isinstance(error, (PacsError, InputError))
            record.status, record.stage = "failed", stage
            record.reason = str(error) if known else " ".join(f"unexpected {type(error).__name__}: {error}".split())
            log.error("study %s failed (%s): %s", self.study_uid, stage, error)
        write_record(Path(self.output_dir), record)
        clean_work(work, config, record.status != "failed")

    def run(self):
        _log_to_stderr()
        config = pacs_config_from_config()
        work = work_root(self.output_dir) / folder_name(self.study_uid)
        record = StudyRecord(self.study_uid, "failed", self.attempt, config.describe())
        try:
            with connect(config) as client:
                fetched = retrieve_study(client, config, self.study_uid, work, selection_from_config())
        except Exception as exc:
            return self._finish(record, work, config, "retrieve", exc)
        record.retrieve_seconds, record.instances_retrieved = fetched["seconds"], fetched["instances"]
        record.not_retrieved = fetched["not_retrieved"]
        denoise_task = DenoiseStudy(study_dir=str(work / "input"), output_dir=str(work / "output"),
                                    record_failures=True, attempt=self.attempt)
        if not fetched["instances"] or not denoise_task.output():
            why = skipped_summary(denoise_task._scan.skipped) if fetched["instances"] else "no series to retrieve"
            record.status, record.reason = "skipped", f"nothing to denoise ({why})"
            log.info("study %s: %s", self.study_uid, record.reason)
            return self._finish(record, work, config)
        yield denoise_task  # the folder pipeline, unchanged (it holds the model's resource, not this task)
        folders = [Path(t.path) for t in denoise_task.output().values()]
        try:
            provenances = [read_provenance(f) for f in folders]
            record.denoise_seconds = sum(float(p.get("seconds", 0)) for p in provenances)
            record.derived_series = [s["derived_series_uid"] for p in provenances for s in p.get("series", [])]
            for folder in folders:
                record.report_folder = publish_reports(folder, Path(self.output_dir)).name
            if all(p.get("status", "ok") == "failed" for p in provenances):
                raise InputError(self.study_uid, "no series of the study could be denoised (see its skipped.csv)")
        except Exception as exc:
            return self._finish(record, work, config, "denoise", exc)
        try:
            with connect(config) as client:
                for folder in folders:
                    sent, verified, seconds = store_study(client, config, folder)
                    record.instances_stored += sent
                    record.verified_instances += verified
                    record.store_seconds = (record.store_seconds or 0.0) + seconds
        except Exception as exc:
            return self._finish(record, work, config, "store", exc)
        record.status = "done"
        log.info("study %s: %d derived instances verified in the PACS (%d sent)", self.study_uid,
                 record.verified_instances, record.instances_stored)
        self._finish(record, work, config)


class DenoisePacs(luigi.Task):
    """Nightly run against the PACS of ``[pacs]``: query the CT studies of ``--study-date`` (a day or
    a range) or of the last ``--since-hours``, run a PacsStudy for each one not done yet, then write
    ``summary.csv``, ``failures.csv``, ``skipped.csv`` and ``index.html`` in ``output_dir``. Any
    failure (the query, a study) fails this task after the reports are written: luigi exits non-zero."""

    study_date = luigi.Parameter(default="", description="YYYYMMDD or YYYYMMDD-YYYYMMDD")
    since_hours = luigi.OptionalFloatParameter(default=None, description="studies of the last N hours")
    output_dir = luigi.Parameter(description="reports, study records and QA folders")

    @cached_property
    def _query(self) -> tuple[DateQuery, list[str], str]:
        """The dates asked for (``--since-hours`` counts from the query's time), the StudyInstanceUIDs
        the PACS lists for them, and the query's error ('' if none)."""
        _log_to_stderr()
        dates = date_query(self.study_date, self.since_hours)
        config = pacs_config_from_config()
        try:
            with connect(config) as client:
                found = retrying(config, "study query", lambda: client.find_studies(dates.dicom_range))
        except PacsError as exc:
            log.error("query of CT studies (%s) failed: %s", dates.label(), exc)
            return dates, [], str(exc)
        uids = sorted({s.study_uid for s in found if dates.matches(s.study_date, s.study_time)})
        log.info("%s: %d CT studies for %s", config.describe(), len(uids), dates.label())
        return dates, uids, ""

    def requires(self) -> list[PacsStudy]:
        return [PacsStudy(study_uid=uid, output_dir=self.output_dir) for uid in self._query[1]]

    def output(self) -> dict[str, luigi.LocalTarget]:
        out = Path(self.output_dir)
        return {name: luigi.LocalTarget(str(out / name))
                for name in ("summary.csv", "failures.csv", "skipped.csv", "index.html", "pacs_run.json")}

    def complete(self) -> bool:
        """The reports were written by this run (every night's run writes its own)."""
        run = Path(self.output()["pacs_run.json"].path)
        try:
            return json.loads(run.read_text()).get("attempt") == RUN_STARTED
        except (OSError, ValueError):
            return False

    def run(self) -> None:
        _log_to_stderr()
        out = Path(self.output_dir)
        dates, uids, error = self._query
        config = pacs_config_from_config()
        failures = write_pacs_report(out, uids, {u: read_record(out, u) for u in uids}, config.describe(), error)
        write_dashboard(out, title="ct-denoise nightly PACS run")
        write_json(out / "pacs_run.json", {"attempt": RUN_STARTED, "pacs": config.describe(), "dates": dates.label(),
                                           "studies": len(uids), "failures": failures})
        if failures:
            raise ArchiveFailures(f"{failures} failure(s) in the PACS run: see {out / 'failures.csv'}")


class TrainModel(luigi.Task):
    """Train the denoiser (resuming from the run folder's checkpoint) on synthetic phantoms or on a
    site's own CT folder (its slices as references, synthetic noise added), and write
    ``<run_dir>/ct_denoiser.safetensors`` with its model card, ``train_log.csv`` and
    ``loss_curve.png``. Settings come from ``--config`` (a JSON file of training settings; the
    shipped model's is ``models/configs/ct_denoiser.json``), or the defaults; the other parameters
    override single settings. Point ``[denoise] model_path`` at the weights to use them."""

    run_dir = luigi.Parameter(description="run folder: checkpoint, train_log.csv, config.json, weights")
    config = luigi.OptionalPathParameter(default=None, description="JSON file of training settings")
    steps = luigi.OptionalIntParameter(default=None)
    seed = luigi.OptionalIntParameter(default=None)
    batch_size = luigi.OptionalIntParameter(default=None)
    patch = luigi.OptionalIntParameter(default=None)
    width = luigi.OptionalIntParameter(default=None)
    levels = luigi.OptionalIntParameter(default=None)
    pool_size = luigi.OptionalIntParameter(default=None)
    source = luigi.OptionalParameter(default=None,
                                     description="synthetic phantoms, or a folder of the site's own CT studies")
    init_weights = luigi.OptionalParameter(default=None, description="start from these weights")

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(Path(self.run_dir) / "ct_denoiser.safetensors"))

    def run(self) -> None:
        _log_to_stderr()
        cfg = load_config(self.config, steps=self.steps, seed=self.seed, batch_size=self.batch_size,
                          patch=self.patch, width=self.width, levels=self.levels, pool_size=self.pool_size,
                          source=self.source, init_weights=self.init_weights)
        train(cfg, Path(self.run_dir))
        export(cfg, Path(self.run_dir), Path(self.output().path), command=self.command())

    def command(self) -> str:
        """The command line that runs this task (recorded in the model card)."""
        given = [f"--{k.replace('_', '-')} {shlex.quote(str(v))}" for k, v in self.param_kwargs.items() if v is not None]
        return " ".join(["luigi --module tasks TrainModel", *given, "--local-scheduler"])
