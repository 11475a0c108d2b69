"""One study folder in, one output folder per study out: derived series, QA reports, provenance.

Output layout (``<output_dir>/<StudyInstanceUID>/``, renamed into place only when complete)::

    <derived SeriesInstanceUID>/00001_<SOPInstanceUID>.dcm ...   one folder per derived series
    <derived SeriesInstanceUID>/provenance.json
    qa_report.csv      one row per source series x method (on the sampled slices, see qa_sample), with
                       the series' strength, its estimated noise (pipeline.inference.noise_level) and the level
                       the model was told, the noise estimated from the QA copies (what the
                       ``autoencoder`` row was told), and what the derived series did to the real scan
                       (noise in uniform soft tissue and strong-edge gradient, original and denoised,
                       see pipeline.qa.scan_measures; empty where no uniform soft tissue was found)
    qa_slices.csv      one row per sampled slice x method
    qa_<derived SeriesInstanceUID>_slice<NNNN>.png   QA panels of representative sampled slices
    qa_<derived SeriesInstanceUID>_psnr.png          PSNR per sampled slice along the stack
    skipped.csv        files and series that were not denoised, with the reason
    provenance.json

A folder that holds several studies gives one such output folder per study.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import shutil
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import __version__
from pipeline.atomic import atomic_directory, write_csv, write_json
from pipeline.dicom.codecs import output_syntax
from pipeline.dicom.discovery import ScanResult, SeriesRef, Skipped, StudyScan
from pipeline.dicom.reader import SeriesPlan, plan_series
from pipeline.dicom.selection import DERIVED_MARKER
from pipeline.dicom.uids import path_safe_uid
from pipeline.dicom.writer import (
    DerivedSeriesInfo,
    derived_series_uid,
    derived_sop_uid,
    source_key,
    stack_to_stored,
    write_series,
)
from pipeline.errors import ConfigError, InputError, describe
from pipeline.inference.denoiser import Denoiser
from pipeline.inference.noise_level import SeriesNoise, estimate_series, sample_positions
from pipeline.inference.polyphase import MAX_WHITENESS
from pipeline.inference.slice_context import MAX_STEP_MM, context_indices, neighbour_links, typical_step_mm
from pipeline.inference.strength import DEFAULT_RULE, parse_strength
from pipeline.inference.window import Window, hu_to_unit, unit_to_hu
from pipeline.provenance import provenance, read_provenance
from pipeline.qa.panels import PanelSlice, panel_slices, write_series_panels
from pipeline.qa.scan_measures import ScanMeasures, measure_slice, summarize
from pipeline.qa.series import QA_BLOCK, ContextStack, MethodSummary, QaSlice, SeriesQA, SliceScore
from pipeline.settings import Settings

log = logging.getLogger(__name__)

QA_HEADER = ["study_uid", "series_uid", "derived_series_uid", "method", "slices", "mean_psnr_db",
             "min_psnr_db", "mean_ssim", "seconds", "window_low_hu", "window_high_hu", "noise", "sigma", "strength",
             "noise_estimate_hu", "noise_confidence", "model_level_hu", "qa_noise_estimate_hu", "model_told",
             "scan_noise_hu_original", "scan_noise_hu_denoised", "scan_edge_hu_per_mm_original",
             "scan_edge_hu_per_mm_denoised"]
# what each model row of qa_report.csv was told (column model_told)
MODEL_TOLD = {"autoencoder": "nothing: noise estimated from the QA copies, strength full (as the derived series)",
              "autoencoder_told": "the std of the added noise, strength full"}
FULL = parse_strength("full")
SLICE_HEADER = ["study_uid", "series_uid", "sop_instance_uid", "frame", "slice_index", "method", "psnr_db", "ssim"]
SKIPPED_HEADER = ["path", "series_uid", "status", "reason"]


@dataclass
class SeriesOutcome:
    source_series_uid: str
    derived_series_uid: str
    slices: int
    qa: list[MethodSummary]
    dropped: list[Skipped] = field(default_factory=list)  # duplicate instances left out
    scan: ScanMeasures | None = None  # the derived series against the original, no synthetic noise
    noise: SeriesNoise | None = None  # the source series' estimated noise
    model_level_hu: float | None = None  # the noise level the model was told for the derived series
    qa_noise_hu: float | None = None  # the noise estimated from the QA copies (median over blocks)


@dataclass
class StudyOutcome:
    study_uid: str
    folder: Path
    series: list[SeriesOutcome] = field(default_factory=list)
    failures: list[Skipped] = field(default_factory=list)  # everything left out (see Skipped.status)
    seconds: float = 0.0

    @property
    def status(self) -> str:
        """``ok``; ``partial`` when some input failed; ``failed`` when no series was denoised."""
        if not self.series:
            return "failed"
        return "partial" if any(f.status == "failed" for f in self.failures) else "ok"


def _provenance_field(folder: Path, key: str, default: str) -> str | None:
    try:
        return str(read_provenance(folder).get(key, default))
    except (OSError, ValueError):
        return None


def study_status(folder: Path) -> str | None:
    """Status recorded in a study output folder's provenance.json (None when there is none)."""
    return _provenance_field(folder, "status", "ok")


