"""How the level the derived series tells the model relates to low-dose noise where it is: the std
of whole-slice low-dose noise in soft-tissue patches over the slice's noise estimate.

    python -m bench.lowdose_level [--part train] [--slices 7] [--i0 2e4] [--patch 96]

Each 512x512 slice of the part (every len/N-th, N = ``--slices``) gets low-dose noise simulated on
the WHOLE slice (pipeline/synthetic/lowdose.py, seeded 1000 + k), as the QA copies and
``bench.quality``'s low-dose rows have it. The noisy slice's estimate is what the derived series
reads (pipeline/inference/noise_level.py, flattest blocks). For every patch on a half-patch grid
that is at least half soft tissue (-200 to 300 HU in the reference), the ratio of the added noise's
std in the patch to that estimate. Training tells a low-dose patch its own std (ratio 1 by
construction); the table shows what production tells instead. Prints one row per slice and one for
all.
"""
from __future__ import annotations

import argparse

import numpy as np

from models.training import realct
from pipeline.inference.noise_level import slice_noise
from pipeline.synthetic.lowdose import low_dose_noise_whole_hu

# fat to enhanced soft tissue: wider than the soft tissue the estimator measures in
# (pipeline.inference.noise_level.SOFT_TISSUE_HU, -20 to 120 HU)
BODY_TISSUE_HU = (-200.0, 300.0)


def patch_ratios(hu: np.ndarray, pixel_mm: float, i0: float, seed: int, patch: int) -> tuple[float, np.ndarray]:
    """(the noisy slice's estimate in HU, the noise std of each soft-tissue patch over it)."""
    noise = low_dose_noise_whole_hu(hu, pixel_mm, i0, seed)
    estimate = slice_noise(hu + noise).sigma_hu
    ratios = []
    for r in range(0, hu.shape[0] - patch + 1, patch // 2):
        for c in range(0, hu.shape[1] - patch + 1, patch // 2):
            ref = hu[r:r + patch, c:c + patch]
            if np.mean((ref > BODY_TISSUE_HU[0]) & (ref < BODY_TISSUE_HU[1])) >= 0.5:
                ratios.append(float(noise[r:r + patch, c:c + patch].std()) / estimate)
    return estimate, np.array(ratios)


def _row(name: str, ratios: np.ndarray, estimate: str) -> str:
    p10, p50, p90 = np.percentile(ratios, [10, 50, 90]) if ratios.size else (np.nan,) * 3
    return f"| {name} | {estimate} | {ratios.size} | {p50:.2f} | {p10:.2f} | {p90:.2f} |"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", default="train", choices=sorted(realct.SPLIT))
    p.add_argument("--slices", type=int, default=7)
    p.add_argument("--i0", type=float, default=2e4)
    p.add_argument("--patch", type=int, default=96)
    p.add_argument("--realct-dir", default=realct.DEFAULT_DIR)
    args = p.parse_args(argv)
    square = [s for s in realct.load_part(args.part, args.realct_dir) if s.hu.shape == (512, 512)]
    picked = square[::max(1, len(square) // args.slices)][:args.slices]
    print(f"# {args.part} part, {len(picked)} slices, low-dose I0 {args.i0:g}, {args.patch}-px patches")
    print("| slice | estimate HU | soft-tissue patches | patch std / estimate: median | 10th pct | 90th pct |")
    print("|---|---|---|---|---|---|")
    every = []
    for k, s in enumerate(picked):
        estimate, ratios = patch_ratios(s.hu, s.pixel_mm, args.i0, 1000 + k, args.patch)
        every.append(ratios)
        print(_row(s.file.rsplit("/", 1)[-1], ratios, f"{estimate:.1f}"), flush=True)
    print(_row("all", np.concatenate(every) if every else np.array([]), ""))


if __name__ == "__main__":
    main()
