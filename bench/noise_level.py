"""Does the noise estimate (pipeline/inference/noise_level.py) read the noise a scan carries?

    python -m bench.noise_level [--parts validation test] [--added 0 10 20 40 80 160] [--lowdose 20000 200000]

On the real CT set's validation and test parts (no choice of the estimator is made on the test part):

* Known Gaussian noise added in HU (not clipped) to each slice as stored: the estimate should read
  sqrt(own^2 + added^2), ``own`` being its reading of the slice as stored. Target: within +-10 % for
  added noise of 20 HU or more.
* The low-dose simulation (pipeline/synthetic/lowdose.py, Poisson noise on simulated projections,
  FBP, at each slice's pixel size): the added noise is known; its level is the median of its std
  over the blocks the estimator may measure in (the slice's uniform soft tissue; the noise is not
  stationary: it is stronger behind dense paths). Target: within +-15 %.
* As stored: against the uniform-region measure of pipeline/qa/scan_measures.py (the QA report's
  ``scan_noise_hu_original``), where that finds a region.

Prints a table per source: the median and worst ratio estimate / expected per noise level, and the
share of slices within the target.

``--calibrate`` instead measures what the model needs to be told (pipeline/inference/strength.py,
model_level_hu): on the validation part, with white noise, CT-like noise of ramp-Gaussian spectra
(NPS(f) = f exp(-(f / fc)^2), fc in cycles per pixel: lower is blotchier) and the low-dose
simulation (:data:`CALIBRATION_NOISE`), the PSNR of the model told k times the estimated std, for
each k, beside the noise's whiteness and what the rule tells it; the rule follows the best k
against the whiteness, and the table ends with its mean loss against always picking the best k.
"""
from __future__ import annotations

import argparse
import math
from collections import defaultdict

import numpy as np

from models.training import realct
from pipeline.inference.noise_level import block_noise, candidates, slice_noise
from pipeline.inference.strength import LevelRule
from pipeline.inference.window import Window, hu_to_unit
from pipeline.qa.metrics import psnr
from pipeline.qa.noise import add_gaussian_noise, seed_from_uid
from pipeline.qa.scan_measures import REGION_PX, uniform_regions
from pipeline.synthetic.kernel_noise import kernel_noise
from pipeline.synthetic.lowdose import low_dose_noise_whole_hu


def lowdose_std_in_tissue(noise_hu: np.ndarray, hu: np.ndarray) -> float:
    """The added low-dose noise's typical std where the estimator looks: the median over the
    slice's candidate blocks (its uniform soft tissue, else any tissue) of the pure noise's std per
    block. The noise is not stationary, so its std over the whole field (zero outside the body's
    attenuation paths) would be another number."""
    _, mask, _ = candidates(hu)
    per_block = block_noise(noise_hu)
    return float(np.median(per_block[mask] if mask.any() else per_block[per_block > 0]))


