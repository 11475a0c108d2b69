"""Training of the denoiser on synthetic phantoms: noisy input -> CLEAN target.

Seeds are split so that training never sees an evaluation image:
  * ``sample_dicoms/`` phantoms use seeds below 100 000 (see :mod:`pipeline.samples`);
  * the validation slices here use seeds 900 000 + i;
  * training phantoms use seeds from 1 000 000 upwards.

The shipped weights come from ``python -m models.train --config models/configs/ct_denoiser.json
--run-dir runs/ct_denoiser --threads 2`` (resumes from the run folder's checkpoint when there is
one), then the same with ``--export models/weights/ct_denoiser.safetensors``, which writes the
weights and the model card; ``luigi --module tasks TrainModel --config ...`` does both.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from pipeline.allocator import keep_freed_memory
from pipeline.lowdose import low_dose_noise_hu
from pipeline.metrics import psnr
from pipeline.noise import add_gaussian_noise
from pipeline.phantom import REGIONS, Phantom, acquire, smooth_noise
from pipeline.window import Window, hu_to_unit, unit_to_hu

from .autoencoder import DenoisingAutoencoder, count_parameters
from .store import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

TRAIN_SEED_BASE = 1_000_000
VAL_SEED_BASE = 900_000


@dataclass
class TrainConfig:
    steps: int = 20000
    batch_size: int = 16
    patch: int = 96
    lr: float = 1e-3
    lr_min: float = 1e-5
    sigma_min: float = 0.0
    sigma_max: float = 0.12
    seed: int = 1
    pool_size: int = 192
    pool_refresh: int = 1500
    width: int = 32
    levels: int = 2
    convs_per_level: int = 2
    window_low: float = -1000.0
    window_high: float = 1000.0
    val_every: int = 500
    val_sigma: float = 0.07
    val_slices: int = 6
    checkpoint_every: int = 250
    # "synthetic" (phantoms) or a folder of a site's own CT studies: its slices are the clean
    # references, synthetic noise is added to them (validation stays on synthetic slices)
    source: str = "synthetic"
    # start a new run from these weights (e.g. the shipped ones, to continue training in a later
    # session without its optimizer state); ignored when the run folder has a checkpoint
    init_weights: str = ""
    # training references like real scans (0 = the clean phantoms of the first model):
    regions: str = "chest,abdomen"  # phantom regions, comma-separated (pipeline.phantom.ALL_REGIONS)
    native_noise_max_hu: float = 0.0  # the reference keeps acquired noise: std uniform in [0, max] HU
    texture_max_hu: float = 0.0  # tissue heterogeneity: std uniform in [0, max] HU, 1.5-4 px grain
    streak_fraction: float = 0.0  # share of references whose own noise is partly streaky
    streak_length_max_px: float = 6.0  # streak length (Gaussian sigma along it) uniform in [2, max] px
    streak_max_hu: float = 0.0  # extra streaks on top of that noise, std uniform in [0, max] HU (streaky slices)
    psf_min_px: float = 0.4  # sharpest scanner blur (Gaussian sigma, px); the bluntest is 1.3
    # share of patches whose added noise is low-dose CT noise (Poisson on projections + FBP, its
    # std uniform in [sigma_min, sigma_max] + 0.005) instead of white Gaussian noise
    lowdose_fraction: float = 0.0
    # "mse": mean squared error over the batch (high-noise patches dominate it); "log_mse": mean
    # over patches of log(MSE + 1e-6), i.e. the mean patch PSNR, which weighs every noise level alike
    loss: str = "mse"

    @property
    def window(self) -> Window:
        return Window(self.window_low, self.window_high)


def clean_slice(seed: int, window: Window, regions: tuple[str, ...] = REGIONS, native_noise_max_hu: float = 0.0,
                texture_max_hu: float = 0.0, streak_fraction: float = 0.0, psf_min_px: float = 0.4,
                streak_length_max_px: float = 6.0, streak_max_hu: float = 0.0) -> np.ndarray:
    """One training/validation reference slice (512, 512) in [0, 1]: random region, position,
    pixel size and PSF (Gaussian, sigma uniform in [``psf_min_px``, 1.3] px). With the defaults it
    is noise-free; ``texture_max_hu`` adds tissue heterogeneity (a smooth random field inside the
    body) and ``native_noise_max_hu`` the correlated quantum noise every real reference carries,
    each with a random std up to the max; for ``streak_fraction`` of the slices that noise is
    partly streaky (elongated along a random direction, as behind bone and across the shoulders; the
    streaks' length, a Gaussian sigma, is uniform in [2, ``streak_length_max_px``] px). With
    ``streak_max_hu`` those streaky slices get further streaks of their own amplitude (std uniform in
    [0, max] HU) on top, so strong thin streaks (as in a real GE slice) are kept as the scan's own."""
    rng = np.random.default_rng(seed)
    region = regions[int(rng.integers(len(regions)))]
    phantom = Phantom(seed, region)
    hu = phantom.slice_hu(float(rng.uniform(-150, 150)), 512, float(rng.uniform(0.6, 0.95)))
    psf = float(rng.uniform(psf_min_px, 1.3))
    if texture_max_hu > 0:
        grain = smooth_noise(rng, hu.shape[0], float(rng.uniform(1.5, 4.0)))
        hu = hu + np.where(hu > -950, float(rng.uniform(0, texture_max_hu)) * grain, 0).astype(np.float32)
    native = float(rng.uniform(0, native_noise_max_hu)) if native_noise_max_hu > 0 else 0.0
    hu = acquire(hu, rng, psf_sigma_px=psf, noise_hu=0.0)
    if native > 0:
        noise = smooth_noise(rng, hu.shape[0], float(rng.uniform(0.4, 1.2)))
        streaky = streak_fraction > 0 and rng.random() < streak_fraction
        if streaky:
            t = float(rng.uniform(0, math.pi / 2))  # share of the variance that is streaky
            noise = math.cos(t) * noise + math.sin(t) * _streaks(rng, hu.shape[0], streak_length_max_px)
        hu = hu + native * noise
        if streaky and streak_max_hu > 0:
            hu = hu + float(rng.uniform(0, streak_max_hu)) * _streaks(rng, hu.shape[0], streak_length_max_px)
    return hu_to_unit(hu, window, clip=True)


def _streaks(rng: np.random.Generator, size: int, along_max: float = 6.0) -> np.ndarray:
    """Zero-mean, unit-std white noise blurred with an elongated Gaussian (sigma 2-``along_max`` px
    along a random direction, 0.4-0.8 px across it), (size, size)."""
    angle, along, across = rng.uniform(0, math.pi), rng.uniform(2.0, along_max), rng.uniform(0.4, 0.8)
    r = int(math.ceil(3 * along))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float32)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    v = -xx * math.sin(angle) + yy * math.cos(angle)
    kernel = np.exp(-0.5 * ((u / along) ** 2 + (v / across) ** 2)).astype(np.float32)
    f = cv2.filter2D(rng.standard_normal((size, size), dtype=np.float32), -1, kernel, borderType=cv2.BORDER_REFLECT)
    return f / max(float(f.std()), 1e-6)


