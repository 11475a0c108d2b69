"""Quality benchmark: the model against classical denoisers at several noise levels.

    python bench/quality.py [--slices 3] [--sigmas 0.02 0.05 0.07 0.10] [--lowdose-i0 2e4] [--no-bm3d]
                            [--card models/weights/ct_denoiser.json]

Data: held-out synthetic 512x512 slices (seeds 960 000 + i, never used for training or for the
filter sweep; all five regions, tissue texture and the scan's own noise kept in the reference, as in
a real scan) and two real CT slices that ship with pydicom, each with its own noise and
``--slices`` noise realizations: CT_small.dcm (GE, 128x128 crop at the spine) and
J2K_pixelrep_mismatch.dcm ("head512": a Canon/Toshiba head slice, 512x512, lossless JPEG 2000). No
real slice is ever used for training. Noise: Gaussian with sigma (fraction of the window
[-1000, 1000] HU), and the low-dose CT model (Poisson photon noise on projections + FBP). Each
classical filter uses its best-PSNR setting for that noise level and data set, chosen on separate
tuning slices (seeds 950 000 + i) for the synthetic data and, generously, on each real slice itself
with other noise seeds; low-dose noise uses each slice's own pixel size; BM3D is given the true noise
sigma. Prints mean PSNR (dB) / SSIM per method
and CPU seconds per 512x512 slice. With ``--card`` the real-slice figures are recorded in that model
card under ``evaluation.real_ct``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.filter_sweep import SWEEP_SEED_BASE, candidates
from models.store import load_model
from models.train import clean_slice
from pipeline.atomic import write_json
from pipeline.denoise import Denoiser
from pipeline.lowdose import low_dose_noise_hu
from pipeline.metrics import psnr, ssim
from pipeline.noise import add_gaussian_noise
from pipeline.phantom import ALL_REGIONS
from pipeline.reader import load_series, scan
from pipeline.window import Window, hu_to_unit, unit_to_hu

EVAL_SEED_BASE = 960_000
SYNTHETIC_PIXEL_MM = 0.75
W = Window()


def synthetic_reference(seed: int) -> np.ndarray:
    """A held-out synthetic slice in [0, 1] that looks like a real reference (texture, own noise)."""
    return clean_slice(seed, W, ALL_REGIONS, native_noise_max_hu=30.0, texture_max_hu=20.0)


REAL_SLICES = {"CT_small": "CT_small.dcm", "head512": "J2K_pixelrep_mismatch.dcm"}


def real_slice(name: str) -> tuple[np.ndarray, float]:
    """One of pydicom's real CT test slices (``REAL_SLICES``) in [0, 1], read by the pipeline's
    reader, and its pixel size (mm)."""
    from pydicom.data import get_testdata_file

    (study,) = scan(get_testdata_file(REAL_SLICES[name])).studies.values()  # files in pydicom's own package
    series = load_series(next(iter(study.series.values())))
    return hu_to_unit(series.hu[0], W, clip=True), float(series.datasets[0].PixelSpacing[0])


def _noisy(ref: np.ndarray, level: str, seed: int, pixel_mm: float = SYNTHETIC_PIXEL_MM) -> tuple[np.ndarray, float]:
    """Noisy copy in [0, 1] and the true noise sigma (unit scale) for BM3D; low-dose noise is
    simulated with the slice's own pixel size (path lengths through the body)."""
    if level.startswith("lowdose"):
        i0 = float(level.split("@")[1])
        noise = low_dose_noise_hu(unit_to_hu(ref, W), pixel_mm, i0, seed) / W.width
        return np.clip(ref + noise, 0, 1).astype(np.float32), float(noise[noise != 0].std())
    sigma = float(level)
    return add_gaussian_noise(ref, sigma, seed), sigma


