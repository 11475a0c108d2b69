"""Where a denoiser's error comes from: what it does to the slice (bias), and the noise it leaves.

    python -m bench.bias [--parts validation pydicom] [--levels 0.02 0.07] [--seeds 4] [--max-slices N]
                         [--weights W] [--no-bm3d]

Each method is told the std of the added noise (the model as in ``bench.quality``'s
``autoencoder_told`` column, BM3D as there) and run on ``--seeds`` noisy copies of each slice (seed 0
is the QA report's copy, as in ``bench.quality``). Its results r_k (clipped to the window, as the
yardstick clips them) split the mean squared error against the clean slice exactly:

    mean_k |r_k - clean|^2 = |mean_k r_k - clean|^2 + mean_k |r_k - mean_k r_k|^2
            (error)                 (bias)                    (noise left)

each printed as a PSNR (dB, data range 1; higher is less): ``error`` is ``bench.quality``'s figure
averaged over the seeds, ``bias`` what the method does to the slice on average (structure flattened,
the scan's own grain removed, edges moved), ``noise left`` how much of the added noise gets through
(over a few seeds it is underestimated by the factor (K - 1) / K: +1.25 dB at 4 seeds, the same for
every method). The PSNRs are of the slice's MSE; the table gives their means over slices. A method
behind another by about its bias loses by what it does to the slice, not by the noise it leaves.
Part ``train`` (the slices the model was trained on) tells whether a bias is learnt or a failure to
generalise. ``bias inside the window``: the share of the bias's squared error where the clean slice is more
than 40 HU inside the window (not air or dense bone at its edges, where the window clips).
"""
from __future__ import annotations

import argparse
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.quality import noisy_copy, pydicom_slices, realct_slices, told_methods
from models.store import load_model
from models.training import realct
from pipeline.inference.denoiser import Denoiser
from pipeline.qa.metrics import psnr
from pipeline.qa.yardstick import Score, mean_score

PARTS = ("train", "validation", "test", "pydicom")


@dataclass(frozen=True)
class Split:
    error: float  # PSNR of the mean squared error over the seeds
    bias: float  # PSNR of the mean result against the clean slice
    left: float  # PSNR of the results' spread about their mean
    inside: float  # share of the bias (its squared error) where the slice lies inside the window


EDGE = 0.02  # within 2 % of the window's width (40 HU) of an edge: air or dense bone, clipped by the window


def split(reference: np.ndarray, copies: list[tuple[np.ndarray, float]], method) -> Split:
    """The three PSNRs of ``method`` (``method(noisy, sigma)``: unit-scale copy and the std it is told ->
    result) on one slice: ``reference`` the clean slice (unit scale), ``copies`` two or more (noisy
    copy, added std) pairs."""
    if len(copies) < 2:
        raise ValueError("the split needs at least two noisy copies")
    clean = np.clip(reference, 0.0, 1.0).astype(np.float64)
    results = np.stack([np.clip(method(x, sigma), 0.0, 1.0) for x, sigma in copies]).astype(np.float64)
    mean = results.mean(axis=0)
    bias2 = (mean - clean) ** 2
    inside = (clean > EDGE) & (clean < 1.0 - EDGE)
    return Split(psnr(np.broadcast_to(clean, results.shape), results), psnr(clean, mean),
                 psnr(np.broadcast_to(mean, results.shape), results),
                 float(bias2[inside].sum() / bias2.sum()) if bias2.sum() > 0 else float("nan"))


def measure(slices, levels: list[str], seeds: int, denoiser: Denoiser, use_bm3d: bool):
    """level -> part -> source -> method -> list of :class:`Split`, one per slice."""
    out: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    for level in levels:
        for part, part_slices in slices.items():
            for sl in part_slices:
                copies = [noisy_copy(sl, level, k) for k in range(seeds)]
                for name, method in told_methods(denoiser, level, sl.hu.shape, use_bm3d).items():
                    out[level][part][sl.group][name].append(split(sl.unit, copies, method))
    return out


def spread(items: list, count: int | None) -> list:
    """``count`` of ``items`` evenly spread over the list (all of them when ``count`` is None or not
    smaller), in their order."""
    if count is None or count >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def print_table(results) -> None:
    print("| noise | part | source (slices) | method | error | bias | noise left | bias inside the window |")
    print("|---|---|---|---|---|---|---|---|")
    for level, by_part in results.items():
        for part, by_source in by_part.items():
            groups = dict(by_source)
            if len(groups) > 1:
                merged: dict[str, list[Split]] = defaultdict(list)
                for by_method in by_source.values():
                    for name, splits in by_method.items():
                        merged[name].extend(splits)
                groups["all"] = merged
            for source, by_method in groups.items():
                for name, splits in by_method.items():
                    cells = [mean_score(Score(getattr(s, f), math.nan) for s in splits).psnr
                             for f in ("error", "bias", "left")]
                    inside = np.nanmean([s.inside for s in splits])
                    print(f"| {level} | {part} | {source} ({len(splits)}) | {name} | "
                          + " | ".join(f"{c:.2f}" for c in cells) + f" | {inside:.0%} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", nargs="*", default=["validation"], choices=PARTS)
    ap.add_argument("--levels", nargs="*", default=["0.02", "0.07"])
    ap.add_argument("--seeds", type=int, default=4, help="noisy copies per slice (at least 2)")
    ap.add_argument("--max-slices", type=int, default=None, help="per part, evenly spread over it")
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--no-bm3d", action="store_true")
    ap.add_argument("--realct-dir", default=realct.DEFAULT_DIR)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    loaded = load_model(args.weights)
    denoiser = Denoiser(loaded, "cpu", cpu_batch_size=1)
    if not denoiser.noise_map:
        raise SystemExit(f"{loaded.name}: a blind model cannot be told the noise level")
    have_real = realct.available(args.realct_dir)
    slices = {p: spread(pydicom_slices() if p == "pydicom" else realct_slices(p, args.realct_dir), args.max_slices)
              for p in args.parts if p == "pydicom" or have_real}
    if not slices:
        raise SystemExit(f"{realct.resolve(args.realct_dir)}: no real CT set; try --parts pydicom")
    if args.seeds < 2:
        raise SystemExit(f"--seeds {args.seeds}: the split needs at least 2 noisy copies per slice")
    print(f"# model {loaded.name}; every method told the added noise's std; {args.seeds} noisy copies per "
          f"slice; PSNR dB of the MSE, data range 1")
    print_table(measure(slices, args.levels, args.seeds, denoiser, not args.no_bm3d))


if __name__ == "__main__":
    main()
