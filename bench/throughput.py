"""Throughput of each stage on one sample series.

    python bench/throughput.py [--series sample_dicoms/chest/SE1] [--device auto] [--batch-size 8]

Prints seconds per slice for reading (discovery + decode + HU), model inference, the QA filters
(four classical filters with their PSNR/SSIM), the QA model pass, writing the derived series, and
the end-to-end rate of ``process_study`` (all of the above, QA included) in slices/s.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.store import load_model  # noqa: E402
from pipeline.denoise import Denoiser  # noqa: E402
from pipeline.filters import FilterParams, classical_filters  # noqa: E402
from pipeline.metrics import psnr, ssim  # noqa: E402
from pipeline.noise import add_gaussian_noise, seed_from_uid  # noqa: E402
from pipeline.reader import load_series, scan  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.study import derivation_info, process_study  # noqa: E402
from pipeline.window import hu_to_unit  # noqa: E402
from pipeline.writer import stack_to_stored, write_series  # noqa: E402


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=Path, default=root / "sample_dicoms" / "chest" / "SE1")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    settings = Settings(progress=False, batch_size=args.batch_size, device=args.device)
    denoiser = Denoiser(load_model(), args.device, args.batch_size)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    result = scan(args.series)
    (study,) = result.studies.values()
    (ref,) = study.series.values()
    series = load_series(ref)
    timings["read (scan + decode + HU)"] = time.perf_counter() - t
    n = len(series)

    denoiser.denoise_hu(series.hu[:1], settings.window)  # warm-up (allocations, CUDA context)
    if denoiser.device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = denoiser.denoise_hu(series.hu, settings.window)
    if denoiser.device.type == "cuda":
        torch.cuda.synchronize()
    timings["model inference"] = time.perf_counter() - t

    ref_unit = hu_to_unit(series.hu, settings.window, clip=True)
    noisy = [add_gaussian_noise(r, settings.qa_sigma, seed_from_uid(str(d.SOPInstanceUID)))
             for r, d in zip(ref_unit, series.datasets)]
    t = time.perf_counter()
    for f in classical_filters(FilterParams()).values():
        for r, x in zip(ref_unit, noisy):
            y = f(x)
            psnr(r, y), ssim(r, y)
    timings["QA: 4 filters + PSNR/SSIM"] = time.perf_counter() - t
    t = time.perf_counter()
    denoiser.denoise_unit(np.stack(noisy))
    timings["QA: model on noisy copies"] = time.perf_counter() - t

    info = derivation_info(settings, denoiser)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        stored = stack_to_stored(out, series.hu, series.datasets)
        write_series(series.datasets, stored, Path(tmp), info, [f"{i:05d}.dcm" for i in range(n)])
        timings["write derived series"] = time.perf_counter() - t
        t = time.perf_counter()
        process_study(study, Path(tmp) / "e2e", settings, denoiser)
        e2e = time.perf_counter() - t

    print(f"# {n} slices {series.hu.shape[1]}x{series.hu.shape[2]} from {args.series.name}; device {denoiser.device}; "
          f"batch {args.batch_size}; torch {torch.__version__}; {os.cpu_count()} CPUs; {platform.machine()}")
    print(f"| {'stage':<28} | {'s/slice':>8} | {'slices/s':>8} |")
    print(f"|{'-' * 30}|{'-' * 10}|{'-' * 10}|")
    for name, sec in timings.items():
        print(f"| {name:<28} | {sec / n:8.3f} | {n / sec:8.2f} |")
    print(f"| {'end-to-end (with QA)':<28} | {e2e / n:8.3f} | {n / e2e:8.2f} |")


if __name__ == "__main__":
    main()
