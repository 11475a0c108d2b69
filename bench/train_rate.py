"""Training speed: steps per second of a configuration's real training steps, by batch workers.

    python -m bench.train_rate --config models/configs/ct_denoiser_context_gpu.json [--device cuda]
                               [--workers 0 4 15] [--seconds 30]

For each ``--workers`` count: the batches of :mod:`models.training.batches` (the run's own,
made by that many processes) through the run's own step (:func:`models.training.train.train_step`)
of the configuration's network on ``--device``, for ``--seconds`` after 5 warm-up steps (the first
decodes the reference pools); nothing is saved. Prints a table: steps/s, patches/s, and the steps
that fit in a minute, which is what a time-boxed run's ``--steps`` is set from.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from models.training.batches import Batches
from models.training.config import load_config
from models.training.data import PatchStream
from models.training.train import build_model, train_step

WARM_UP = 5


def rate(config: Path, device: str, workers: int, seconds: float) -> float:
    """Training steps per second (after the warm-up) with ``workers`` batch processes."""
    cfg = load_config(config)
    model = build_model(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    done, started = 0, 0.0
    with Batches(PatchStream(cfg), 0, 10**9, workers) as batches:
        for batch in batches:
            train_step(cfg, model, opt, batch, device)
            done += 1
            if done == WARM_UP:
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                started = time.perf_counter()
            elif done > WARM_UP and time.perf_counter() - started > seconds:
                break
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (done - WARM_UP) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, nargs="+", default=[0])
    p.add_argument("--seconds", type=float, default=30.0)
    args = p.parse_args(argv)
    batch = load_config(args.config).batch_size
    print(f"{args.config} on {args.device}, batch {batch}")
    print("| workers | steps/s | patches/s | steps per minute |")
    print("|---|---|---|---|")
    for w in args.workers:
        r = rate(args.config, args.device, w, args.seconds)
        print(f"| {w} | {r:.2f} | {r * batch:.0f} | {r * 60:.0f} |", flush=True)


if __name__ == "__main__":
    main()
