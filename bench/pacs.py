"""Nightly PACS run against a local Orthanc: what retrieving and storing add to a CPU run.

    python -m bench.pacs [--slices 300] [--protocols dicomweb dimse-get dimse-move] [--workdir DIR]

Generates one 512x512 CT series of ``--slices`` slices, then measures, each as a separate
``luigi`` command as cron would run it (CPU, the configured model and QA):

* folder run: ``DenoiseStudy`` on the generated folder (wall seconds);
* per protocol: a fresh Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``, auth on) loaded with the
  series, then ``DenoisePacs``: wall seconds, and from its ``summary.csv`` the retrieve, denoise
  and store(+verify) seconds of the study;
* for comparison, the model alone (the network on 32 of the slices, decoded beforehand) and the I/O floor (read,
  decode and write the files with pydicom alone, 2 threads).

Prints a table; the target: (PACS wall - folder wall) / folder wall <= 20 %.

    python -m bench.pacs --workers 1 2 4 [--studies 4] [--slices 24] [--protocols dicomweb]

Several studies at once instead: ``--studies`` studies of ``--slices`` slices in one Orthanc (a fresh
one per run), then ``DenoisePacs --workers N`` for each N: wall seconds, and from ``summary.csv`` the
retrieve, denoise and store seconds summed over the studies. One DenoiseStudy denoises at a time
(``[resources] gpu = 1``); the other workers retrieve and store meanwhile.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import torch

REPO = Path(__file__).resolve().parents[1]
from bench.orthanc import Orthanc, available
from bench.throughput import io_floor
from models.store import load_model
from pipeline.inference.denoiser import TYPICAL_SIGMA, Denoiser
from pipeline.synthetic.samples import generate, long_study

PROTOCOLS = ("dicomweb", "dimse-get", "dimse-move")


def luigi(*args: str, env: dict[str, str] | None = None) -> float:
    """Wall seconds of one luigi command (raises with its log tail when it fails)."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "luigi", "--module", "tasks", *args, "--local-scheduler",
                           "--denoise-progress", "false"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"luigi {' '.join(args[:1])} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t


def model_on(denoiser: Denoiser, files: list[Path]) -> float:
    """Seconds per slice of the network alone on these slices, decoded and windowed beforehand."""
    from pipeline.dicom.reader import to_hu
    from pipeline.inference.window import Window

    w = Window()
    unit = np.stack([np.clip((to_hu(pydicom.dcmread(f), f) - w.low) / (w.high - w.low), 0, 1) for f in files])
    unit = unit.astype(np.float32)
    denoiser.denoise_unit(unit[:2], TYPICAL_SIGMA)  # warm-up
    t = time.perf_counter()
    denoiser.denoise_unit(unit, TYPICAL_SIGMA)
    return (time.perf_counter() - t) / len(files)


def pacs_run(files: list[Path], study_date: str, protocol: str, work: Path) -> dict[str, float]:
    with Orthanc(work / f"orthanc-{protocol}") as pacs:
        t = time.perf_counter()
        pacs.upload(files)
        load_s = time.perf_counter() - t
        out = work / f"out-{protocol}"
        wall = luigi("DenoisePacs", "--study-date", study_date, "--output-dir", str(out),
                     *pacs.luigi_args(protocol, "BENCH_PACS_PASSWORD"), env={"BENCH_PACS_PASSWORD": pacs.password})
        with open(out / "summary.csv", newline="") as fh:
            (row,) = list(csv.DictReader(fh))
        assert row["pacs_status"] == "done" and int(row["verified_instances"]) == len(files), row
    return {"wall": wall, "load": load_s, **{k: float(row[f"{k}_seconds"]) for k in ("retrieve", "denoise", "store")}}


