"""What each denoising strength does to real scans (no synthetic noise): the share of the noise
removed, as requested and as measured, per real-CT source.

    python -m bench.strength [--strengths low medium high full] [--parts validation test] [--weights W]

Each slice of the real CT set's parts is its own series: its noise is estimated
(pipeline/inference/noise_level.py), it is denoised exactly as DenoiseStudy does (Denoiser.denoise_hu at the
strength), and the noise std in the automatically found uniform soft-tissue regions is measured on
the original and the derived slice (pipeline/qa/scan_measures.py, the QA report's scan_noise columns).
The measured share is 1 - derived / original (median over the source's slices that have such
regions); edges kept is the strong-edge gradient derived / original. The named shares were chosen
from this table on the validation part.
"""
from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from models.store import load_model
from models.training import realct
from pipeline.inference.denoiser import Denoiser
from pipeline.inference.noise_level import estimate_series
from pipeline.inference.strength import parse_strength
from pipeline.inference.window import Window
from pipeline.qa.scan_measures import measure_slice


def derived_slice(denoiser: Denoiser, hu: np.ndarray, noise) -> np.ndarray:
    """The derived slice of ``hu`` (H, W) as DenoiseStudy makes it for a one-slice series: a context
    model gets no neighbours (the slice is its own)."""
    return denoiser.denoise_hu(hu[None], Window(), noise, links=np.zeros(0, bool))[0]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strengths", nargs="*", default=["low", "medium", "high", "full"])
    ap.add_argument("--parts", nargs="*", default=["validation", "test"])
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--realct-dir", default=realct.DEFAULT_DIR)
    args = ap.parse_args(argv)
    loaded = load_model(args.weights)
    denoisers = {s: Denoiser(loaded, "cpu", cpu_batch_size=1, strength=s) for s in args.strengths}
    rows: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for part in args.parts:
        for sl in realct.load_part(part, args.realct_dir):
            noise = estimate_series([sl.hu])
            key = (part, sl.group)
            rows[key]["noise"].append(noise.sigma_hu)
            rows[key]["whiteness"].append(noise.whiteness)
            for s, d in denoisers.items():
                m = measure_slice(sl.hu, derived_slice(d, sl.hu, noise), sl.pixel_mm)
                if math.isfinite(m.noise_reduction):
                    rows[key][s].append(m.noise_reduction)
                rows[key][s + " edges"].append(m.edge_kept)
    print(f"# model {loaded.name}; requested share of the estimated noise std -> measured share removed in uniform "
          "soft tissue (median over the source's slices with such regions); edges kept")
    print("| part | source (slices) | noise HU | whiteness | " + " | ".join(
        f"{s} ({parse_strength(s).share:.0%})" for s in args.strengths) + " |")
    print("|---|---|---|---|" + "---|" * len(args.strengths))
    for (part, group), r in rows.items():
        cells = []
        for s in args.strengths:
            got = r.get(s, [])
            want = parse_strength(s).share
            cells.append(f"{np.median(got):.0%} ({(np.median(got) - want) * 100:+.0f}), edges "
                         f"{np.median(r[s + ' edges']):.1%}" if got else "no soft tissue")
        print(f"| {part} | {group} ({len(r['noise'])}) | {np.median(r['noise']):.1f} | {np.median(r['whiteness']):.2f} | "
              + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