def recorded_attempt(folder: Path) -> str | None:
    """The run (``attempt``) that wrote a study output folder."""
    return _provenance_field(folder, "attempt", "")


def study_output_folder(output_dir: Path, study_uid: str) -> Path:
    return Path(output_dir) / path_safe_uid(study_uid, "StudyInstanceUID")


def derivation_info(settings: Settings, denoiser: Denoiser) -> DerivedSeriesInfo:
    """The study's derivation: model, window, strength, whether the noise level is local and whether
    blotchy noise gets the polyphase pass (the derived UIDs follow from it: another model, window,
    strength, noise-level map or blotchy pass is another derived series). Each series adds its noise
    estimate (and whether the pass ran on it) to the description (:func:`series_description`); the
    estimate does not enter the UIDs, so a rerun on another machine names its outputs alike."""
    m = denoiser.loaded
    local = denoiser.local_levels()
    blotchy = denoiser.polyphase_pass()
    description = (f"{DERIVED_MARKER} {__version__}: denoised by convolutional autoencoder {m.name} "
                   f"(weights sha256 {m.sha256[:16]}), HU window {settings.window}, strength {denoiser.strength}"
                   + (", noise level map local" if local else "") + (", blotchy pass mean" if blotchy else ""))
    fingerprint = (f"{m.sha256}|{settings.window.low}|{settings.window.high}|{__version__}|{denoiser.strength.text}"
                   + ("|local" if local else "") + ("|blotchy-mean" if blotchy else "") + _rules(denoiser))
    return DerivedSeriesInfo(description, fingerprint, settings.series_description_suffix,
                             settings.series_number_offset, str(output_syntax(settings.output_transfer_syntax)))


def _rules(denoiser: Denoiser) -> str:
    """The level rules a model's card sets (what it is told for blotchy noise), for the derived UIDs:
    the same weights told by another rule give another derived series. Empty for the default rule,
    so a card without one keeps its UIDs."""
    rule, lone = denoiser.level_rule, denoiser.lone_level_rule
    return ("" if rule == DEFAULT_RULE else f"|rule {rule.exponent:g},{rule.max_gain:g}") + (
        f"|lone-rule {lone.exponent:g},{lone.max_gain:g}" if denoiser.lone_told_apart() else "")


def series_description(info: DerivedSeriesInfo, noise: SeriesNoise, level_hu: float | None,
                       local: bool = False, blotchy: int = 0, lone_level_hu: float | None = None,
                       alone: int = 0, whiteness: bool = False) -> DerivedSeriesInfo:
    """``info`` with the series' own noise estimate and model level (``local``: shaped across each
    slice by its noise map; ``blotchy``: how many lone slices were also denoised through their
    polyphase sub-images; ``lone_level_hu``: the level its ``alone`` lone slices were told, where
    that differs; ``whiteness``: the model was told the noise's whiteness) in its DerivationDescription."""
    told = told_phrase(noise, level_hu, local, blotchy, lone_level_hu, alone, whiteness)
    return dataclasses.replace(info, description=f"{info.description}; series noise estimated {noise.sigma_hu:.1f} HU "
                                                 f"({noise.confidence} confidence){told}")


