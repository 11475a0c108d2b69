"""Training choices compared by training: each candidate continues the same start for the same CPU time.

    python -m bench.candidates [--minutes 15] [--only b4-mse b8-log_mse] [--threads 2]
                               [--config models/configs/ct_denoiser_context_gpu_3.json]
                               [--init models/weights/ct_denoiser.safetensors]

A candidate is the training configuration (``--config``, by default the recipe of the shipped
model's runs, whose architecture it has) with a few settings changed: the number of residual blocks
at the coarsest level (capacity) and the loss (``mse``, or ``log_mse``, which weighs every patch's
PSNR alike, so low-noise patches count). Each starts from ``--init`` (grown into its network by
``models.autoencoder.grow_state``: the extra blocks start as the identity, so every candidate starts
from the same function) and trains for the same CPU time: its steps are ``--minutes`` divided by its
own measured time per step, with the lr decaying by a cosine from ``--lr`` to ``--lr-min`` over them
(a run stopped at 1.5 times the minutes reports the steps it reached). Runs go to
``runs/candidates/<name>/`` (resumable).

Each candidate, and the start itself, is then scored on the real CT set's validation part (never
on the test part) as ``bench.quality`` scores the model told the std (its ``autoencoder_told``
column): the same seeded noisy copies (Gaussian 0.02-0.10 of the window, the low-dose simulation,
soft-kernel noise), PSNR in the window. Its CPU seconds per 512x512 slice are timed as the pipeline
runs the model on the CPU (channels-last, one slice). With ``--cache`` (``bench.quality``'s), BM3D's
figures on the same copies are printed beside them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.quality import BenchSlice, noisy_copy, realct_slices, score_key
from models.autoencoder import DenoisingAutoencoder, count_parameters
from models.store import load_checkpoint, load_model
from models.training.config import TrainConfig, load_config
from models.training.data import PatchStream
from models.training.train import build_model, told_model, train, train_step
from pipeline.inference.malloc import keep_freed_memory
from pipeline.qa.yardstick import mean_score, score_methods

ROOT = Path(__file__).resolve().parents[1]
LEVELS = ("0.02", "0.05", "0.07", "0.1", "lowdose@20000", "soft@0.03")
# name: settings that differ from the configuration
CANDIDATES = {"b4-mse": {"blocks": 4, "loss": "mse"}, "b4-log_mse": {"blocks": 4, "loss": "log_mse"},
              "b8-log_mse": {"blocks": 8, "loss": "log_mse"}, "b8-mse": {"blocks": 8, "loss": "mse"}}


def cpu_seconds_per_slice(model: DenoisingAutoencoder, repeats: int = 3) -> float:
    """Wall seconds of one 512x512 slice (with its neighbours for a context model), channels-last as
    the pipeline runs the model on the CPU."""
    model = model.eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, model.slices, 512, 512).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model(x, 0.05)
        t = time.perf_counter()
        for _ in range(repeats):
            model(x, 0.05)
    return (time.perf_counter() - t) / repeats


def seconds_per_step(cfg: TrainConfig, steps: int = 6) -> float:
    """Wall seconds of one training step of ``cfg``'s network (its batch made in the same process)."""
    stream = PatchStream(cfg)
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr_min)
    train_step(cfg, model, opt, stream.batch(0), "cpu")
    t = time.perf_counter()
    for i in range(1, steps + 1):
        train_step(cfg, model, opt, stream.batch(i), "cpu")
    return (time.perf_counter() - t) / steps


def candidate_config(base: TrainConfig, changes: dict, init: str, steps: int, lr: float, lr_min: float) -> TrainConfig:
    """``base`` with the candidate's ``changes``, its start, its steps and its lr schedule; all else,
    checkpoints included, as the configuration has it (so a rerun with other steps resumes the run)."""
    return dataclasses.replace(base, **changes, init_weights=init, steps=steps, lr=lr, lr_min=lr_min)


class Copies:
    """The validation part's noisy copies per level (made once: the low-dose ones take seconds each)."""

    def __init__(self, slices: list[BenchSlice]) -> None:
        self.slices = slices
        self._copies: dict[str, list[tuple[np.ndarray, float]]] = {}

    def get(self, level: str) -> list[tuple[np.ndarray, float]]:
        if level not in self._copies:
            self._copies[level] = [noisy_copy(sl, level, 0) for sl in self.slices]
        return self._copies[level]


