"""QA of a series: the model against classical filters on seeded noisy copies of its slices.

The yardstick (:func:`pipeline.qa.yardstick.score_methods`, its noise :mod:`pipeline.qa.noise`): the
reference is each slice normalized through the window and clipped to [0, 1]. The noisy copy is the
slice as it is (NOT clipped) + sigma * N(0, 1) (or low-dose CT noise, see
:class:`~pipeline.qa.noise.NoiseModel`), seeded from the slice's SOPInstanceUID, and it is NOT
clipped either: every method gets that same copy, and a method may clip it to the window itself
(the model does, through its input window). Every result is clipped to
[0, 1] and compared with the same reference by PSNR (data range 1) and SSIM. Method ``noisy`` is the
noisy copy itself (clipped to the window for scoring, as every result).

Two rows for the model:

* ``autoencoder``: the model as the derived series runs it, told nothing: the noise is estimated
  from the noisy copies themselves (:mod:`pipeline.inference.noise_level`, the series' value over the copies
  scored together), at strength ``full``.
* ``autoencoder_told`` (noise-conditioned models): the model told the std of the noise that was
  added, as BM3D would be; the difference between the two rows is the cost of the estimate.

A model with slice context gets, in both rows, each scored slice with its linked neighbouring slices
as the derived series gives them (:class:`QaSlice`), each neighbour a noisy copy of its own seeded
from its own UID; the filters see the scored slice only.

Non-local means, the one filter here that needs the noise level, is told the same estimate (by
default; a fixed ``nlm_h`` is used as it is).
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from pipeline.inference.noise_level import SeriesNoise, estimate_series
from pipeline.inference.window import Window, hu_to_unit, unit_to_hu
from pipeline.qa.filters import FilterParams, classical_filters
from pipeline.qa.noise import NoiseModel, seed_from_uid
from pipeline.qa.yardstick import Method, Score, mean_score, score_methods

METHODS = ("noisy", "autoencoder", "autoencoder_told", "gaussian", "average", "median", "bilateral", "nlm")
FILTERS = METHODS[3:]  # the classical filters
QA_BLOCK = 16  # slices scored together (the model runs them in its own batches)
# The filters, noisy copies and metrics run on several slices of a block at once (they release the GIL).
QA_THREADS = min(QA_BLOCK, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@dataclass(frozen=True)
class SliceScore:
    series_uid: str
    sop_uid: str
    index: int
    method: str
    psnr: float
    ssim: float


@dataclass(frozen=True)
class MethodSummary:
    series_uid: str
    method: str
    slices: int
    mean_psnr: float
    min_psnr: float
    mean_ssim: float
    seconds: float


@dataclass(frozen=True)
class QaSlice:
    """A slice the QA scores: ``id`` (its SOPInstanceUID, ``uid/n`` for frame n of a multi-frame
    image; it seeds its noise), ``index`` (its position in the stack) and ``hu`` ((H, W) float32). For a
    model with slice context, ``before`` and ``after`` hold its linked neighbours as (id, HU), in stack
    order, as the derived series gives them to the model; each gets a noisy copy of its own, seeded
    from its own id."""
    id: str
    index: int
    hu: np.ndarray
    before: tuple[tuple[str, np.ndarray], ...] = ()
    after: tuple[tuple[str, np.ndarray], ...] = ()


# A scored slice's noisy stack for a model with slice context: (m, H, W) noisy copies on the window's
# unit scale, NOT clipped (its neighbours and itself, consecutive and linked), and its own position in it.
ContextStack = tuple[np.ndarray, int]


class SeriesQA:
    """The QA of one series, a block of slices at a time (:meth:`score`; memory does not grow with the
    series), then :meth:`result`.

    ``noise`` is a :class:`NoiseModel` or a Gaussian sigma; ``pixel_mm`` (the pixel spacing) scales
    the low-dose model. ``model_fn(noisy, estimate)`` maps (N, H, W) float32 noisy copies on the
    window's unit scale, NOT clipped (slices of one series, scored together), and their noise
    estimate (:func:`pipeline.inference.noise_level.estimate_series`, made once per block for the model
    and non-local means) to the model's output as the derived series makes it (row ``autoencoder``).
    ``told_fn(images, sigma)`` (row ``autoencoder_told``, left out when None) maps the copies clipped
    to [0, 1] and the std of each one's added noise ((N,), unit scale) to the model's output. When a
    block's slices have neighbours, both are also given ``stacks``: one :data:`ContextStack` per slice.
    ``kept``: positions (its keys) whose images to keep: each gets method -> (H, W) result in
    [0, 1] (``noisy`` is the noisy copy), for the QA panels.
    """

    def __init__(self, series_uid: str, window: Window, noise: NoiseModel | float,
                 model_fn: Callable[..., np.ndarray], filters: FilterParams, pixel_mm: float = 0.75,
                 kept: dict[int, dict[str, np.ndarray]] | None = None,
                 told_fn: Callable[..., np.ndarray] | None = None) -> None:
        self.series_uid, self.window, self.filters, self.pixel_mm = series_uid, window, filters, pixel_mm
        self.noise = noise if isinstance(noise, NoiseModel) else NoiseModel("gaussian", float(noise))
        self.model_fn, self.told_fn, self.kept = model_fn, told_fn, kept
        self.methods = [m for m in METHODS if m != "autoencoder_told" or told_fn is not None]
        self.rows: dict[str, list[SliceScore]] = {m: [] for m in self.methods}
        self.seconds = dict.fromkeys(self.methods, 0.0)

    def _copy(self, uid: str, hu: np.ndarray) -> tuple[np.ndarray, float]:
        hu = np.asarray(hu, np.float32)
        return self.noise.noisy(hu_to_unit(hu, self.window), hu, self.window.width, self.pixel_mm, seed_from_uid(uid))

    def score(self, block: Sequence[QaSlice]) -> None:
        """Score every method on ``block`` (slices of the series, scored together)."""
        if not block:
            return
        window, kept = self.window, self.kept
        with ThreadPoolExecutor(QA_THREADS, thread_name_prefix="qa") as pool:  # numpy, OpenCV, skimage release the GIL
            unit = hu_to_unit(np.stack([np.asarray(q.hu, np.float32) for q in block]), window)
            copies = list(pool.map(lambda q: self._copy(q.id, q.hu), block))
            noisy = np.stack([c[0] for c in copies])
            sigma = np.array([c[1] for c in copies], np.float32)  # per slice (low-dose noise differs by slice)
            extra: dict[str, list[ContextStack]] = {}
            if any(q.before or q.after for q in block):
                extra["stacks"] = [self._stack(q, own, pool) for q, own in zip(block, noisy)]
            # the model and a filter that needs the noise level are told the copies' estimate, not the truth
            estimate = estimate_series(list(unit_to_hu(noisy, window)))
            noise_unit = None if self.filters.nlm_h is not None else _unit_scale(estimate, window)
            funcs: dict[str, Method] = {"noisy": lambda x: x,
                                        "autoencoder": lambda x: self.model_fn(x, estimate, **extra)}
            if self.told_fn is not None:
                funcs["autoencoder_told"] = lambda x: self.told_fn(np.clip(x, 0.0, 1.0), sigma, **extra)
            funcs.update({name: (lambda x, f=f: np.stack(list(pool.map(f, x))))
                          for name, f in classical_filters(self.filters, noise_unit).items()})
            pos = [q.index for q in block]

            def keep(method: str, result: np.ndarray) -> None:
                for p, res in zip(pos, result):
                    if p in kept:
                        kept[p][method] = res.copy()  # not a view that keeps the block alive

            scored = score_methods(unit, noisy, {m: funcs[m] for m in self.methods}, mapper=pool.map,
                                   seconds=self.seconds, keep=None if kept is None else keep)
        for method, scores in scored.items():
            self.rows[method].extend(SliceScore(self.series_uid, q.id, q.index, method, s.psnr, s.ssim)
                                     for q, s in zip(block, scores, strict=True))

    def _stack(self, q: QaSlice, own: np.ndarray, pool: ThreadPoolExecutor) -> ContextStack:
        """``q``'s noisy stack: its neighbours' own noisy copies around its copy ``own``."""
        before = [c[0] for c in pool.map(lambda n: self._copy(*n), q.before)]
        after = [c[0] for c in pool.map(lambda n: self._copy(*n), q.after)]
        return np.stack([*before, own, *after]), len(before)

    def result(self) -> tuple[list[MethodSummary], list[SliceScore]]:
        """One :class:`MethodSummary` per method and every slice's scores, method by method."""
        summaries, scores = [], []
        for method in self.methods:
            rows = self.rows[method]
            scores.extend(rows)
            mean = mean_score(Score(r.psnr, r.ssim) for r in rows)
            summaries.append(MethodSummary(self.series_uid, method, len(rows), mean.psnr,
                                           min(r.psnr for r in rows), mean.ssim, self.seconds[method]))
        return summaries, scores


