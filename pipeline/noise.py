"""Seeded synthetic noise for QA copies and training pairs."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


def seed_from_uid(uid: str, salt: str = "qa-noise") -> int:
    """A stable 64-bit seed from a DICOM UID (same UID, same noise on every run and machine)."""
    return int.from_bytes(hashlib.sha256(f"{salt}:{uid}".encode()).digest()[:8], "little")


def add_gaussian_noise(unit: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """``unit`` plus sigma * N(0, 1) from a generator seeded with ``seed``, clipped to [0, 1].

    ``unit`` is an (H, W) image in [0, 1]; sigma is a fraction of the normalized window. The
    global NumPy RNG is never touched.
    """
    if sigma < 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma}")
    rng = np.random.default_rng(seed)
    noisy = unit + np.float32(sigma) * rng.standard_normal(unit.shape, dtype=np.float32)
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class NoiseModel:
    """The synthetic noise of QA copies: ``gaussian`` (sigma, fraction of the window) or ``lowdose``
    (Poisson photon noise with ``i0`` photons per detector bin on simulated projections, FBP)."""

    kind: str = "gaussian"
    sigma: float = 0.07
    i0: float = 2e4

    def __post_init__(self) -> None:
        if self.kind not in ("gaussian", "lowdose"):
            raise ValueError(f"noise model must be gaussian or lowdose, got {self.kind!r}")
        if not 0 <= self.sigma <= 1:
            raise ValueError(f"noise sigma must be in [0, 1] (fraction of the window), got {self.sigma}")
        if self.i0 <= 0:
            raise ValueError(f"low-dose i0 must be positive, got {self.i0}")

    @property
    def label(self) -> str:
        return "gaussian" if self.kind == "gaussian" else f"lowdose I0={self.i0:g}"

    def noisy(self, reference: np.ndarray, hu: np.ndarray, window_width: float, pixel_mm: float,
              seed: int) -> np.ndarray:
        """Noisy copy in [0, 1] of ``reference`` ((H, W) in [0, 1], the slice ``hu`` through the window)."""
        if self.kind == "gaussian":
            return add_gaussian_noise(reference, self.sigma, seed)
        from .lowdose import low_dose_noise_hu

        noise = low_dose_noise_hu(hu, pixel_mm, self.i0, seed) / np.float32(window_width)
        return np.clip(reference + noise, 0.0, 1.0).astype(np.float32)