def score(model: DenoisingAutoencoder, copies: Copies, levels: tuple[str, ...]) -> dict[str, float]:
    """Level -> mean PSNR of the model told the added noise's std (``bench.quality``'s ``autoencoder_told``)."""
    model.eval()
    out = {}
    with torch.inference_mode():
        for level in levels:
            scores = []
            for sl, (noisy, sigma) in zip(copies.slices, copies.get(level)):
                run = told_model(model, sigma)
                stack = np.repeat(noisy[None], model.slices, axis=0)  # a lone slice is its own neighbours
                scores.extend(score_methods(sl.reference, stack, {"m": run}, with_ssim=False)["m"])
            out[level] = round(mean_score(scores).psnr, 2)
    return out


def bm3d_row(cache: Path | None, copies: Copies, levels: tuple[str, ...]) -> dict[str, float] | None:
    """BM3D's mean PSNR on the same copies from ``bench.quality``'s cache (seed 0), if it holds them all."""
    data = json.loads(cache.read_text()) if cache and cache.is_file() else {}
    out = {}
    for level in levels:
        hits = [data.get(score_key(level, sl.name, 0, "bm3d")) for sl in copies.slices]
        if not all(hits):
            return None
        out[level] = round(float(np.mean([h[0] for h in hits])), 2)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=15.0, help="training time of each candidate")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", type=Path, default=ROOT / "models" / "configs" / "ct_denoiser_context_gpu_3.json")
    ap.add_argument("--init", default=str(ROOT / "models" / "weights" / "ct_denoiser.safetensors"))
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--lr-min", type=float, default=1e-5)
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "candidates")
    ap.add_argument("--only", nargs="*", default=None, choices=sorted(CANDIDATES))
    ap.add_argument("--levels", nargs="*", default=list(LEVELS))
    ap.add_argument("--realct-dir", default="../shared/data/realct")
    ap.add_argument("--cache", type=Path, default=None, help="bench.quality's cache, for BM3D's figures")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as training and the pipeline run on the CPU
    levels = tuple(args.levels)
    base = load_config(args.config)
    copies = Copies(realct_slices("validation", args.realct_dir))
    start = load_model(args.init).model
    rows = [{"name": "start", "parameters": count_parameters(start), "steps": 0, "s_per_step": None,
             "cpu_s_per_512_slice": round(cpu_seconds_per_slice(start), 3), **score(start, copies, levels)}]
    print(json.dumps(rows[-1]), flush=True)
    for name, changes in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        probe = candidate_config(base, changes, args.init, 1, args.lr, args.lr_min)
        per_step = seconds_per_step(probe)
        steps = max(1, int(args.minutes * 60 / per_step))
        cfg = candidate_config(base, changes, args.init, steps, args.lr, args.lr_min)
        train(cfg, args.runs / name, progress=False, max_seconds=1.5 * args.minutes * 60, validate=False)
        model = build_model(cfg)
        meta = load_checkpoint(args.runs / name / "checkpoint.safetensors", model, torch.optim.Adam(model.parameters()))
        rows.append({"name": name, **changes, "parameters": count_parameters(model), "steps": int(meta["step"]),
                     "s_per_step": round(per_step, 3), "cpu_s_per_512_slice": round(cpu_seconds_per_slice(model), 3),
                     **score(model, copies, levels)})
        print(json.dumps(rows[-1]), flush=True)
    bm3d = bm3d_row(args.cache, copies, levels)
    print(f"\n{args.minutes:g} minutes of training each from {args.init}; validation part ({len(copies.slices)} "
          "slices), mean PSNR dB, model told the std\n")
    print("| candidate | parameters | steps | s / step | CPU s / 512 slice | " + " | ".join(levels) + " |")
    print("|---|---|---|---|---|" + "---|" * len(levels))
    for r in rows:
        print(f"| {r['name']} | {r['parameters']} | {r['steps']} | {r['s_per_step'] or ''} | "
              f"{r['cpu_s_per_512_slice']:.3f} | " + " | ".join(f"{r[lv]:.2f}" for lv in levels) + " |")
    if bm3d:
        print("| BM3D (told the std; the spectrum for soft) | | | | | " + " | ".join(f"{bm3d[lv]:.2f}" for lv in levels)
              + " |")
    return rows


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