def workers_run(files: list[Path], study_date: str, protocol: str, workers: int, work: Path) -> dict[str, float]:
    """``DenoisePacs --workers N`` over every study in ``files`` (a fresh Orthanc): wall seconds and the
    per-stage seconds summed over the studies."""
    with Orthanc(work / f"orthanc-{protocol}-{workers}") as pacs:
        pacs.upload(files)
        out = work / f"out-{protocol}-{workers}"
        wall = luigi("DenoisePacs", "--study-date", study_date, "--output-dir", str(out), "--workers", str(workers),
                     *pacs.luigi_args(protocol, "BENCH_PACS_PASSWORD"), env={"BENCH_PACS_PASSWORD": pacs.password})
        with open(out / "summary.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert all(r["pacs_status"] == "done" for r in rows) and \
            sum(int(r["verified_instances"]) for r in rows) == len(files), rows
    return {"wall": wall, **{k: sum(float(r[f"{k}_seconds"]) for r in rows) for k in ("retrieve", "denoise", "store")}}


def workers_table(args: argparse.Namespace, work: Path) -> dict[str, dict[str, float]]:
    files = generate(work / "in", tuple(long_study(args.slices, key=f"study{i}", seed=30101 + i)
                                        for i in range(args.studies)))
    study_date = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyDate)
    runs = {f"{p} {n}": workers_run(files, study_date, p, n, work) for p in args.protocols for n in args.workers}
    print(f"# {args.studies} studies of {args.slices} slices 512x512, one series each; CPU ({os.cpu_count()} cores, "
          f"torch {torch.__version__}, {platform.machine()}); one study denoised at a time ([resources] gpu = 1)")
    print("| protocol | workers | wall s | retrieve s (sum) | denoise s (sum) | store + verify s (sum) | "
          "wall vs 1 worker |\n|---|---|---|---|---|---|---|")
    for key, r in runs.items():
        protocol, n = key.split()
        one = runs.get(f"{protocol} 1", r)
        print(f"| {protocol} | {n} | {r['wall']:.1f} | {r['retrieve']:.1f} | {r['denoise']:.1f} | {r['store']:.1f} | "
              f"{(r['wall'] - one['wall']) / one['wall']:+.1%} |")
    return runs


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS))
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--workers", type=int, nargs="+", default=None, help="several studies at once, these worker counts")
    ap.add_argument("--studies", type=int, default=4, help="with --workers: how many studies")
    args = ap.parse_args(argv)
    if not available():
        sys.exit("Orthanc with the DICOMweb plugin is not installed: bash .ci/install-dicom-tools")
    work = Path(tempfile.mkdtemp(prefix="ct-denoise-pacs-bench-", dir=args.workdir))
    if args.workers:
        try:
            return workers_table(args, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    try:
        files = generate(work / "in", (long_study(args.slices),))
        study_date = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyDate)
        denoiser = Denoiser(load_model(None), "cpu")
        model_s = model_on(denoiser, files[:32]) * len(files)
        floor_s = io_floor(files, work / "io", 2)
        folder_s = luigi("DenoiseStudy", "--study-dir", str(work / "in"), "--output-dir", str(work / "out-folder"))
        runs = {p: pacs_run(files, study_date, p, work) for p in args.protocols}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"# {len(files)} slices 512x512, one series; CPU ({os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.machine()}); model alone {model_s:.1f} s "
          f"({model_s / len(files):.3f} s/slice); I/O floor (pydicom read+decode+write, 2 threads) {floor_s:.1f} s; "
          f"folder run (luigi DenoiseStudy, wall) {folder_s:.1f} s")
    print("| protocol | retrieve s | denoise s | store + verify s | PACS run wall s | folder run wall s | "
          "transfers / denoise | wall added |\n|---|---|---|---|---|---|---|---|")
    for p, r in runs.items():
        print(f"| {p} | {r['retrieve']:.1f} | {r['denoise']:.1f} | {r['store']:.1f} | {r['wall']:.1f} | "
              f"{folder_s:.1f} | {(r['retrieve'] + r['store']) / r['denoise']:.1%} | "
              f"{(r['wall'] - folder_s) / folder_s:+.1%} |")
    return {"folder": {"wall": folder_s, "model": model_s, "io_floor": floor_s}, **runs}


if __name__ == "__main__":
    main()
