"""Reference images and seeded noisy training batches.

Each pair: the reference patch as the model sees it (clipped to the window) is the target; the
input is the reference as it is (NOT clipped: real air lies below -1000 HU) plus seeded noise, then
clipped to the window, which is what the model's input window does to a noisy scan. With a
noise-conditioned network each patch also carries the std of the noise that was added.

Seeds: validation phantoms 900 000 + i, training phantoms from 1 000 000 up.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.inference.noise_level import noise_whiteness
from pipeline.inference.slice_context import context_indices, neighbour_links
from pipeline.inference.window import hu_to_unit, unit_to_hu
from pipeline.qa.noise import add_gaussian_noise
from pipeline.synthetic.kernel_noise import kernel_noise
from pipeline.synthetic.lowdose import low_dose_noise_hu
from pipeline.synthetic.references import clean_slice

from . import realct, volumes
from .config import TrainConfig

log = logging.getLogger(__name__)

TRAIN_SEED_BASE = 1_000_000
VAL_SEED_BASE = 900_000
PHANTOM_PIXEL_MM = 0.75


@dataclass(frozen=True)
class Reference:
    """A reference slice on the window's unit scale, NOT clipped, with its pixel size."""

    unit: np.ndarray
    pixel_mm: float
    name: str = ""
    stack: np.ndarray | None = None  # for slice context: (1 + 2 context, H, W) unit, the slice in the middle

    @property
    def target(self) -> np.ndarray:
        return np.clip(self.unit, 0.0, 1.0)


def reference_slice(seed: int, cfg: TrainConfig) -> np.ndarray:
    """A phantom reference slice drawn the way ``cfg`` draws its training data, in [0, 1]."""
    return clean_slice(seed, cfg.window, tuple(cfg.regions.split(",")), cfg.native_noise_max_hu, cfg.texture_max_hu,
                       cfg.streak_fraction, cfg.psf_min_px, cfg.streak_length_max_px, cfg.streak_max_hu)


def real_references(cfg: TrainConfig, part: str) -> list[Reference]:
    return [Reference(hu_to_unit(s.hu, cfg.window), s.pixel_mm, s.file)
            for s in realct.load_part(part, cfg.realct_dir, min_side=cfg.patch)]


def validation_set(cfg: TrainConfig) -> list[Reference]:
    """The references training is checked on: the real CT set's validation part when training on it,
    else ``val_slices`` held-out phantoms (seeds 900 000 + i); the validation volumes' middle slices
    with their neighbours for a model with slice context (and, training on the real CT set too, its
    validation part as lone slices)."""
    if cfg.context and cfg.source == "realct":
        return context_validation_set(cfg) + real_references(cfg, "validation")
    if cfg.context or cfg.source == "volumes":
        return context_validation_set(cfg)
    if cfg.source == "realct":
        return real_references(cfg, "validation")
    return [Reference(reference_slice(VAL_SEED_BASE + i, cfg), PHANTOM_PIXEL_MM, f"phantom {VAL_SEED_BASE + i}")
            for i in range(cfg.val_slices)]


def archive_references(folder: Path, cfg: TrainConfig) -> list[Reference]:
    """Up to ``cfg.pool_size`` slices (seeded choice) of the CT series under ``folder``, at least
    ``cfg.patch`` pixels on each side."""
    from pipeline.dicom.discovery import scan
    from pipeline.dicom.reader import load_series
    from pipeline.errors import InputError

    refs: list[Reference] = []
    for study in scan(folder).studies.values():
        for ref in study.series.values():
            try:
                series = load_series(ref)
            except InputError as exc:
                log.warning("training source: %s", exc)
                continue
            mm = float(series.datasets[0].get("PixelSpacing", [PHANTOM_PIXEL_MM])[0])
            refs.extend(Reference(hu_to_unit(h, cfg.window), mm) for h in series.hu if min(h.shape) >= cfg.patch)
    if not refs:
        raise ValueError(f"{folder}: no CT slices of at least {cfg.patch}x{cfg.patch} pixels to train on")
    rng = np.random.default_rng([cfg.seed, 7])
    return [refs[i] for i in sorted(rng.permutation(len(refs))[: cfg.pool_size])]


