"""Blotchy noise through the 2x2 polyphase sub-images (pipeline/inference/polyphase.py), pass by pass.

    python -m bench.polyphase [--parts validation] [--levels soft@0.03 standard@0.03 soft@0.05 soft@0.015 lowdose@20000]
                              [--weights W] [--realct-dir ../shared/data/realct]

The noise of a smooth reconstruction kernel is blotchy: most of its power lies at 0.05-0.1 cycles
per pixel, where the model, trained mostly on white noise, treats it as anatomy. Taking every other
pixel in each direction (the four 2x2 polyphase sub-images of a slice) doubles those frequencies,
so in each sub-image the same noise is finer and closer to white. Each slice here is denoised

* ``direct``: as the derived series runs it (strength ``full``, told the level the series estimate
  and the model's level rule give);
* ``poly est``: its four sub-images denoised as one series, told what their own estimate gives, and
  put back together;
* ``poly std``: the same, told the series' estimated std itself (as white noise is told);
* ``mean est``: the mean of ``direct`` and ``poly est`` (twice the model's CPU time);
* ``blotchy_pass mean``: as the derived series runs it with that setting: below the whiteness gate
  the mean of the model's direct and ``poly std`` outputs, above it ``direct``.

Same noisy copies as :mod:`bench.quality` (seed 0, salt ``qa-noise``), PSNR against the clipped
reference in [-1000, 1000] HU. Prints each level's estimated whiteness (median over the slices) and
mean PSNR per variant. Lone slices (the 2-D path); the stacks network is not measured here.
"""
from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from bench.quality import noise_model, noisy_copy, realct_slices
from models.store import load_model
from pipeline.inference.denoiser import Denoiser
from pipeline.inference.noise_level import estimate_series
from pipeline.inference.polyphase import merge, phases
from pipeline.inference.window import Window, unit_to_hu
from pipeline.qa.metrics import psnr
from pipeline.study_run import delivered_model

W = Window()
VARIANTS = ("noisy", "direct", "poly est", "poly std", "mean est", "blotchy_pass mean")


def variants(direct: Denoiser, built: Denoiser, noisy_unit: np.ndarray) -> tuple[list[np.ndarray], float]:
    """The results of :data:`VARIANTS` for one noisy copy, and its estimated whiteness. Each pass is
    the QA report's delivered model (strength ``full``, each slice alone) of ``direct`` (``blotchy_pass
    off``), except the last, which is ``built``'s (``blotchy_pass mean``: the Denoiser's own gate and
    mean); ``poly est`` lets it estimate the sub-images' noise itself."""
    delivered = delivered_model(direct, W, [])
    noise = estimate_series([unit_to_hu(noisy_unit, W)])
    stack = noisy_unit[None]
    sub = np.concatenate(phases(stack))
    one = delivered(stack, noise)[0]
    poly_est = merge(list(delivered(sub)[:, None]), stack.shape[-2:])[0]
    poly_std = merge(list(delivered(sub, dataclasses.replace(noise, whiteness=1.0))[:, None]), stack.shape[-2:])[0]
    mean = delivered_model(built, W, [])(stack, noise)[0]
    return [noisy_unit, one, poly_est, poly_std, (one + poly_est) / 2, mean], noise.whiteness


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", nargs="*", default=["validation"])
    ap.add_argument("--levels", nargs="*", default=["soft@0.03", "standard@0.03", "soft@0.05", "soft@0.015",
                                                    "lowdose@20000"])
    ap.add_argument("--weights", default=None)
    ap.add_argument("--realct-dir", default="../shared/data/realct")
    args = ap.parse_args()
    for level in args.levels:
        noise_model(level)  # a bad level stops the run before any slice is read
    loaded = load_model(args.weights)
    denoiser = Denoiser(loaded, "cpu", cpu_batch_size=1)
    built = Denoiser(loaded, "cpu", cpu_batch_size=1, blotchy_pass="mean")
    print(f"model {denoiser.loaded.name}; PSNR dB, window [-1000, 1000] HU, strength full, lone slices")
    print("| part | noise | slices | whiteness | " + " | ".join(VARIANTS) + " |")
    print("|---" * (len(VARIANTS) + 4) + "|")
    for part in args.parts:
        slices = realct_slices(part, args.realct_dir)
        for level in args.levels:
            scores, white = [], []
            for sl in slices:
                noisy, _ = noisy_copy(sl, level, 0)
                results, whiteness = variants(denoiser, built, noisy)
                scores.append([psnr(sl.reference, np.clip(r, 0.0, 1.0)) for r in results])
                white.append(whiteness)
            mean = np.mean(scores, axis=0)
            print(f"| {part} | {level} | {len(slices)} | {np.median(white):.2f} | "
                  + " | ".join(f"{v:.2f}" for v in mean) + " |", flush=True)


if __name__ == "__main__":
    main()