def uniform_region_noise(hu: np.ndarray) -> float:
    stds = [float(hu[r:r + REGION_PX, c:c + REGION_PX].std()) for r, c in uniform_regions(hu)]
    return float(np.median(stds)) if stds else math.nan


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="*", default=["validation", "test"])
    ap.add_argument("--added", nargs="*", type=float, default=[10, 20, 40, 80, 160])
    ap.add_argument("--lowdose", nargs="*", type=float, default=[2e4, 2e5])
    ap.add_argument("--realct-dir", default=realct.DEFAULT_DIR)
    ap.add_argument("--per-slice", action="store_true", help="print every slice's figures")
    ap.add_argument("--calibrate", action="store_true", help="best model level against the noise's whiteness")
    ap.add_argument("--gains", nargs="*", type=float, default=[0.5, 0.75, 1, 1.25, 1.5, 2, 3, 4, 6, 8])
    ap.add_argument("--weights", default=None, help="with --calibrate: the model (default: the shipped one)")
    args = ap.parse_args(argv)
    if args.calibrate:
        calibrate(args)
        return
    rows: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for part in args.parts:
        for sl in realct.load_part(part, args.realct_dir):
            key = (part, sl.group)
            own = slice_noise(sl.hu)
            rows[key]["own"].append(own.sigma_hu)
            rows[key]["method " + own.method].append(1.0)
            ur = uniform_region_noise(sl.hu)
            if math.isfinite(ur):
                rows[key]["as stored"].append(own.sigma_hu / ur)
            line = [f"{sl.file}: own {own.sigma_hu:.1f} ({own.method}), uniform regions {ur:.1f}"]
            for added in args.added:
                noisy = add_gaussian_noise(sl.hu, added, seed_from_uid(sl.file, "noise-level"))
                est = slice_noise(noisy).sigma_hu
                ratio = est / math.hypot(own.sigma_hu, added)
                rows[key][f"+{added:g} HU"].append(ratio)
                line.append(f"+{added:g}: {ratio:.3f}")
            for i0 in args.lowdose:
                noise = low_dose_noise_whole_hu(sl.hu, sl.pixel_mm, i0, seed_from_uid(sl.file, "noise-level-lowdose"))
                added = lowdose_std_in_tissue(noise, sl.hu)
                est = slice_noise(sl.hu + noise).sigma_hu
                ratio = est / math.hypot(own.sigma_hu, added)
                rows[key][f"low dose I0 {i0:g}"].append(ratio)
                line.append(f"ld{i0:g} ({added:.0f} HU): {ratio:.3f}")
            if args.per_slice:
                print("# " + "; ".join(line))
    levels = ["as stored"] + [f"+{a:g} HU" for a in args.added] + [f"low dose I0 {i:g}" for i in args.lowdose]
    print("\nEstimate / expected (expected: sqrt(own^2 + added^2); as stored: the uniform-region measure). "
          "Cells: median ratio [worst] share within target (+-10 % Gaussian >= 20 HU, +-15 % low dose)")
    print("| part | source (slices) | own noise HU (median, range) | " + " | ".join(levels) + " |")
    print("|---|---|---|" + "---|" * len(levels))
    for (part, group), r in [*rows.items(), *_all_rows(rows)]:
        own = r["own"]
        cells = []
        for level in levels:
            v = np.array(r.get(level, []))
            if not v.size:
                cells.append("-")
                continue
            tol = 0.15 if level.startswith("low dose") else 0.10
            worst = v[np.argmax(np.abs(v - 1))]
            inside = np.mean(np.abs(v - 1) <= tol)
            cells.append(f"{np.median(v):.3f} [{worst:.2f}] {inside:.0%}")
        print(f"| {part} | {group} ({len(own)}) | {np.median(own):.1f} ({min(own):.1f}-{max(own):.1f}) | "
              + " | ".join(cells) + " |")


def shaped_noise(shape: tuple[int, int], fc: float | None, seed: int) -> np.ndarray:
    """Unit-std noise: white (``fc`` None) or with the ramp-Gaussian spectrum of cutoff ``fc``."""
    if fc is None:
        return np.random.default_rng(seed).standard_normal(shape)
    return kernel_noise(shape, fc, 1.0, seed)


CALIBRATION_NOISE = {  # seed key: (label, ramp-Gaussian cutoff fc, None for white, or "lowdose"; std HU or I0)
    "white60": ("white 60 HU", None, 60.0), "fc.35": ("fc 0.35, 60 HU", 0.35, 60.0),
    "fc.2": ("fc 0.2, 60 HU", 0.2, 60.0), "fc.1": ("fc 0.1, 60 HU", 0.1, 60.0),
    "fc.2x20": ("fc 0.2, 20 HU", 0.2, 20.0), "ld2e4": ("low dose I0 20000", "lowdose", 2e4),
    "ld3e3": ("low dose I0 3000", "lowdose", 3e3)}


