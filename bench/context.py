"""What neighbouring slices are worth: the model per slice and with slice context against BM3D per
slice and BM4D on the volume, on the real contiguous volumes (models/training/volumes.py).

    python -m bench.context [--part validation] [--levels 0.02 0.05 lowdose@20000 soft@0.03] [--weights W ...]
                            [--series N] [--no-bm4d] [--thick K] [--untold] [--blotchy-pass] [--realct GROUP]
                            [--digits 4]

Each volume of the part (24 contiguous slices, 3.27 mm) gets noise of each level added in HU to
every slice (seeded from the series and slice, not clipped): Gaussian, a reconstruction kernel's
shaped noise (``soft@0.03``: each slice its own, no correlation between slices), or
(``lowdose@I0``) each slice its own low-dose simulation; every method gets that same noisy volume and is told the noise
std (low dose: one std for the volume, the root mean square of its slices'); outputs and references
are clipped to the window [-1000, 1000] HU and scored slice by slice (PSNR, data range 1;
pipeline/qa/yardstick.py), the mean over all slices. A model is run as the derived series runs it
when told the std (absolute strength, whole correction): a 2-D model slice by slice, a context model
with each slice's neighbours (replicated past the volume's ends), and once more without neighbours
(each slice its own, as the pipeline runs a slice whose step breaks): what the neighbours are worth
to it. With ``--untold``, each model once more as the derived series runs it told nothing (the
series' noise estimated from the noisy volume, strength ``full``, the pipeline's neighbours); with
``--blotchy-pass`` once more so with ``blotchy_pass = mean`` (pipeline/inference/polyphase.py). Prints
one table per level; CPU seconds per slice beside each method.

``--realct GROUP``: the contiguous slices of one source of the real CT set instead (``dcmqi``, in
the validation part: three 1.25 mm slices at 1 mm steps from another scanner).

``--thick K`` (K > 1): thick-slice volumes: every run of K contiguous slices is averaged into one
slice (K x 3.27 mm thick at K x 3.27 mm steps, as a thick reconstruction of the same scan; its
own noise falls by sqrt(K)), the noise added to those, so the neighbours lie K times farther apart.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from bench.quality import add_digits_argument, import_bm3d, noise_model
from models.store import load_model
from models.training import realct, volumes
from pipeline.dicom.discovery import scan
from pipeline.dicom.reader import plan_series
from pipeline.inference.denoiser import Denoiser
from pipeline.inference.noise_level import estimate_series, sample_positions
from pipeline.inference.slice_context import MAX_STEP_MM, neighbour_links
from pipeline.inference.strength import Strength
from pipeline.inference.window import Window, hu_to_unit, unit_to_hu
from pipeline.qa.noise import seed_from_uid
from pipeline.qa.yardstick import score_methods
from pipeline.study_run import delivered_model

W = Window()
BM4D_MIN_SLICES = 4  # bm4d refuses a volume shallower than its blocks


def noisy_volume(vol: volumes.Volume, level: str) -> tuple[np.ndarray, float]:
    """The volume plus noise of ``level`` (``0.05``: Gaussian sigma, window fraction; ``soft@0.03``:
    a reconstruction kernel's shaped noise of that std, each slice its own; ``lowdose@20000``: each
    slice its own low-dose simulation at that I0, :mod:`bench.quality`'s ``noise_model``) on the
    unit scale, not clipped, every slice seeded from the series and its index; and the std the
    methods are told (the Gaussian sigma; for low-dose noise the root mean square of the slices'
    added std: one level for the volume, as a series estimate gives one)."""
    model = noise_model(level)
    unit = hu_to_unit(vol.hu, W)
    noisy, stds = [], []
    for k, (u, hu) in enumerate(zip(unit, vol.hu)):
        x, std = model.noisy(u, hu, W.width, vol.pixel_mm, seed_from_uid(f"{vol.series}/{k}", "context"))
        noisy.append(x)
        stds.append(std)
    return np.stack(noisy), float(np.sqrt(np.mean(np.square(stds))))


def thick_volume(vol: volumes.Volume, k: int) -> volumes.Volume:
    """Every run of ``k`` contiguous slices averaged into one (a trailing incomplete run is dropped),
    at the mean position of its slices."""
    n = len(vol.hu) // k * k
    if n == 0:
        raise ValueError(f"{vol.series}: {len(vol.hu)} slices, fewer than {k}")
    hu = vol.hu[:n].reshape(n // k, k, *vol.hu.shape[1:]).mean(axis=1, dtype=np.float64).astype(np.float32)
    return dataclasses.replace(vol, hu=hu, z_mm=np.asarray(vol.z_mm[:n], np.float64).reshape(n // k, k).mean(axis=1))


def realct_volumes(group: str, folder: str = realct.DEFAULT_DIR) -> list[volumes.Volume]:
    """The series of the real CT set's ``group`` (a source folder, e.g. ``dcmqi``) that hold several
    slices, as volumes: read and ordered by the pipeline's own reader (read-only)."""
    out = []
    for study in scan(realct.resolve(folder) / group).studies.values():
        for ref in study.series.values():
            plan = plan_series(ref)
            if len(plan) > 1 and plan.positions_mm is not None:
                hu = plan.read(0, len(plan))
                out.append(volumes.Volume(f"{group}/{plan.series_uid}", hu, np.asarray(plan.positions_mm),
                                          float(plan.datasets[0].PixelSpacing[0]), ""))
    if not out:
        raise ValueError(f"{group}: no series of several slices with positions")
    return out


def model_method(denoiser: Denoiser, sigma: float, neighbours: bool = True):
    """The model told ``sigma``; a context model with its neighbours at any step (the pipeline gives
    none beyond :data:`MAX_STEP_MM`), or (``neighbours`` False) each slice its own neighbours."""
    told = Strength(f"{sigma * W.width:g}", hu=sigma * W.width)

    def run(noisy: np.ndarray, vol: volumes.Volume) -> np.ndarray:
        links = None
        if denoiser.context:
            n = len(vol.z_mm)
            links = neighbour_links(vol.z_mm, n, max_step_mm=math.inf) if neighbours else np.zeros(max(n - 1, 0), bool)
        return hu_to_unit(denoiser.denoise_hu(noisy * W.width + W.low, W, strength=told, links=links), W)
    return run


def delivered_method(denoiser: Denoiser):
    """The model as the derived series runs it, told nothing: the series' noise estimated from the
    noisy volume (from the slices the pipeline samples for it), strength ``full``, a context model
    given the pipeline's neighbours (none beyond :data:`MAX_STEP_MM`)."""
    delivered = delivered_model(denoiser, W, [])

    def run(noisy: np.ndarray, vol: volumes.Volume) -> np.ndarray:
        hu = unit_to_hu(noisy, W)
        noise = estimate_series([hu[k] for k in sample_positions(len(hu))])
        return delivered(noisy, noise, neighbour_links(vol.z_mm, len(hu)) if denoiser.context else None)
    return run


def volume_methods(denoisers: list[Denoiser], labels: list[str], sigma: float, args: argparse.Namespace) -> dict:
    """The methods scored on one noisy volume, each told ``sigma`` (window fraction) but the models
    told nothing (``--untold``, ``--blotchy-pass``)."""
    methods = {"noisy": lambda x, v: x}
    for den, label in zip(denoisers, labels):
        methods[label] = model_method(den, sigma)
        if den.context:
            methods[f"{label}, no neighbours"] = model_method(den, sigma, neighbours=False)
        if args.untold:
            methods[f"{label}, told nothing"] = delivered_method(den)
        if args.blotchy_pass:
            built = Denoiser(den.loaded, "cpu", cpu_batch_size=1, blotchy_pass="mean")
            methods[f"{label}, told nothing, blotchy_pass mean"] = delivered_method(built)
    if not args.no_bm3d:
        bm3d = import_bm3d()
        methods["BM3D per slice"] = lambda x, v: np.stack([bm3d.bm3d(s, sigma_psd=sigma) for s in x])
    if not args.no_bm4d:
        import_bm3d()  # gives bm4d NumPy 2.4's missing trapz too
        import bm4d

        methods["BM4D on the volume"] = lambda x, v: np.asarray(bm4d.bm4d(x, sigma_psd=sigma), np.float32)
    return methods


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="validation", choices=list(volumes.SPLIT_SIZES))
    ap.add_argument("--levels", nargs="*", default=["0.02", "0.05"],
                    help="Gaussian sigmas (window fractions), kernel-shaped noise (soft@0.03) and/or lowdose@I0 "
                         "(each slice its own simulation)")
    ap.add_argument("--weights", nargs="*", type=Path, default=[None], help="models (default: the shipped one)")
    ap.add_argument("--volumes-dir", default=volumes.DEFAULT_DIR)
    ap.add_argument("--series", type=int, default=0, help="only the part's first N series (0: all)")
    ap.add_argument("--no-bm3d", action="store_true")
    ap.add_argument("--no-bm4d", action="store_true")
    ap.add_argument("--untold", action="store_true",
                    help="each model also as the derived series runs it: noise estimated, strength full")
    ap.add_argument("--blotchy-pass", action="store_true",
                    help="each model also told nothing with blotchy_pass mean (luigi.cfg's setting)")
    ap.add_argument("--thick", type=int, default=1, help="average every K contiguous slices into one")
    ap.add_argument("--realct", metavar="GROUP", default=None,
                    help="instead of the volumes, the contiguous slices of this source of the real CT set")
    ap.add_argument("--realct-dir", default=realct.DEFAULT_DIR)
    add_digits_argument(ap)
    args = ap.parse_args(argv)
    if args.realct:
        vols = realct_volumes(args.realct, args.realct_dir)
        args.part = f"real CT set's {args.realct}"
    else:
        vols = volumes.load_part(args.part, args.volumes_dir)[:args.series or None]
    if args.thick > 1:
        vols = [thick_volume(v, args.thick) for v in vols]
    denoisers = [Denoiser(load_model(w), "cpu", cpu_batch_size=1) for w in args.weights]
    slices = sum(len(v.hu) for v in vols)
    steps = np.median(np.concatenate([np.abs(np.diff(v.z_mm)) for v in vols]))
    print(f"# {args.part} volumes: {len(vols)} series, {slices} slices at {steps:.2f} mm steps"
          f"{f' (each {args.thick} slices averaged)' if args.thick > 1 else ''}; window {W}; noise added "
          f"per slice, told its std{' (and told nothing where said)' if args.untold else ''}; the pipeline "
          f"gives a context model neighbours up to {MAX_STEP_MM:g} mm steps")
    labels = [f"{den.loaded.name} (context {den.context})" for den in denoisers]
    if not args.no_bm4d and min(len(v.hu) for v in vols) < BM4D_MIN_SLICES:
        print(f"# BM4D left out: it needs at least {BM4D_MIN_SLICES} slices (its block's depth)")
        args.no_bm4d = True
    if len(set(labels)) < len(labels):  # candidates that share a name and version: their paths tell them apart
        labels = [f"{label} {w or 'shipped'}" for label, w in zip(labels, args.weights)]
    for level in args.levels:
        scores: dict[str, list[float]] = {}
        seconds: dict[str, float] = {}
        told = []
        for vol in vols:
            noisy, sigma = noisy_volume(vol, level)
            told.append(sigma)
            methods = volume_methods(denoisers, labels, sigma, args)
            for name in methods:
                scores.setdefault(name, [])
                seconds.setdefault(name, 0.0)
            per_volume = {name: (lambda x, f=f, v=vol: f(x, v)) for name, f in methods.items()}
            scored = score_methods(hu_to_unit(vol.hu, W), noisy, per_volume, with_ssim=False,
                                   seconds=seconds, clock=time.process_time)
            for name, vals in scored.items():
                scores[name].extend(s.psnr for s in vals)
        what = (f"sigma {level} ({float(level) * W.width:g} HU)" if noise_model(level).kind == "gaussian" else
                f"{level} (told {np.mean(told) * W.width:.0f} HU, the mean of the volumes' added std)")
        print(f"\n| {what} | mean PSNR dB | vs BM3D per slice | CPU s per slice |")
        print("|---|---|---|---|")
        base = np.mean(scores["BM3D per slice"]) if "BM3D per slice" in scores else None
        d = args.digits
        for name, vals in scores.items():
            rel = f"{np.mean(vals) - base:+.{d}f}" if base is not None else ""
            print(f"| {name} | {np.mean(vals):.{d}f} | {rel} | {seconds[name] / slices:.3f} |", flush=True)

if __name__ == "__main__":
    main()
