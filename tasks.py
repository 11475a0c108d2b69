"""Luigi entry points: a thin layer over ``pipeline/`` and ``models/``.

    luigi --module tasks DenoiseStudy --study-dir STUDY_DIR --output-dir OUT [--local-scheduler]
    luigi --module tasks DenoiseArchive --archive-dir ARCHIVE --output-dir OUT [--workers N]
    luigi --module tasks DenoisePacs (--study-date YYYYMMDD[-YYYYMMDD] | --since-hours N | --study-uid UID[,UID...]
                                      | --accession-number N) [--redo] --output-dir OUT [--workers N]
    luigi --module tasks TrainModel --run-dir runs/NAME [--config models/configs/ct_denoiser.json] [--local-scheduler]

Every setting is in ``luigi.cfg`` (sections ``[denoise]``, ``[selection]``, ``[qa_filters]``, ``[pacs]``,
declared at the end of this file); a setting missing there takes the default of the dataclass that
owns it (``Settings``, ``SelectionRules``, ``FilterParams``, ``PacsConfig``), which also validates it.
"""
from __future__ import annotations

import dataclasses
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
from models.store import SHIPPED_WEIGHTS, load_model
from models.training.card import export
from models.training.config import load_config
from models.training.train import train
from pipeline.archive_report import study_folders, write_archive_report
from pipeline.atomic import write_json
from pipeline.dicom.codecs import OUTPUT_SYNTAXES
from pipeline.dicom.discovery import ScanResult, scan, skipped_summary
from pipeline.dicom.selection import SelectionRules
from pipeline.errors import InputError
from pipeline.inference.denoiser import Denoiser
from pipeline.inference.noise_map import MODES as NOISE_MAP_MODES
from pipeline.inference.polyphase import MODES as BLOTCHY_MODES
from pipeline.inference.window import Window
from pipeline.pacs.config import (
    KEEP_WORK,
    PROTOCOLS,
    RETRIEVE_METHODS,
    DateQuery,
    PacsConfig,
    StudyRequest,
    load_password,
    study_query,
)
from pipeline.pacs.nightly import DONE_STATES, NightlyStudy, query_studies, read_record, record_path
from pipeline.pacs.report import run_summary, run_totals, write_metrics, write_pacs_report
from pipeline.qa.dashboard import write_dashboard
from pipeline.qa.filters import FilterParams, parse_nlm_h
from pipeline.qa.noise import NOISE_KINDS
from pipeline.settings import Settings
from pipeline.study_run import process_scan, recorded_attempt, study_output_folder, study_status

INSTALL_ROOT = Path(models.__file__).resolve().parent.parent
RUN_STARTED = datetime.datetime.now().isoformat(timespec="seconds")  # this luigi process's run


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


def work_root(output_dir: str) -> Path:
    return Path(pacs().work_dir or Path(output_dir) / "work")


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

    # before the studies not retrieved yet: a PACS study retrieved and waiting to be denoised goes
    # first, so a night holds a few studies' files at a time in its work folder, not all of them
    priority = 10

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
            which = f" for study {self.study_uid}" if self.study_uid else ""
            raise InputError(self.study_dir,
                             f"no CT image series found{which} ({skipped_summary(self._scan.skipped)})")
        denoiser = Denoiser.from_settings(load_model(settings.model_path), settings)
        process_scan(self._scan, Path(self.output_dir), settings, denoiser, self.record_failures,
                     self.study_uid or None, attempt=self.attempt)


class ArchiveFailures(RuntimeError):
    """Some inputs of a nightly run could not be processed (listed in failures.csv)."""


class DenoiseArchive(luigi.Task):
    """Nightly run over an archive folder: one DenoiseStudy per study found, then ``summary.csv``,
    ``failures.csv``, ``skipped.csv`` (files left out that no study's report lists, with the reason) and
    the QA dashboard ``index.html`` (with ``qa_gain.png``) in ``output_dir``. Any failure (a broken
    file, a failed series or study) fails this task after the reports are written, so ``luigi`` exits
    non-zero ([retcode] in luigi.cfg) and cron notices; the next run retries failed studies and
    rewrites the reports."""

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


