"""The training loop: noisy input -> CLEAN target, resumable from a run folder's checkpoint.

The shipped weights come from ``python -m models.training --config models/configs/ct_denoiser.json
--run-dir runs/ct_denoiser --threads 2`` (resumes from the run folder's checkpoint when there is
one), then the same with ``--export models/weights/ct_denoiser.safetensors``, which writes the
weights and the model card (:mod:`.card`); ``luigi --module tasks TrainModel --config ...`` does both.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from models.autoencoder import DenoisingAutoencoder, grow_state, spread_slices
from models.store import load_checkpoint, load_model, save_checkpoint
from pipeline.atomic import atomic_file
from pipeline.inference.malloc import keep_freed_memory
from pipeline.qa.yardstick import mean_score, score_methods

from .batches import Batches
from .config import TrainConfig
from .data import PatchStream, Reference, noisy_input, validation_set

log = logging.getLogger(__name__)


def told_model(model: DenoisingAutoencoder, sigma: float) -> Callable[[np.ndarray], np.ndarray]:
    """The model as a yardstick method (call it in inference mode): a noisy input (1 + 2 context, H, W)
    clipped to the window, told ``sigma``, to the centre slice denoised (H, W)."""
    device = next(model.parameters()).device

    def run(noisy: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(np.clip(noisy, 0, 1))[None].to(device), sigma)[0, 0].cpu().numpy()
    return run


@torch.inference_mode()
def evaluate(model: DenoisingAutoencoder, refs: list[Reference], sigma: float) -> float:
    """Mean PSNR (data range 1, in the window) of the model on seeded noisy copies of ``refs``: noise
    added to the reference as it is (not clipped), the model's input clipped to the window, output and
    reference clipped to the window (the yardstick, :mod:`pipeline.qa.yardstick`)."""
    model.eval()
    run = told_model(model, sigma)
    scores = []
    for i, ref in enumerate(refs):
        noisy = noisy_input(ref, sigma, i, model.context)
        scores.extend(score_methods(ref.target, noisy, {"autoencoder": run}, with_ssim=False)["autoencoder"])
    model.train()
    return mean_score(scores).psnr


def machine(device: str, workers: int) -> str:
    """Where training steps run, for the run's record: the device (the GPU's name) and batch workers."""
    dev = torch.device(device)
    name = f"cuda ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else dev.type
    return f"{name}, {workers} batch worker{'s' if workers > 1 else ''}" if workers else name


def warmup_steps(steps: int) -> int:
    """Warm-up of a schedule of ``steps`` steps: 200 steps for real runs, shorter for tiny ones."""
    return min(200, steps // 10)


def learning_rate(cfg: TrainConfig, step: int, steps: int | None = None) -> float:
    """The rate of ``step`` on the schedule of ``steps`` steps (``cfg.steps`` unless given)."""
    steps = cfg.steps if steps is None else steps
    warm = warmup_steps(steps)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = min(1.0, (step - warm) / max(1, steps - warm))
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * t))


def schedules_from_log(cfg: TrainConfig, rows: list[dict[str, str]]) -> list[tuple[int, int | None]]:
    """The learning-rate schedules a run went through, from its ``train_log.csv`` rows: (first
    step, steps the schedule ran to) each, in order. A run continued with a larger ``--steps`` starts
    a new cosine at the step it resumed from (a warm restart); the log holds the rate of every logged
    step, and every call logs its last step, so each schedule's length is the final ``cfg.steps`` or
    a logged step; a schedule that is neither (a call stopped before its end, then continued with
    another ``--steps``) has length None."""
    logged = [(int(r["step"]), float(r["lr"])) for r in rows if r.get("lr")]
    lengths = sorted({s for s, _ in logged} | {cfg.steps})

    def fits(steps: int, step: int, lr: float) -> bool:  # the row's rate: that of its last step
        return math.isclose(learning_rate(cfg, step - 1, steps), lr, rel_tol=1e-6)

    out: list[tuple[int, int | None]] = []
    previous = 0
    for k, (step, lr) in enumerate(logged):
        if not out or out[-1][1] is None or not fits(out[-1][1], step, lr):
            runs = {t: next((j for j, (s, r) in enumerate(logged[k:]) if not fits(t, s, r)), len(logged) - k)
                    for t in lengths if t >= step and fits(t, step, lr)}
            steps = max(runs, key=lambda t: (runs[t], -t)) if runs else None
            if not out or steps is not None or out[-1][1] is not None:
                out.append((previous, steps))
        previous = step
    return out


def describe_schedule(cfg: TrainConfig, schedules: list[tuple[int, int | None]], last_step: int) -> str:
    """The card's ``optimizer``: the cosine and, for a continued run (``schedules`` from
    :func:`schedules_from_log`, trained to ``last_step``), each warm restart."""
    text = f"Adam, lr {cfg.lr} cosine to {cfg.lr_min}"
    if len(schedules) <= 1:
        unknown = bool(schedules) and schedules[0][1] is None
        return f"{text}, {warmup_steps(cfg.steps)} warm-up steps" + (
            " (the logged rates fit no schedule of this configuration)" if unknown else "")
    ends = [first for first, _ in schedules[1:]] + [last_step]
    parts = [f"steps {first}-{end} on a schedule of a length the log does not tell" if steps is None else
             f"steps {first}-{end} on a schedule of {steps} steps ({warmup_steps(steps)} warm-up)"
             + (f", resumed at lr {learning_rate(cfg, first, steps):.3g}" if first else "")
             for (first, steps), end in zip(schedules, ends)]
    return f"{text}, warm restarts: " + "; ".join(parts)


LOG_MSE_EPS = 1e-6


def objective(cfg: TrainConfig, per_patch_mse: torch.Tensor) -> torch.Tensor:
    """The training objective from the per-patch MSE: their mean (``loss`` "mse") or the mean of
    log(MSE + 1e-6) ("log_mse": the mean patch PSNR up to sign and scale)."""
    if cfg.loss == "mse":
        return per_patch_mse.mean()
    if cfg.loss == "log_mse":
        return torch.log(per_patch_mse + LOG_MSE_EPS).mean()
    raise ValueError(f"unknown loss {cfg.loss!r}: use 'mse' or 'log_mse'")


def train_step(cfg: TrainConfig, model: DenoisingAutoencoder, opt: torch.optim.Optimizer,
               batch: tuple[torch.Tensor, ...], device: str) -> torch.Tensor:
    """One optimizer step on a (noisy, clean, level) batch, or (noisy, clean, level, whiteness) for a
    network told the whiteness; returns the per-patch MSE (detached)."""
    noisy, clean, level, *whiteness = (t.to(device, non_blocking=True) for t in batch)
    per_patch = ((model(noisy, level, *whiteness) - clean) ** 2).mean(dim=(1, 2, 3))
    objective(cfg, per_patch).backward()
    channel = whiteness_weights(model) if cfg.whiteness_lr_factor != 1 else None
    before = channel.detach().clone() if channel is not None else None
    opt.step()
    if channel is not None:
        with torch.no_grad():  # the step taken, times the factor
            channel.copy_(before + cfg.whiteness_lr_factor * (channel - before))
    opt.zero_grad(set_to_none=True)
    return per_patch.detach()


def whiteness_weights(model: DenoisingAutoencoder) -> torch.Tensor | None:
    """The first convolution's weights on the whiteness channel (its last input channel), a view; None
    for a network not told the whiteness."""
    return model.stem[0][0].weight[:, -1] if model.whiteness_map else None


def build_model(cfg: TrainConfig) -> DenoisingAutoencoder:
    torch.manual_seed(cfg.seed)
    return DenoisingAutoencoder(**cfg.architecture)


LOG_COLUMNS = ["step", "loss", "val_psnr", "lr", "elapsed_s"]


def train(cfg: TrainConfig, run_dir: Path, progress: bool = True, until_step: int | None = None,
          max_seconds: float | None = None, device: str = "cpu", workers: int = 0,
          validate: bool = True) -> dict[str, Any]:
    """Train (or resume) into ``run_dir``: ``checkpoint.safetensors``, ``train_log.csv``,
    ``config.json``. Stops at ``cfg.steps``, or earlier at ``until_step`` or after ``max_seconds``
    of this call (with a checkpoint, so a later call resumes exactly). Returns the last logged row.
    ``device``: ``cpu`` or ``cuda[:N]`` (the batches are made on the CPU either way; checkpoints
    hold CPU tensors, so a run may move between machines). ``workers``: processes making the
    batches (:mod:`.batches`; the same batches as without). ``validate`` False: no validation PSNR
    in the log (a machine without the validation data; the export measures it later)."""
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
    if cfg.slice_shares and not cfg.init_weights:
        raise ValueError("init_slice_shares spreads the first layer of a start: give init_weights as well")
    model = build_model(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, elapsed, trained_on = 0, 0.0, []
    if cfg.init_weights and not ckpt.exists():
        start = load_model(cfg.init_weights)
        try:
            state = grow_state(start.model.state_dict(), model, start.model.whiteness_map)
            model.load_state_dict(spread_slices(state, model, cfg.slice_shares) if cfg.slice_shares else state)
        except ValueError as exc:
            raise ValueError(f"{cfg.init_weights}: architecture {start.model.config} does not fit "
                             f"{model.config}: {exc}") from None
        log.info("initialised from %s (sha256 %s, %s)%s", cfg.init_weights, start.sha256[:16], start.model.config,
                 f", first layer spread over the stack {cfg.slice_shares}" if cfg.slice_shares else "")
    if ckpt.exists():
        meta = load_checkpoint(ckpt, model, opt)
        step, elapsed = int(meta["step"]), float(meta["elapsed_s"])
        trained_on = list(meta.get("trained_on", ["cpu"]))  # checkpoints before this record: CPU runs
        log.info("resumed %s at step %d", ckpt, step)
    here = machine(device, workers)
    if not trained_on or trained_on[-1] != here:
        trained_on.append(here)
    stream = PatchStream(cfg)
    val = validation_set(cfg) if validate else []
    log_path = run_dir / "train_log.csv"
    trim_log(log_path, step)
    new_log = not log_path.exists() or log_path.stat().st_size == 0  # a run cut off before its first row
    last: dict[str, Any] = {"step": step}
    loss_acc, n_acc = 0.0, 0
    t0 = time.perf_counter() - elapsed
    model.train()
    with open(log_path, "a", newline="") as fh:
        writer = csv.writer(fh)
        if new_log:
            writer.writerow(LOG_COLUMNS)
        bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="batch", disable=not progress)
        started = time.perf_counter()
        stop_at = min(cfg.steps, until_step or cfg.steps)
        with Batches(stream, step, stop_at, workers) as batches:
            for batch in batches:
                lr = learning_rate(cfg, step)
                for g in opt.param_groups:
                    g["lr"] = lr
                loss_acc += train_step(cfg, model, opt, batch, device).mean()  # logged as plain MSE
                n_acc += 1
                step += 1
                bar.update(1)
                out_of_time = max_seconds is not None and time.perf_counter() - started > max_seconds
                if step % cfg.checkpoint_every == 0 or step in (cfg.steps, stop_at) or out_of_time:
                    due = validate and (step % cfg.val_every == 0 or step == cfg.steps)
                    val_psnr = evaluate(model, val, cfg.val_sigma) if due else ""
                    last = {"step": step, "loss": float(loss_acc) / n_acc, "val_psnr": val_psnr, "lr": lr,
                            "elapsed_s": time.perf_counter() - t0}
                    writer.writerow([last[k] for k in LOG_COLUMNS])
                    fh.flush()
                    save_checkpoint(ckpt, model, opt, {"step": step, "elapsed_s": last["elapsed_s"],
                                                        "trained_on": trained_on})
                    bar.set_postfix(loss=f"{last['loss']:.2e}",
                                    val=val_psnr if val_psnr == "" else f"{val_psnr:.2f}")
                    if val_psnr != "":
                        plot_curves(log_path, run_dir / "loss_curve.png")
                    loss_acc, n_acc = 0.0, 0
                if out_of_time:
                    log.info("time budget of %.0f s used: stopped at step %d (rerun to resume)", max_seconds, step)
                    break
        bar.close()
    return last


def trim_log(log_csv: Path, step: int) -> None:
    """Drop the rows of ``log_csv`` past ``step``, the step the run resumes from: a run stopped
    between writing a row and saving its checkpoint logged steps that the rerun trains again, and
    would log twice. The log is rewritten atomically, and only when it has such rows."""
    if not log_csv.exists() or log_csv.stat().st_size == 0:
        return
    with open(log_csv, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or rows[0] != LOG_COLUMNS:
        raise ValueError(f"{log_csv}: not a training log (header {rows[:1]}); use a new run folder")
    kept = [r for r in rows[1:] if r and int(r[0]) <= step]
    if len(kept) == len(rows) - 1:
        return
    log.info("%s: %d row(s) past the checkpoint's step %d dropped (trained again now)", log_csv,
             len(rows) - 1 - len(kept), step)

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as out:
            csv.writer(out).writerows([LOG_COLUMNS, *kept])

    atomic_file(log_csv, write)


def plot_curves(log_csv: Path, png: Path) -> None:
    """Loss and validation PSNR against step, from ``train_log.csv`` (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