def reference_slice(seed: int, cfg: TrainConfig) -> np.ndarray:
    """A reference slice drawn the way ``cfg`` draws its training data."""
    return clean_slice(seed, cfg.window, tuple(cfg.regions.split(",")), cfg.native_noise_max_hu, cfg.texture_max_hu,
                       cfg.streak_fraction, cfg.psf_min_px, cfg.streak_length_max_px, cfg.streak_max_hu)


def validation_set(cfg: TrainConfig) -> list[np.ndarray]:
    return [reference_slice(VAL_SEED_BASE + i, cfg) for i in range(cfg.val_slices)]


@torch.inference_mode()
def evaluate(model: torch.nn.Module, clean: list[np.ndarray], sigma: float) -> float:
    """Mean PSNR (data range 1) of the model on seeded noisy copies of ``clean``."""
    model.eval()
    scores = []
    for i, ref in enumerate(clean):
        noisy = add_gaussian_noise(ref, sigma, seed=VAL_SEED_BASE + i)
        device = next(model.parameters()).device
        out = model(torch.from_numpy(noisy)[None, None].to(device)).clamp(0, 1)[0, 0].cpu().numpy()
        scores.append(psnr(ref, out))
    model.train()
    return float(np.mean(scores))


def archive_slices(folder: Path, cfg: TrainConfig) -> list[np.ndarray]:
    """Up to ``cfg.pool_size`` slices (seeded choice) of the CT series under ``folder``, in [0, 1]
    through the window, at least ``cfg.patch`` pixels on each side."""
    from pipeline.errors import InputError
    from pipeline.reader import load_series, scan

    slices: list[np.ndarray] = []
    for study in scan(folder).studies.values():
        for ref in study.series.values():
            try:
                series = load_series(ref)
            except InputError as exc:
                log.warning("training source: %s", exc)
                continue
            slices.extend(hu_to_unit(h, cfg.window, clip=True) for h in series.hu if min(h.shape) >= cfg.patch)
    if not slices:
        raise ValueError(f"{folder}: no CT slices of at least {cfg.patch}x{cfg.patch} pixels to train on")
    rng = np.random.default_rng([cfg.seed, 7])
    keep = sorted(rng.permutation(len(slices))[: cfg.pool_size])
    return [slices[i] for i in keep]


