"""Width/depth candidates of the autoencoder: quality after the same short training, and speed.

    python -m bench.candidates [--steps 400] [--threads 1] [--card models/weights/ct_denoiser.json]

Each candidate is trained from scratch with the shipped training configuration
(``models/configs/ct_denoiser.json``: same data, noise and schedule shape, no initial weights) for
``--steps`` batches into ``runs/candidates/<name>/`` (resumable), then scored on the held-out
validation slices (the real CT set's validation part when the configuration trains on it, else phantoms
with seeds 900 000 + i; Gaussian sigma 0.07) and timed on one 512x512 slice on the
CPU. A short equal budget ranks the candidates; it does not reach their final quality. With
``--card`` the table is recorded in that model card under ``candidates``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
from models.autoencoder import count_parameters
from models.store import load_checkpoint
from models.training.config import load_config
from models.training.data import validation_set
from models.training.train import build_model, evaluate, train
from pipeline.atomic import write_json

# name: (width, levels, convs per level, residual blocks at the coarsest level)
CANDIDATES = {"w16-l2": (16, 2, 2, 0), "w32-l2-c1": (32, 2, 1, 0), "w32-l2": (32, 2, 2, 0), "w32-l3": (32, 3, 2, 0),
              "w32-l2-b2": (32, 2, 2, 2), "w32-l2-b4": (32, 2, 2, 4), "w40-l2-b2": (40, 2, 2, 2)}


def cpu_seconds_per_slice(model: torch.nn.Module, repeats: int = 3) -> float:
    x = torch.rand(1, 1, 512, 512)
    with torch.inference_mode():
        model.eval()(x, 0.05)
        t = time.perf_counter()
        for _ in range(repeats):
            model(x, 0.05)
    return (time.perf_counter() - t) / repeats


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--config", type=Path, default=ROOT / "models" / "configs" / "ct_denoiser.json")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "candidates")
    ap.add_argument("--only", nargs="*", default=None, choices=sorted(CANDIDATES))
    ap.add_argument("--card", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name, (width, levels, convs, blocks) in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        cfg = dataclasses.replace(load_config(args.config), steps=args.steps, width=width, levels=levels,
                                  convs_per_level=convs, blocks=blocks, init_weights="", val_every=args.steps,
                                  checkpoint_every=min(250, args.steps))
        train(cfg, args.runs / name, progress=False)
        model = build_model(cfg)
        load_checkpoint(args.runs / name / "checkpoint.safetensors", model, torch.optim.Adam(model.parameters()))
        psnr = evaluate(model, validation_set(cfg), cfg.val_sigma)
        rows.append({"name": name, "width": width, "levels": levels, "convs_per_level": convs, "blocks": blocks,
                     "parameters": count_parameters(model), "steps": args.steps,
                     "val_psnr_db_sigma_0.07": round(psnr, 3),
                     "cpu_s_per_512_slice": round(cpu_seconds_per_slice(model), 3), "threads": args.threads})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n| candidate | parameters | val PSNR @0.07 after {args.steps} steps (dB) | CPU s / 512 slice "
          f"({args.threads} thread) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['parameters']} | {r['val_psnr_db_sigma_0.07']:.2f} | {r['cpu_s_per_512_slice']:.2f} |")
    if args.card:
        card = json.loads(args.card.read_text())
        card["candidates"] = {"method": f"each trained from scratch for {args.steps} steps with the shipped "
                                        "configuration; validation slices 900 000 + i at sigma 0.07; CPU time of one "
                                        f"512x512 slice with {args.threads} thread(s)", "rows": rows}
        write_json(args.card, card)
    return rows


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