def calibrate(args) -> None:
    """Per validation slice and noise: the PSNR of the model told k x the estimate, for each k of
    ``--gains`` (relative to the best k), then the mean loss of pipeline/inference/strength.py's rule against
    always picking the best k."""
    from models.store import load_model
    from pipeline.inference.denoiser import Denoiser
    from pipeline.inference.strength import model_level_hu

    w = Window()
    denoiser = Denoiser(load_model(args.weights), "cpu", cpu_batch_size=1)
    rule_now = denoiser.lone_level_rule  # the slices here run alone: a paired model's lone network
    pairs: list[tuple[float, np.ndarray]] = []
    gains = np.array(args.gains)
    print("| slice | noise | estimate HU | whiteness | " + " | ".join(f"k {k:g}" for k in gains)
          + " | best k | rule's k | rule's loss dB |\n|---|---|---|---|" + "---|" * len(gains) + "---|---|---|")
    losses = []
    for sl in realct.load_part("validation", args.realct_dir):
        if slice_noise(sl.hu).method == "high-pass":
            continue  # no tissue to measure: nothing to calibrate on
        ref = np.clip(hu_to_unit(sl.hu, w), 0, 1)
        for key, (label, fc, level) in CALIBRATION_NOISE.items():
            seed = seed_from_uid(sl.file, "calibrate " + key)
            noise = (low_dose_noise_whole_hu(sl.hu, sl.pixel_mm, level, seed) if fc == "lowdose"
                     else level * shaped_noise(sl.hu.shape, fc, seed))
            est = slice_noise((sl.hu + noise).astype(np.float32))
            x = np.clip(hu_to_unit(sl.hu + noise, w), 0, 1)[None]
            scores = np.array([psnr(ref, np.clip(denoiser.denoise_unit(x, k * est.sigma_hu / w.width)[0], 0, 1))
                               for k in gains])
            rule = model_level_hu(est.sigma_hu, est.whiteness, rule_now) / est.sigma_hu
            pairs.append((est.whiteness, scores))
            losses.append(float(np.interp(np.log(rule), np.log(gains), scores) - scores.max()))
            print(f"| {sl.file} | {label} | {est.sigma_hu:.1f} | {est.whiteness:.2f} | "
                  + " | ".join(f"{v - scores.max():+.2f}" for v in scores)
                  + f" | {gains[int(np.argmax(scores))]:g} | {rule:.2f} | {losses[-1]:+.2f} |", flush=True)
    if losses:
        print(f"\nthe model's rule (exponent {rule_now.exponent:g}, at most {rule_now.max_gain:g}x): mean loss "
              f"against the best k {np.mean(losses):+.3f} dB (worst {min(losses):+.2f}) over {len(losses)} "
              "slice-noise pairs")
        best, loss = fit_rule(pairs, gains)
        print(f"best rule on these pairs: exponent {best.exponent:g}, at most {best.max_gain:g}x: mean loss "
              f"{loss:+.3f} dB (export it with --level-rule {best.exponent:g},{best.max_gain:g})")


def fit_rule(pairs: list[tuple[float, np.ndarray]], gains: np.ndarray,
             exponents: tuple[float, ...] = tuple(np.arange(0, 8.01, 0.2)),
             max_gains: tuple[float, ...] = (1, 1.25, 1.5, 2, 3, 4, 6, 8)) -> tuple[LevelRule, float]:
    """The :class:`LevelRule` of the grid with the least mean loss against the best k over
    ``pairs`` of (whiteness, PSNR at each of ``gains``), each k's PSNR read off by linear
    interpolation in log k; returns it with its mean loss (dB, <= 0)."""
    best: tuple[float, LevelRule] | None = None
    for e in exponents:
        for g in max_gains:
            rule = LevelRule(round(float(e), 2), float(g))
            loss = float(np.mean([np.interp(np.log(rule.gain(wh)), np.log(gains), sc) - sc.max()
                                  for wh, sc in pairs]))
            if best is None or loss > best[0] + 1e-9:
                best = (loss, rule)
    assert best is not None
    return best[1], best[0]


def _all_rows(rows):
    parts = sorted({p for p, _ in rows})
    for part in parts:
        merged: dict[str, list[float]] = defaultdict(list)
        for (p, _), r in rows.items():
            if p == part:
                for k, v in r.items():
                    merged[k].extend(v)
        yield (part, "all"), merged


if __name__ == "__main__":
    main()