class PatchStream:
    """Deterministic batches: batch ``step`` depends only on (seed, step), so a resumed run sees
    exactly the batches an uninterrupted run would have seen."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self._generation = -1
        self._pool: list[np.ndarray] = []

    def _ensure_pool(self, step: int) -> None:
        gen = step // self.cfg.pool_refresh
        if self.cfg.source != "synthetic":
            if not self._pool:
                self._pool = archive_slices(Path(self.cfg.source), self.cfg)
            return
        if gen != self._generation:
            base = TRAIN_SEED_BASE + (self.cfg.seed * 1000 + gen) * self.cfg.pool_size
            self._pool = [reference_slice(base + i, self.cfg) for i in range(self.cfg.pool_size)]
            self._generation = gen

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        self._ensure_pool(step)
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, step])
        clean = np.empty((cfg.batch_size, 1, cfg.patch, cfg.patch), np.float32)
        lowdose = np.zeros_like(clean)
        is_lowdose = np.zeros(cfg.batch_size, bool)
        for b in range(cfg.batch_size):
            for _ in range(10):  # mostly skip patches of empty air
                img = self._pool[int(rng.integers(len(self._pool)))]
                r, c = rng.integers(0, img.shape[0] - cfg.patch + 1, size=2)
                crop = img[r:r + cfg.patch, c:c + cfg.patch]
                if crop.std() > 0.01 or rng.random() < 0.1:
                    break
            k, flip = int(rng.integers(4)), rng.random() < 0.5
            crop = np.rot90(crop, k)
            if flip:
                crop = crop[:, ::-1]
            clean[b, 0] = crop
            if cfg.lowdose_fraction > 0 and rng.random() < cfg.lowdose_fraction:
                level = rng.uniform(cfg.sigma_min, cfg.sigma_max) + 0.005
                noise = np.rot90(_lowdose_patch(img, r, c, cfg, int(rng.integers(2**31))), k)
                lowdose[b, 0] = level * (noise[:, ::-1] if flip else noise)
                is_lowdose[b] = True
        sigma = rng.uniform(cfg.sigma_min, cfg.sigma_max, size=(cfg.batch_size, 1, 1, 1)).astype(np.float32)
        sigma[is_lowdose] = 0.0  # those patches get low-dose noise instead
        noisy = np.clip(clean + lowdose + sigma * rng.standard_normal(clean.shape, dtype=np.float32), 0, 1)
        return torch.from_numpy(noisy), torch.from_numpy(clean)


def _lowdose_patch(img: np.ndarray, r: int, c: int, cfg: TrainConfig, seed: int) -> np.ndarray:
    """Unit-std low-dose CT noise for the patch of ``img`` at (r, c): simulated on a margin around
    it (the reconstruction circle of the simulation covers the whole patch), normalized to std 1."""
    m = int(math.ceil(cfg.patch * 0.25)) + 2
    big = np.pad(img, m, mode="reflect")[r:r + cfg.patch + 2 * m, c:c + cfg.patch + 2 * m]
    noise = low_dose_noise_hu(unit_to_hu(big, cfg.window), 0.75, 1e5, seed)[m:m + cfg.patch, m:m + cfg.patch]
    return noise / max(float(noise.std()), 1e-6)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    warm = min(200, cfg.steps // 10)  # 200 steps for real runs, shorter for tiny ones
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = min(1.0, (step - warm) / max(1, cfg.steps - warm))
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * t))


LOG_MSE_EPS = 1e-6


def objective(cfg: TrainConfig, per_patch_mse: torch.Tensor) -> torch.Tensor:
    """The training objective from the per-patch MSE: their mean (``loss`` "mse") or the mean of
    log(MSE + 1e-6) ("log_mse": the mean patch PSNR up to sign and scale)."""
    if cfg.loss == "mse":
        return per_patch_mse.mean()
    if cfg.loss == "log_mse":
        return torch.log(per_patch_mse + LOG_MSE_EPS).mean()
    raise ValueError(f"unknown loss {cfg.loss!r}: use 'mse' or 'log_mse'")


def build_model(cfg: TrainConfig) -> DenoisingAutoencoder:
    torch.manual_seed(cfg.seed)
    return DenoisingAutoencoder(cfg.width, cfg.levels, cfg.convs_per_level)


def train(cfg: TrainConfig, run_dir: Path, progress: bool = True, until_step: int | None = None,
          max_seconds: float | None = None, device: str = "cpu") -> dict[str, Any]:
    """Train (or resume) into ``run_dir``: ``checkpoint.safetensors``, ``train_log.csv``,
    ``config.json``. Stops at ``cfg.steps``, or earlier at ``until_step`` or after ``max_seconds``
    of this call (with a checkpoint, so a later call resumes exactly). Returns the last logged row.
    ``device``: ``cpu`` or ``cuda[:N]`` (the batches are made on the CPU either way; checkpoints
    hold CPU tensors, so a run may move between machines)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.json"
    ckpt = run_dir / "checkpoint.safetensors"
    if cfg_path.exists() and ckpt.exists():
        old = json.loads(cfg_path.read_text())
        fixed = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "steps"}
        defaults = dataclasses.asdict(TrainConfig())  # fields added since the run began: defaults
        if {k: old.get(k, defaults[k]) for k in fixed} != fixed:
            raise ValueError(f"{cfg_path}: the run folder was made with another configuration; use a new folder")
    cfg_path.write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    if torch.device(device).type == "cpu":
        keep_freed_memory()
    model = build_model(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, elapsed = 0, 0.0
    if cfg.init_weights and not ckpt.exists():
        from .store import load_model

        start = load_model(cfg.init_weights)
        if start.model.config != model.config:
            raise ValueError(f"{cfg.init_weights}: architecture {start.model.config} differs from {model.config}")
        model.load_state_dict(start.model.state_dict())
        log.info("initialised from %s (sha256 %s)", cfg.init_weights, start.sha256[:16])
    if ckpt.exists():
        meta = load_checkpoint(ckpt, model, opt)
        step, elapsed = int(meta["step"]), float(meta["elapsed_s"])
        log.info("resumed %s at step %d", ckpt, step)
    stream = PatchStream(cfg)
    val = validation_set(cfg)
    log_path = run_dir / "train_log.csv"
    new_log = not log_path.exists()
    last: dict[str, Any] = {"step": step}
    loss_acc, n_acc = 0.0, 0
    t0 = time.perf_counter() - elapsed
    model.train()
    with open(log_path, "a", newline="") as fh:
        writer = csv.writer(fh)
        if new_log:
            writer.writerow(["step", "loss", "val_psnr", "lr", "elapsed_s"])
        bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="batch", disable=not progress)
        started = time.perf_counter()
        stop_at = min(cfg.steps, until_step or cfg.steps)
        while step < stop_at:
            noisy, clean = (t.to(device, non_blocking=True) for t in stream.batch(step))
            lr = learning_rate(cfg, step)
            for g in opt.param_groups:
                g["lr"] = lr
            per_patch = ((model(noisy) - clean) ** 2).mean(dim=(1, 2, 3))
            objective(cfg, per_patch).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss_acc += per_patch.mean().item()  # logged as plain MSE whatever the objective
            n_acc += 1
            step += 1
            bar.update(1)
            out_of_time = max_seconds is not None and time.perf_counter() - started > max_seconds
            if step % cfg.checkpoint_every == 0 or step in (cfg.steps, stop_at) or out_of_time:
                val_psnr = evaluate(model, val, cfg.val_sigma) if (step % cfg.val_every == 0 or step == cfg.steps) else ""
                last = {"step": step, "loss": loss_acc / n_acc, "val_psnr": val_psnr, "lr": lr,
                        "elapsed_s": time.perf_counter() - t0}
                writer.writerow([last[k] for k in ("step", "loss", "val_psnr", "lr", "elapsed_s")])
                fh.flush()
                save_checkpoint(ckpt, model, opt, {"step": step, "elapsed_s": last["elapsed_s"]})
                bar.set_postfix(loss=f"{last['loss']:.2e}", val=val_psnr if val_psnr == "" else f"{val_psnr:.2f}")
                if val_psnr != "":
                    plot_curves(log_path, run_dir / "loss_curve.png")
                loss_acc, n_acc = 0.0, 0
            if out_of_time:
                log.info("time budget of %.0f s used: stopped at step %d (rerun to resume)", max_seconds, step)
                break
        bar.close()
    return last


