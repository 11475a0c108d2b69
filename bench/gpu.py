"""Batched inference throughput of the shipped model: slices/s and peak memory per batch size.

    python -m bench.gpu [--device cuda] [--size 512] [--batch-sizes 8 16 32 64 128] [--dtypes bf16 fp16 fp32]

On CUDA each cell times ``--iters`` batches after ``--warmup`` batches, synchronizing the device,
with inputs already on the GPU (model alone: no disk, no host copies) and with host copies from
pinned memory (``+copy`` columns); peak memory is ``torch.cuda.max_memory_allocated`` for that cell.
On the CPU (``--device cpu``, for a smoke check) fp32 is timed and peak memory is not reported.
"""
from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import torch

from models.store import load_model

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def measure(model: torch.nn.Module, device: torch.device, dtype: str, batch: int, size: int, iters: int,
            warmup: int, copy: bool) -> tuple[float, float | None]:
    """(slices/s, peak memory in MiB or None on the CPU) for one batch size and autocast dtype."""
    cast = (torch.autocast(device_type=device.type, dtype=DTYPES[dtype]) if dtype != "fp32"
            else contextlib.nullcontext())
    host = torch.rand(batch, getattr(model, "slices", 1), size, size)  # a context model: slice and neighbours
    if device.type == "cuda":
        host = host.pin_memory()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    on_device = host.to(device)
    for i in range(warmup + iters):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        x = host.to(device, non_blocking=True) if copy else on_device
        with cast:
            y = model(x, 0.01)  # a noise level of 20 HU (the medium strength); a blind model ignores it
        if copy:
            y.float().to("cpu", non_blocking=True)
    _sync(device)
    rate = batch * iters / (time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return rate, peak


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    ap.add_argument("--dtypes", nargs="+", default=None, choices=sorted(DTYPES))
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"bench/gpu.py: device {args.device!r} requested but torch {torch.__version__} sees no CUDA GPU")
    dtypes = args.dtypes or (["bf16", "fp16", "fp32"] if device.type == "cuda" else ["fp32"])
    loaded = load_model(args.weights)
    model = loaded.model.to(device).eval()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"# {loaded.name} on {name}, {args.size}x{args.size}, "
          f"torch {torch.__version__}, {args.iters} timed batches per cell")
    print("| dtype | batch | slices/s (on device) | slices/s (+copy) | peak MiB |")
    print("|---|---|---|---|---|")
    rows = []
    for dtype in dtypes:
        for batch in args.batch_sizes:
            try:
                rate, peak = measure(model, device, dtype, batch, args.size, args.iters, args.warmup, copy=False)
                rate_copy, _ = measure(model, device, dtype, batch, args.size, args.iters, args.warmup, copy=True)
            except torch.cuda.OutOfMemoryError:
                print(f"| {dtype} | {batch} | out of memory | | |")
                continue
            rows.append({"dtype": dtype, "batch": batch, "rate": rate, "rate_copy": rate_copy, "peak_mib": peak})
            print(f"| {dtype} | {batch} | {rate:.1f} | {rate_copy:.1f} | {'-' if peak is None else f'{peak:.0f}'} |")
    return rows


if __name__ == "__main__":
    main()
