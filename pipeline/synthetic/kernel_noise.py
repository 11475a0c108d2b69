"""CT noise shaped by a reconstruction kernel: stationary Gaussian noise whose noise power spectrum
(NPS) has the ramp-times-apodization form of filtered back projection,
NPS(f) = f exp(-(f / fc)^2), f in cycles per pixel.

The cutoff ``fc`` sets the grain: a smooth (soft-tissue) kernel gives blotchy noise, a sharp (bone,
lung) kernel fine-grained noise close to white. The named kernels are matched to the whiteness
(:mod:`pipeline.inference.noise_level`) of real scans' own noise: GE SOFT-kernel series read 0.39-0.52
(``soft``, fc 0.1), mildly shaped noise 0.8-0.9 (``standard``, fc 0.2), sharp kernels 1.0-1.2
(``sharp``, fc 0.35).

The same spectrum, scaled to the noise's std, is what BM3D's correlated-noise mode is told
(:func:`bm3d_psd`): the anchor for correlated noise.
"""
from __future__ import annotations

import numpy as np

KERNELS = {"soft": 0.1, "standard": 0.2, "sharp": 0.35}  # name -> NPS cutoff fc (cycles per pixel)


def cutoff(kernel: str | float) -> float:
    """The cutoff of a named kernel, or a cutoff given as a number in (0, 0.5]."""
    if isinstance(kernel, str) and kernel in KERNELS:
        return KERNELS[kernel]
    try:
        fc = float(kernel)
    except ValueError:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)} or a cutoff in (0, 0.5], got {kernel!r}") from None
    if not 0 < fc <= 0.5:
        raise ValueError(f"a kernel cutoff must be in (0, 0.5] cycles per pixel, got {fc}")
    return fc


def _amplitude(shape: tuple[int, int], fc: float) -> np.ndarray:
    """sqrt(NPS) on the FFT grid of ``shape``, scaled so that the mean NPS is 1."""
    f = np.hypot(np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :])
    nps = f * np.exp(-((f / fc) ** 2))
    return np.sqrt(nps / nps.mean())


def kernel_noise(shape: tuple[int, int], kernel: str | float, sigma: float, seed: int) -> np.ndarray:
    """(H, W) float32 noise of std ``sigma`` (any unit) with the kernel's spectrum, seeded."""
    white = np.random.default_rng(seed).standard_normal(shape)
    out = np.real(np.fft.ifft2(np.fft.fft2(white) * _amplitude(shape, cutoff(kernel))))
    return (out * (sigma / out.std())).astype(np.float32)


def bm3d_psd(shape: tuple[int, int], kernel: str | float, sigma: float) -> np.ndarray:
    """The noise's power spectral density as the ``bm3d`` package takes it (``sigma_psd``): the
    expected |FFT|^2 of the noise, so that white noise of std s reads s^2 x H x W everywhere."""
    return (_amplitude(shape, cutoff(kernel)) ** 2) * (sigma**2) * shape[0] * shape[1]
