"""The yardstick: every method gets the same noisy copy; each result is clipped to the window and
scored against the same reference by PSNR (data range 1) and SSIM.

The noisy copy is made by :mod:`pipeline.qa.noise` (added in HU, seeded, NOT clipped) before it
comes here; the reference is the clean slice on the window's unit scale, clipped to [0, 1] here. The
QA report (:mod:`pipeline.qa.series`), the benchmarks (``python -m bench.quality``), the model card
(:func:`models.training.card.measure`) and training validation (:func:`models.training.train.evaluate`)
all score through :func:`score_methods`, so the four cannot drift apart.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from pipeline.qa.metrics import psnr, ssim

# a method maps the noisy copy (unit scale, NOT clipped; (H, W) or (N, H, W)) to its result, same shape
Method = Callable[[np.ndarray], np.ndarray]
Mapper = Callable[..., Iterable]


@dataclass(frozen=True)
class Score:
    psnr: float
    ssim: float  # NaN when not measured (``with_ssim=False``)


def score_methods(reference: np.ndarray, noisy: np.ndarray, methods: Mapping[str, Method], *,
                  with_ssim: bool = True, mapper: Mapper = map,
                  seconds: dict[str, float] | None = None, clock: Callable[[], float] = time.perf_counter,
                  keep: Callable[[str, np.ndarray], None] | None = None) -> dict[str, list[Score]]:
    """Method name -> one :class:`Score` per slice of ``reference`` ((H, W): one slice, or (N, H, W)).

    Each method is called once with ``noisy`` (the same array for all; a method must not modify it;
    for a model with slice context it holds the slice's neighbours too) and must return an array of
    the reference's shape; that result is clipped to [0, 1]. ``mapper`` (``map`` or a thread pool's ``map``) scores the
    slices; ``seconds[name]`` accumulates each method's time by ``clock`` (the call and the clip, not
    the scoring); ``keep(name, result)`` sees each clipped result (for figures)."""
    reference = np.clip(np.asarray(reference, np.float32), 0.0, 1.0)
    stacked = reference.ndim == 3
    refs = reference if stacked else reference[None]
    out: dict[str, list[Score]] = {}
    for name, method in methods.items():
        t0 = clock()
        result = np.clip(method(noisy), 0.0, 1.0)
        if seconds is not None:
            seconds[name] = seconds.get(name, 0.0) + clock() - t0
        if result.shape != reference.shape:
            raise ValueError(f"method {name!r} returned {result.shape} for a copy of {reference.shape}")
        if keep is not None:
            keep(name, result)
        results = result if stacked else result[None]
        out[name] = list(mapper(lambda r, x: Score(psnr(r, x), ssim(r, x) if with_ssim else math.nan),
                                refs, results))
    return out


def mean_score(scores: Iterable[Score]) -> Score:
    """The mean PSNR and SSIM of ``scores`` (infinite PSNRs, of identical images, left out)."""
    scores = list(scores)
    finite = [s.psnr for s in scores if math.isfinite(s.psnr)]
    return Score(float(np.mean(finite)) if finite else math.inf, float(np.mean([s.ssim for s in scores])))