def told_phrase(noise: SeriesNoise, level_hu: float | None, local: bool = False, blotchy: int = 0,
                lone_level_hu: float | None = None, alone: int = 0, whiteness: bool = False) -> str:
    """What the model was told for a series, as the DerivationDescription and the log name it:
    ", model told X HU (Y HU on its N lone slice(s)) and whiteness W shaped by each slice's local
    noise; blotchy noise ...", each part only where it applies (``whiteness``: a model told the
    noise's whiteness); empty for a model told nothing."""
    told = f", model told {level_hu:.1f} HU" if level_hu is not None else ""
    told += f" ({lone_level_hu:.1f} HU on its {alone} lone slice(s))" if lone_level_hu is not None and told else ""
    told += f" and whiteness {noise.whiteness:.2f}" if whiteness and told else ""
    told += " shaped by each slice's local noise" if local and told else ""
    told += (f"; blotchy noise (whiteness {noise.whiteness:.2f}): {blotchy} lone slice(s) averaged with their 2x2 "
             "polyphase sub-images' result" if blotchy else "")
    return told


def estimate_noise(plan: SeriesPlan, count: int = 9) -> SeriesNoise:
    """The series' noise estimate from up to ``count`` slices spread over the stack (each file decoded
    once)."""
    return estimate_series(list(plan.read_at(sample_positions(len(plan), count))))


# How the QA runs a model with slice context: as the derived series does, with the real neighbours.
QA_CONTEXT = ("each scored slice with its linked neighbouring slices (as the derived series gives them to the "
              "model), each neighbour given its own seeded noisy copy")


def delivered_model(denoiser: Denoiser, window: Window, estimates: list[float]):
    """The QA's ``autoencoder`` row: the model as the derived series runs it, at strength ``full``,
    told only the noise estimated from the noisy copies it is given (their series value; estimated
    here unless the caller made it already); each estimate (HU) is appended to ``estimates``. A
    context model gets the ``links`` it is given, or each copy's noisy ``stacks``
    (:data:`pipeline.qa.series.ContextStack`), or neither: each copy alone."""
    def run(noisy_unit: np.ndarray, noise: SeriesNoise | None = None, links: np.ndarray | None = None,
            stacks: list[ContextStack] | None = None) -> np.ndarray:
        hu = unit_to_hu(noisy_unit, window)
        noise = noise or estimate_series(list(hu))
        estimates.append(noise.sigma_hu)
        if denoiser.context and stacks is not None:
            return np.concatenate([hu_to_unit(denoiser.denoise_hu(unit_to_hu(stack, window), window, noise,
                                                                  strength=FULL, links=_linked(len(stack)),
                                                                  span=(c, c + 1)), window)
                                   for stack, c in stacks])
        if denoiser.context and links is None:
            links = np.zeros(max(len(hu) - 1, 0), bool)
        return hu_to_unit(denoiser.denoise_hu(hu, window, noise, strength=FULL, links=links), window)
    return run


def told_model(denoiser: Denoiser):
    """The QA's ``autoencoder_told`` row: the model told each copy's noise std (unit scale); a context
    model gets each copy's noisy ``stacks``, or none: each copy alone (the copies are not a stack)."""
    def run(images: np.ndarray, sigma: np.ndarray, stacks: list[ContextStack] | None = None) -> np.ndarray:
        if denoiser.context and stacks is not None:
            return np.concatenate([denoiser.denoise_unit(np.clip(stack, 0.0, 1.0), sigma[k:k + 1],
                                                         links=_linked(len(stack)), span=(c, c + 1))
                                   for k, (stack, c) in enumerate(stacks)])
        return denoiser.denoise_unit(images, sigma, links=np.zeros(max(len(images) - 1, 0), bool))
    return run


def _linked(count: int) -> np.ndarray:
    """Links of ``count`` consecutive neighbouring slices."""
    return np.ones(max(count - 1, 0), bool)


def _fmt(x: float, nd: int = 4) -> str:
    return "inf" if math.isinf(x) else f"{x:.{nd}f}"


