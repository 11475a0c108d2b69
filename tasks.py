"""Luigi entry points: a thin layer over ``pipeline/`` and ``models/``.

    luigi --module tasks DenoiseStudy --study-dir STUDY_DIR --output-dir OUT [--local-scheduler]
    luigi --module tasks DenoiseArchive --archive-dir ARCHIVE --output-dir OUT [--workers N]
    luigi --module tasks TrainModel --run-dir runs/NAME [--config models/configs/ct_denoiser.json] [--local-scheduler]

Every default lives in ``luigi.cfg`` (sections ``[denoise]``, ``[selection]``, ``[qa_filters]``).
"""
from __future__ import annotations

import datetime
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
from pipeline.codecs import OUTPUT_SYNTAXES
from pipeline.dashboard import write_dashboard
from pipeline.denoise import Denoiser
from pipeline.discovery import skipped_summary
from pipeline.errors import InputError
from pipeline.filters import FilterParams
from pipeline.reader import ScanResult, scan
from pipeline.selection import SelectionRules
from pipeline.settings import Settings
from pipeline.study import process_scan, recorded_attempt, study_output_folder, study_status
from pipeline.window import Window

INSTALL_ROOT = Path(models.__file__).resolve().parent.parent
RUN_STARTED = datetime.datetime.now().isoformat(timespec="seconds")  # this luigi process's run


class denoise(luigi.Config):  # noqa: N801 - section name in luigi.cfg
    window_low_hu = luigi.FloatParameter(default=-1000.0, description="HU mapped to 0 for the model")
    window_high_hu = luigi.FloatParameter(default=1000.0, description="HU mapped to 1 for the model")
    qa_sigma = luigi.FloatParameter(default=0.07, description="QA noise std, fraction of the window")
    qa_noise = luigi.ChoiceParameter(default="gaussian", choices=["gaussian", "lowdose"])
    qa_lowdose_i0 = luigi.FloatParameter(default=2e4, description="photons per detector bin (lowdose)")
    batch_size = luigi.IntParameter(default=8, description="slices per model batch on a GPU")
    cpu_batch_size = luigi.IntParameter(default=1, description="slices per model batch on the CPU")
    device = luigi.Parameter(default="auto", description="auto, cpu or cuda[:N]")
    strength = luigi.Parameter(default="medium", description="low, medium, high or a noise std in HU")
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
    nlm_h = luigi.FloatParameter(default=FilterParams.nlm_h)


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
        filters=FilterParams(**{k: getattr(f, k) for k in FilterParams.__dataclass_fields__}),
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
