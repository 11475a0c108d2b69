"""Seeded synthetic noise for QA copies and training pairs."""
from __future__ import annotations

import hashlib

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
