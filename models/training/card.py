"""Turn a training run's checkpoint into shipped weights plus a model card with measured PSNR."""
from __future__ import annotations

import csv
import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from models.autoencoder import count_parameters
from models.store import load_checkpoint, load_model, save_model
from pipeline.inference.strength import LevelRule
from pipeline.qa.filters import FilterParams, classical_filters
from pipeline.qa.yardstick import Score, mean_score, score_methods

from . import realct
from .config import TrainConfig
from .data import Reference, context_validation_set, noisy_input, real_references, validation_set
from .train import build_model, describe_schedule, schedules_from_log, told_model

log = logging.getLogger(__name__)

MODEL_NAME = "ct-denoise-unet"
MODEL_VERSION = "3.1.0"
CARD_NLM_H = 0.08


@torch.inference_mode()
def measure(model: torch.nn.Module, refs: list[Reference],
            sigmas: tuple[float, ...] = (0.02, 0.05, 0.07, 0.10)) -> dict[str, Any]:
    """Mean PSNR/SSIM on ``refs`` for the model, the noisy input and the classical filters of the
    QA report (default settings; non-local means at the fixed h :data:`CARD_NLM_H` the card's
    figures were measured with: the model here is told sigma, not an estimate), at each sigma, on the
    yardstick of :mod:`pipeline.qa.yardstick`: the seeded noisy input of :func:`.data.noisy_input`,
    added to the reference as it is and not clipped; the filters get its slice, the model the slice
    with its neighbours, clipped to the window and told sigma; outputs and reference clipped to the
    window."""
    model.eval()
    filters = classical_filters(FilterParams(nlm_h=CARD_NLM_H))
    table: dict[str, Any] = {}
    for sigma in sigmas:
        rows: dict[str, list[Score]] = {}
        for i, ref in enumerate(refs):
            noisy = noisy_input(ref, sigma, i, model.context)  # (1 + 2 context, H, W): the slice in the middle
            c = model.context
            methods = {"noisy": lambda x: x[c], **{name: (lambda x, f=f: f(x[c])) for name, f in filters.items()},
                       "autoencoder": told_model(model, sigma)}
            for name, scores in score_methods(ref.target, noisy, methods).items():
                rows.setdefault(name, []).extend(scores)
        means = {name: mean_score(v) for name, v in rows.items()}
        table[f"{sigma:g}"] = {name: {"psnr_db": round(m.psnr, 3), "ssim": round(m.ssim, 4)}
                               for name, m in means.items()}
    return table


def phantom_check_set(cfg: TrainConfig) -> list[Reference]:
    """Held-out phantom references (seeds 900 000 + i) drawn like ``cfg``'s phantoms: a check that
    needs no real data, so every checkout can reproduce the card."""
    return validation_set(dataclasses.replace(cfg, source="synthetic", context=0))  # lone phantom slices


