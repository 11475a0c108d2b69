"""Choose the classical filters' parameters fairly: PSNR sweep at one noise level.

    python -m bench.filter_sweep [--sigma 0.07] [--slices 4]

Prints, per filter, the mean PSNR (data range 1, window [-1000, 1000] HU) of each setting on
seeded noisy copies of held-out synthetic slices; the best row of each filter is what
``FilterParams`` defaults to.
"""
from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable

import cv2
import numpy as np

from pipeline.inference.window import Window
from pipeline.qa.filters import non_local_means
from pipeline.qa.metrics import psnr
from pipeline.qa.noise import add_gaussian_noise
from pipeline.synthetic.references import clean_slice

SWEEP_SEED_BASE = 950_000  # disjoint from training (>= 1e6), validation (9e5 + i) and samples (< 1e5)


def candidates() -> dict[str, list[tuple[tuple, Callable[[np.ndarray], np.ndarray]]]]:
    """Filter name -> [(parameters, function on a float32 [0, 1] image)] to sweep."""
    return {
        "gaussian": [((k, s), lambda im, k=k, s=s: cv2.GaussianBlur(im, (k, k), s))
                     for k, s in itertools.product((3, 5, 7, 9), (0.6, 0.8, 1.0, 1.2, 1.5, 2.0))],
        "average": [((k,), lambda im, k=k: cv2.blur(im, (k, k))) for k in (3, 5, 7)],
        "median": [((k,), lambda im, k=k: cv2.medianBlur(im, k)) for k in (3, 5)],
        "bilateral": [((d, sc, ss), lambda im, d=d, sc=sc, ss=ss: cv2.bilateralFilter(im, d, sc, ss))
                      for d, sc, ss in itertools.product((5, 7, 9), (0.05, 0.1, 0.2, 0.3, 0.5), (1.5, 3.0, 5.0))],
        "nlm": [((h,), lambda im, h=h: non_local_means(im, h)) for h in (0.01, 0.02, 0.04, 0.06, 0.08)],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sigma", type=float, default=0.07)
    ap.add_argument("--slices", type=int, default=4)
    args = ap.parse_args()
    refs = [clean_slice(SWEEP_SEED_BASE + i, Window()) for i in range(args.slices)]
    noisy = [add_gaussian_noise(r, args.sigma, SWEEP_SEED_BASE + i) for i, r in enumerate(refs)]
    print(f"sigma={args.sigma} slices={args.slices} noisy PSNR="
          f"{np.mean([psnr(r, n) for r, n in zip(refs, noisy)]):.2f} dB")
    print(f"{'filter':<10} {'params':<22} {'mean PSNR':>9}")
    for name, cands in candidates().items():
        scored = sorted(((np.mean([psnr(r, f(n)) for r, n in zip(refs, noisy)]), p) for p, f in cands), reverse=True)
        for score, p in scored[:3]:
            print(f"{name:<10} {str(p):<22} {score:9.2f}")


if __name__ == "__main__":
    main()
