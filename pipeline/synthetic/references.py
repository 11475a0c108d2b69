"""Phantom reference slices for training and checking the denoiser: random region, geometry and
scanner blur, optionally with tissue texture and the scan's own (partly streaky) noise, as real
references carry. Seeds: ``sample_dicoms/`` below 100 000, checks 900 000-999 999, training from
1 000 000 up, so the model is never trained on an image it is evaluated on."""
from __future__ import annotations

import math

import cv2
import numpy as np

from pipeline.inference.window import Window, hu_to_unit
from pipeline.synthetic.phantom import REGIONS, Phantom, acquire, smooth_noise


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
            noise = math.cos(t) * noise + math.sin(t) * streaks(rng, hu.shape[0], streak_length_max_px)
        hu = hu + native * noise
        if streaky and streak_max_hu > 0:
            hu = hu + float(rng.uniform(0, streak_max_hu)) * streaks(rng, hu.shape[0], streak_length_max_px)
    return hu_to_unit(hu, window, clip=True)


def streaks(rng: np.random.Generator, size: int, along_max: float = 6.0) -> np.ndarray:
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