def describe_training(cfg: TrainConfig) -> dict[str, Any]:
    """The model card's words for what ``cfg`` trains on: data, targets and noise."""
    extras = ["random geometry", f"Gaussian PSF of {cfg.psf_min_px:g}-1.3 px"]
    if cfg.texture_max_hu > 0:
        extras.append(f"tissue texture of std up to {cfg.texture_max_hu:g} HU")
    if cfg.native_noise_max_hu > 0:
        extra = f", plus streaks of std up to {cfg.streak_max_hu:g} HU" if cfg.streak_max_hu > 0 else ""
        streaks = (f", partly streaky (streaks 2-{cfg.streak_length_max_px:g} px long{extra}) in "
                   f"{cfg.streak_fraction:.0%} of the slices" if cfg.streak_fraction else "")
        extras.append(f"the scan's own correlated noise of std up to {cfg.native_noise_max_hu:g} HU{streaks}")
    phantoms = (f"synthetic anatomical CT slices from pipeline/synthetic/phantom.py ({cfg.regions.replace(',', ', ')} "
                "phantoms; " + ", ".join(extras) + "), seeds >= 1 000 000")
    sources: list[dict[str, Any]] = []
    if cfg.source == "synthetic":
        data = phantoms + "; no real patient data"
    elif cfg.source == "realct":
        sources = realct.attribution("train", cfg.realct_dir)
        data = ("real CT slices of the real CT set's training part (split by source, models/training/realct.py; "
                f"{sum(int(g['slices']) for g in sources)} slices of {', '.join(g['group'] for g in sources)})")
        if cfg.synthetic_fraction > 0:
            data += f", and for {cfg.synthetic_fraction:.0%} of the patches " + phantoms
    elif cfg.source == "volumes":
        data = "the training part of the contiguous real volumes (models/training/volumes.py)"
    else:
        data = f"CT slices of the site folder {Path(cfg.source).name!r} as references"
    if cfg.context and cfg.source != "volumes":
        data = (f"for {cfg.volume_fraction:.0%} of the patches (binomial per batch) the training part of the "
                "contiguous real volumes (models/training/volumes.py) with their neighbouring slices; for the rest, "
                "lone slices, each its own neighbours: " + data)
    if not cfg.context and cfg.lone_volume_fraction > 0 and cfg.source != "volumes":
        data = (f"for {cfg.lone_volume_fraction:.0%} of the patches (binomial per batch) single slices of the "
                "training part of the contiguous real volumes (models/training/volumes.py), each alone; for the "
                "rest: " + data)
    if cfg.context and cfg.runs_fraction > 0:
        data += (f"; {cfg.runs_fraction:.0%} of the volume patches cut instead from the contiguous runs of the real CT "
                 "set's training part (models/training/volumes.py realct_part_runs: thinner slices, chest and trunk)")
    if cfg.context and cfg.thin_fraction > 0:
        data += (f"; {cfg.thin_fraction:.0%} of the patches of the volumes made thinner: stacks at a step of "
                 f"{cfg.thin_step_min_mm:g}-{cfg.thin_step_max_mm:g} mm interpolated linearly between the volume's "
                 "slices, each its own noise (models/training/data.py thinner_positions)")
    if cfg.zoom_factors:
        data += (f"; beside each lone slice its copies resampled {cfg.zoom_factors.replace(',', ', ')} times "
                 "(pixels that much smaller; cubic interpolation)")
    if cfg.source == "realct":
        kept = "real slices with their own noise, which the model learns to keep"
    elif cfg.native_noise_max_hu > 0:
        kept = ("phantoms carrying their own acquired noise, as every real reference does, so the model removes "
                "what was added and keeps the scan's own grain")
    else:
        kept = "noise-free phantoms" if cfg.source == "synthetic" else "the site's slices"
    told = "told to the model as a noise-level map" if cfg.noise_map else "blind"
    noise = f"Gaussian, sigma uniform in [{cfg.sigma_min}, {cfg.sigma_max}] of the window ({told})"
    with_volumes = bool(cfg.context) or cfg.source == "volumes"
    lowdose = []
    if cfg.lowdose_fraction > 0 and cfg.source != "volumes":
        lowdose.append(f"{cfg.lowdose_fraction:.0%} of the " + ("lone-slice patches" if with_volumes else "patches"))
    if cfg.volume_lowdose_fraction > 0 and with_volumes:
        lowdose.append(f"{cfg.volume_lowdose_fraction:.0%} of the volume patches (each slice its own simulation)")
    if lowdose:
        told_ld = (f", told that std times exp(N(0, {cfg.lowdose_level_jitter})) as a series estimate reads it"
                   if cfg.lowdose_level_jitter > 0 else "")
        noise += (f"; for {' and '.join(lowdose)} instead low-dose CT noise (Poisson photon noise on simulated "
                  f"projections, FBP; std uniform in the same range + 0.005){told_ld}")
    if cfg.kernel_fraction > 0:
        noise += (f"; for {cfg.kernel_fraction:.0%} of the other patches noise shaped by a reconstruction kernel "
                  f"(pipeline/synthetic/kernel_noise.py, NPS cutoff uniform in [{cfg.kernel_fc_min}, "
                  f"{cfg.kernel_fc_max}] cycles per pixel, std in the same range, told that std)")
    if cfg.grain_fraction > 0:
        noise += (f"; {cfg.grain_fraction:.0%} of the references given grain of their own first (white or, half of "
                  f"them, kernel-shaped; std uniform in [0, {cfg.grain_max}]), in the target too and not told")
    out: dict[str, Any] = {"data": data, "noise": noise,
                           "targets": f"the reference without the added noise ({kept}), clipped to the window; input = "
                                      "clip(reference + noise, 0, 1), the noise added to the reference as stored"}
    if sources:
        out["sources"] = sources
    return out


def evaluate(model: torch.nn.Module, cfg: TrainConfig) -> dict[str, Any]:
    """The card's ``evaluation``: the model told the noise std on held-out phantoms and, as ``cfg``
    trains on them, the validation volumes and the real validation part."""
    evaluation: dict[str, Any] = {
        "yardstick": "noise added in HU to the reference as stored, not clipped; every method gets the same noisy "
                     "image; the model clips it through its window and is told the noise std; outputs and reference "
                     "clipped to the window; PSNR data range 1",
        "filters": dataclasses.asdict(FilterParams()),
        "phantoms": {"data": f"{cfg.val_slices} held-out synthetic 512x512 slices (seeds 900 000 + i), noise seeded "
                             "900 000 + i", "by_sigma": measure(model, phantom_check_set(cfg))},
    }
    if cfg.context or cfg.source == "volumes":
        evaluation["volume_validation"] = {
            "data": "the middle slice of each validation volume (models/training/volumes.py) with its neighbours, "
                    "every slice its own noise (seeded 900 000 + 1000 i + j)",
            "by_sigma": measure(model, context_validation_set(cfg))}
    if cfg.source == "realct":
        evaluation["real_validation"] = {
            "data": "the real CT set's validation part (" + ", ".join(realct.SPLIT["validation"]) + "), noise seeded "
                    "900 000 + i; every model choice was made on it"
                    + ("; lone slices, each its own neighbours" if cfg.context else ""),
            "by_sigma": measure(model, real_references(cfg, "validation"))}
    return evaluation


