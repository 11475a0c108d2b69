"""Quality benchmark: the model against classical denoisers at several noise levels.

    python bench/quality.py [--slices 3] [--sigmas 0.02 0.05 0.07 0.10] [--lowdose-i0 2e4] [--no-bm3d]

Data: held-out synthetic 512x512 slices (seeds 960 000 + i, never used for training or for the
filter sweep; all five regions, tissue texture and the scan's own noise kept in the reference, as in
a real scan) and pydicom's real CT_small.dcm (one 128x128 slice with its own noise; ``--slices``
noise realizations). Noise: Gaussian with sigma (fraction of the window
[-1000, 1000] HU), and the low-dose CT model (Poisson photon noise on projections + FBP). Each
classical filter uses its best-PSNR setting for that noise level and data set, chosen on separate
tuning slices (seeds 950 000 + i) for the synthetic data and, generously, on CT_small itself with
other noise seeds for CT_small; BM3D is given the true noise sigma. Prints mean PSNR (dB) / SSIM per method
and CPU seconds per 512x512 slice.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.filter_sweep import SWEEP_SEED_BASE, candidates  # noqa: E402
from models.store import load_model  # noqa: E402
from models.train import clean_slice  # noqa: E402
from pipeline.denoise import Denoiser  # noqa: E402
from pipeline.lowdose import low_dose_noise_hu  # noqa: E402
from pipeline.metrics import psnr, ssim  # noqa: E402
from pipeline.noise import add_gaussian_noise  # noqa: E402
from pipeline.phantom import ALL_REGIONS  # noqa: E402
from pipeline.reader import load_series, scan  # noqa: E402
from pipeline.window import Window, hu_to_unit, unit_to_hu  # noqa: E402

EVAL_SEED_BASE = 960_000
W = Window()


def synthetic_reference(seed: int) -> np.ndarray:
    """A held-out synthetic slice in [0, 1] that looks like a real reference (texture, own noise)."""
    return clean_slice(seed, W, ALL_REGIONS, native_noise_max_hu=30.0, texture_max_hu=20.0)


def _ct_small() -> np.ndarray:
    from pydicom.data import get_testdata_file

    (study,) = scan(get_testdata_file("CT_small.dcm")).studies.values()
    return hu_to_unit(load_series(next(iter(study.series.values()))).hu[0], W, clip=True)


def _noisy(ref: np.ndarray, level: str, seed: int) -> tuple[np.ndarray, float]:
    """Noisy copy in [0, 1] and the true noise sigma (unit scale) for BM3D."""
    if level.startswith("lowdose"):
        i0 = float(level.split("@")[1])
        noise = low_dose_noise_hu(unit_to_hu(ref, W), 0.75, i0, seed) / W.width
        return np.clip(ref + noise, 0, 1).astype(np.float32), float(noise[noise != 0].std())
    sigma = float(level)
    return add_gaussian_noise(ref, sigma, seed), sigma


def _tune(level: str, tune_refs: list[np.ndarray]) -> dict[str, tuple]:
    noisy = [_noisy(r, level, SWEEP_SEED_BASE + i)[0] for i, r in enumerate(tune_refs)]
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
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    denoiser = Denoiser(load_model(args.weights), "cpu", batch_size=4)
    refs = [synthetic_reference(EVAL_SEED_BASE + i) for i in range(args.slices)]
    tune_refs = [synthetic_reference(SWEEP_SEED_BASE + i) for i in range(args.tune_slices)]
    small = _ct_small()
    levels = [f"{s:g}" for s in args.sigmas] + [f"lowdose@{i0:g}" for i0 in args.lowdose_i0]
    seconds: dict[str, list[float]] = {}
    tuned: list[str] = []

    def timed(name: str, f, x: np.ndarray) -> np.ndarray:
        t = time.process_time()
        y = np.clip(f(x), 0, 1)
        if x.shape == (512, 512):
            seconds.setdefault(name, []).append(time.process_time() - t)
        return y

    print(f"# window {W}; {args.slices} synthetic 512x512 slices + CT_small.dcm (128x128) x {args.slices} noise "
          f"seeds; model {denoiser.loaded.name}; PSNR dB / SSIM")
    header = ["noise", "data", "noisy", "autoencoder", "gaussian", "average", "median", "bilateral", "nlm"]
    if not args.no_bm3d:
        import bm3d

        header.append("bm3d")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for level in levels:
        for data_name, data, tune_data in (("synthetic", refs, tune_refs), ("CT_small", [small] * args.slices, [small])):
            best = _tune(level, tune_data)
            tuned.append(f"{level} {data_name}: " + ", ".join(f"{n} {best[n][0]}" for n in best))
            scores: dict[str, list[tuple[float, float]]] = {}
            for i, ref in enumerate(data):
                noisy, sigma = _noisy(ref, level, EVAL_SEED_BASE + i)
                outs = {"noisy": noisy,
                        "autoencoder": timed("autoencoder", lambda x: denoiser.denoise_unit(x[None])[0], noisy)}
                for name in ("gaussian", "average", "median", "bilateral", "nlm"):
                    outs[name] = timed(name, best[name][1], noisy)
                if not args.no_bm3d:
                    outs["bm3d"] = timed("bm3d", lambda x, s=sigma: bm3d.bm3d(x, sigma_psd=s), noisy)
                for name, out in outs.items():
                    scores.setdefault(name, []).append((psnr(ref, out), ssim(ref, out)))
            cells = [f"{np.mean([s[0] for s in scores[m]]):.2f} / {np.mean([s[1] for s in scores[m]]):.3f}"
                     for m in header[2:]]
            print(f"| {level} | {data_name} | " + " | ".join(cells) + " |")
    print("\n| method | CPU s per 512x512 slice |\n|---|---|")
    for name, vals in seconds.items():
        print(f"| {name} | {np.mean(vals):.3f} |")
    print("\n# best-PSNR filter parameters per noise level and data (tuning noise seeds 950 000 + i):")
    for line in tuned:
        print("#   " + line)


if __name__ == "__main__":
    main()