def qa_series(series_uid: str, slice_ids: Sequence[str], hu: np.ndarray | Sequence[np.ndarray], window: Window,
              noise: NoiseModel | float, model_fn: Callable[..., np.ndarray], filters: FilterParams,
              pixel_mm: float = 0.75, indices: Sequence[int] | None = None,
              kept: dict[int, dict[str, np.ndarray]] | None = None,
              told_fn: Callable[..., np.ndarray] | None = None) -> tuple[list[MethodSummary], list[SliceScore]]:
    """Score every method on every slice of ``hu`` ((N, H, W) float32 HU, or N (H, W) slices), each
    alone (no neighbours), :data:`QA_BLOCK` slices scored together (see :class:`SeriesQA`).
    ``slice_ids`` name each slice and seed its noise; ``indices`` are the slices' positions in their
    stack (default 0..N-1)."""
    positions = list(range(len(hu))) if indices is None else list(indices)
    qa = SeriesQA(series_uid, window, noise, model_fn, filters, pixel_mm, kept, told_fn)
    for b in range(0, len(positions), QA_BLOCK):
        qa.score([QaSlice(uid, p, h) for uid, p, h in zip(slice_ids[b:b + QA_BLOCK], positions[b:b + QA_BLOCK],
                                                             hu[b:b + QA_BLOCK])])
    return qa.result()


def estimated_noise_unit(noisy: np.ndarray, window: Window) -> float:
    """The noise estimate (unit scale) of (N, H, W) noisy copies scored together, as the delivered
    model reads it (their series value; 0 when nothing reads)."""
    return _unit_scale(estimate_series(list(unit_to_hu(noisy, window))), window)


def _unit_scale(estimate: SeriesNoise, window: Window) -> float:
    return estimate.sigma_hu / window.width if math.isfinite(estimate.sigma_hu) else 0.0