def input_text(context: int, noise_map: bool, whiteness_map: bool = False) -> str:
    """The card's ``input``: what a network with ``context`` neighbours on each side is given."""
    return ((f"(batch, {1 + 2 * context}, H, W): the slice and {context} neighbouring slice(s) of its "
             "stack on each side (the slice in the middle)" if context else "(batch, 1, H, W)")
            + " float32, HU normalized through the window and clipped to [0, 1]"
            + ("; sigma: the std of the noise to remove, a fraction of the window" if noise_map else "")
            + ("; whiteness: the noise estimate's whiteness (1 for white noise), told as 1 - whiteness in [0, 1]"
               if whiteness_map else ""))


def rule_entry(level_rule: LevelRule, fitted_by: str | None = None) -> dict[str, Any]:
    """The card's ``level_rule``: the rule and how it was fitted (default: the calibration)."""
    return {**dataclasses.asdict(level_rule),
            "fitted_by": fitted_by or "python -m bench.noise_level --calibrate --weights (validation part)"}


def export(cfg: TrainConfig, run_dir: Path, weights: Path, version: str = MODEL_VERSION,
           command: str | None = None, level_rule: LevelRule | None = None) -> dict[str, Any]:
    """Weights + card from the run's checkpoint. ``level_rule``: what the model is told for blotchy
    noise, as ``python -m bench.noise_level --calibrate --weights W`` fitted it (None: the default
    rule, which no card then names)."""
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters())
    meta = load_checkpoint(run_dir / "checkpoint.safetensors", model, opt)
    log_rows = list(csv.DictReader(open(run_dir / "train_log.csv")))
    training: dict[str, Any] = describe_training(cfg)
    training.update({
        "steps": int(meta["step"]), "batch_size": cfg.batch_size, "patch": cfg.patch,
        "loss": {"mse": "MSE", "log_mse": "mean over patches of log(MSE + 1e-6) (the mean patch PSNR)"}[cfg.loss],
        "optimizer": describe_schedule(cfg, schedules_from_log(cfg, log_rows), int(meta["step"])),
        "seed": cfg.seed, "seconds": round(float(meta["elapsed_s"]), 1),
        "hours": round(float(meta["elapsed_s"]) / 3600, 2),
        "trained_on": meta.get("trained_on", ["cpu"]),  # in order, when a run moved between machines
        "final_logged_loss": float(log_rows[-1]["loss"]) if log_rows else None,
        "config": dataclasses.asdict(cfg),
        "command": command or f"python -m models.training --run-dir {run_dir.name} --steps {cfg.steps} --threads 2",
    })
    if cfg.init_weights:
        start = load_model(cfg.init_weights)
        training["initialised_from"] = {"weights": cfg.init_weights, "sha256": start.sha256,
                                        "version": start.card.get("version"), "architecture": start.model.config}
        if "split_from" in start.card:  # one network of a shipped model (models.training.lone --split, --flat)
            training["initialised_from"]["split_from"] = start.card["split_from"]
        elif "-" in str(start.card.get("version", "")) and "training" in start.card:
            # a candidate that was never shipped (3.6.0-rc.33): no card of it is kept, so its training
            # travels in this one, down to the shipped model the chain started from
            training["initialised_from"]["training"] = start.card["training"]
        if cfg.slice_shares:
            training["initialised_from"]["first_layer_spread_over_the_stack"] = cfg.slice_shares
    evaluation = evaluate(model, cfg)
    card = {
        "name": MODEL_NAME,
        "version": version,
        "architecture": {"class": "models.autoencoder.DenoisingAutoencoder", "parameters": count_parameters(model),
                         "description": "residual convolutional encoder-decoder, stride-2 downsampling, "
                                        f"{cfg.blocks} residual blocks at the coarsest level, transposed-convolution "
                                        "upsampling, additive skips, predicts the noise"
                                        + ("; the noise level to remove is a second input channel" if cfg.noise_map
                                           else "; blind")
                                        + ("; the noise's blotchiness (1 - whiteness) a third"
                                           if cfg.whiteness_map else "")},
        "input": input_text(cfg.context, cfg.noise_map, cfg.whiteness_map),
        "window_hu": [cfg.window_low, cfg.window_high],
        "training": training,
        "evaluation": evaluation,
    }
    if level_rule is not None:
        card["level_rule"] = rule_entry(level_rule)
    save_model(model, weights, card)
    log.info("wrote %s", weights)
    return card
