"""Peak memory of DenoiseStudy on a long series: streaming keeps it bounded.

    python -m bench.memory [--slices 1000] [--slice-spacing 1] [--batch-size 8] [--cpu-batch-size 1]
                           [--qa-every 8] [--tiny-model] [--workdir DIR] [--card models/weights/ct_denoiser.json]

Generates one 512x512 series of ``--slices`` slices ``--slice-spacing`` mm apart (1: stacks; 5: lone
slices, for a model with slice context), then runs the study in a fresh process and
reports (from /proc/self/status) the peak resident memory after loading the model and denoising one
batch (the model's own footprint: weights, activations of a batch, torch's allocator) and the peak
at the end of the study. The difference is what the pipeline adds: the target is <= 2 GB for 1000
slices (the volume alone is 1 GB in float32).

``--tiny-model`` uses an untrained 8-channel network of the same class instead of the shipped
weights: the pipeline's memory is the same, and a 1000-slice run takes minutes instead of the
~15 min of the shipped model on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not in /proc/self/status (Linux only)")


def child(args: argparse.Namespace) -> None:
    """Runs in its own process so that the peaks belong to this study alone."""
    import numpy as np

    from models.autoencoder import DenoisingAutoencoder
    from models.store import load_model, save_model
    from pipeline.dicom.discovery import scan
    from pipeline.inference.denoiser import TYPICAL_SIGMA, Denoiser
    from pipeline.inference.slice_context import neighbour_links
    from pipeline.settings import Settings
    from pipeline.study_run import process_study

    weights = None
    if args.tiny_model:
        weights = Path(args.work) / "tiny.safetensors"
        save_model(DenoisingAutoencoder(width=8, levels=2, convs_per_level=1), weights,
                   {"name": "tiny-bench", "version": "0", "window_hu": [-1000, 1000]})
    denoiser = Denoiser(load_model(weights), args.device, args.batch_size, cpu_batch_size=args.cpu_batch_size)
    n = denoiser.batch_size  # one batch linked as the series' slices are: stacks, or lone slices
    links = neighbour_links([k * args.slice_spacing for k in range(n)], n)
    denoiser.denoise_unit(np.zeros((n, 512, 512), np.float32), TYPICAL_SIGMA, links=links)
    model_peak = _peak_mib()
    settings = Settings(progress=False, batch_size=args.batch_size, cpu_batch_size=args.cpu_batch_size,
                        device=args.device, qa_every=args.qa_every)
    (study,) = scan(Path(args.work) / "in").studies.values()
    t = time.perf_counter()
    outcome = process_study(study, Path(args.work) / "out", settings, denoiser)
    print(json.dumps({"model_peak_mib": model_peak, "run_peak_mib": _peak_mib(), "seconds": time.perf_counter() - t,
                      "slices": sum(s.slices for s in outcome.series), "device": str(denoiser.device),
                      "batch": denoiser.batch_size}))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=1000)
    ap.add_argument("--slice-spacing", type=float, default=1.0, help="mm between slices")
    ap.add_argument("--batch-size", type=int, default=8, help="GPU batch")
    ap.add_argument("--cpu-batch-size", type=int, default=1)
    ap.add_argument("--qa-every", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tiny-model", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--card", type=Path, default=None,
                    help="record the figures in this model card (the shipped weights'; not with --tiny-model)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--work", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.card and args.tiny_model:
        raise SystemExit("bench/memory.py: --card records the shipped model's figures; not with --tiny-model")
    if args.child:
        child(args)
        return {}
    from pipeline.synthetic.samples import generate, long_study

    work = Path(tempfile.mkdtemp(prefix="ct-denoise-mem-", dir=args.workdir))
    try:
        files = generate(work / "in", (long_study(args.slices, spacing_mm=args.slice_spacing),))
        cmd = [sys.executable, "-m", "bench.memory", "--child", "--work", str(work),
               "--batch-size", str(args.batch_size), "--cpu-batch-size", str(args.cpu_batch_size),
               "--qa-every", str(args.qa_every), "--device", args.device, "--slice-spacing", str(args.slice_spacing)]
        cmd += ["--tiny-model"] if args.tiny_model else []
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"bench/memory.py: the study run failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    volume_mib = len(files) * 512 * 512 * 4 / 2**20
    added = result["run_peak_mib"] - result["model_peak_mib"]
    print(f"# {result['slices']} slices 512x512, {args.slice_spacing:g} mm apart ({volume_mib:.0f} MiB as float32); "
          f"{'tiny untrained model' if args.tiny_model else 'shipped model'} on {result['device']}; batch "
          f"{result['batch']}; QA every {args.qa_every}; {result['seconds']:.0f} s")
    print("| measure | MiB |\n|---|---|")
    print(f"| peak RSS after loading the model and one batch | {result['model_peak_mib']:.0f} |")
    print(f"| peak RSS of the whole study | {result['run_peak_mib']:.0f} |")
    print(f"| added by the pipeline (target <= 2048) | {added:.0f} |")
    if args.card:
        from bench.card import record
        from models.store import load_model

        record(args.card, load_model(None), "memory", f"{args.slice_spacing:g} mm apart", {
            "date": time.strftime("%Y-%m-%d"),
            "command": "python -m bench.memory " + " ".join(sys.argv[1:] if argv is None else argv),
            "series": f"{result['slices']} generated 512x512 slices; QA every {args.qa_every}",
            "machine": f"{result['device']}, batch {result['batch']}",
            "peak_rss_mib": {"after the model and one batch": round(result["model_peak_mib"]),
                             "whole study": round(result["run_peak_mib"])},
            "added_by_the_pipeline_mib": round(added), "seconds": round(result["seconds"])})
    return dict(result, added_mib=added)


if __name__ == "__main__":
    main()
