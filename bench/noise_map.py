"""What a local noise level is worth (pipeline/inference/noise_map.py), on the real validation slices.

    python -m bench.noise_map [--weights W] [--levels lowdose@20000 0.02 0.07 soft@0.03] [--smoothing 1 2 3 5]
                              [--part validation]

Each slice gets the seeded noisy copy of bench/quality.py (the QA report's copy). The model runs on
it as the derived series feeds it (clipped to the window, a context model's neighbours replicated
as for a lone slice), told, in window units:

* ``one level``: the series estimate (pipeline/inference/noise_level.py), as ``noise_level_map =
  series`` tells it;
* ``added std``: the std of the added noise, as BM3D is told;
* ``best k``: the best of 0.75, 1, 1.25, 1.5 times the estimate, per slice (an oracle);
* ``true map`` (low-dose noise only, an oracle): the local std of the added noise itself, Gaussian
  smoothed over 8 px;
* ``map sN``: the estimate times the slice's estimated map (relative_noise_map) smoothed over N
  blocks.

No level rule, strength blend or beyond-window restoration: the level told is the only difference
between the columns (bench/quality.py measures the model as delivered). Prints the mean PSNR (dB,
data range 1, the window [-1000, 1000] HU) per noise and column.
"""
from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch

from bench.quality import W, noisy_copy, realct_slices
from models.store import load_model
from models.training import realct
from models.training.train import told_model
from pipeline.inference.noise_level import estimate_series
from pipeline.inference.noise_map import relative_noise_map
from pipeline.inference.window import unit_to_hu
from pipeline.qa.metrics import psnr

GAINS = (0.75, 1.0, 1.25, 1.5)
TRUE_MAP_PX = 8.0


def told(model: torch.nn.Module):
    """(H, W) noisy unit-scale slice (a lone slice: its own neighbours), level (a number or an (H, W)
    map, unit scale) -> output in [0, 1], through the training's yardstick method (told_model)."""
    def run(noisy: np.ndarray, level: float | np.ndarray) -> np.ndarray:
        sigma = level[None, None] if isinstance(level, np.ndarray) else level
        with torch.inference_mode():
            out = told_model(model, sigma)(np.repeat(np.asarray(noisy, np.float32)[None], model.slices, axis=0))
        return np.clip(out, 0, 1)
    return run


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=None)
    ap.add_argument("--levels", nargs="*", default=["lowdose@20000", "0.02", "0.07", "soft@0.03"])
    ap.add_argument("--smoothing", nargs="*", type=float, default=[1.0, 2.0, 3.0, 5.0])
    ap.add_argument("--part", default="validation")
    ap.add_argument("--realct-dir", default=realct.DEFAULT_DIR)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    loaded = load_model(args.weights)
    if not loaded.model.noise_map:
        raise SystemExit(f"model {loaded.name} is blind: it takes no noise level")
    run = told(loaded.model.eval())
    slices = realct_slices(args.part, args.realct_dir)
    print(f"# model {loaded.name}; {args.part} part, {len(slices)} slices; window [{W.low:g}, {W.high:g}] HU; "
          "mean PSNR dB")
    columns = ["one level", "added std", "best k", "true map"] + [f"map s{s:g}" for s in args.smoothing]
    print("| noise | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for level in args.levels:
        scores: dict[str, list[float]] = {c: [] for c in columns}
        for sl in slices:
            noisy, added = noisy_copy(sl, level, 0)
            hu = unit_to_hu(noisy, W)
            estimate = estimate_series([hu]).sigma_hu / W.width
            ref = sl.reference
            by_gain = [psnr(ref, run(noisy, k * estimate)) for k in GAINS]
            scores["one level"].append(by_gain[GAINS.index(1.0)])
            scores["added std"].append(psnr(ref, run(noisy, added)))
            scores["best k"].append(max(by_gain))
            if level.startswith("lowdose"):
                noise = (noisy - sl.unit).astype(np.float32)
                local = np.maximum(np.sqrt(cv2.GaussianBlur(noise * noise, (0, 0), TRUE_MAP_PX)), 1e-3)
                scores["true map"].append(psnr(ref, run(noisy, local)))
            for s in args.smoothing:
                scores[f"map s{s:g}"].append(psnr(ref, run(noisy, relative_noise_map(hu, s) * estimate)))
        print(f"| {level} | " + " | ".join(f"{np.mean(v):.2f}" if v else "-" for v in scores.values()) + " |",
              flush=True)


if __name__ == "__main__":
    main()
