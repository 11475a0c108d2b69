"""Turn a training run's checkpoint into shipped weights plus a model card with measured PSNR."""
from __future__ import annotations

import csv
import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.filters import FilterParams, classical_filters
from pipeline.metrics import psnr, ssim
from pipeline.noise import add_gaussian_noise

from .autoencoder import count_parameters
from .store import load_checkpoint, load_model, save_model
from .train import VAL_SEED_BASE, TrainConfig, build_model, validation_set

log = logging.getLogger(__name__)

MODEL_NAME = "ct-denoise-unet"
MODEL_VERSION = "2.1.0"


@torch.inference_mode()
def measure(model: torch.nn.Module, cfg: TrainConfig, sigmas: tuple[float, ...] = (0.02, 0.05, 0.07, 0.10)) -> dict[str, Any]:
    """Mean PSNR/SSIM on the held-out validation slices (seeds 900 000 + i) for the model, the
    noisy input and the four classical filters, at each sigma."""
    model.eval()
    clean = validation_set(cfg)
    filters = classical_filters(FilterParams())
    table: dict[str, Any] = {}
    for sigma in sigmas:
        rows: dict[str, list[tuple[float, float]]] = {}
        for i, ref in enumerate(clean):
            noisy = add_gaussian_noise(ref, sigma, seed=VAL_SEED_BASE + i)
            outs = {"noisy": noisy, "autoencoder": model(torch.from_numpy(noisy)[None, None])[0, 0].numpy()}
            outs.update({name: f(noisy) for name, f in filters.items()})
            for name, out in outs.items():
                out = np.clip(out, 0, 1)
                rows.setdefault(name, []).append((psnr(ref, out), ssim(ref, out)))
        table[f"{sigma:g}"] = {name: {"psnr_db": round(float(np.mean([r[0] for r in v])), 3),
                                      "ssim": round(float(np.mean([r[1] for r in v])), 4)} for name, v in rows.items()}
    return table


def describe_training(cfg: TrainConfig) -> dict[str, str]:
    """The model card's words for what ``cfg`` trains on: data, targets and noise."""
    if cfg.source == "synthetic":
        extras = ["random geometry", f"Gaussian PSF of {cfg.psf_min_px:g}-1.3 px"]
        if cfg.texture_max_hu > 0:
            extras.append(f"tissue texture of std up to {cfg.texture_max_hu:g} HU")
        if cfg.native_noise_max_hu > 0:
            extra = f", plus streaks of std up to {cfg.streak_max_hu:g} HU" if cfg.streak_max_hu > 0 else ""
            streaks = (f", partly streaky (streaks 2-{cfg.streak_length_max_px:g} px long{extra}) in "
                       f"{cfg.streak_fraction:.0%} of the slices" if cfg.streak_fraction else "")
            extras.append(f"the scan's own correlated noise of std up to {cfg.native_noise_max_hu:g} HU{streaks}")
        data = (f"synthetic anatomical CT slices from pipeline/phantom.py ({cfg.regions.replace(',', ', ')} phantoms; "
                + ", ".join(extras) + "), seeds >= 1 000 000; no real patient data")
    else:
        data = f"CT slices of the site folder {Path(cfg.source).name!r} as references"
    if cfg.native_noise_max_hu > 0:
        kept = ("phantoms carrying their own acquired noise, as every real reference does, so the model removes "
                "what was added and keeps the scan's own grain")
    else:
        kept = "noise-free phantoms" if cfg.source == "synthetic" else "the site's slices"
    noise = f"Gaussian, sigma uniform in [{cfg.sigma_min}, {cfg.sigma_max}] of the window (blind)"
    if cfg.lowdose_fraction > 0:
        noise += (f"; for {cfg.lowdose_fraction:.0%} of the patches instead low-dose CT noise (Poisson photon noise on "
                  "simulated projections, FBP; std uniform in the same range + 0.005)")
    return {"data": data, "noise": noise,
            "targets": f"the reference without the added noise ({kept}); input = clip(reference + noise, 0, 1)"}


def export(cfg: TrainConfig, run_dir: Path, weights: Path, version: str = MODEL_VERSION,
           command: str | None = None) -> dict[str, Any]:
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters())
    meta = load_checkpoint(run_dir / "checkpoint.safetensors", model, opt)
    log_rows = list(csv.DictReader(open(run_dir / "train_log.csv")))
    training: dict[str, Any] = describe_training(cfg)
    training.update({
        "steps": int(meta["step"]), "batch_size": cfg.batch_size, "patch": cfg.patch,
        "loss": {"mse": "MSE", "log_mse": "mean over patches of log(MSE + 1e-6) (the mean patch PSNR)"}[cfg.loss],
        "optimizer": f"Adam, lr {cfg.lr} cosine to {cfg.lr_min}, {min(200, cfg.steps // 10)} warm-up steps",
        "seed": cfg.seed, "cpu_seconds": round(float(meta["elapsed_s"]), 1),
        "final_logged_loss": float(log_rows[-1]["loss"]) if log_rows else None,
        "config": dataclasses.asdict(cfg),
        "command": command or f"python -m models.train --run-dir {run_dir.name} --steps {cfg.steps} --threads 2",
    })
    if cfg.init_weights:
        start = load_model(cfg.init_weights)
        training["initialised_from"] = {"weights": cfg.init_weights, "sha256": start.sha256,
                                        "version": start.card.get("version")}
    card = {
        "name": MODEL_NAME,
        "version": version,
        "architecture": {"class": "models.autoencoder.DenoisingAutoencoder", "parameters": count_parameters(model),
                         "description": "residual convolutional encoder-decoder, stride-2 downsampling, "
                                        "transposed-convolution upsampling, additive skips, predicts the noise"},
        "input": "(batch, 1, H, W) float32, HU normalized through the window and clipped to [0, 1]",
        "window_hu": [cfg.window_low, cfg.window_high],
        "training": training,
        "evaluation": {
            "data": f"{cfg.val_slices} held-out synthetic 512x512 slices (seeds 900 000 + i, drawn like the training "
                    "references), noise seeded 900 000 + i, PSNR data range 1 in the window",
            "filters": dataclasses.asdict(FilterParams()),
            "by_sigma": measure(model, cfg),
        },
    }
    save_model(model, weights, card)
    log.info("wrote %s", weights)
    return card
