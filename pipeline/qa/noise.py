"""Seeded synthetic noise for QA copies, benchmarks and training pairs: the yardstick's noise.

Noise is added in HU (as a fraction of the window on the unit scale) to the slice as it is, and is
never clipped: air written as -1024 HU stays below the window with its noise around it, as a scanner
writes it. Clipped noise is rectified where the reference sits at a window edge (its mean there is
about 0.4 sigma, not 0), a bias that a model can learn and that filters built for zero-mean noise
cannot, so a clipped copy would flatter the model. Each method clips to the window itself if it wants
to (the model does, through its input window); scores compare outputs and reference clipped to the
window (:func:`pipeline.qa.metrics.psnr` and :func:`pipeline.qa.metrics.ssim` on clipped images).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from pipeline.synthetic.kernel_noise import KERNELS as KERNEL_CUTOFFS
from pipeline.synthetic.kernel_noise import bm3d_psd, kernel_noise


def seed_from_uid(uid: str, salt: str = "qa-noise") -> int:
    """A stable 64-bit seed from a DICOM UID (same UID, same noise on every run and machine)."""
    return int.from_bytes(hashlib.sha256(f"{salt}:{uid}".encode()).digest()[:8], "little")


def add_gaussian_noise(unit: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """``unit`` plus sigma * N(0, 1) from a generator seeded with ``seed``, NOT clipped (float32).

    ``unit`` is an (H, W) image on the window's unit scale (values outside [0, 1] allowed); sigma is a
    fraction of the window. The global NumPy RNG is never touched.
    """
    if sigma < 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma}")
    rng = np.random.default_rng(seed)
    return (np.asarray(unit, np.float32) + np.float32(sigma) * rng.standard_normal(np.shape(unit), dtype=np.float32))


KERNELS = tuple(KERNEL_CUTOFFS)  # soft, standard, sharp
NOISE_KINDS = ("gaussian", "lowdose", *KERNELS)


@dataclass(frozen=True)
class NoiseModel:
    """The synthetic noise of QA copies: ``gaussian`` (sigma, fraction of the window), ``lowdose``
    (Poisson photon noise with ``i0`` photons per detector bin on simulated projections, FBP), or
    noise of std sigma shaped by a reconstruction kernel, ``soft``, ``standard`` or ``sharp``
    (:mod:`pipeline.synthetic.kernel_noise`: correlated, blotchy for a soft kernel)."""

    kind: str = "gaussian"
    sigma: float = 0.07
    i0: float = 2e4

    def __post_init__(self) -> None:
        if self.kind not in NOISE_KINDS:
            raise ValueError(f"noise model must be one of {', '.join(NOISE_KINDS)}, got {self.kind!r}")
        if not 0 <= self.sigma <= 1:
            raise ValueError(f"noise sigma must be in [0, 1] (fraction of the window), got {self.sigma}")
        if self.i0 <= 0:
            raise ValueError(f"low-dose i0 must be positive, got {self.i0}")

    @property
    def label(self) -> str:
        return f"lowdose I0={self.i0:g}" if self.kind == "lowdose" else self.kind if self.kind == "gaussian" \
            else f"{self.kind}-kernel"

    def bm3d_psd(self, shape: tuple[int, int]) -> np.ndarray | None:
        """The noise's power spectrum as BM3D's correlated-noise mode takes it, for kernel-shaped
        noise (unit scale); None for noise BM3D is told as a std (white, or low-dose: not stationary)."""
        if self.kind not in KERNELS:
            return None
        return bm3d_psd(shape, self.kind, self.sigma)

    def noisy(self, unit: np.ndarray, hu: np.ndarray, window_width: float, pixel_mm: float,
              seed: int) -> tuple[np.ndarray, float]:
        """The noisy copy of the slice ``hu`` ((H, W) HU; ``unit`` is the same slice on the window's
        unit scale, NOT clipped) on the unit scale, not clipped, and the std of the added noise (unit
        scale; for low-dose noise its std inside the reconstruction circle), which is what BM3D and a
        noise-conditioned model are told."""
        if self.kind == "gaussian":
            return add_gaussian_noise(unit, self.sigma, seed), self.sigma
        if self.kind in KERNELS:
            return (np.asarray(unit, np.float32) + kernel_noise(np.shape(unit), self.kind, self.sigma, seed)), self.sigma
        from pipeline.synthetic.lowdose import low_dose_noise_whole_hu

        noise = low_dose_noise_whole_hu(hu, pixel_mm, self.i0, seed) / np.float32(window_width)
        inside = noise[noise != 0]
        return (np.asarray(unit, np.float32) + noise).astype(np.float32), float(inside.std()) if inside.size else 0.0