def qa_sample(n: int, every: int) -> list[int]:
    """Stack positions the QA report scores: every ``every``-th slice, each centred in its run of
    ``every`` slices; the middle slice of a series shorter than that; none when ``every`` is 0."""
    if every <= 0 or n == 0:
        return []
    return list(range(every // 2, n, every)) if n >= every else [n // 2]


def _cancel(futures: Iterable[Future]) -> None:
    for f in futures:
        f.cancel()


def _qa_neighbours(i: int, row: np.ndarray, keys: list[str], stack: np.ndarray, lo: int
                   ) -> tuple[tuple[tuple[str, np.ndarray], ...], tuple[tuple[str, np.ndarray], ...]]:
    """Slice ``i``'s linked neighbours as the model gets them (``row``: its row of
    :func:`~pipeline.inference.slice_context.context_indices`), as (id, HU) copies from ``stack`` (the
    slices from position ``lo`` on)."""
    near = np.unique(row)
    return (tuple((keys[p], stack[p - lo].copy()) for p in near[near < i]),
            tuple((keys[p], stack[p - lo].copy()) for p in near[near > i]))


def _process_series(ref: SeriesRef, tmp: Path, settings: Settings, denoiser: Denoiser,
                    info: DerivedSeriesInfo) -> tuple[SeriesOutcome, list[SliceScore]]:
    """Stream one series through the model in chunks of slices: while the model works on a chunk,
    an I/O thread pool decodes the next ones and writes the previous ones, so memory stays bounded
    by a few chunks whatever the length of the series."""
    plan = plan_series(ref)
    for ds in plan.datasets:  # a source without a Study UID: its derived series gets the stand-in (Type 1)
        if not str(ds.get("StudyInstanceUID", "") or "").strip():
            ds.StudyInstanceUID = ref.study_uid
    noise = estimate_noise(plan)
    mapped = denoiser.maps_levels(noise)  # told a level map shaped by each slice's noise, not one level
    context = denoiser.context
    links = neighbour_links(plan.positions_mm, len(plan)) if context else None
    alone = int(denoiser.lone(links, 0, len(plan)).sum())  # slices that run alone
    # a paired model's lone slices may be told their own network's level: the series' level is that of
    # its slices with neighbours, the lone slices' is named beside it
    level = denoiser.level_hu(noise, lone=context > 0 and alone == len(plan))
    lone_level = denoiser.level_hu(noise, lone=True) if denoiser.lone_told_apart() and 0 < alone < len(plan) else None
    # lone slices of blotchy noise: also denoised through their polyphase sub-images
    blotchy = alone if denoiser.blotchy(noise) else 0
    told = (noise, level, mapped, blotchy, lone_level, alone, denoiser.tells_whiteness(alone, len(plan)))
    info = series_description(info, *told)
    log.info("series %s: %s; strength %s%s", ref.series_uid, noise.describe(), denoiser.strength, told_phrase(*told))
    if noise.confidence == "low":
        log.warning("series %s: the noise estimate is unsure (%s): check the derived series", ref.series_uid,
                    noise.doubt)
    derived_uid = derived_series_uid(ref.key, info)
    number = int(plan.datasets[0].get("SeriesNumber", 0) or 0) + settings.series_number_offset
    folder = tmp / settings.series_folder.format(series_uid=derived_uid, source_series_uid=ref.series_uid,
                                                 series_number=number)
    folder.mkdir()
    keys = [source_key(ds, frame) for ds, frame in zip(plan.datasets, plan.frames)]
    names = [settings.file_name.format(series_uid=derived_uid, source_series_uid=ref.series_uid, series_number=number,
                                       sop_uid=derived_sop_uid(key, info), index=i + 1)
             for i, key in enumerate(keys)]
    rows = context_indices(len(plan), context, links) if context else None  # each slice's neighbours
    if context:
        step_mm = typical_step_mm(plan.positions_mm, len(plan))
        far = step_mm is not None and step_mm > MAX_STEP_MM
        log.info("series %s: slice context %d on each side; %d of %d steps between slices are neighbours%s",
                 ref.series_uid, context, int(links.sum()), len(links),
                 f" (slices {step_mm:g} mm apart, more than {MAX_STEP_MM:g} mm: each slice alone)" if far else "")
    n, step = len(plan), max(settings.chunk_slices, context)  # a chunk at least as deep as the context
    bounds = [(a, min(a + step, n)) for a in range(0, n, step)]
    sample = qa_sample(n, settings.qa_every)
    picks = [sample[i] for i in panel_slices(len(sample), settings.qa_panels)] if sample and settings.qa_panels else []
    # the panels' slices, original and derived (HU); every other sampled slice is measured and let go, so
    # memory does not grow with the series
    qa_hu: dict[int, np.ndarray] = {}
    qa_out: dict[int, np.ndarray] = {}
    measured: dict[int, ScanMeasures] = {}
    pixel_mm = float((plan.datasets[0].get("PixelSpacing") or [0.75])[0])
    kept: dict[int, dict[str, np.ndarray]] = {i: {} for i in picks}
    qa_estimates: list[float] = []
    qa = SeriesQA(ref.series_uid, settings.window, settings.noise_model,
                  delivered_model(denoiser, settings.window, qa_estimates), settings.filters, pixel_mm, kept=kept,
                  told_fn=told_model(denoiser) if denoiser.noise_map else None)
    pending: list[QaSlice] = []  # sampled slices (with their neighbours) not scored yet: a block at a time
    now = dt.datetime.now()  # one content date/time for the whole series
    with ThreadPoolExecutor(settings.io_workers, thread_name_prefix="dicom-io") as pool, \
            tqdm(total=n + blotchy, desc=f"denoise {ref.series_uid[-16:]}", unit="slice",  # the polyphase pass:
                 disable=not settings.progress, leave=False) as bar:  # about one slice's work per lone slice
        reads = deque(pool.submit(plan.read, a, b) for a, b in bounds[:settings.prefetch_chunks])
        writes: deque[Future] = deque()
        try:
            before = None  # slice context: the previous chunk's last slices, kept (no slice is read twice)
            for k, (a, b) in enumerate(bounds):
                hu = reads.popleft().result()
                if k + settings.prefetch_chunks < len(bounds):
                    reads.append(pool.submit(plan.read, *bounds[k + settings.prefetch_chunks]))
                if context:
                    after = reads[0].result()[:context] if reads else hu[:0]  # the next chunk's first slices
                    before = hu[:0] if before is None else before
                    lo = a - len(before)
                    stack = np.concatenate([before, hu, after])
                    out_hu = denoiser.denoise_hu(stack, settings.window, noise, on_batch=bar.update,
                                                 links=links[lo:lo + len(stack) - 1],
                                                 span=(len(before), len(before) + len(hu)))
                    before = hu[-context:]
                else:
                    out_hu = denoiser.denoise_hu(hu, settings.window, noise, on_batch=bar.update)
                stored = stack_to_stored(out_hu, hu, plan.datasets[a:b])
                writes.append(pool.submit(write_series, plan.datasets[a:b], stored, folder, info, names[a:b],
                                          derived_uid, now, plan.frames[a:b]))
                for i in (i for i in sample if a <= i < b):
                    original, derived = hu[i - a].copy(), out_hu[i - a]  # what outlives the chunk is copied, not a view
                    measured[i] = measure_slice(original, derived, pixel_mm)
                    if i in kept:
                        qa_hu[i], qa_out[i] = original, derived.copy()
                    side = _qa_neighbours(i, rows[i], keys, stack, lo) if context else ((), ())
                    pending.append(QaSlice(keys[i], i, original, *side))
                if len(pending) >= QA_BLOCK:
                    qa.score(pending[:QA_BLOCK])
                    del pending[:QA_BLOCK]
                while len(writes) > settings.prefetch_chunks:  # bound the chunks waiting to be written
                    writes.popleft().result()
            for w in writes:
                w.result()
        except BaseException:
            _cancel([*reads, *writes])
            raise
    qa.score(pending)
    summaries, scores = qa.result() if sample else ([], [])
    if picks:
        by_slice = {(r.index, r.method): (r.psnr, r.ssim) for r in scores}
        panels = [PanelSlice(i, qa_hu[i], qa_out[i], kept[i], {m: by_slice[i, m] for m in kept[i]}, measured[i])
                  for i in picks]
        write_series_panels(tmp, derived_uid, panels, scores, settings.window)
    write_json(folder / "provenance.json", provenance(
        settings, denoiser.loaded, str(denoiser.device), study_uid=ref.study_uid,
        source_series_uid=ref.series_uid, derived_series_uid=derived_uid, slices=n,
        qa_slices=sample, source_images=keys, warnings=plan.warnings,
        noise_estimate=noise.as_dict(), strength={"setting": denoiser.strength.text, "meaning": str(denoiser.strength),
                                                  "model_level_hu": None if level is None else round(level, 2),
                                                  **({"model_level_hu_lone_slices": round(lone_level, 2)}
                                                     if lone_level is not None else {}),
                                                  "share_of_correction": denoiser.strength.blend(denoiser.noise_map),
                                                  "level_map": "local" if mapped else "series"},
        blotchy_pass={"setting": denoiser.blotchy_pass, "lone_slices_averaged": blotchy,
                      "below_whiteness": MAX_WHITENESS, "series_whiteness": round(noise.whiteness, 3)},
        **({"slice_context": {"neighbours_each_side": context, "linked_steps": int(links.sum()),
                              "steps": len(links), "step_mm": step_mm, "max_step_mm": MAX_STEP_MM,
                              "qa": QA_CONTEXT}} if context else {})))
    log.info("series %s: %d slices -> %s", ref.series_uid, n, derived_uid)
    scan = summarize(list(measured.values())) if measured else None
    qa_noise = float(np.median(qa_estimates)) if qa_estimates else None
    return SeriesOutcome(ref.series_uid, derived_uid, n, summaries, plan.dropped, scan, noise, level, qa_noise), scores


def process_study(study: StudyScan, output_dir: Path, settings: Settings, denoiser: Denoiser,
                  skipped: Iterable[Skipped] = (), record_failure: bool = False, attempt: str = "") -> StudyOutcome:
    """Denoise every series of ``study`` and write its QA reports into ``<output_dir>/<StudyUID>``.

    A series that fails (unreadable file, inconsistent geometry, or any unexpected error: its type
    and message are the reason) is logged with file and reason,
    listed in ``skipped.csv`` (status ``failed``) and left out; the other series go on. If no series
    succeeds, the study raises :class:`InputError` and nothing is written; with ``record_failure``
    the folder is written with its reports only and ``status: failed`` in provenance.json (the
    nightly archive run reports it, and reprocesses it next time).
    """
    final = study_output_folder(output_dir, study.study_uid)
    if final.exists() and study_status(final) == "failed":
        shutil.rmtree(final)  # a failed attempt is retried
    started = time.perf_counter()
    outcome = StudyOutcome(study.study_uid, final, failures=list(skipped))
    info = derivation_info(settings, denoiser)
    all_scores: list[SliceScore] = []
    with atomic_directory(final) as tmp:
        for ref in study.series.values():
            before = set(tmp.iterdir())
            try:
                series_outcome, scores = _process_series(ref, tmp, settings, denoiser, info)
            except Exception as exc:  # whatever broke, one series never costs the others or the reports
                if isinstance(exc, InputError):
                    path, reason = exc.path, exc.reason
                else:
                    path, reason = ref.key, f"unexpected {describe(exc)}"
                    log.debug("series %s", ref.key, exc_info=True)
                log.error("series %s not denoised: %s", ref.key, InputError(path, reason))
                outcome.failures.append(Skipped(path, reason, ref.series_uid, ref.study_uid, "failed"))
                for partial in set(tmp.iterdir()) - before:  # nothing written for a failed series
                    shutil.rmtree(partial, ignore_errors=True)
                continue
            outcome.series.append(series_outcome)
            outcome.failures.extend(series_outcome.dropped)
            all_scores.extend(scores)
        if not outcome.series and not record_failure:
            reasons = "; ".join(str(InputError(f.path, f.reason)) for f in outcome.failures[-3:])
            raise InputError(study.study_uid, f"no series of the study could be denoised ({reasons})")
        _write_reports(tmp, outcome, all_scores, settings)
        outcome.seconds = time.perf_counter() - started
        write_json(tmp / "provenance.json", provenance(
            settings, denoiser.loaded, str(denoiser.device), study_uid=study.study_uid,
            **({"source_study_uid": study.source_study_uid} if study.source_study_uid else {}), status=outcome.status,
            attempt=attempt, seconds=round(outcome.seconds, 3),
            series=[{"source_series_uid": s.source_series_uid, "derived_series_uid": s.derived_series_uid,
                     "slices": s.slices} for s in outcome.series],
            left_out=[{"path": f.path, "series_uid": f.series_uid, "status": f.status, "reason": f.reason}
                      for f in outcome.failures]))
    return outcome


def _noise_cells(s: SeriesOutcome, method: str) -> list[str]:
    est = s.noise
    return [_fmt(est.sigma_hu, 2) if est and math.isfinite(est.sigma_hu) else "", est.confidence if est else "",
            _fmt(s.model_level_hu, 2) if s.model_level_hu is not None else "",
            _fmt(s.qa_noise_hu, 2) if s.qa_noise_hu is not None and math.isfinite(s.qa_noise_hu) else "",
            MODEL_TOLD.get(method, "")]


def _scan_cells(scan: ScanMeasures | None) -> list[str]:
    if scan is None:
        return ["", "", "", ""]
    values = (scan.noise_hu_before, scan.noise_hu_after, scan.edge_before, scan.edge_after)
    return [_fmt(v, nd) if math.isfinite(v) else "" for v, nd in zip(values, (2, 2, 1, 1))]


def _write_reports(folder: Path, outcome: StudyOutcome, scores: list[SliceScore], settings: Settings) -> None:
    w = settings.window
    write_csv(folder / "qa_report.csv", QA_HEADER, (
        [outcome.study_uid, q.series_uid, s.derived_series_uid, q.method, q.slices, _fmt(q.mean_psnr),
         _fmt(q.min_psnr), _fmt(q.mean_ssim, 5), f"{q.seconds:.3f}", f"{w.low:g}", f"{w.high:g}",
         settings.noise_model.label, f"{settings.qa_sigma:g}" if settings.qa_noise == "gaussian" else "",
         str(settings.strength), *_noise_cells(s, q.method), *_scan_cells(s.scan)]
        for s in outcome.series for q in s.qa))
    write_csv(folder / "qa_slices.csv", SLICE_HEADER, (
        [outcome.study_uid, r.series_uid, *(r.sop_uid.split("/") + [""])[:2], r.index, r.method, _fmt(r.psnr),
         _fmt(r.ssim, 5)]
        for r in scores))
    write_csv(folder / "skipped.csv", SKIPPED_HEADER,
              ([f.path, f.series_uid, f.status, f.reason] for f in outcome.failures))


def process_scan(scan_result: ScanResult, output_dir: Path, settings: Settings, denoiser: Denoiser,
                 record_failures: bool = False, only: str | None = None, attempt: str = "") -> list[StudyOutcome]:
    """Process every study found by :func:`pipeline.dicom.reader.scan` (or only the study ``only``)
    whose output folder does not exist yet or records a failed attempt.

    A study that fails is logged and re-raised after the others have been processed (with
    ``record_failures``, see :func:`process_study`, it is recorded instead)."""
    if settings.strength != denoiser.strength:
        raise ConfigError(f"strength {settings.strength.text!r} in the settings, but the denoiser runs at "
                          f"{denoiser.strength.text!r}: build it with Denoiser.from_settings")
    if settings.blotchy_pass != denoiser.blotchy_pass:
        raise ConfigError(f"blotchy_pass {settings.blotchy_pass!r} in the settings, but the denoiser uses "
                          f"{denoiser.blotchy_pass!r}: build it with Denoiser.from_settings")
    if settings.noise_level_map != denoiser.noise_level_map:
        raise ConfigError(f"noise_level_map {settings.noise_level_map!r} in the settings, but the denoiser uses "
                          f"{denoiser.noise_level_map!r}: build it with Denoiser.from_settings")
    trained = denoiser.loaded.card.get("window_hu")
    if trained and list(map(float, trained)) != [settings.window.low, settings.window.high]:
        log.warning("window %s differs from the model's training window %s HU: results may degrade",
                    settings.window, trained)
    outcomes, errors = [], []
    for uid, study in scan_result.studies.items():
        if only and uid != only:
            continue
        folder = study_output_folder(output_dir, uid)
        if folder.exists() and study_status(folder) != "failed":
            log.info("study %s: output exists, skipped", uid)
            continue
        mine = [s for s in scan_result.skipped if s.study_uid in ("", uid)]
        try:
            outcomes.append(process_study(study, output_dir, settings, denoiser, mine, record_failures, attempt))
        except InputError as exc:
            log.error("study %s failed: %s", uid, exc)
            errors.append(exc)
    if errors:
        raise errors[0] if len(errors) == 1 else InputError(
            str(output_dir), f"{len(errors)} studies failed: " + "; ".join(str(e) for e in errors))
    return outcomes
