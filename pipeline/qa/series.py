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


def qa_series(series_uid: str, slice_ids: Sequence[str], hu: np.ndarray | Sequence[np.ndarray], window: Window,
              noise: NoiseModel | float, model_fn: Callable[[np.ndarray, SeriesNoise], np.ndarray],
              filters: FilterParams, pixel_mm: float = 0.75,
              indices: Sequence[int] | None = None, kept: dict[int, dict[str, np.ndarray]] | None = None,
              told_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
              ) -> tuple[list[MethodSummary], list[SliceScore]]:
    """Score every method on every slice of ``hu`` ((N, H, W) float32 HU, or N (H, W) slices).

    ``noise`` is a :class:`NoiseModel` or a Gaussian sigma; ``pixel_mm`` (the pixel spacing) scales
    the low-dose model. ``slice_ids`` name each slice (its SOPInstanceUID, ``uid/n`` for frame n of a multi-frame
    image) and seed its noise. ``model_fn(noisy, estimate)`` maps (N, H, W) float32 noisy copies on
    the window's unit scale, NOT clipped (slices of one series, scored together), and their noise
    estimate (:func:`pipeline.inference.noise_level.estimate_series`, made once per block for the model
    and non-local means) to the model's output as the derived series makes it (row ``autoencoder``).
    ``told_fn(images, sigma)`` (row ``autoencoder_told``, left out when None) maps the copies clipped
    to [0, 1] and the std of each one's added noise ((N,), unit scale) to the model's output.
    ``indices`` are the slices' positions in their stack (default 0..N-1).
    ``kept``: positions (its keys) whose images to keep: each gets method -> (H, W) result in
    [0, 1] (``noisy`` is the noisy copy), for the QA panels.
    """
    positions = list(range(len(hu))) if indices is None else list(indices)
    noise = noise if isinstance(noise, NoiseModel) else NoiseModel("gaussian", float(noise))
    methods = [m for m in METHODS if m != "autoencoder_told" or told_fn is not None]
    rows: dict[str, list[SliceScore]] = {m: [] for m in methods}
    seconds = dict.fromkeys(methods, 0.0)
    with ThreadPoolExecutor(QA_THREADS, thread_name_prefix="qa") as pool:  # numpy, OpenCV, skimage release the GIL
        for b in range(0, len(positions), QA_BLOCK):  # a block at a time: memory does not grow with the series
            block_hu = np.stack([np.asarray(h, np.float32) for h in hu[b:b + QA_BLOCK]])
            unit = hu_to_unit(block_hu, window)
            ids, pos = slice_ids[b:b + QA_BLOCK], positions[b:b + QA_BLOCK]
            copies = list(pool.map(lambda u, h, uid: noise.noisy(u, h, window.width, pixel_mm, seed_from_uid(uid)),
                                   unit, block_hu, ids))
            noisy = np.stack([c[0] for c in copies])
            sigma = np.array([c[1] for c in copies], np.float32)  # per slice (low-dose noise differs by slice)
            # the model and a filter that needs the noise level are told the copies' estimate, not the truth
            estimate = estimate_series(list(unit_to_hu(noisy, window)))
            noise_unit = None if filters.nlm_h is not None else _unit_scale(estimate, window)
            funcs: dict[str, Method] = {"noisy": lambda x: x, "autoencoder": lambda x: model_fn(x, estimate)}
            if told_fn is not None:
                funcs["autoencoder_told"] = lambda x: told_fn(np.clip(x, 0.0, 1.0), sigma)
            funcs.update({name: (lambda x, f=f: np.stack(list(pool.map(f, x))))
                          for name, f in classical_filters(filters, noise_unit).items()})

            def keep(method: str, result: np.ndarray, pos: list[int] = pos) -> None:
                for p, res in zip(pos, result):
                    if p in kept:
                        kept[p][method] = res.copy()  # not a view that keeps the block alive

            scored = score_methods(unit, noisy, {m: funcs[m] for m in methods}, mapper=pool.map, seconds=seconds,
                                   keep=None if kept is None else keep)
            for method, scores in scored.items():
                rows[method].extend(SliceScore(series_uid, uid, p, method, s.psnr, s.ssim)
                                    for p, uid, s in zip(pos, ids, scores, strict=True))
    summaries, scores = [], []
    for method in methods:
        scores.extend(rows[method])
        mean = mean_score(Score(r.psnr, r.ssim) for r in rows[method])
        summaries.append(MethodSummary(series_uid, method, len(rows[method]), mean.psnr,
                                       min(r.psnr for r in rows[method]), mean.ssim, seconds[method]))
    return summaries, scores


def estimated_noise_unit(noisy: np.ndarray, window: Window) -> float:
    """The noise estimate (unit scale) of (N, H, W) noisy copies scored together, as the delivered
    model reads it (their series value; 0 when nothing reads)."""
    return _unit_scale(estimate_series(list(unit_to_hu(noisy, window))), window)


def _unit_scale(estimate: SeriesNoise, window: Window) -> float:
    return estimate.sigma_hu / window.width if math.isfinite(estimate.sigma_hu) else 0.0