def zoomed(refs: list[Reference], cfg: TrainConfig) -> list[Reference]:
    """Copies of ``refs`` resampled by each of ``cfg.zoom_factors`` (enlarged above 1, their pixel size
    divided by the factor), those still at least ``cfg.patch`` on each side."""
    import cv2

    out = []
    for factor in cfg.zooms:
        for ref in refs:
            h, w = ref.unit.shape
            size = (round(w * factor), round(h * factor))
            if min(size) < cfg.patch:
                continue
            unit = cv2.resize(ref.unit, size, interpolation=cv2.INTER_CUBIC if factor > 1 else cv2.INTER_AREA)
            out.append(Reference(unit, ref.pixel_mm / factor, f"{ref.name} x{factor:g}"))
    return out


class PatchStream:
    """Deterministic batches: batch ``step`` depends only on (seed, step), so a resumed run sees
    exactly the batches an uninterrupted run would have seen."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self._volumes: list[volumes.Volume] = []
        self._runs: list[volumes.Volume] = []  # contiguous runs of the real CT set's training part
        self._generation = -1
        self._phantoms: list[Reference] = []
        self._fixed: list[Reference] = []  # real or site slices, loaded once

    def _phantom_pool(self, step: int) -> list[Reference]:
        gen = step // self.cfg.pool_refresh
        if gen != self._generation:
            base = TRAIN_SEED_BASE + (self.cfg.seed * 1000 + gen) * self.cfg.pool_size
            self._phantoms = [Reference(reference_slice(base + i, self.cfg), PHANTOM_PIXEL_MM)
                              for i in range(self.cfg.pool_size)]
            self._generation = gen
        return self._phantoms

    def _fixed_pool(self) -> list[Reference]:
        if not self._fixed:
            if self.cfg.source == "realct":
                self._fixed = real_references(self.cfg, "train")
            else:
                self._fixed = archive_references(Path(self.cfg.source), self.cfg)
            self._fixed = self._fixed + zoomed(self._fixed, self.cfg)
        return self._fixed

    def _pool(self, step: int, rng: np.random.Generator) -> list[Reference]:
        cfg = self.cfg
        if cfg.source == "synthetic" or (cfg.source == "realct" and rng.random() < cfg.synthetic_fraction):
            return self._phantom_pool(step)
        return self._fixed_pool()

    def batch(self, step: int) -> tuple[torch.Tensor, ...]:
        """(noisy input, clean target, level told): (B, 1 + 2 context, P, P), (B, 1, P, P), (B,). The level
        told is the std of the added noise, but for low-dose patches with ``lowdose_level_jitter``.
        With ``whiteness_map`` a fourth, (B,): the whiteness of each patch's noise (of the slice to
        denoise; 1 for white noise), :func:`pipeline.inference.noise_level.noise_whiteness`."""
        if self.cfg.context or self.cfg.source == "volumes" or self.cfg.lone_volume_fraction > 0:
            noisy, clean, levels, lowdose, whiteness = self._context_batch(step)
        else:
            noisy, clean, levels, lowdose, whiteness = self._slice_patches(
                step, np.random.default_rng([self.cfg.seed, step]), self.cfg.batch_size)
        told = self._told(levels, lowdose, step)
        return (noisy, clean, told, torch.from_numpy(whiteness)) if self.cfg.whiteness_map else (noisy, clean, told)

    def _told(self, levels: torch.Tensor, lowdose: np.ndarray, step: int) -> torch.Tensor:
        """The levels the model is told: a low-dose patch's std times exp(N(0, lowdose_level_jitter)), as
        production tells a series' estimate, which reads a soft-tissue patch's low-dose noise within
        about 0.73-1.27 of it (bench.lowdose_level). Drawn from a generator of their own: the patches
        and their noise are those of the same batch without jitter."""
        jitter = self.cfg.lowdose_level_jitter
        if jitter <= 0 or not lowdose.any():
            return levels
        rng = np.random.default_rng([self.cfg.seed, step, 1])
        factor = np.exp(jitter * rng.standard_normal(len(levels))).astype(np.float32)
        return levels * torch.from_numpy(np.where(lowdose, factor, np.float32(1.0)))

    def _slice_patches(self, step: int, rng: np.random.Generator, count: int) -> tuple:
        """``count`` patches of lone reference slices (``source``'s pool), white, low-dose or kernel-shaped
        noise: (noisy, clean, std of the added noise, which patches got low-dose noise, the whiteness of
        each patch's noise)."""
        cfg = self.cfg
        clean = np.empty((count, 1, cfg.patch, cfg.patch), np.float32)
        raw = np.empty_like(clean)
        shaped = np.zeros_like(clean)  # low-dose or kernel-shaped noise, else none
        is_shaped = np.zeros(count, bool)
        is_lowdose = np.zeros(count, bool)
        levels = np.zeros(count, np.float32)
        whiteness = np.ones(count, np.float32)
        for b in range(count):
            pool = self._pool(step, rng)
            for _ in range(10):  # mostly skip patches of empty air
                ref = pool[int(rng.integers(len(pool)))]
                h, w = ref.unit.shape
                if h == w:
                    r, c = (int(v) for v in rng.integers(0, h - cfg.patch + 1, size=2))
                else:
                    r, c = int(rng.integers(0, h - cfg.patch + 1)), int(rng.integers(0, w - cfg.patch + 1))
                crop = ref.unit[r:r + cfg.patch, c:c + cfg.patch]
                if np.clip(crop, 0, 1).std() > 0.01 or rng.random() < 0.1:
                    break
            k, flip = int(rng.integers(4)), rng.random() < 0.5
            crop = np.rot90(crop, k)
            if flip:
                crop = crop[:, ::-1]
            raw[b, 0] = crop
            grain = _grain(cfg, (cfg.seed, step, 2, b))
            if grain is not None:
                raw[b, 0] += grain(cfg.patch)
            if cfg.lowdose_fraction > 0 and rng.random() < cfg.lowdose_fraction:
                levels[b] = rng.uniform(cfg.sigma_min, cfg.sigma_max) + 0.005
                noise = np.rot90(_lowdose_patch(ref, r, c, cfg, int(rng.integers(2**31))), k)
                shaped[b, 0] = levels[b] * (noise[:, ::-1] if flip else noise)
                is_shaped[b] = is_lowdose[b] = True
                whiteness[b] = noise_whiteness(shaped[b, 0])
            elif cfg.kernel_fraction > 0 and rng.random() < cfg.kernel_fraction:
                levels[b] = rng.uniform(cfg.sigma_min, cfg.sigma_max) + 0.005
                fc = rng.uniform(cfg.kernel_fc_min, cfg.kernel_fc_max)
                shaped[b, 0] = levels[b] * _kernel_patch(cfg.patch, fc, int(rng.integers(2**31)))
                is_shaped[b] = True
                whiteness[b] = noise_whiteness(shaped[b, 0])
        sigma = rng.uniform(cfg.sigma_min, cfg.sigma_max, size=(count, 1, 1, 1)).astype(np.float32)
        sigma[is_shaped] = 0.0  # those patches get low-dose or kernel-shaped noise instead
        levels[~is_shaped] = sigma[~is_shaped, 0, 0, 0]
        noisy = np.clip(raw + shaped + sigma * rng.standard_normal(raw.shape, dtype=np.float32), 0, 1)
        np.clip(raw, 0, 1, out=clean)
        return torch.from_numpy(noisy), torch.from_numpy(clean), torch.from_numpy(levels), is_lowdose, whiteness

    def _context_batch(self, step: int) -> tuple:
        """Patches of a slice of a training volume with its ``context`` neighbours on each side
        (:func:`pipeline.inference.slice_context.context_indices`: replicated past the volume's ends, as the
        pipeline does), white, kernel-shaped or (``volume_lowdose_fraction``) low-dose noise of one
        std, drawn independently per slice; a
        replicated neighbour is the same noisy slice, as in a derived series. With a ``source`` other
        than ``volumes``, a share ``1 - volume_fraction`` of the patches (binomial per batch) are lone
        slices of that source instead, each its own neighbours, as the pipeline runs a one-slice series.
        A 2-D network (context 0) takes a share ``lone_volume_fraction`` of single volume slices instead."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, step])
        share = cfg.volume_fraction if cfg.context else cfg.lone_volume_fraction
        n_vol = cfg.batch_size if cfg.source == "volumes" else int(rng.binomial(cfg.batch_size, share))
        noisy, clean, levels, lowdose, whiteness = self._volume_patches(step, rng, n_vol)
        if n_vol == cfg.batch_size:
            return noisy, clean, levels, lowdose, whiteness
        lone, lone_clean, lone_levels, lone_lowdose, lone_whiteness = self._slice_patches(step, rng,
                                                                                          cfg.batch_size - n_vol)
        lone = lone.repeat(1, 1 + 2 * cfg.context, 1, 1)
        return (torch.cat([noisy, lone]), torch.cat([clean, lone_clean]), torch.cat([levels, lone_levels]),
                np.concatenate([lowdose, lone_lowdose]), np.concatenate([whiteness, lone_whiteness]))

    def _volume_patches(self, step: int, rng: np.random.Generator, count: int) -> tuple:
        cfg = self.cfg
        if count and not self._volumes:
            self._volumes = volumes.load_part("train", cfg.volumes_dir)
        if count and cfg.runs_fraction > 0 and not self._runs:
            self._runs = volumes.realct_part_runs("train", cfg.realct_dir, min_slices=3)
        depth, p = 1 + 2 * cfg.context, cfg.patch
        noisy = np.empty((count, depth, p, p), np.float32)
        clean = np.empty((count, 1, p, p), np.float32)
        levels = rng.uniform(cfg.sigma_min, cfg.sigma_max, size=count).astype(np.float32)
        is_lowdose = np.zeros(count, bool)
        whiteness = np.ones(count, np.float32)
        for b in range(count):
            for _ in range(10):  # mostly skip patches of empty air
                pool = self._runs if cfg.runs_fraction > 0 and rng.random() < cfg.runs_fraction else self._volumes
                vol = pool[int(rng.integers(len(pool)))]
                t = None  # positions of a thinner stack in slices of the volume, or the volume as stored
                if cfg.thin_fraction > 0 and pool is self._volumes and rng.random() < cfg.thin_fraction:
                    t = thinner_positions(vol, cfg.context, rng.uniform(cfg.thin_step_min_mm, cfg.thin_step_max_mm),
                                          rng.random())
                n, h, w = vol.hu.shape if t is None else (len(t), *vol.hu.shape[1:])
                rows = (context_indices(n, cfg.context, neighbour_links(vol.z_mm, n))[int(rng.integers(n))]
                        if t is None else np.arange(n))
                r, c = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
                area = np.s_[r:r + p, c:c + p]  # only the patch is interpolated, not the whole slices
                crop = hu_to_unit(vol.hu[(slice(None), *area)] if t is None else blend(vol.hu, t, area), cfg.window)
                if np.clip(crop[rows[cfg.context]], 0, 1).std() > 0.01 or rng.random() < 0.1:
                    break
            k, flip = int(rng.integers(4)), rng.random() < 0.5
            used = np.unique(rows)
            grain = _grain(cfg, (cfg.seed, step, 3, b))
            if grain is not None:
                for i in used:
                    crop[i] += grain(p)
            lowdose = is_lowdose[b] = cfg.volume_lowdose_fraction > 0 and rng.random() < cfg.volume_lowdose_fraction
            shaped = not lowdose and cfg.kernel_fraction > 0 and rng.random() < cfg.kernel_fraction
            fc = rng.uniform(cfg.kernel_fc_min, cfg.kernel_fc_max)
            slices = {}
            for i in used:  # each slice its own noise; replicated neighbours share it
                if lowdose:
                    ref = Reference(hu_to_unit(vol.hu[i] if t is None else blend(vol.hu, t[i:i + 1])[0], cfg.window),
                                    vol.pixel_mm)
                    noise = _lowdose_patch(ref, r, c, cfg, int(rng.integers(2**31)))
                elif shaped:
                    noise = _kernel_patch(p, fc, int(rng.integers(2**31)))
                else:
                    noise = rng.standard_normal((p, p), dtype=np.float32)
                slices[i] = crop[i] + levels[b] * noise
                if i == rows[cfg.context] and (lowdose or shaped):
                    whiteness[b] = noise_whiteness(noise)
            stack = np.stack([slices[i] for i in rows])
            target = crop[rows[cfg.context]][None]
            stack, target = np.rot90(stack, k, axes=(1, 2)), np.rot90(target, k, axes=(1, 2))
            if flip:
                stack, target = stack[:, :, ::-1], target[:, :, ::-1]
            noisy[b] = np.clip(stack, 0, 1)
            clean[b] = np.clip(target, 0, 1)
        return torch.from_numpy(noisy), torch.from_numpy(clean), torch.from_numpy(levels), is_lowdose, whiteness


def thinner_positions(vol: volumes.Volume, context: int, step_mm: float, where: float) -> np.ndarray | None:
    """(1 + 2 ``context``,) positions in slices of ``vol`` (fractional: between its slices) of a stack at
    ``step_mm``, centred at the fraction ``where`` (in [0, 1]) of the span where the whole stack fits; None
    for a volume too short for it or with a gap between slices."""
    n = len(vol.hu)
    if n < 2 or not neighbour_links(vol.z_mm, n).all():
        return None
    step = step_mm / float(np.median(np.diff(vol.z_mm)))  # in slices of the volume
    half = context * step
    if 2 * half > n - 1:
        return None
    return half + where * (n - 1 - 2 * half) + step * np.arange(-context, context + 1)


def blend(hu: np.ndarray, t: np.ndarray, area: tuple[slice, slice] = np.s_[:, :]) -> np.ndarray:
    """(len(t), ...) slices of the stack ``hu`` at the fractional positions ``t`` (:func:`thinner_positions`),
    each interpolated linearly between its two nearest slices, within ``area`` (rows, columns) only."""
    low = np.minimum(np.floor(t).astype(int), len(hu) - 2)
    f = (t - low).astype(np.float32)[:, None, None]
    return (1 - f) * hu[(low, *area)] + f * hu[(low + 1, *area)]


def noisy_input(ref: Reference, sigma: float, i: int, context: int) -> np.ndarray:
    """The seeded noisy copy of the ``i``-th check reference as a model with ``context`` neighbours on
    each side takes it: (1 + 2 * context, H, W) on the unit scale, NOT clipped, the slice itself in the
    middle. A reference with its stack: every slice its own noise (seed 900 000 + 1000 i + j); a lone
    slice: its noisy copy (seed 900 000 + i) repeated as its own neighbours, as the derived series
    does past a stack's ends."""
    if ref.stack is None:
        return np.repeat(add_gaussian_noise(ref.unit, sigma, seed=VAL_SEED_BASE + i)[None], 1 + 2 * context, axis=0)
    if len(ref.stack) != 1 + 2 * context:
        raise ValueError(f"reference {ref.name!r}: a stack of {len(ref.stack)} slices for a model with "
                         f"context {context}")
    return np.stack([add_gaussian_noise(s, sigma, seed=VAL_SEED_BASE + 1000 * i + j) for j, s in enumerate(ref.stack)])


def context_validation_set(cfg: TrainConfig) -> list[Reference]:
    """For a model with slice context (or a 2-D one trained on the volumes): the middle slice of each
    validation volume, with its neighbours (``Reference.stack``)."""
    out = []
    for vol in volumes.load_part("validation", cfg.volumes_dir):
        n = len(vol.hu)
        rows = context_indices(n, cfg.context, neighbour_links(vol.z_mm, n))[n // 2]
        stack = hu_to_unit(vol.hu[rows], cfg.window)
        out.append(Reference(stack[cfg.context], vol.pixel_mm, vol.series, stack))
    return out


def _grain(cfg: TrainConfig, key: tuple[int, ...]):
    """For a share ``grain_fraction`` of the patches, a function that draws a (side, side) field of grain:
    one std uniform in [0, ``grain_max``] and one shape per patch (white, or with probability 1/2 shaped by
    a kernel of cutoff uniform in [``kernel_fc_min``, ``kernel_fc_max``]), a new field per call; else
    None. Drawn from the patch's own generator (seeded with ``key``, made only when grain is asked for), so
    patches without grain are those of the same run without it."""
    if cfg.grain_fraction <= 0:
        return None
    rng = np.random.default_rng(list(key))
    if rng.random() >= cfg.grain_fraction:
        return None
    std = rng.uniform(0.0, cfg.grain_max)
    fc = rng.uniform(cfg.kernel_fc_min, cfg.kernel_fc_max) if rng.random() < 0.5 else None

    def field(side: int) -> np.ndarray:
        if fc is None:
            return std * rng.standard_normal((side, side), dtype=np.float32)
        return std * _kernel_patch(side, fc, int(rng.integers(2**31)))
    return field


def _kernel_patch(patch: int, fc: float, seed: int) -> np.ndarray:
    """Unit-std kernel-shaped noise for a patch: cut from a field twice its side (not periodic on
    the patch), normalized to std 1."""
    noise = kernel_noise((2 * patch, 2 * patch), fc, 1.0, seed)[:patch, :patch]
    return noise / max(float(noise.std()), 1e-6)


def _lowdose_patch(ref: Reference, r: int, c: int, cfg: TrainConfig, seed: int) -> np.ndarray:
    """Unit-std low-dose CT noise for the patch of ``ref`` at (r, c): simulated on a margin around
    it (the reconstruction circle of the simulation covers the whole patch), normalized to std 1."""
    m = int(math.ceil(cfg.patch * 0.25)) + 2
    big = np.pad(ref.unit, m, mode="reflect")[r:r + cfg.patch + 2 * m, c:c + cfg.patch + 2 * m]
    hu = unit_to_hu(np.clip(big, 0, 1), cfg.window)  # attenuation within the window (no padding values)
    noise = low_dose_noise_hu(hu, ref.pixel_mm, 1e5, seed)[m:m + cfg.patch, m:m + cfg.patch]
    return noise / max(float(noise.std()), 1e-6)