def _tune(level: str, tune_refs: list[np.ndarray], pixel_mm: float) -> dict[str, tuple]:
    noisy = [_noisy(r, level, SWEEP_SEED_BASE + i, pixel_mm)[0] for i, r in enumerate(tune_refs)]
    best = {}
    for name, cands in candidates().items():
        best[name] = max(((np.mean([psnr(r, np.clip(f(n), 0, 1)) for r, n in zip(tune_refs, noisy)]), p, f)
                          for p, f in cands), key=lambda t: t[0])[1:]
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slices", type=int, default=3)
    ap.add_argument("--tune-slices", type=int, default=2)
    ap.add_argument("--sigmas", type=float, nargs="*", default=[0.02, 0.05, 0.07, 0.10])
    ap.add_argument("--lowdose-i0", type=float, nargs="*", default=[2e4])
    ap.add_argument("--no-bm3d", action="store_true")
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--card", type=Path, default=None, help="record the real-slice PSNR in this model card")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    denoiser = Denoiser(load_model(args.weights), "cpu", batch_size=4)
    refs = [synthetic_reference(EVAL_SEED_BASE + i) for i in range(args.slices)]
    tune_refs = [synthetic_reference(SWEEP_SEED_BASE + i) for i in range(args.tune_slices)]
    real = {name: real_slice(name) for name in REAL_SLICES}
    levels = [f"{s:g}" for s in args.sigmas] + [f"lowdose@{i0:g}" for i0 in args.lowdose_i0]
    seconds: dict[str, list[float]] = {}
    tuned: list[str] = []
    means: dict[tuple[str, str], dict[str, float]] = {}  # (level, data) -> method -> mean PSNR

    def timed(name: str, f, x: np.ndarray, record: bool) -> np.ndarray:
        t = time.process_time()
        y = np.clip(f(x), 0, 1)
        if record:
            seconds.setdefault(name, []).append(time.process_time() - t)
        return y

    print(f"# window {W}; {args.slices} synthetic 512x512 slices + real " + ", ".join(REAL_SLICES.values())
          + f" x {args.slices} noise seeds each; model {denoiser.loaded.name}; PSNR dB / SSIM")
    header = ["noise", "data", "noisy", "autoencoder", *candidates()]  # the tuned classical filters
    if not args.no_bm3d:
        import bm3d

        header.append("bm3d")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for level in levels:
        sets = [("synthetic", refs, tune_refs, SYNTHETIC_PIXEL_MM)]
        sets += [(n, [r] * args.slices, [r], mm) for n, (r, mm) in real.items()]
        for data_name, data, tune_data, pixel_mm in sets:
            best = _tune(level, tune_data, pixel_mm)
            tuned.append(f"{level} {data_name}: " + ", ".join(f"{n} {best[n][0]}" for n in best))
            scores: dict[str, list[tuple[float, float]]] = {}
            for i, ref in enumerate(data):
                noisy, sigma = _noisy(ref, level, EVAL_SEED_BASE + i, pixel_mm)
                rec = data_name == "synthetic"  # CPU time on the synthetic 512x512 slices
                outs = {"noisy": noisy,
                        "autoencoder": timed("autoencoder", lambda x: denoiser.denoise_unit(x[None])[0], noisy, rec)}
                for name, (_, f) in best.items():
                    outs[name] = timed(name, f, noisy, rec)
                if not args.no_bm3d:
                    outs["bm3d"] = timed("bm3d", lambda x, s=sigma: bm3d.bm3d(x, sigma_psd=s), noisy, rec)
                for name, out in outs.items():
                    scores.setdefault(name, []).append((psnr(ref, out), ssim(ref, out)))
            means[level, data_name] = {m: float(np.mean([v[0] for v in scores[m]])) for m in header[2:]}
            cells = [f"{means[level, data_name][m]:.2f} / {np.mean([v[1] for v in scores[m]]):.3f}" for m in header[2:]]
            print(f"| {level} | {data_name} | " + " | ".join(cells) + " |")
    print_margins(means)
    if args.card:
        record_real_ct(args.card, means, args.slices)
    print("\n| method | CPU s per 512x512 slice |\n|---|---|")
    for name, vals in seconds.items():
        print(f"| {name} | {np.mean(vals):.3f} |")
    print("\n# best-PSNR filter parameters per noise level and data (tuning noise seeds 950 000 + i):")
    for line in tuned:
        print("#   " + line)


SEED_FILTERS = ("gaussian", "average", "median", "bilateral")


def margins(psnr_by_method: dict[str, float]) -> dict[str, float]:
    """The model's PSNR minus BM3D's (when measured), the best of the four seed filters' and the best
    classical method's."""
    model = psnr_by_method["autoencoder"]
    classical = {m: v for m, v in psnr_by_method.items() if m not in ("noisy", "autoencoder")}
    out = {"bm3d": model - classical["bm3d"]} if "bm3d" in classical else {}
    out["seed filters"] = model - max(classical[m] for m in SEED_FILTERS)
    out["best classical"] = model - max(classical.values())
    return out


def record_real_ct(card_path: Path, means: dict[tuple[str, str], dict[str, float]], slices: int) -> None:
    card = json.loads(card_path.read_text())
    card["evaluation"]["real_ct"] = {
        "data": f"pydicom's real {', '.join(f'{n} ({f})' for n, f in REAL_SLICES.items())} x {slices} noise seeds "
                f"{EVAL_SEED_BASE} + i, own noise in the reference, filters tuned on the slice itself; "
                f"python bench/quality.py --slices {slices}",
        "psnr_db": {name: {level.replace("lowdose@", "lowdose_i0_"): {m: round(v, 2) for m, v in by_method.items()}
                           for (level, data_name), by_method in means.items() if data_name == name}
                    for name in REAL_SLICES},
    }
    write_json(card_path, card)


def print_margins(means: dict[tuple[str, str], dict[str, float]]) -> None:
    print("\n# model minus other methods (PSNR dB; targets at 0.07: BM3D +0.5, seed filters +4; everywhere: > 0)")
    print("| noise | data | - BM3D | - best seed filter | - best classical |\n|---|---|---|---|---|")
    for (level, data_name), by_method in means.items():
        m = margins(by_method)
        print(f"| {level} | {data_name} | " + " | ".join(f"{m[k]:+.2f}" if k in m else "-"
                                                       for k in ("bm3d", "seed filters", "best classical")) + " |")


if __name__ == "__main__":
    main()
