"""Throughput of the streamed pipeline against its floors, on a generated long series.

    python -m bench.throughput [--slices 300] [--slice-spacing 1] [--device auto] [--batch-size 8]
                               [--cpu-batch-size 1] [--io-workers 2] [--model-slices 64] [--workdir DIR]
                               [--card models/weights/ct_denoiser.json]

Generates one 512x512 series of ``--slices`` slices (uncompressed, ``--slice-spacing`` mm apart: at
1 mm a model with slice context runs stacks; at 5 mm, beyond its largest step, every slice runs
alone, through a paired model's network for lone slices) and measures, in slices/s:

* I/O floor: read + decode + write the same files with pydicom alone, nothing else (one thread,
  and ``--io-workers`` threads: the pipeline's own I/O pool size);
* model alone: batched inference on slices already in memory (``--model-slices`` of them, linked
  as the pipeline links the series' slices);
* full DenoiseStudy without QA (``qa_every = 0``) and with QA at the default sample (``qa_every``
  of luigi.cfg, 8): discovery, header planning, streamed decoding, model, conversion, writing,
  provenance, reports.

and prints full / (I/O floor + model alone) as time per slice (targets on a 2-core CPU: <= 1.15
without QA; QA adds <= 25 %). ``--card``: record the table in the measured weights' model card,
under ``evaluation.throughput`` and the series' spacing.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import torch

from bench.card import record
from models.store import load_model
from pipeline.dicom.discovery import scan
from pipeline.inference.denoiser import TYPICAL_SIGMA, Denoiser
from pipeline.inference.slice_context import neighbour_links
from pipeline.settings import Settings
from pipeline.study_run import process_study
from pipeline.synthetic.samples import generate, long_study


def io_floor(files: list[Path], out: Path, workers: int) -> float:
    """Seconds to read, decode and write ``files`` with pydicom alone."""
    out.mkdir(parents=True, exist_ok=True)

    def one(path: Path) -> None:
        ds = pydicom.dcmread(path)
        ds.PixelData = ds.pixel_array.tobytes()  # decode, and write the values back
        ds.save_as(out / path.name, enforce_file_format=True)

    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, files))
    return time.perf_counter() - t


def model_alone(denoiser: Denoiser, n: int, links: np.ndarray) -> float:
    """Seconds per slice of batched inference on 512x512 slices already in memory, linked by ``links``
    (:func:`~pipeline.inference.slice_context.neighbour_links`: all linked, stacks; none, lone slices)."""
    x = np.random.default_rng(0).random((n, 512, 512), dtype=np.float32)
    warm = min(denoiser.batch_size, n)  # warm-up (allocations, CUDA context, autotuning)
    denoiser.denoise_unit(x[:warm], TYPICAL_SIGMA, links=links[: warm - 1])
    if denoiser.device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    denoiser.denoise_unit(x, TYPICAL_SIGMA, links=links)
    if denoiser.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / n


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--slice-spacing", type=float, default=1.0, help="mm between slices")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=8, help="GPU batch")
    ap.add_argument("--cpu-batch-size", type=int, default=1)
    ap.add_argument("--io-workers", type=int, default=2)
    ap.add_argument("--model-slices", type=int, default=64)
    ap.add_argument("--qa-every", type=int, default=Settings.qa_every)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--workdir", type=Path, default=None, help="where the series is generated (default: a temp dir)")
    ap.add_argument("--card", type=Path, default=None, help="record the figures in this model card (the weights')")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ct-denoise-bench-", dir=args.workdir))
    try:
        t = time.perf_counter()
        files = generate(work / "in", (long_study(args.slices, spacing_mm=args.slice_spacing),))
        gen_s = time.perf_counter() - t
        base = Settings(progress=False, batch_size=args.batch_size, cpu_batch_size=args.cpu_batch_size,
                        device=args.device, io_workers=args.io_workers)
        denoiser = Denoiser.from_settings(load_model(args.weights), base)
        per_slice: dict[str, float] = {}
        per_slice["I/O floor, 1 thread"] = io_floor(files, work / "io1", 1) / len(files)
        per_slice[f"I/O floor, {args.io_workers} threads"] = io_floor(files, work / "io", args.io_workers) / len(files)
        n_model = min(args.model_slices, len(files))
        links = neighbour_links([k * args.slice_spacing for k in range(n_model)], n_model)
        alone = int(np.count_nonzero(denoiser.lone(links, 0, n_model)))
        per_slice["model alone"] = model_alone(denoiser, n_model, links)
        runs = {"full DenoiseStudy, no QA": 0, f"full DenoiseStudy, QA every {args.qa_every}": args.qa_every}
        for label, every in runs.items():
            settings = dataclasses.replace(base, qa_every=every)
            (study,) = scan(work / "in").studies.values()
            t = time.perf_counter()
            process_study(study, work / f"out{every}", settings, denoiser)
            per_slice[label] = (time.perf_counter() - t) / len(files)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    floor = per_slice[f"I/O floor, {args.io_workers} threads"]
    model = per_slice["model alone"]
    full, full_qa = per_slice["full DenoiseStudy, no QA"], per_slice[f"full DenoiseStudy, QA every {args.qa_every}"]
    print(f"# model {denoiser.loaded.name}; {len(files)} slices 512x512, "
          f"{args.slice_spacing:g} mm apart (generated in {gen_s:.0f} s); {alone} of the {n_model} model-alone slices "
          f"run alone; device {denoiser.device}; batch "
          f"{denoiser.batch_size}; {args.io_workers} I/O workers; torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads); {os.cpu_count()} CPUs; {platform.machine()}")
    print("| stage | s/slice | slices/s |\n|---|---|---|")
    for name, sec in per_slice.items():
        print(f"| {name} | {sec:.4f} | {1 / sec:.2f} |")
    ratios = {"full / (I/O floor + model alone)": full / (floor + model),
              "full with QA / full without QA": full_qa / full,
              "full / I/O floor": full / floor}
    for name, value in ratios.items():
        print(f"| {name} | {value:.3f} | |")
    if args.card:
        record(args.card, denoiser.loaded, "throughput", f"{args.slice_spacing:g} mm apart", {
            "date": time.strftime("%Y-%m-%d"),
            "command": "python -m bench.throughput " + " ".join(sys.argv[1:] if argv is None else argv),
            "series": f"{len(files)} generated 512x512 slices, {alone} of the {n_model} model-alone slices run alone",
            "machine": f"{denoiser.device}, batch {denoiser.batch_size}, {torch.get_num_threads()} threads, "
                       f"{os.cpu_count()} CPUs, {platform.machine()}, torch {torch.__version__}",
            "seconds_per_slice": {k: round(v, 4) for k, v in per_slice.items()},
            "ratios": {k: round(v, 3) for k, v in ratios.items()}})
    return {**per_slice, **ratios}


if __name__ == "__main__":
    main()