def plot_curves(log_csv: Path, png: Path) -> None:
    """Loss and validation PSNR against step, from ``train_log.csv`` (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.atomic import atomic_file

    rows = list(csv.DictReader(open(log_csv)))
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.semilogy(steps, [float(r["loss"]) for r in rows], color="tab:blue", label="training loss (MSE)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color="tab:blue")
    val = [(int(r["step"]), float(r["val_psnr"])) for r in rows if r["val_psnr"]]
    if val:
        ax2 = ax.twinx()
        ax2.plot(*zip(*val), "o-", color="tab:red", label="validation PSNR")
        ax2.set_ylabel("validation PSNR (dB)", color="tab:red")
    ax.set_title(log_csv.parent.name)
    fig.tight_layout()
    atomic_file(png, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def load_config(path: Path | str | None = None, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a JSON file of its fields (``None``: the defaults), with
    ``overrides`` (fields whose value is not ``None``) applied on top. Unknown fields are an error."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values: dict[str, Any] = {}
    if path:
        values = json.loads(Path(path).read_text())
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"{path}: unknown training settings {unknown}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)


def _command_without_export(argv: list[str]) -> str:
    """The training command behind an export command line: ``argv`` without its ``--export`` option."""
    kept, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--export="):
            skip = False
            continue
        skip = arg == "--export"
        if not skip:
            kept.append(arg)
    return " ".join(["python -m models.train", *kept])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--config", type=Path, default=None,
                   help="JSON file of training settings (e.g. models/configs/ct_denoiser.json); flags override it")
    p.add_argument("--export", type=Path, help="write weights + model card from the run's checkpoint")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this long")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    for f in dataclasses.fields(TrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=None,
                       help=f"default {f.default!r}")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, **{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    if args.export:
        from .export import export

        export(cfg, args.run_dir, args.export, command=_command_without_export(sys.argv[1:] if argv is None else argv))
        return
    last = train(cfg, args.run_dir, max_seconds=args.max_minutes * 60 if args.max_minutes else None,
                 device=args.device)
    log.info("finished: %s (%d parameters)", last, count_parameters(build_model(cfg)))


if __name__ == "__main__":
    main()