class PacsStudy(luigi.Task):
    """One PACS study (:class:`pipeline.pacs.nightly.NightlyStudy`): retrieve it into a work folder,
    denoise it with DenoiseStudy, store the derived series back and verify them, record the outcome
    in ``<output_dir>/pacs_studies/`` and publish its QA reports in ``<output_dir>/<StudyInstanceUID>/``.
    A failure is recorded, not raised (the night's reports list it; the next run retries it)."""

    study_uid = luigi.Parameter()
    output_dir = luigi.Parameter()
    attempt = luigi.Parameter(default=RUN_STARTED, significant=False)
    redo = luigi.BoolParameter(default=False, significant=False, parsing=luigi.BoolParameter.EXPLICIT_PARSING)

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(record_path(Path(self.output_dir), self.study_uid)))

    def complete(self) -> bool:
        """Recorded by this same run (done, skipped or failed), or done (or nothing to denoise) by an
        earlier run and no ``redo`` asked for."""
        rec = read_record(Path(self.output_dir), self.study_uid)
        return rec is not None and (rec.attempt == self.attempt or (rec.status in DONE_STATES and not self.redo))

    def run(self):
        _log_to_stderr()
        study = NightlyStudy(self.study_uid, Path(self.output_dir), pacs_config_from_config(), self.attempt,
                             work_root(self.output_dir))
        if not study.retrieve(selection_from_config()):
            return
        denoise_task = DenoiseStudy(study_dir=str(study.input_dir), output_dir=str(study.denoise_dir),
                                    record_failures=True, attempt=self.attempt)
        if not denoise_task.output():
            return study.skip(skipped_summary(denoise_task._scan.skipped))
        yield denoise_task  # the folder pipeline, unchanged (it holds the model's resource, not this task)
        study.store([Path(t.path) for t in denoise_task.output().values()])


class DenoisePacs(luigi.Task):
    """A run against the PACS of ``[pacs]``: the CT studies of ``--study-date`` (a day or a range), of
    the last ``--since-hours``, or those asked for by ``--study-uid`` (comma-separated) or
    ``--accession-number``; a PacsStudy for each one not done yet (``--redo``: done ones too; another
    model or strength then adds a new derived series, the same settings store nothing new), then
    ``summary.csv``, ``failures.csv``, ``skipped.csv``, ``index.html`` and ``metrics.prom`` in
    ``output_dir`` and one summary line in the log. Any failure (the query, a study asked for that the
    PACS does not have, a study) fails this task after the reports are written: luigi exits non-zero."""

    study_date = luigi.Parameter(default="", description="YYYYMMDD or YYYYMMDD-YYYYMMDD")
    since_hours = luigi.OptionalFloatParameter(default=None, description="studies of the last N hours")
    study_uid = luigi.Parameter(default="", description="StudyInstanceUID[,StudyInstanceUID...], on demand")
    # kept out of the task's name, so out of Luigi's log lines and the scheduler
    accession_number = luigi.Parameter(default="", description="the studies of this accession number, on demand",
                                       significant=False, visibility=luigi.parameter.ParameterVisibility.PRIVATE)
    redo = luigi.BoolParameter(default=False, description="process studies recorded done again")
    output_dir = luigi.Parameter(description="reports, study records and QA folders")

    @cached_property
    def _query(self) -> tuple[DateQuery | StudyRequest, list[str], list[tuple[str, str]]]:
        """What was asked for (``--since-hours`` counts from the query's time), the StudyInstanceUIDs
        the PACS lists for it, and the query's errors (study UID or '', reason)."""
        _log_to_stderr()
        query = study_query(self.study_date, self.since_hours, self.study_uid, self.accession_number)
        return query, *query_studies(pacs_config_from_config(), query)

    def requires(self) -> list[PacsStudy]:
        return [PacsStudy(study_uid=uid, output_dir=self.output_dir, redo=self.redo) for uid in self._query[1]]

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
        query, uids, errors = self._query
        config = pacs_config_from_config()
        records = {u: read_record(out, u) for u in uids}
        failures = write_pacs_report(out, uids, records, config.describe(), errors)
        write_dashboard(out, title="ct-denoise nightly PACS run")
        seconds = (datetime.datetime.now() - datetime.datetime.fromisoformat(RUN_STARTED)).total_seconds()
        totals = run_totals(records, RUN_STARTED)
        write_metrics(out / "metrics.prom", totals, failures, seconds)
        write_json(out / "pacs_run.json", {"attempt": RUN_STARTED, "pacs": config.describe(), "query": query.label(),
                                           "redo": self.redo, "studies": len(uids), "failures": failures})
        logging.getLogger("pipeline.pacs").info(
            "%s", run_summary(totals, len(uids), len(errors), query.label(), seconds))
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
        given = [f"--{k.replace('_', '-')} {shlex.quote(str(v))}"
                 for k, v in self.param_kwargs.items() if v is not None]
        return " ".join(["luigi --module tasks TrainModel", *given, "--local-scheduler"])



# ---- luigi.cfg sections: each parameter takes its default from the dataclass that owns it ----

