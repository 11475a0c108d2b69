"""What each denoising strength does to real scans (no synthetic noise): noise in uniform soft
tissue and strong-edge gradient, original vs derived, on the real CT set's validation part.

    python bench/strength.py [--strengths 5 10 15 20 30 40 60] [--weights W] [--part validation]

Per strength (noise std in HU the model is asked to remove; see pipeline/strength.py), the median
over slices of: the noise std in the automatically found uniform soft-tissue regions (original and
derived), the share of it removed, and the strong-edge gradient kept (derived / original), as the
QA report computes them (pipeline/scanquality.py). The named levels low / medium / high were chosen
from this table.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.store import load_model  # noqa: E402
from models.training import realct  # noqa: E402
from pipeline.denoise import Denoiser  # noqa: E402
from pipeline.scanquality import measure_slice  # noqa: E402
from pipeline.strength import STRENGTH_HU  # noqa: E402
from pipeline.window import Window  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--strengths", nargs="*", type=float, default=[5, 10, 15, 20, 30, 40, 60])
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--part", default="validation")
    ap.add_argument("--realct-dir", default=realct.DEFAULT_DIR)
    args = ap.parse_args()
    loaded = load_model(args.weights)
    slices = realct.load_part(args.part, args.realct_dir)
    names = {v: k for k, v in STRENGTH_HU.items()}
    print(f"# model {loaded.name}; {len(slices)} real slices ({args.part}); medians over slices")
    print("| strength (HU) | noise original (HU) | noise derived (HU) | noise removed | edges kept | slices with soft tissue |")
    print("|---|---|---|---|---|---|")
    for s in args.strengths:
        d = Denoiser(loaded, "cpu", cpu_batch_size=1, strength=s)
        ms = [measure_slice(sl.hu, d.denoise_hu(sl.hu[None], Window())[0], sl.pixel_mm) for sl in slices]
        with_tissue = [m for m in ms if math.isfinite(m.noise_hu_before)]
        label = f"{s:g}" + (f" ({names[s]})" if s in names else "")
        print(f"| {label} | {np.median([m.noise_hu_before for m in with_tissue]):.1f} | "
              f"{np.median([m.noise_hu_after for m in with_tissue]):.1f} | "
              f"{np.median([m.noise_reduction for m in with_tissue]):.0%} | "
              f"{np.median([m.edge_kept for m in ms]):.1%} | {len(with_tissue)}/{len(ms)} |")


if __name__ == "__main__":
    main()