EXPLICIT = luigi.BoolParameter.EXPLICIT_PARSING


def _section(name: str, owner: type, skip: tuple[str, ...] = (), **params: luigi.Parameter) -> type[luigi.Config]:
    """The luigi.cfg section ``[name]``: one parameter per field of the dataclass ``owner`` that has a
    plain default (taken from ``owner``, the one place it is written), except ``skip``; ``params``
    add parameters or replace those of the same name (choices, conversions, Luigi-only settings)."""
    attrs: dict[str, luigi.Parameter] = {}
    for f in dataclasses.fields(owner):
        d = f.default
        if f.name in skip or d is dataclasses.MISSING or d is None:
            continue
        if isinstance(d, bool):
            attrs[f.name] = luigi.BoolParameter(default=d, parsing=EXPLICIT)
        elif isinstance(d, tuple):
            attrs[f.name] = luigi.ListParameter(default=list(d))
        else:
            kind = {int: luigi.IntParameter, float: luigi.FloatParameter}.get(type(d), luigi.Parameter)
            attrs[f.name] = kind(default=d)
    return type(name, (luigi.Config,), {**attrs, **params, "__doc__": f"[{name}] of luigi.cfg ({owner.__name__})"})


denoise = _section(
    "denoise", Settings, skip=("series_description_suffix",),
    window_low_hu=luigi.FloatParameter(default=Window.low, description="HU mapped to 0 for the model"),
    window_high_hu=luigi.FloatParameter(default=Window.high, description="HU mapped to 1 for the model"),
    qa_noise=luigi.ChoiceParameter(default=Settings.qa_noise, choices=list(NOISE_KINDS)),
    noise_level_map=luigi.ChoiceParameter(default=Settings.noise_level_map, choices=list(NOISE_MAP_MODES)),
    blotchy_pass=luigi.ChoiceParameter(default=Settings.blotchy_pass, choices=list(BLOTCHY_MODES)),
    output_transfer_syntax=luigi.ChoiceParameter(default=Settings.output_transfer_syntax,
                                                 choices=list(OUTPUT_SYNTAXES)),
    model_path=luigi.Parameter(default=str(SHIPPED_WEIGHTS.relative_to(INSTALL_ROOT)),
                               description="weights; a relative path is relative to the install root"),
    series_description_suffix=luigi.Parameter(default=Settings.series_description_suffix.strip()),
    gpu_resource=luigi.Parameter(default="gpu", description="Luigi resource held while denoising; {host}: per host"))
qa_filters = _section("qa_filters", FilterParams, nlm_h=luigi.Parameter(
    default="auto", description="non-local means' h (unit scale) or auto: told the noise estimate"))
selection = _section("selection", SelectionRules)
pacs = _section(
    "pacs", PacsConfig, skip=("password",),
    protocol=luigi.ChoiceParameter(default=PacsConfig.protocol, choices=list(PROTOCOLS)),
    retrieve=luigi.ChoiceParameter(default=PacsConfig.retrieve, choices=list(RETRIEVE_METHODS)),
    keep_work=luigi.ChoiceParameter(default=PacsConfig.keep_work, choices=list(KEEP_WORK)),
    password_file=luigi.Parameter(default="", description="file whose first line is the password"),
    password_env=luigi.Parameter(default="", description="environment variable holding the password"),
    work_dir=luigi.Parameter(default="", description="work folders (default <output-dir>/work)"))


def _from_section(cls: type, section: luigi.Config, **given):
    """``cls`` (a settings dataclass) from the section's parameters of the same names; ``given``
    (converted values) take precedence. The dataclass validates."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{**{k: v for k, v in section.param_kwargs.items() if k in names}, **given})


def settings_from_config() -> Settings:
    """Build and validate the run settings from luigi.cfg (fails before any file is read)."""
    c, f = denoise(), qa_filters()
    model_path = Path(c.model_path)
    return _from_section(
        Settings, c, window=Window(c.window_low_hu, c.window_high_hu),
        model_path=model_path if model_path.is_absolute() else INSTALL_ROOT / model_path,
        filters=_from_section(FilterParams, f, nlm_h=parse_nlm_h(f.nlm_h)), selection=selection_from_config(),
        series_description_suffix=" " + c.series_description_suffix.strip())


def selection_from_config() -> SelectionRules:
    return _from_section(SelectionRules, selection())


def pacs_config_from_config() -> PacsConfig:
    """``[pacs]`` as a validated PacsConfig, the password read from its file or variable."""
    c = pacs()
    return _from_section(PacsConfig, c, password=load_password(c.password_file, c.password_env))
